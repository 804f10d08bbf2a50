"""The one inference pass (xai_bench.compute.inference.predict): results, batching paths, the cache
shared with the metrics' image selection, and its errors."""

import pytest
import torch

from conftest import ItemsOnly, TinyLinear
from xai_bench.data import DataError, SyntheticShapes, load_batch
from xai_bench.errors import ConfigError
from xai_bench.compute.inference import Predictions, clear_cache, log_confidence, predict
from xai_bench.metrics.common import select_confident


Lazy = ItemsOnly


class Counting(TinyLinear):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return super().forward(x)


@pytest.fixture(scope="module")
def data():
    return SyntheticShapes("test", n=70, seed=2)


def _reference(model, dataset):
    """What the metrics' former pass computed: float32 logits, float64 log-confidences."""
    images, labels = load_batch(dataset, torch.arange(len(dataset)))
    with torch.no_grad():
        logits = model(model.encode(images)).float()
    return logits, labels, log_confidence(model, logits).gather(1, labels[:, None])[:, 0]


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_predictions_match_a_plain_forward(data, loss):
    model = TinyLinear(loss=loss).eval()
    p = predict(model, data, batch_size=16, cache=False)
    logits, labels, log_conf = _reference(model, data)
    assert isinstance(p, Predictions) and len(p) == len(data)
    assert p.logits.dtype == torch.float32 and p.logits.shape == (70, 10)
    assert p.logits.device.type == "cpu" and p.labels.dtype == torch.int64
    torch.testing.assert_close(p.logits, logits)
    assert torch.equal(p.labels, labels) and torch.equal(p.predicted, logits.argmax(1))
    assert p.log_confidence.dtype == torch.float64
    torch.testing.assert_close(p.log_confidence, log_conf)
    assert p.accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_dataloader_path_equals_in_memory_path(data):
    model = TinyLinear().eval()
    in_memory = predict(model, data, batch_size=32, cache=False)
    for workers in (0, 1):
        lazy = predict(model, Lazy(data), batch_size=32, num_workers=workers, cache=False)
        torch.testing.assert_close(lazy.logits, in_memory.logits)
        assert torch.equal(lazy.labels, in_memory.labels)


def test_eval_mode_and_training_flag_restored(data):
    model = TinyLinear().train()
    predict(model, data, cache=False)
    assert model.training


def test_cached_pass_is_shared_with_the_selection(data):
    clear_cache()
    model = Counting().eval()
    p = predict(model, data, batch_size=32)
    assert sum(model.calls) == len(data)
    assert predict(model, data, batch_size=32) is p
    selection = select_confident(model, data, 5, batch_size=32)  # the same pass
    assert sum(model.calls) == len(data)  # the selection ran no forward pass of its own
    order = torch.sort(-p.log_confidence[p.correct], stable=True).indices
    assert selection.indices.tolist() == torch.nonzero(p.correct)[:, 0][order][:5].tolist()
    torch.testing.assert_close(selection.confidences,
                               p.log_confidence[selection.indices].exp())
    predict(model, data, batch_size=16)  # another batch size: another pass
    assert sum(model.calls) == 2 * len(data)
    with torch.no_grad():
        model.linear.weight.mul_(2.0)  # in-place change: recomputed
    predict(model, data, batch_size=16)
    assert sum(model.calls) == 3 * len(data)
    predict(model, data, batch_size=16, cache=False)
    assert sum(model.calls) == 4 * len(data)


def test_errors(data):
    with pytest.raises(DataError, match="empty"):
        predict(TinyLinear(), SyntheticShapes("test", n=0))
    with pytest.raises(ConfigError, match=r"\(32, 32\) but model .* expects \(16, 16\)"):
        predict(TinyLinear(image_size=16), data)
    with pytest.raises(ConfigError, match="batch_size"):
        predict(TinyLinear(), data, batch_size=0)
