"""The skrub recipe of docs/user_guide/inputs.rst, run as written; skipped where skrub is absent."""

from __future__ import annotations

import numpy as np
import pytest

skrub = pytest.importorskip("skrub")
pd = pytest.importorskip("pandas")

from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from skfeat import PretrainedCNNFeaturizer  # noqa: E402


@pytest.fixture
def table(tmp_path):
    paths = []
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        path = tmp_path / f"photo_{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    frame = pd.DataFrame({"photo": paths, "price": np.arange(8.0), "city": ["Lyon", "Paris"] * 4})
    return frame, np.array([0, 1] * 4)


def _featurizer():
    return PretrainedCNNFeaturizer("resnet18", weights=None, layer="layer4", n_jobs=1)


def test_table_vectorizer_routes_the_image_column_to_the_featurizer(table):
    frame, _ = table
    images = _featurizer()
    vectorizer = skrub.TableVectorizer(specific_transformers=[(images, ["photo"])])
    features = vectorizer.fit_transform(frame)
    expected = _featurizer().fit_transform(frame[["photo"]])
    image_columns = [name for name in features.columns if name.startswith("layer4_avg_")]
    assert len(image_columns) == 512
    np.testing.assert_allclose(features[image_columns].to_numpy(), expected, rtol=1e-6)
    assert "price" in features.columns  # the other columns keep skrub's encoders


def test_tabular_pipeline_with_the_image_column(table):
    frame, y = table
    model = skrub.tabular_pipeline(LogisticRegression(max_iter=1000))
    plain = model.named_steps["tablevectorizer"].fit_transform(frame)
    assert not any(name.startswith("layer4_avg_") for name in plain.columns)  # text to skrub
    model.set_params(tablevectorizer__specific_transformers=[(_featurizer(), ["photo"])])
    model.fit(frame, y)
    assert model.predict(frame).shape == (8,)
    vectorized = model.named_steps["tablevectorizer"].transform(frame)
    assert sum(name.startswith("layer4_avg_") for name in vectorized.columns) == 512
