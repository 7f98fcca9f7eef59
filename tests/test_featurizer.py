"""The estimator: inputs, layers, poolings, equivalences and error messages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from skfeat import PretrainedCNNFeaturizer, list_layers, list_models, list_poolings
from skfeat.exceptions import (
    InvalidInputError,
    InvalidParameterError,
    UnknownLayerError,
    UnknownModelError,
)


def _fit_transform(X, **params):
    params.setdefault("n_jobs", 1)
    return PretrainedCNNFeaturizer(**params).fit_transform(X)


# -- inputs ------------------------------------------------------------------------------


@pytest.fixture
def photo_file(tmp_path, sample_photos):
    """china.jpg as a JPEG file, and the pixels it decodes to."""
    path = tmp_path / "china.jpg"
    Image.fromarray(sample_photos[0]).save(path, quality=90)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return path, pixels


def test_path_pil_array_and_bytes_give_the_same_features(photo_file, tiny_model):
    path, pixels = photo_file
    inputs = {
        "str": [str(path)],
        "path": [path],
        "pil": [Image.open(path)],
        "array": [pixels],
        "bytes": [path.read_bytes()],
    }
    features = {name: _fit_transform(X, model=tiny_model) for name, X in inputs.items()}
    for name, values in features.items():
        np.testing.assert_array_equal(values, features["str"], err_msg=name)


def test_containers_give_the_same_rows(tmp_path, random_images, tiny_model):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    paths = []
    for i, image in enumerate(random_images[:5]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    expected = _fit_transform(paths, model=tiny_model)
    containers = {
        "tuple": tuple(paths),
        "object array": np.asarray(paths, dtype=object),
        "str array": np.asarray(paths),
        "column array": np.asarray(paths, dtype=object)[:, None],
        "series": pd.Series(paths, index=[10, 11, 12, 13, 14]),
        "frame": pd.DataFrame({"image": paths}),
        "polars series": pl.Series("image", paths),
        "polars frame": pl.DataFrame({"image": paths}),
        "array stack": random_images[:5],
        "array list": list(random_images[:5]),
    }
    for name, X in containers.items():
        np.testing.assert_allclose(
            _fit_transform(X, model=tiny_model), expected, atol=1e-6, err_msg=name
        )


def test_grey_palette_and_rgba_become_rgb(tiny_model):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    palette = Image.fromarray(rgb).quantize(16)
    rgba = np.dstack([rgb, np.full((40, 50), 255, np.uint8)])
    rows = _fit_transform(
        [grey, np.dstack([grey] * 3), palette, palette.convert("RGB"), rgba, rgb],
        model=tiny_model,
    )
    np.testing.assert_array_equal(rows[0], rows[1])  # grey = grey replicated in RGB
    np.testing.assert_array_equal(rows[2], rows[3])  # palette = its RGB conversion
    np.testing.assert_array_equal(rows[4], rows[5])  # opaque RGBA = RGB


def test_rgba_is_composited_on_white(tiny_model):
    transparent = np.zeros((32, 32, 4), dtype=np.uint8)  # black, fully transparent
    white = np.full((32, 32, 3), 255, dtype=np.uint8)
    rows = _fit_transform([transparent, white], model=tiny_model)
    np.testing.assert_array_equal(rows[0], rows[1])


@pytest.mark.parametrize(
    ("X", "message"),
    [
        ("photo.jpg", "got a single str.*Wrap it in a list"),
        (b"\x89PNG", "got a single bytes.*Wrap it in a list"),
        ([], "at least one image, got an empty sequence"),
        (np.zeros((5, 20)), "2-D array looks like a table.*Reshape your data"),
        (np.zeros(5), "1-D numeric array.*Reshape your data"),
    ],
)
def test_whole_call_errors(X, message, tiny_model):
    featurizer = PretrainedCNNFeaturizer(tiny_model)
    with pytest.raises(InvalidInputError, match=message):
        featurizer.fit(X)


def test_dataframe_with_several_columns_is_refused(tiny_model):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"path": ["a.jpg"], "age": [3]})
    with pytest.raises(InvalidInputError, match=r"one column of images, got 2 columns"):
        PretrainedCNNFeaturizer(tiny_model).fit(frame)


def test_unreadable_image_names_index_and_path(tmp_path, tiny_model, random_images):
    missing = str(tmp_path / "missing.jpg")
    featurizer = PretrainedCNNFeaturizer(tiny_model, n_jobs=1).fit([missing])
    with pytest.raises(OSError, match=r"image 1 \('.*missing\.jpg'\)"):
        featurizer.transform([random_images[0], missing])


# -- equivalences ------------------------------------------------------------------------


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_batch_size_and_threads_do_not_change_rows(random_images, n_jobs):
    X = np.concatenate([random_images, random_images[::-1]])  # 16 images
    params = {"model": "resnet18", "weights": None, "layer": ["layer2", "penultimate"]}
    reference = _fit_transform(X, batch_size=32, n_jobs=1, **params)
    result = _fit_transform(X, batch_size=1, n_jobs=n_jobs, **params)
    np.testing.assert_allclose(result, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result[:8], result[8:][::-1], atol=1e-5, rtol=0)


def test_penultimate_avg_equals_the_models_pooled_output(random_images):
    import torch

    from skfeat._backends import resolve_backend
    from skfeat._preprocess import normalize_batch, resize_and_crop

    features = _fit_transform(random_images, model="resnet18", weights=None)
    backend = resolve_backend("resnet18", None)
    model, _ = backend.load()
    model.fc = torch.nn.Identity()
    config = backend.data_config()
    batch = torch.stack([resize_and_crop(image, config) for image in random_images])
    with torch.no_grad():
        expected = model(normalize_batch(batch, config, torch.float32)).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5, rtol=1e-5)


def test_logits_equal_the_models_output(random_images, tiny_model):
    import torch

    from skfeat._preprocess import DataConfig, normalize_batch, resize_and_crop

    features = _fit_transform(random_images, model=tiny_model, layer="logits")
    config = DataConfig(256, 224)
    batch = torch.stack([resize_and_crop(image, config) for image in random_images])
    with torch.no_grad():
        expected = tiny_model(normalize_batch(batch, config, torch.float32)).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5, rtol=1e-5)


def test_user_module_is_not_modified(tiny_model, random_images):
    tiny_model.train()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    _fit_transform(random_images, model=tiny_model)
    assert tiny_model.training
    for key, value in tiny_model.state_dict().items():
        assert torch_equal(value, before[key]), key


def torch_equal(a, b):
    return bool((a == b).all())


def test_forward_stops_after_the_last_requested_layer(tiny_model, random_images):
    from skfeat._runtime._registry import get_model

    featurizer = PretrainedCNNFeaturizer(tiny_model, layer="stage1", n_jobs=1).fit(random_images)
    prepared = get_model(featurizer._plan.backend, _cpu(), featurizer._plan.classifier)
    calls = []
    for name in ("stage1", "stage2", "fc"):
        getattr(prepared.module, name).register_forward_hook(lambda *_, n=name: calls.append(n))
    featurizer.transform(random_images[:2])
    assert calls == ["stage1"]
    calls.clear()
    featurizer.set_params(layer="penultimate").fit(random_images).transform(random_images[:2])
    assert calls == ["stage1", "stage2"]  # the classifier's input is read, fc never runs
    calls.clear()
    featurizer.set_params(layer="logits").fit(random_images).transform(random_images[:2])
    assert calls == ["stage1", "stage2", "fc"]


def _cpu():
    import torch

    return torch.device("cpu")


# -- layers --------------------------------------------------------------------------------


def test_list_layers_gives_shapes_in_forward_order():
    layers = list_layers("resnet18")
    names = list(layers)
    assert names.index("layer1") < names.index("layer2") < names.index("layer4")
    assert layers["layer3"] == (256, 14, 14)
    assert layers["penultimate"] == (512,)
    assert names[-1] == "logits" and layers["logits"] == (1000,)
    assert "layer1.0.relu" not in layers  # runs twice per block: no single output


def test_layer_list_is_concatenated_in_order(tiny_model, random_images):
    both = _fit_transform(random_images, model=tiny_model, layer=["stage2", "stage1"])
    stage2 = _fit_transform(random_images, model=tiny_model, layer="stage2")
    stage1 = _fit_transform(random_images, model=tiny_model, layer="stage1")
    np.testing.assert_array_equal(both, np.hstack([stage2, stage1]))


def test_unknown_layer_suggests_close_names(tiny_model):
    with pytest.raises(UnknownLayerError, match=r"Layer 'stage3' not found.*Did you mean 'stage"):
        PretrainedCNNFeaturizer(tiny_model, layer="stage3").fit(np.zeros((1, 8, 8, 3)))
    with pytest.raises(
        UnknownLayerError, match=r"Did you mean 'layer4'.*list_layers\('resnet18'\)"
    ):
        PretrainedCNNFeaturizer("resnet18", weights=None, layer="layer5").fit(["a.jpg"])


# -- pooling -------------------------------------------------------------------------------


def _numpy_pool(name, maps):
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1).astype(np.float64)
    if name == "avg":
        return flat.mean(2)
    if name == "max":
        return flat.max(2)
    if name == "gem":
        return (np.clip(flat, 1e-6, None) ** 3).mean(2) ** (1 / 3)
    if name == "avgmax":
        return np.hstack([flat.mean(2), flat.max(2)])
    if name == "flatten":
        return maps.reshape(maps.shape[0], -1)
    raise AssertionError(name)


MAP_POOLINGS = [name for name in list_poolings() if name not in ("cls", "clsavg")]


@pytest.mark.parametrize("pooling", MAP_POOLINGS)
def test_each_pooling_matches_its_numpy_formula(pooling, tiny_model, random_images):
    maps = _fit_transform(random_images, model=tiny_model, layer="stage2", pooling="flatten")
    maps = maps.reshape(len(random_images), 32, 28, 28)
    pooled = _fit_transform(random_images, model=tiny_model, layer="stage2", pooling=pooling)
    np.testing.assert_allclose(pooled, _numpy_pool(pooling, maps), rtol=1e-5, atol=1e-6)


def test_callable_pooling_and_its_feature_names(tiny_model, random_images):
    def center(x):
        return x[:, :, x.shape[2] // 2, x.shape[3] // 2]

    featurizer = PretrainedCNNFeaturizer(tiny_model, layer="stage1", pooling=center, n_jobs=1)
    rows = featurizer.fit_transform(random_images)
    maps = _fit_transform(random_images, model=tiny_model, layer="stage1", pooling="flatten")
    np.testing.assert_allclose(rows, maps.reshape(-1, 16, 56, 56)[:, :, 28, 28], atol=1e-6)
    assert featurizer.get_feature_names_out()[3] == "stage1_center_0003"


def test_vectors_pass_through_or_get_a_clear_error(tiny_model, random_images):
    avg = _fit_transform(random_images, model=tiny_model, layer="penultimate", pooling="avg")
    for pooling in ("max", "flatten"):
        same = _fit_transform(random_images, model=tiny_model, layer="penultimate", pooling=pooling)
        np.testing.assert_array_equal(same, avg)
    with pytest.raises(ValueError, match=r"pooling='gem' needs a spatial map.*'penultimate'"):
        PretrainedCNNFeaturizer(tiny_model, pooling="gem").fit(random_images)


def test_l2_normalize_gives_unit_rows(tiny_model, random_images):
    plain = _fit_transform(random_images, model=tiny_model, layer="stage2")
    rows = _fit_transform(random_images, model=tiny_model, layer="stage2", normalize="l2")
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        rows, plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-5
    )


def test_feature_names_are_unique_and_say_layer_pooling_channel(tiny_model, random_images):
    featurizer = PretrainedCNNFeaturizer(tiny_model, layer=["stage1", "stage2"], pooling="avgmax")
    featurizer.fit(random_images)
    names = featurizer.get_feature_names_out()
    assert len(names) == featurizer.n_features_out_ == 2 * 16 + 2 * 32
    assert len(set(names)) == len(names)
    assert names[0] == "stage1_avgmax_0000" and names[-1] == "stage2_avgmax_0063"


def test_list_poolings_and_models():
    assert list(list_poolings()) == ["avg", "max", "gem", "avgmax", "cls", "clsavg", "flatten"]
    assert {"efficientnet_lite0", "resnet50", "mobilenet_v3_large"} <= set(list_models())
    assert list_models("lite") == ["efficientnet_lite0"]


# -- parameter validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"pooling": "mean"}, ValueError, r"'pooling' parameter .* must be a str among"),
        ({"normalize": "l1"}, ValueError, r"'normalize' parameter .* None or 'l2'. Got 'l1'"),
        ({"batch_size": 0}, ValueError, r"'batch_size' parameter .* int >= 1. Got 0"),
        ({"n_jobs": 0}, ValueError, r"'n_jobs' parameter .* non-zero int. Got 0"),
        ({"layer": []}, ValueError, r"'layer' parameter .* non-empty list"),
        ({"layer": ["stem", "stem"]}, ValueError, r"'layer' parameter .* distinct"),
        ({"device": 0}, TypeError, r"'device' parameter .* a str"),
        ({"progress": "yes"}, TypeError, r"'progress' parameter .* a bool"),
        ({"weights": 3}, TypeError, r"'weights' parameter"),
    ],
)
def test_parameter_errors_in_fit(params, error, message, tiny_model):
    featurizer = PretrainedCNNFeaturizer(tiny_model, **params)  # __init__ never raises
    with pytest.raises(error, match=message):
        featurizer.fit(np.zeros((1, 8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("pooling", "hint"),
    [("mean", "'avg'"), ("average", "'avg'"), ("Max", "'max'"), ("gem_pool", "'gem'")],
)
def test_pooling_near_misses_get_a_did_you_mean(pooling, hint, tiny_model):
    featurizer = PretrainedCNNFeaturizer(tiny_model, pooling=pooling)
    with pytest.raises(
        InvalidParameterError,
        match=rf"'pooling' parameter .* must be a str among .* Got '{pooling}' instead\. "
        rf"Did you mean {hint}",
    ):
        featurizer.fit(np.zeros((1, 8, 8, 3), np.uint8))


def test_unknown_model_suggests_close_names():
    with pytest.raises(
        UnknownModelError, match=r"Unknown model 'resnet51'.*Did you mean 'resnet50'"
    ):
        PretrainedCNNFeaturizer("resnet51").fit(["a.jpg"])
    with pytest.raises(
        UnknownModelError, match=r"'IMAGENET9' is not a weights tag .*'IMAGENET1K_V1'"
    ):
        PretrainedCNNFeaturizer("resnet18", weights="IMAGENET9").fit(["a.jpg"])


def test_weight_tags_are_accepted(random_images):
    featurizer = PretrainedCNNFeaturizer("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    assert featurizer.fit(random_images).data_config_.resize_size == 256
    assert PretrainedCNNFeaturizer("resnet50").fit(["a.jpg"]).data_config_.resize_size == 232


def test_bytes_and_pil_inputs_roundtrip(sample_photos, tiny_model):
    buffer = io.BytesIO()
    Image.fromarray(sample_photos[1]).save(buffer, format="PNG")
    rows = _fit_transform([buffer.getvalue(), sample_photos[1]], model=tiny_model)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_fit_reads_nothing_and_fit_transform_runs_the_backbone_once(
    monkeypatch, tiny_model, random_images
):
    import skfeat._runtime._engine as engine

    calls = []
    real = engine.featurize
    monkeypatch.setattr(
        engine, "featurize", lambda *args, **kw: calls.append(1) or real(*args, **kw)
    )
    featurizer = PretrainedCNNFeaturizer(tiny_model, n_jobs=1)
    featurizer.fit(["/no/such/image.jpg"])  # fit reads no image
    assert calls == []
    featurizer.fit_transform(random_images)
    assert calls == [1]
