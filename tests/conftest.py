import pytest
import torch

from xai_bench.data import SyntheticShapes


@pytest.fixture(scope="session")
def shapes_small():
    """A small train/test split of the embedded data (fast to generate)."""
    return (SyntheticShapes("train", n=600, seed=0), SyntheticShapes("test", n=200, seed=0))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
