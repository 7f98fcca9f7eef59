"""The scikit-learn contract: clone, params, pickle, feature names, output, composition."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import validate_data

from skfeat import PretrainedCNNFeaturizer

from conftest import BARE_INSTALL, make_tiny_backbone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _labelled_images(n_per_class=12, seed=0):
    """Two visibly different classes: dark noisy vs bright striped images."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(0, 90, (n_per_class, 40, 40, 3), dtype=np.uint8)
    bright = rng.integers(150, 256, (n_per_class, 40, 40, 3), dtype=np.uint8)
    bright[:, ::4] = 0
    X = np.concatenate([dark, bright])
    y = np.repeat([0, 1], n_per_class)
    return X, y


def test_clone_and_params_round_trip(tiny_model):
    featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, layer=["layer3"], pooling="gem")
    params = featurizer.get_params()
    assert params["layer"] == ["layer3"] and params["pooling"] == "gem"
    cloned = clone(featurizer)
    assert cloned.get_params() == params
    featurizer.set_params(pooling="max", batch_size=4)
    assert (featurizer.pooling, featurizer.batch_size) == ("max", 4)
    assert repr(PretrainedCNNFeaturizer(layer="layer4")) == (
        "PretrainedCNNFeaturizer(layer='layer4')"
    )


@pytest.mark.slow
def test_fitted_featurizer_pickles_small_and_gives_identical_features(tmp_path, random_images):
    featurizer = PretrainedCNNFeaturizer(
        "resnet18", weights=None, layer="layer3", n_jobs=1, **BARE_INSTALL
    )
    expected = featurizer.fit_transform(random_images)
    blob = pickle.dumps(featurizer)
    assert len(blob) < 50_000
    (tmp_path / "featurizer.pkl").write_bytes(blob)
    np.save(tmp_path / "images.npy", random_images)
    script = textwrap.dedent(
        f"""
        import pickle, sys, numpy as np
        featurizer = pickle.loads(open({str(tmp_path / "featurizer.pkl")!r}, "rb").read())
        assert "torch" not in sys.modules  # unpickling does not load the network
        features = featurizer.transform(np.load({str(tmp_path / "images.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, features)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, *sys.path])}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_set_output_pandas_keeps_the_index_and_names(tiny_model, random_images):
    pd = pytest.importorskip("pandas")
    paths = pd.Series(list(random_images), index=np.arange(100, 108))
    featurizer = PretrainedCNNFeaturizer(tiny_model, layer="stage1", n_jobs=1)
    frame = featurizer.set_output(transform="pandas").fit_transform(paths)
    assert list(frame.index) == list(range(100, 108))
    assert list(frame.columns) == list(featurizer.get_feature_names_out())
    assert frame.columns[0] == "stage1_avg_0000"
    assert all(dtype == np.float32 for dtype in frame.dtypes)


def test_set_output_polars(tiny_model, random_images):
    pl = pytest.importorskip("polars")
    featurizer = PretrainedCNNFeaturizer(tiny_model, layer="stage1", n_jobs=1)
    frame = featurizer.set_output(transform="polars").fit_transform(random_images)
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns[:2] == ["stage1_avg_0000", "stage1_avg_0001"]


def test_dataframe_column_name_is_remembered(tiny_model, random_images):
    pd = pytest.importorskip("pandas")
    featurizer = PretrainedCNNFeaturizer(tiny_model, n_jobs=1)
    featurizer.fit(pd.DataFrame({"photo": list(random_images)}))
    assert list(featurizer.feature_names_in_) == ["photo"]
    assert featurizer.n_features_in_ == 1
    with pytest.raises(ValueError, match=r"image column 'image', but .* fitted on column 'photo'"):
        featurizer.transform(pd.DataFrame({"image": list(random_images)}))
    featurizer.fit(list(random_images))
    assert not hasattr(featurizer, "feature_names_in_")


def test_pipeline_with_pca_scaler_and_classifier():
    X, y = _labelled_images()
    pipe = make_pipeline(
        PretrainedCNNFeaturizer("resnet18", weights=None, layer="layer2", n_jobs=1),
        StandardScaler(),
        PCA(n_components=5),
        LogisticRegression(max_iter=1000),
    )
    pipe.fit(X[::2], y[::2])
    assert pipe.score(X[1::2], y[1::2]) >= 0.9
    assert pipe[:-1].get_feature_names_out()[0] == "pca0"


@pytest.mark.parametrize("n_jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_grid_search_over_layer_and_pooling(n_jobs):
    X, y = _labelled_images(n_per_class=6)
    pipe = make_pipeline(
        PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    )
    grid = {
        "pretrainedcnnfeaturizer__layer": ["layer1", "layer2"],
        "pretrainedcnnfeaturizer__pooling": ["avg", "gem"],
    }
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs, error_score="raise").fit(X, y)
    assert search.cv_results_["mean_test_score"].shape == (4,)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_[0].layer in ("layer1", "layer2")


def test_column_transformer_beside_numeric_columns(tiny_model):
    pd = pytest.importorskip("pandas")
    X_images, y = _labelled_images(n_per_class=6)
    frame = pd.DataFrame({"image": list(X_images), "age": np.arange(12.0), "size": 1.0})
    transformer = ColumnTransformer(
        [
            ("img", PretrainedCNNFeaturizer(tiny_model, layer="stage1", n_jobs=1), "image"),
            ("num", StandardScaler(), ["age", "size"]),
        ]
    ).set_output(transform="pandas")
    out = transformer.fit_transform(frame, y)
    assert out.shape == (12, 16 + 2)
    assert list(out.columns[:2]) == ["img__stage1_avg_0000", "img__stage1_avg_0001"]
    assert list(out.columns[-2:]) == ["num__age", "num__size"]
    model = make_pipeline(transformer, LogisticRegression(max_iter=500)).fit(frame, y)
    assert model.score(frame, y) >= 0.9


def test_tags_declare_image_input():
    tags = get_tags(PretrainedCNNFeaturizer())
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.transformer_tags.preserves_dtype == ["float32"]
    assert tags.requires_fit


class _NumericRowsAsImages(PretrainedCNNFeaturizer):
    """Test-only: reads each numeric row of a 2-D X as a 1 x d grey image.

    sklearn's common checks only feed 2-D numeric data; this adapter lets them exercise
    the real clone, params, pickling, fit idempotence and batching code paths.
    """

    def _check_input(self, X, *, reset):
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
        grey = 1.0 / (1.0 + np.exp(-X))  # per value, so rows never depend on each other
        return list(grey.reshape(len(X), 1, X.shape[1]))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.string = False
        return tags


def _checks_that_cannot_apply(estimator):
    return {
        # joblib.hash pickles torch tensors with their storage addresses, so a deep copy
        # of an nn.Module param never hashes equal to the original, mutated or not.
        # test_user_module_is_not_modified checks the real property.
        "check_estimators_overwrite_params": "torch modules do not hash stably",
    }


@parametrize_with_checks(
    [_NumericRowsAsImages(make_tiny_backbone(), layer="stage1", device="cpu", n_jobs=1)],
    expected_failed_checks=_checks_that_cannot_apply,
)
def test_sklearn_common_checks(estimator, check):
    check(estimator)
