"""Attribution methods. Each module registers its methods in ``xai_bench.METHODS``:

- :mod:`~xai_bench.methods.gradient`: ``inherent`` (B-cos contribution maps), ``ixg``,
  ``intgrad``;
- :mod:`~xai_bench.methods.attention`: ``finatt``, ``rollout``, ``gradsam``, ``gradcam``;
- :mod:`~xai_bench.methods.lrp`: ``chefer_lrp``, ``plrp`` (conventional ViTs with LRP);
- :mod:`~xai_bench.methods.vit_cx`: ``vit_cx``;
- :mod:`~xai_bench.methods.gae`: ``gae``; :mod:`~xai_bench.methods.attnlrp`: ``attnlrp``,
  ``cp_lrp`` (rules in :mod:`~xai_bench.methods.attnlrp_rules`);
  :mod:`~xai_bench.methods.rise`: ``rise``; :mod:`~xai_bench.methods.tis`: ``tis``;
- :mod:`~xai_bench.methods.captum_builtins`: ``saliency``, ``smoothgrad``, ``vargrad``,
  ``gradient_shap``, ``deeplift``, ``occlusion``, ``lime``, ``kernel_shap`` (computed by captum
  through :mod:`~xai_bench.methods.captum_adapter`, which also makes ``captum:<Name>``; their
  baselines in :mod:`~xai_bench.methods.input_baselines`);
- :mod:`~xai_bench.methods.baselines`: ``random``, ``uniform``, ``centre``.

``--methods`` also takes groups: a method's kind or a group it declares (``paper``,
``default``, ``captum``; :meth:`xai_bench.registry.Registry.groups`).

Every method is called as ``method(model, x, targets) -> maps`` (see
:mod:`~xai_bench.methods.base`), explains the model in eval mode and leaves its state
(train/eval flags, ``requires_grad``, ``.grad``) as it found it.
"""

from xai_bench.methods import attention, baselines, gradient, lrp, vit_cx  # noqa: F401
from xai_bench.methods.base import (
    AttributionMethod, MethodNotApplicable, is_vit, token_readout,
    upsample_token_map,
)
from xai_bench.registry import register_method

__all__ = ["AttributionMethod", "MethodNotApplicable", "is_vit", "register_method",
           "token_readout", "upsample_token_map"]
