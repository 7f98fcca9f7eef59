"""The Ray Data recipe of docs/scale_out.rst, run as written; skipped where Ray is absent."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from PIL import Image  # noqa: E402

from skfeat import PretrainedCNNFeaturizer  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray and its actors takes tens of seconds


@pytest.fixture(scope="module")
def ray_session():
    ray.init(
        num_cpus=4,  # logical: two actors plus the read and repartition tasks
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 2**20,
    )
    try:
        yield
    finally:
        ray.shutdown()


def test_map_batches_with_a_featurizer_class_matches_local(ray_session, tmp_path):
    paths = []
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        path = tmp_path / f"photo_{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1).fit(paths)

    class Featurize:  # the recipe's class, plus the process id and its model loads
        def __init__(self, featurizer):
            from skfeat._backends._base import Backend

            self.featurizer = featurizer
            self.loads = 0
            original = Backend.load

            def counted(backend, *args, **kwargs):  # count this actor's model loads
                self.loads += 1
                return original(backend, *args, **kwargs)

            Backend.load = counted

        def __call__(self, batch):
            import os

            features = self.featurizer.transform(batch["path"])
            n = len(batch["path"])
            return {
                "path": batch["path"],
                "features": features,
                "pid": np.full(n, os.getpid()),
                "loads": np.full(n, self.loads),
            }

    dataset = ray.data.from_items([{"path": path} for path in paths]).repartition(4)
    result = (
        dataset.map_batches(
            Featurize,
            fn_constructor_kwargs={"featurizer": featurizer},
            batch_size=3,
            concurrency=2,
        )
        .to_pandas()
        .set_index("path")
        .loc[paths]
    )

    expected = featurizer.transform(paths)
    np.testing.assert_allclose(np.stack(result["features"]), expected, rtol=0, atol=1e-5)
    assert set(result["loads"]) == {1}  # each actor process loaded the model once
    assert 1 <= result["pid"].nunique() <= 2
