"""Keras applications on Keras's torch backend, checked against Keras's own predict."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from skfeat._backends._keras import import_keras
from skfeat.exceptions import MissingDependencyError

try:  # chooses the torch backend, as skfeat does, when Keras is not imported yet
    keras = import_keras("tests/test_keras.py")
except MissingDependencyError as why:
    pytest.skip(str(why), allow_module_level=True)

import torch
from sklearn.base import clone

from skfeat import PretrainedCNNFeaturizer, list_layers, list_models
from skfeat._backends import _keras
from skfeat._backends._keras import KerasBackend, keras_data_config
from skfeat._preprocess import normalize_batch
from skfeat.exceptions import UnknownModelError, WeightsUnavailableError

SIDE = 96
MID = "block_6_expand_relu"


def small_mobilenet_v2(**kwargs):
    """MobileNetV2 at width 0.35 and 96 px: Keras's smallest ImageNet configuration."""
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(SIDE, SIDE, 3), **kwargs)


def tiny_vgg(weights=None, classifier_activation="softmax"):
    """A VGG-like net whose dense head fixes the input size, as VGG16's does."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="block1_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, outputs)
    if weights is not None:
        model.load_weights(weights)
    return model


# Their preprocess_input is found through the module they are defined in, as for
# Keras's own applications.
small_mobilenet_v2.__module__ = keras.applications.MobileNetV2.__module__
tiny_vgg.__module__ = keras.applications.VGG16.__module__


@pytest.fixture
def small_apps(monkeypatch):
    """The two small models, as keras.applications names (each its own label and caches)."""
    monkeypatch.setattr(keras.applications, "SmallMobileNetV2", small_mobilenet_v2, raising=False)
    monkeypatch.setattr(keras.applications, "TinyVGG", tiny_vgg, raising=False)


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8)


def keras_outputs(model, names, pixels, preprocess):
    """What Keras itself computes for ``names``: keras.Model(...).predict on its recipe."""
    outputs = [model.output if name == "logits" else model.get_layer(name).output for name in names]
    probe = keras.Model(model.input, outputs)
    predicted = probe.predict(preprocess(pixels.astype("float32")), verbose=0)
    return [np.asarray(o) for o in (predicted if len(names) > 1 else [predicted])]


def assert_close_blocks(ours, blocks):
    """Each block of columns equal to Keras's within 1e-4 of that block's largest value."""
    start = 0
    for block in blocks:
        scale = float(np.abs(block).max())
        assert scale > 0  # not vacuously equal
        got = ours[:, start : start + block.shape[1]]
        np.testing.assert_allclose(got, block, rtol=0, atol=1e-4 * scale)
        start += block.shape[1]
    assert start == ours.shape[1]


def test_features_equal_keras_predict_of_the_same_layers(small_apps, pixels):
    names = [MID, "global_average_pooling2d", "logits"]
    featurizer = PretrainedCNNFeaturizer(
        "keras:SmallMobileNetV2",
        weights=None,
        layer=[MID, "penultimate", "logits"],
        runtime="torch",
        n_jobs=1,
    )
    ours = featurizer.fit_transform(pixels)  # 96 px already: the squash resize keeps them
    model = KerasBackend("SmallMobileNetV2", None)._build_keras(None)
    mid, embedding, logits = keras_outputs(
        model, names, pixels, keras.applications.mobilenet_v2.preprocess_input
    )
    expected = [mid.mean(axis=(1, 2)), embedding, logits]
    assert ours.shape == (3, 96 + 1280 + 1000)
    assert_close_blocks(ours, expected)


def test_logits_are_before_the_softmax(small_apps, pixels):
    logits = PretrainedCNNFeaturizer(
        "keras:SmallMobileNetV2", weights=None, layer="logits", runtime="torch"
    ).fit_transform(pixels)
    softmax = KerasBackend("SmallMobileNetV2", None)._application()(weights=None)
    assert softmax.layers[-1].activation.__name__ == "softmax"  # Keras's default top
    assert not np.allclose(logits.sum(axis=1), 1.0, atol=1e-3)


def test_layers_are_keras_names_with_channel_last_maps(small_apps):
    layers = list_layers("keras:SmallMobileNetV2", weights=None, details=True)
    assert layers[MID].shape == (12, 12, 96)
    assert layers[MID].layout == "map_last"
    assert layers[MID].widths["avgmax"] == 192
    assert layers["penultimate"].shape == (1280,)
    assert layers["logits"].shape == (1000,)
    assert "input_layer" not in layers and "keras_model" not in layers


def test_a_head_that_fixes_the_input_size_still_has_its_map_layouts(small_apps):
    # The dense head refuses other sizes, so the maps are seen at 32 px only; their
    # layout comes from the declared channels-last stages.
    layers = list_layers("keras:TinyVGG", weights=None, details=True)
    assert (layers["block1_pool"].shape, layers["block1_pool"].layout) == ((16, 16, 8), "map_last")
    assert (layers["penultimate"].shape, layers["logits"].shape) == ((16,), (10,))


def test_random_init_is_the_same_in_every_build(small_apps):
    backend = KerasBackend("SmallMobileNetV2", None)
    keras.layers.GlobalAveragePooling2D()  # takes the auto name a new process would give
    first, second = backend._build_keras(None), backend._build_keras(None)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert "global_average_pooling2d" in [layer.name for layer in first.layers]
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def save_legacy_h5(model, path):
    """The format of Keras's own ImageNet weight files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".h5"])
def test_a_keras_weights_file_loads(small_apps, pixels, tmp_path, suffix):
    trained = small_mobilenet_v2(weights=None, classifier_activation=None)  # unseeded
    path = tmp_path / f"model{suffix}"
    save = {".weights.h5": trained.save_weights, ".keras": trained.save}
    save.get(suffix, lambda path: save_legacy_h5(trained, path))(path)
    ours = PretrainedCNNFeaturizer(
        "keras:SmallMobileNetV2", weights=str(path), layer="penultimate", runtime="torch"
    ).fit_transform(pixels)
    embedding = trained.layers[-2].name  # auto-named: its suffix depends on earlier models
    expected = keras_outputs(
        trained, [embedding], pixels, keras.applications.mobilenet_v2.preprocess_input
    )
    assert_close_blocks(ours, expected)


def test_a_weights_file_of_another_model_is_refused(small_apps, tmp_path, pixels):
    path = tmp_path / "vgg.weights.h5"
    tiny_vgg().save_weights(path)
    featurizer = PretrainedCNNFeaturizer("keras:SmallMobileNetV2", weights=str(path))
    with pytest.raises(
        WeightsUnavailableError,
        match=r"Cannot load the Keras weights file .* could not be loaded.*with its top",
    ):
        featurizer.fit_transform(pixels)


def test_offline_imagenet_weights_fail_fast(small_apps, monkeypatch, tmp_path, pixels):
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # an empty Keras cache
    monkeypatch.setattr(_keras, "unreachable", lambda url: "URLError: no network here")
    featurizer = PretrainedCNNFeaturizer("keras:SmallMobileNetV2", weights="imagenet")
    with pytest.raises(
        WeightsUnavailableError,
        match=r"ImageNet weights of Keras application 'SmallMobileNetV2': the machine seems "
        r"offline \(storage.googleapis.com did not answer: URLError: no network here\), and "
        r"they are not in Keras's cache .*Pass a local Keras weights file",
    ):
        featurizer.fit_transform(pixels)
    assert not list(tmp_path.rglob("*.h5"))  # nothing half-downloaded


@pytest.mark.parametrize(
    ("module", "order", "mean", "std"),
    [
        ("resnet50", "BGR", np.array([103.939, 116.779, 123.68]) / 255, (1 / 255,) * 3),
        ("mobilenet_v2", "RGB", (0.5,) * 3, (0.5,) * 3),
        ("densenet", "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ("efficientnet", "RGB", (0.0,) * 3, (1 / 255,) * 3),
    ],
    ids=["caffe", "tf", "torch", "inside-the-model"],
)
def test_recipes_reproduce_keras_preprocess_input(module, order, mean, std):
    preprocess = getattr(keras.applications, module).preprocess_input
    config = keras_data_config(preprocess, (None, 224, 224, 3), module)
    assert (config.channel_order, config.crop_mode, config.crop_size) == (order, "squash", 224)
    np.testing.assert_allclose(config.mean, mean, atol=1e-9)
    np.testing.assert_allclose(config.std, std, atol=1e-9)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 7, 7, 3), dtype=np.uint8)
    ours = normalize_batch(torch.from_numpy(pixels).permute(0, 3, 1, 2), config, torch.float32)
    expected = np.asarray(preprocess(pixels.astype("float32")))
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=1e-4, rtol=0)


def test_a_preprocessing_that_is_not_per_channel_affine_is_refused():
    with pytest.raises(UnknownModelError, match=r"cannot reproduce it"):
        keras_data_config(lambda x: x**2, (None, 224, 224, 3), "keras:Squared")


def test_fitted_featurizer_pickles_without_weights_and_clones(small_apps, pixels):
    featurizer = PretrainedCNNFeaturizer(
        "keras:SmallMobileNetV2", weights=None, layer=MID, runtime="torch"
    ).fit(pixels)
    expected = featurizer.transform(pixels)
    payload = pickle.dumps(featurizer)
    assert len(payload) < 20_000
    np.testing.assert_array_equal(pickle.loads(payload).transform(pixels), expected)
    np.testing.assert_array_equal(clone(featurizer).fit_transform(pixels), expected)
    assert featurizer.get_feature_names_out()[0] == f"{MID}_avg_0000"


def test_listing_and_unknown_names():
    names = list_models("keras")
    assert {"keras:ResNet50", "keras:InceptionV3", "keras:EfficientNetB0"} <= set(names)
    assert "keras:NASNetMobile" not in names  # Keras does not build it on torch
    assert set(names) <= set(list_models())
    with pytest.raises(
        UnknownModelError, match=r"no model 'resnet50'\. Did you mean 'keras:ResNet50'"
    ):
        PretrainedCNNFeaturizer("keras:resnet50").fit(["a.jpg"])
    with pytest.raises(UnknownModelError, match=r"does not run on Keras's torch backend"):
        PretrainedCNNFeaturizer("keras:NASNetMobile").fit(["a.jpg"])
    with pytest.raises(UnknownModelError, match=r"weights='foo' is not valid for Keras"):
        PretrainedCNNFeaturizer("keras:ResNet50", weights="foo").fit(["a.jpg"])


def test_listing_all_sources_leaves_out_keras_on_another_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    names = list_models()
    assert "resnet50" in names
    assert not [name for name in names if name.startswith("keras:")]
    with pytest.raises(MissingDependencyError, match=r"'jax' backend"):
        list_models("keras")


def test_a_keras_model_object_is_refused_with_the_name_to_use():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(UnknownModelError, match=r"model is a Keras Sequential.*'keras:ResNet50'"):
        PretrainedCNNFeaturizer(model).fit(["a.jpg"])


def test_keras_on_another_backend_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(
        MissingDependencyError,
        match=r"needs Keras on its torch backend, but Keras was imported with the "
        r"'tensorflow' backend\. Set KERAS_BACKEND=torch before Keras is first imported",
    ):
        PretrainedCNNFeaturizer("keras:ResNet50").fit(["a.jpg"])


def test_another_backend_asked_for_before_import_is_refused(monkeypatch):
    monkeypatch.delitem(sys.modules, "keras")  # as before Keras's first import
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(
        MissingDependencyError, match=r"but KERAS_BACKEND is 'jax'\. Set KERAS_BACKEND=torch"
    ):
        import_keras("model='keras:ResNet50'")


@pytest.mark.slow
def test_keras_is_imported_on_torch_when_skfeat_imports_it_first():
    script = (
        "import os, skfeat; os.environ.pop('KERAS_BACKEND', None)\n"
        "print(skfeat.list_models('keras')[:1])\n"
        "import keras; print(keras.backend.backend())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["['keras:ConvNeXtBase']", "torch"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "side", "order"),
    [("ResNet50", 224, "BGR"), ("InceptionV3", 299, "RGB"), ("EfficientNetB3", 300, "RGB")],
)
def test_named_applications_take_their_own_size_and_recipe(name, side, order):
    config = PretrainedCNNFeaturizer(f"keras:{name}", weights=None).fit(["a.jpg"]).data_config_
    assert (config.crop_size, config.resize_size, config.channel_order) == (side, side, order)


@pytest.mark.slow
def test_resnet50_features_equal_keras_predict():
    pixels = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    layers = ["conv4_block6_out", "penultimate", "logits"]
    ours = PretrainedCNNFeaturizer(
        "keras:ResNet50", weights=None, layer=layers, pooling="max", runtime="torch"
    ).fit_transform(pixels)
    model = KerasBackend("ResNet50", None)._build_keras(None)
    mid, embedding, logits = keras_outputs(
        model,
        ["conv4_block6_out", "avg_pool", "logits"],
        pixels,
        keras.applications.resnet50.preprocess_input,
    )
    assert_close_blocks(ours, [mid.max(axis=(1, 2)), embedding, logits])


@pytest.mark.slow
def test_tensorflow_keras_imported_first_is_refused_with_the_fix():
    script = (
        "import os; os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
        "import keras, skfeat\n"
        "skfeat.PretrainedCNNFeaturizer('keras:ResNet50').fit(['a.jpg'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0
    assert (
        "Keras was imported with the 'tensorflow' backend. Set KERAS_BACKEND=torch" in done.stderr
    )
