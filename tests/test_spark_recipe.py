"""The Spark recipe of docs/scale_out.rst, run on ``local[2]`` with a random-init resnet18.

Skipped where pyspark (``pip install ".[spark]"``) or Java is absent, as in continuous
integration, which does not install pyspark: run it with
``python -m pytest -m slow tests/test_spark_recipe.py``.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")  # predict_batch_udf moves batches as Arrow
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java (a JDK or JRE on PATH, or JAVA_HOME)", allow_module_level=True)

from PIL import Image

from skfeat import PretrainedCNNFeaturizer

pytestmark = [
    pytest.mark.slow,  # starting the JVM and its Python workers takes tens of seconds
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the driver stays on loopback
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this Python too
    session = (
        SparkSession.builder.master("local[2]")
        .appName("skfeat-spark-recipe")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def test_predict_batch_udf_loads_once_per_worker_and_keeps_rows(spark, tmp_path):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    paths = []
    for i in range(24):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        path = tmp_path / f"photo_{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    log = tmp_path / "workers.log"

    # The recipe, plus one line per call to the log: which process, how many model loads.
    featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1).fit(paths)

    def make_predict_fn():
        from skfeat._backends._base import Backend

        fitted = featurizer  # pickled with the function, a few kB
        with open(log, "a") as handle:
            handle.write(f"make {os.getpid()}\n")
        loads = {"count": 0}
        original = Backend.load

        def counted(backend, *args, **kwargs):  # count this worker's model loads
            loads["count"] += 1
            return original(backend, *args, **kwargs)

        Backend.load = counted

        def predict(paths):
            features = fitted.transform(paths)  # (n, n_features) float32
            with open(log, "a") as handle:
                handle.write(f"batch {os.getpid()} {loads['count']} {len(paths)}\n")
            return features

        return predict

    featurize_udf = predict_batch_udf(
        make_predict_fn, return_type=ArrayType(FloatType()), batch_size=4
    )
    table = spark.createDataFrame(list(enumerate(paths)), ["id", "path"]).repartition(4)
    rows = table.withColumn("features", featurize_udf("path")).collect()

    # Every row keeps its own image's features, whatever partition and batch it went in.
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == list(range(len(paths)))
    assert all(by_id[i]["path"] == path for i, path in enumerate(paths))
    features = np.array([by_id[i]["features"] for i in range(len(paths))], dtype=np.float32)
    np.testing.assert_allclose(features, featurizer.transform(paths), rtol=0, atol=1e-5)

    made, batches = [], []
    for kind, pid, *counts in (line.split() for line in log.read_text().splitlines()):
        if kind == "make":
            made.append(pid)
        else:
            batches.append((pid, int(counts[0]), int(counts[1])))
    assert sum(n for _, _, n in batches) == len(paths)
    workers = {pid for pid, _, _ in batches}
    assert 1 <= len(workers) <= 2  # local[2]: at most two Python workers at once
    assert sorted(made) == sorted(workers)  # make_predict_fn ran once in each worker
    assert {loads for _, loads, _ in batches} == {1}  # and each loaded the model once
