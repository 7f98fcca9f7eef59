"""skfeat.dask on a real cluster: two worker processes, features equal to a local run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from PIL import Image  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from skfeat import PretrainedCNNFeaturizer  # noqa: E402
from skfeat.dask import featurize, featurize_array  # noqa: E402
from skfeat.exceptions import ImageDecodeError, InvalidInputError  # noqa: E402

from conftest import BARE_INSTALL, BatchLog, count_loads  # noqa: E402

N_IMAGES = 14
N_PARTITIONS = 4
# a non-trivial index: strings, sorted (so divisions are known), not 0..n-1
INDEX = pd.Index([f"img-{i * 7 + 3:03d}" for i in range(N_IMAGES)], name="key")


def make_featurizer(**params):
    """resnet18 with random weights: a named model, so workers can build it themselves."""
    return PretrainedCNNFeaturizer("resnet18", weights=None, batch_size=4, n_jobs=1, **params)


def _png_bytes(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, shared by the module."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def synchronous():
    """Run graphs in this process: the same partition code as on a cluster, in a second."""
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def image_table(tmp_path_factory):
    """A pandas table of PNG paths and their bytes, with a string index."""
    folder = tmp_path_factory.mktemp("dask-images")
    paths = []
    for i in range(N_IMAGES):
        path = folder / f"photo_{i:02d}.png"
        path.write_bytes(_png_bytes(i))
        paths.append(str(path))
    return pd.DataFrame(
        {"path": paths, "label": np.arange(N_IMAGES) % 3, "position": np.arange(N_IMAGES)},
        index=INDEX,
    )


@pytest.fixture(scope="module")
def local_features(image_table):
    """The reference: a local transform of the same images."""
    return make_featurizer().fit_transform(image_table[["path"]])


# -- results equal a local transform ---------------------------------------------------


@pytest.mark.slow
def test_featurize_on_a_cluster_equals_local_transform(client, image_table, local_features):
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)
    featurizer = make_featurizer().fit(image_table[["path"]])

    frame = featurize(ddf, featurizer, column="path").compute()
    array = featurize_array(ddf, featurizer, column="path").compute()

    assert frame.index.equals(image_table.index)
    np.testing.assert_allclose(frame.to_numpy(), local_features, rtol=0, atol=1e-5)
    np.testing.assert_allclose(array, local_features, rtol=0, atol=1e-5)


def test_featurize_dataframe_equals_local_transform(synchronous, image_table, local_features):
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)
    featurizer = make_featurizer().fit(image_table[["path"]])

    features = featurize(ddf, featurizer, column="path")

    assert features.npartitions == N_PARTITIONS
    assert features.divisions == ddf.divisions
    assert list(features.columns) == list(featurizer.get_feature_names_out())
    assert (features.dtypes == np.float32).all()
    result = features.compute()
    assert result.index.equals(image_table.index)
    assert list(result.columns) == list(featurizer.get_feature_names_out())
    assert (result.dtypes == np.float32).all()
    np.testing.assert_allclose(result.to_numpy(), local_features, rtol=0, atol=1e-5)


def test_featurize_series_keeps_an_unsorted_index_in_order(
    synchronous, image_table, local_features
):
    order = np.random.default_rng(1).permutation(N_IMAGES)
    shuffled = image_table["path"].iloc[order]
    series = dd.from_pandas(shuffled, npartitions=N_PARTITIONS, sort=False)

    result = featurize(series, make_featurizer()).compute()

    assert result.index.equals(shuffled.index)
    np.testing.assert_allclose(result.to_numpy(), local_features[order], rtol=0, atol=1e-5)


def test_featurize_reads_bytes(synchronous, image_table, local_features):
    blobs = pd.Series([_png_bytes(i) for i in range(N_IMAGES)], index=INDEX, dtype=object)
    # dask would otherwise convert the object column to text, which bytes are not
    with dask.config.set({"dataframe.convert-string": False}):
        series = dd.from_pandas(blobs, npartitions=N_PARTITIONS)
    result = featurize(series, make_featurizer()).compute()
    np.testing.assert_allclose(result.to_numpy(), local_features, rtol=0, atol=1e-5)


def test_featurize_array_has_partition_chunks(synchronous, image_table, local_features):
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)
    lengths = tuple(ddf.map_partitions(len).compute())

    features = featurize_array(ddf, make_featurizer(), column="path")

    assert features.chunks == (lengths, (local_features.shape[1],))
    assert features.dtype == np.float32
    result = features.compute()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, local_features, rtol=0, atol=1e-5)


def test_featurize_array_without_lengths_computes_nothing_until_asked(
    synchronous, image_table, local_features
):
    series = dd.from_pandas(image_table["path"], npartitions=N_PARTITIONS)

    features = featurize_array(series, make_featurizer(), lengths=False)

    assert len(features.chunks[0]) == N_PARTITIONS
    assert all(np.isnan(n) for n in features.chunks[0])
    np.testing.assert_allclose(features.compute(), local_features, rtol=0, atol=1e-5)


def test_empty_partitions_give_no_rows(synchronous, image_table, local_features):
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)
    keep = ~np.isin(np.arange(N_IMAGES), [4, 5, 6, 7])
    filtered = ddf[(ddf["position"] < 4) | (ddf["position"] > 7)]  # partition 1 ends up empty

    assert filtered.map_partitions(len).compute().tolist() == [4, 0, 3, 3]
    frame = featurize(filtered, make_featurizer(), column="path").compute()
    array = featurize_array(filtered, make_featurizer(), column="path").compute()

    assert frame.index.equals(image_table.index[keep])
    np.testing.assert_allclose(frame.to_numpy(), local_features[keep], rtol=0, atol=1e-5)
    np.testing.assert_allclose(array, local_features[keep], rtol=0, atol=1e-5)


def test_unfitted_featurizer_is_fitted_as_a_clone(synchronous, image_table, local_features):
    featurizer = make_featurizer()
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)

    features = featurize(ddf, featurizer, column="path")

    with pytest.raises(NotFittedError):
        check_is_fitted(featurizer)
    np.testing.assert_allclose(features.compute().to_numpy(), local_features, atol=1e-5)


def test_column_name_is_checked_as_locally(synchronous, image_table):
    featurizer = make_featurizer().fit(image_table[["path"]])
    renamed = dd.from_pandas(image_table.rename(columns={"path": "file"}), npartitions=2)

    with pytest.raises(ValueError, match=r"X has the image column 'file'.*fitted on column 'path'"):
        featurize(renamed, featurizer, column="file").compute()


# -- the model is loaded once per worker ---------------------------------------------


@pytest.mark.slow
def test_model_loads_once_per_worker_and_is_reused(client, image_table):
    # a model no other test of this module loads, so each worker starts without it
    featurizer = PretrainedCNNFeaturizer("shufflenet_v2_x0_5", weights=None, n_jobs=1)
    series = dd.from_pandas(image_table["path"], npartitions=7)

    before = client.run(count_loads)
    first = featurize(series, featurizer).compute()
    after_first = client.run(count_loads)
    second = featurize_array(series, featurizer).compute()
    after_second = client.run(count_loads)

    loads = [after_first[worker] - before[worker] for worker in before]
    assert sorted(loads) == [1, 1], loads  # 7 partitions, one load on each of the 2 workers
    assert after_second == after_first  # the second job reuses the loaded models
    np.testing.assert_array_equal(first.to_numpy(), second)


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler", ["synchronous", pytest.param("client", marks=pytest.mark.slow)]
)
def test_bad_image_error_names_partition_row_and_path(scheduler, request, image_table, tmp_path):
    request.getfixturevalue(scheduler)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    table = image_table.copy()
    table.iloc[9, table.columns.get_loc("path")] = str(bad)
    ddf = dd.from_pandas(table, npartitions=N_PARTITIONS)  # row 9 is row 1 of partition 2
    assert ddf.map_partitions(len).compute().tolist()[:2] == [4, 4]

    message = r"In partition 2 of the Dask data: Could not read image 1 .*broken\.png"
    with pytest.raises(ImageDecodeError, match=message):
        featurize(ddf, make_featurizer(), column="path").compute()
    with pytest.raises(ImageDecodeError, match=message):
        featurize_array(ddf, make_featurizer(), column="path").compute()


class CrashOnceFeaturizer(PretrainedCNNFeaturizer):
    """Kills its own process on its first transform anywhere, leaving a marker file."""

    def transform(self, X):
        try:
            marker = os.open(self.crash_marker_, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().transform(X)
        os.close(marker)
        os._exit(1)  # like an out-of-memory kill: no exception, no cleanup


@pytest.mark.slow
def test_worker_killed_mid_run_is_retried_and_result_complete(
    client, image_table, local_features, tmp_path
):
    assert dask.config.get("distributed.scheduler.allowed-failures") >= 1
    featurizer = CrashOnceFeaturizer("resnet18", weights=None, batch_size=4, n_jobs=1)
    featurizer.fit(image_table[["path"]])
    featurizer.crash_marker_ = str(tmp_path / "crashed")
    ddf = dd.from_pandas(image_table, npartitions=N_PARTITIONS)
    workers_before = set(client.scheduler_info()["workers"])

    result = featurize(ddf, featurizer, column="path").compute()

    assert Path(featurizer.crash_marker_).exists()  # a worker did die
    client.wait_for_workers(2, timeout=60)
    assert set(client.scheduler_info()["workers"]) != workers_before  # it was replaced
    assert result.index.equals(image_table.index)
    np.testing.assert_allclose(result.to_numpy(), local_features, rtol=0, atol=1e-5)


# -- GridSearchCV on the cluster -------------------------------------------------------


@pytest.mark.slow
def test_grid_search_under_the_dask_joblib_backend_matches_local(client, image_table):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    paths = image_table[["path"]]
    y = image_table["label"].to_numpy() % 2
    featurizer = PretrainedCNNFeaturizer("mobilenet_v3_small", weights=None, n_jobs=1)
    pipeline = make_pipeline(featurizer, LogisticRegression(max_iter=200))
    grid = {"pretrainedcnnfeaturizer__pooling": ["avg", "max"]}

    local = GridSearchCV(pipeline, grid, cv=2).fit(paths, y)
    with joblib.parallel_config(backend="dask"):
        remote = GridSearchCV(pipeline, grid, cv=2, n_jobs=-1).fit(paths, y)

    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    np.testing.assert_allclose(
        remote.predict_proba(paths), local.predict_proba(paths), rtol=0, atol=1e-5
    )


@pytest.mark.slow
def test_grid_search_on_the_cluster_with_a_shared_disk_cache_runs_each_image_about_once(
    client, tiny_model, tmp_path
):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from skfeat import ActivationCache

    log = BatchLog(tmp_path / "forward-log.txt")
    tiny_model.register_forward_pre_hook(log)
    rng = np.random.default_rng(1)
    images = list(rng.integers(0, 256, size=(24, 40, 40, 3), dtype=np.uint8))
    y = np.arange(24) % 2

    def search(cache):
        featurizer = PretrainedCNNFeaturizer(
            tiny_model, n_jobs=1, batch_size=8, cache=cache, **BARE_INSTALL
        )
        grid = {
            "pretrainedcnnfeaturizer__layer": ["stage1", "stage2"],
            "pretrainedcnnfeaturizer__pooling": ["avg", "max"],
        }
        pipeline = make_pipeline(featurizer, LogisticRegression(max_iter=200))
        return GridSearchCV(pipeline, grid, cv=2, n_jobs=-1)

    with joblib.parallel_config(backend="dask"):
        cached = search(ActivationCache(tmp_path / "store")).fit(images, y)
    # 4 candidates x 2 folds + the refit would be 9 passes per image without the cache;
    # two workers may both miss on an image before either has stored it
    assert len(images) <= log.images() <= 2 * len(images), log.images()
    uncached = search(None).fit(images, y)  # local, for the reference scores
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"], uncached.cv_results_["mean_test_score"]
    )


@pytest.mark.slow
def test_featurize_with_a_shared_disk_cache_reads_it_on_the_second_run(
    client, tiny_model, random_images, tmp_path
):
    from skfeat import ActivationCache

    log = BatchLog(tmp_path / "forward-log.txt")
    tiny_model.register_forward_pre_hook(log)
    expected = PretrainedCNNFeaturizer(tiny_model, layer="stage2", n_jobs=1).fit_transform(
        random_images
    )
    before = log.images()
    featurizer = PretrainedCNNFeaturizer(
        tiny_model,
        layer="stage2",
        n_jobs=1,
        cache=ActivationCache(tmp_path / "store"),
        **BARE_INSTALL,
    )
    series = pd.Series(list(random_images), index=np.arange(len(random_images)) * 10)
    with dask.config.set({"dataframe.convert-string": False}):  # keep arrays as arrays
        images = dd.from_pandas(series, npartitions=4)

    first = featurize(images, featurizer).compute()
    after_first = log.images()
    second = featurize(images, featurizer).compute()

    assert after_first - before == len(random_images)
    assert log.images() == after_first  # every partition was read from the shared store
    np.testing.assert_allclose(first.to_numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(second.to_numpy(), first.to_numpy())


@pytest.mark.parametrize(
    "scheduler", ["synchronous", pytest.param("client", marks=pytest.mark.slow)]
)
def test_on_error_fills_bad_rows_as_locally(scheduler, request, image_table, tmp_path):
    from skfeat.exceptions import ImageDecodeWarning

    request.getfixturevalue(scheduler)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    table = image_table.copy()
    bad_rows = [1, 9, 13]  # in partitions 0, 2 and 3
    table.iloc[bad_rows, table.columns.get_loc("path")] = str(bad)
    featurizer = make_featurizer(on_error="nan").fit(table[["path"]])
    with pytest.warns(ImageDecodeWarning):
        local = featurizer.transform(table[["path"]])
    ddf = dd.from_pandas(table, npartitions=N_PARTITIONS)

    # on a cluster the warning is raised, and logged, on the workers
    if scheduler == "synchronous":
        with pytest.warns(ImageDecodeWarning):
            result = featurize(ddf, featurizer, column="path").compute()
    else:
        result = featurize(ddf, featurizer, column="path").compute()

    assert np.isnan(local[bad_rows]).all()
    assert result.index.equals(table.index)
    np.testing.assert_allclose(result.to_numpy(), local, rtol=0, atol=1e-5, equal_nan=True)


# -- client-side checks (no cluster needed) --------------------------------------------


@pytest.fixture
def small_ddf():
    table = pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]})
    return dd.from_pandas(table, npartitions=1)


def test_dataframe_needs_a_column(small_ddf):
    with pytest.raises(InvalidInputError, match=r"columns \['path', 'label'\]; say which"):
        featurize(small_ddf, make_featurizer())


def test_unknown_column_is_named(small_ddf):
    with pytest.raises(InvalidInputError, match=r"column='image' is not a column of data"):
        featurize_array(small_ddf, make_featurizer(), column="image")


def test_series_takes_no_column(small_ddf):
    with pytest.raises(InvalidInputError, match=r"column='path' was given, but data is a Dask"):
        featurize(small_ddf["path"], make_featurizer(), column="path")


def test_in_memory_data_is_refused_with_a_pointer(small_ddf):
    with pytest.raises(InvalidInputError, match=r"got pandas.*Series.*featurizer.transform\(X\)"):
        featurize(small_ddf["path"].compute(), make_featurizer())


def test_featurizer_pickle_is_small_and_holds_no_weights(image_table):
    import pickle

    featurizer = make_featurizer().fit(image_table[["path"]])
    assert len(pickle.dumps(featurizer)) < 64_000  # resnet18 weights alone are 45 MB


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_import_skfeat_does_not_import_dask():
    done = _run_python("import sys, skfeat; print('dask' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_missing_dask_names_the_extra():
    code = (
        "import sys; sys.modules['dask'] = None\n"
        "try:\n"
        "    import skfeat.dask\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MissingDependencyError skfeat.dask needs")
    assert 'pip install "skfeat[dask]"' in done.stdout
