"""Shared fixtures: a tiny random backbone for speed, real photos, the offline data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# Tests never download: timm weights come only from the Hugging Face cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Converted OpenVINO graphs go to a folder of the test run, not the user's cache.
os.environ.setdefault("SKFEAT_CACHE_DIR", tempfile.mkdtemp(prefix="skfeat-tests-"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FLOWERS_DIR = SHARED / "data" / "flowers5-128-ccby"
WEIGHTS_DIR = SHARED / "weights"
MOBILENET_V2_BACKBONE = WEIGHTS_DIR / "mobilenet_v2_features_imagenet_torchvision.pth"
LITE0_TIMM = WEIGHTS_DIR / "tf_efficientnet_lite0_imagenet_timm.pth"

# What "auto" resolves to in a bare install, named for estimators that run in other
# processes (dask workers, subprocess scripts), which _auto_as_in_a_bare_install does
# not reach. Runtime and decoder are part of the cache key, forward hooks count torch's
# passes only, and only torch's rows are bit for bit the same in any batch.
BARE_INSTALL = {"runtime": "torch", "decoder": "pil"}


def make_featurizer(model, **params):
    """A featurizer for tests: one decode thread and batches of 8 unless ``params`` say.

    Small fixed batches keep runs fast and their rows comparable; tests of the engine's
    own choices pass ``batch_size="auto"`` or ``n_jobs`` themselves.
    """
    from skfeat import PretrainedCNNFeaturizer

    return PretrainedCNNFeaturizer(model, **{"n_jobs": 1, "batch_size": 8, **params})


@pytest.fixture(autouse=True)
def _auto_as_in_a_bare_install(request):
    """``runtime="auto"`` and ``decoder="auto"`` resolve as without the extras.

    What most tests pin is torch's and Pillow's behaviour (forward hooks that count
    backbone passes, out-of-memory halving, Pillow's exact pixels), and it must hold
    whatever else is installed. Tests marked ``extras`` (``test_openvino.py``,
    ``test_jpeg.py``, the doctests) see OpenVINO and simplejpeg when they are installed.
    Its own patcher: a test's ``monkeypatch.undo()`` does not lift it.
    """
    if request.node.get_closest_marker("extras") is not None:
        yield
        return
    from skfeat import _jpeg
    from skfeat._runtime import _openvino

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_openvino, "available", lambda: False)
        patch.setattr(_jpeg, "available", lambda: False)
        yield


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """Three strided conv stages, average pooling and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stage(3, 8)
        self.stage1 = _stage(8, 16)
        self.stage2 = _stage(16, 32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def make_tiny_backbone() -> TinyNet:
    """The tiny CNN with fixed weights and non-trivial BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyNet()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


class BatchLog:
    """A forward pre-hook that appends each batch size to a file, in any process.

    Registered on the user's module, it travels with every copy skfeat makes (clones,
    the per-process registry, loky and Dask workers), so the file counts every image
    that went through the backbone. Meta-device passes (layer tracing in ``fit``) are
    not images.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __call__(self, _module, inputs) -> None:
        if inputs[0].device.type == "meta":
            return
        with open(self.path, "a") as handle:
            handle.write(f"{inputs[0].shape[0]}\n")

    def images(self) -> int:
        if not os.path.exists(self.path):
            return 0
        with open(self.path) as handle:
            return sum(int(line) for line in handle if line.strip())


_LOADS = {"count": 0}


def count_loads() -> int:
    """Backbone loads (``Backend.load`` calls) in this process since the first call.

    The first call wraps ``Backend.load`` with a counter, in whatever process it runs:
    ``client.run(count_loads)`` counts on every Dask worker.
    """
    from skfeat._backends._base import Backend

    if not getattr(Backend.load, "counted", False):
        original = Backend.load

        def load(self, *args, **kwargs):
            _LOADS["count"] += 1
            return original(self, *args, **kwargs)

        load.counted = True
        Backend.load = load
    return _LOADS["count"]


@pytest.fixture
def tiny_model():
    """A fresh tiny backbone (``nn.Module``) with fixed weights."""
    return make_tiny_backbone()


@pytest.fixture(scope="session")
def sample_photos():
    """scikit-learn's two bundled photos (china, flower) as (H, W, 3) uint8 arrays."""
    from sklearn.datasets import load_sample_images

    return load_sample_images().images


@pytest.fixture
def random_images():
    """Eight random (48, 64, 3) uint8 images of varied content."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(8, 48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def flowers_dir():
    """The shared flowers5-128-ccby folder; skips when ../shared is absent."""
    if not FLOWERS_DIR.is_dir():
        pytest.skip("../shared/data/flowers5-128-ccby is not available")
    return FLOWERS_DIR


@pytest.fixture(scope="session")
def mobilenet_v2_weights():
    """The shared MobileNetV2 backbone state_dict; skips when absent."""
    if not MOBILENET_V2_BACKBONE.is_file():
        pytest.skip("../shared/weights is not available")
    return MOBILENET_V2_BACKBONE


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
