"""Which images the sanity metrics explain, and which metrics refuse, on a model whose weights
the run drew at random (``--untrained``).

The runner marks such a model (:func:`mark_random_weights`); a model object given by the
caller is taken as trained. The rule (:func:`sanity_images`) depends only on that mark, and
the mark only on the model's source, which is part of every cell's identity (an untrained
model is identified by its seed, a trained one by its weights), so a stored cell is never
reused under the other rule.
"""

from __future__ import annotations

from xai_bench.contracts.model import model_name
from xai_bench.metrics.base import MetricNotApplicable
from xai_bench.metrics.common import DEFAULT_SELECTION, ImageSelection, select_confident

__all__ = ["RANDOM_WEIGHTS", "TRAINED_WEIGHTS_ONLY", "mark_random_weights",
           "has_random_weights", "require_trained_weights", "selected_from", "sanity_images"]


#: the attribute :func:`mark_random_weights` sets on a model whose weights the run drew at
#: random (``--untrained``); a model object given by the caller is taken as trained
RANDOM_WEIGHTS = "xai_bench_random_weights"
#: the phrase of a metric's refusal to run on random weights (:func:`require_trained_weights`);
#: the run reports such cells as what ``--untrained`` documents, not as a failure
TRAINED_WEIGHTS_ONLY = "needs trained weights"


def mark_random_weights(model) -> None:
    """Mark ``model`` as initialised with random weights (the runner does, for
    ``--untrained``), so that the sanity metrics choose their images by :func:`sanity_images`'
    rule for random weights."""
    try:
        setattr(model, RANDOM_WEIGHTS, True)
    except (AttributeError, TypeError):  # a model that refuses attributes counts as trained
        pass


def has_random_weights(model) -> bool:
    """Whether ``model`` was marked by :func:`mark_random_weights`."""
    return getattr(model, RANDOM_WEIGHTS, False) is True


def require_trained_weights(model, metric_name: str, why: str) -> None:
    """:class:`MetricNotApplicable` for a model with random weights: the metric ``why``
    (its premise) means nothing there."""
    if has_random_weights(model):
        raise MetricNotApplicable(f"{metric_name} {TRAINED_WEIGHTS_ONLY}: {why}; model "
                                  f"'{model_name(model)}' has random weights (--untrained)")


def selected_from(model) -> str:
    """The records' ``selected_from`` column: which images the selection ranked."""
    return "all test images (random weights)" if has_random_weights(model) \
        else "correctly classified test images"


def sanity_images(model, dataset, n_images: int, *, device="cpu", batch_size: int = 32,
                  selection: str = DEFAULT_SELECTION) -> ImageSelection:
    """The images a sanity metric explains, picked by the ``selection`` rule
    (:data:`~xai_bench.metrics.common.SELECTION_RULES`: per class in turn, or overall).

    A trained model: the ``n_images`` most confidently and correctly classified test images
    (:func:`~xai_bench.metrics.common.select_confident`), so that the true class's map is
    about a class the model recognises.

    A model with random weights (:func:`has_random_weights`): the ``n_images`` test images with
    the highest confidence in their true class, correct or not. On random weights a correct
    classification is chance (about one image in C; none at all for a model with many more
    classes than the data set) and says nothing about what a map should show, whereas these
    checks compare a method's maps of the same image across models (the model against its
    re-randomised copy) or across classes (the true class against another one): a method that
    explains the model gives different maps whatever its weights are, one that ignores the
    model gives the same. Ties by dataset index, as for trained models."""
    return select_confident(model, dataset, n_images, device=device, batch_size=batch_size,
                            selection=selection, correct_only=not has_random_weights(model))
