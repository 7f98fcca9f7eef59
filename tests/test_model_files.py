"""Model files run by OpenVINO: ONNX, TensorFlow SavedModel, TFLite.

Each file is checked against the framework it came from: an ONNX export against the
torch model it was exported from (hooks on the same modules), a SavedModel and a
TFLite file against TensorFlow's own output of the same layer. The images go through
skfeat's own recipe on both sides, so only the backbone's run is compared.
"""

import importlib.util
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from skfeat import PretrainedCNNFeaturizer, list_layers
from skfeat._preprocess import DataConfig, normalize_batch, resize_and_crop, stack_images
from skfeat.exceptions import InvalidParameterError, UnknownLayerError, UnknownModelError

pytestmark = pytest.mark.extras
pytest.importorskip("openvino")

RECIPE = {"resize_size": 72, "crop_size": 64}


def _images(n=3, side=(80, 96)):
    return np.random.default_rng(0).integers(0, 256, (n, *side, 3), dtype=np.uint8)


def _batch(images, recipe):
    """The float32 (N, 3, H, W) batch skfeat feeds, from its own preprocessing."""
    config = DataConfig(**recipe)
    batch = stack_images([resize_and_crop(image, config) for image in images])
    return normalize_batch(batch, config, torch.float32)


def _export(model, args, path, **options):
    with warnings.catch_warnings():  # the exporter's deprecation and tracer chatter
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, path, **options)


def _close(got, expected):
    """Largest difference relative to the reference's largest value."""
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / np.abs(expected).max())


# -- ONNX, exported from torch ---------------------------------------------------------


def _tiny_resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, folded by the export
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    model = _tiny_resnet()
    path = tmp_path_factory.mktemp("onnx") / "resnet.onnx"
    _export(
        model,
        (torch.zeros(2, 3, 64, 64),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}},
    )
    return model, str(path)


def _torch_reference(model, batch):
    """layer4 avg-pooled, the classifier's input, and the logits, read with hooks."""
    seen = {}
    hooks = [
        model.layer4.register_forward_hook(lambda _m, _i, out: seen.update(layer4=out)),
        model.fc.register_forward_pre_hook(lambda _m, inputs: seen.update(fc_in=inputs[0])),
    ]
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {
        "layer4_avg": seen["layer4"].mean(dim=(2, 3)).numpy(),
        "layer4_flatten": seen["layer4"].flatten(1).numpy(),
        "penultimate": seen["fc_in"].numpy(),
        "logits": logits.numpy(),
    }


LAYER4 = "/layer4/layer4.0/relu_1/Relu_output_0"  # the output of layer4's only block


def test_onnx_matches_the_torch_model_it_came_from(resnet_onnx):
    model, path = resnet_onnx
    images = _images()
    expected = _torch_reference(model, _batch(images, RECIPE))
    featurizer = PretrainedCNNFeaturizer(
        path, preprocessing=RECIPE, layer=[LAYER4, "penultimate", "logits"], n_jobs=1
    )
    got = featurizer.fit_transform(images)
    assert featurizer.layer_shapes_ == {LAYER4: (512, 2, 2), "penultimate": (512,), "logits": (10,)}
    assert _close(got[:, :512], expected["layer4_avg"]) < 1e-4
    assert _close(got[:, 512:1024], expected["penultimate"]) < 1e-4
    assert _close(got[:, 1024:], expected["logits"]) < 1e-4
    flat = PretrainedCNNFeaturizer(path, preprocessing=RECIPE, layer=LAYER4, pooling="flatten")
    assert _close(flat.fit_transform(images), expected["layer4_flatten"]) < 1e-4


def test_onnx_layers_are_tensor_names_with_shapes_and_layouts(resnet_onnx):
    _, path = resnet_onnx
    layers = list_layers(path, preprocessing=RECIPE, details=True)
    assert layers[LAYER4].shape == (512, 2, 2) and layers[LAYER4].layout == "map"
    assert layers["/Flatten_output_0"].layout == "vector"
    assert list(layers)[-2:] == ["penultimate", "logits"]
    assert layers["penultimate"].shape == (512,) and layers["logits"].shape == (10,)
    assert list_layers(path, preprocessing={"resize_size": 36, "crop_size": 32})[LAYER4] == (
        512,
        1,
        1,
    )


def test_onnx_in_bf16_stays_close_to_fp32(resnet_onnx):
    _, path = resnet_onnx
    images = _images(2)
    params = {"preprocessing": RECIPE, "layer": "penultimate", "n_jobs": 1}
    fp32 = PretrainedCNNFeaturizer(path, precision="fp32", **params).fit_transform(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated bf16 on CPUs without it warns
        bf16 = PretrainedCNNFeaturizer(path, precision="bf16", **params).fit_transform(images)
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99


def test_onnx_featurizer_pickles_the_path_only(resnet_onnx, tmp_path):
    _, path = resnet_onnx
    images = _images(2)
    featurizer = PretrainedCNNFeaturizer(path, preprocessing=RECIPE, n_jobs=1).fit(images)
    blob = pickle.dumps(featurizer)
    assert len(blob) < 20_000  # the graph's weights are 20 MB
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.transform(images), featurizer.transform(images))


def test_onnx_rows_are_cached_by_file_content(resnet_onnx, tmp_path):
    from skfeat import ActivationCache

    _, path = resnet_onnx
    images = _images(2)
    cache = ActivationCache()
    params = {"preprocessing": RECIPE, "layer": "logits", "cache": cache, "n_jobs": 1}
    first = PretrainedCNNFeaturizer(path, **params).fit_transform(images)
    again = PretrainedCNNFeaturizer(path, **params).fit_transform(images)
    np.testing.assert_array_equal(first, again)
    assert cache.stats()["hits"] >= 2


def test_openvino_ir_gives_the_rows_of_its_onnx_source(resnet_onnx, tmp_path):
    import openvino as ov

    _, path = resnet_onnx
    xml = tmp_path / "resnet.xml"
    ov.save_model(ov.Core().read_model(path), str(xml), compress_to_fp16=False)
    images = _images(2)
    params = {"preprocessing": RECIPE, "layer": [LAYER4, "penultimate"], "n_jobs": 1}
    expected = PretrainedCNNFeaturizer(path, **params).fit_transform(images)
    got = PretrainedCNNFeaturizer(str(xml), **params).fit_transform(images)
    assert _close(got, expected) < 1e-6


@pytest.mark.slow
def test_a_replaced_file_is_computed_again(tmp_path):
    from skfeat import ActivationCache

    model, path = _tiny_resnet(), str(tmp_path / "model.onnx")
    images, cache = _images(2), ActivationCache()
    params = {"preprocessing": RECIPE, "layer": "logits", "cache": cache, "n_jobs": 1}
    _export(model, (torch.zeros(2, 3, 64, 64),), path, dynamo=False)
    first = PretrainedCNNFeaturizer(path, **params).fit_transform(images)
    with torch.no_grad():  # twice the classifier: twice the logits
        model.fc.weight.mul_(2.0)
        model.fc.bias.mul_(2.0)
    _export(model, (torch.zeros(2, 3, 64, 64),), path, dynamo=False)
    second = PretrainedCNNFeaturizer(path, **params).fit_transform(images)
    assert _close(second, 2.0 * first) < 1e-5


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory):
    timm = pytest.importorskip("timm")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=7
    ).eval()
    path = tmp_path_factory.mktemp("onnx") / "vit.onnx"
    _export(
        model,
        (torch.zeros(2, 3, 64, 64),),
        str(path),
        dynamo=False,
        input_names=["image"],
        dynamic_axes={"image": {0: "n"}},
    )
    return model, str(path)


def test_onnx_vit_penultimate_and_logits_match_timm(vit_onnx):
    model, path = vit_onnx
    images = _images()
    with torch.no_grad():
        batch = _batch(images, RECIPE)
        embedding = model.forward_head(model.forward_features(batch), pre_logits=True)
        logits = model(batch)
    featurizer = PretrainedCNNFeaturizer(
        path, preprocessing=RECIPE, layer=["penultimate", "logits"], n_jobs=1
    )
    got = featurizer.fit_transform(images)
    assert _close(got[:, :192], embedding.numpy()) < 1e-4
    assert _close(got[:, 192:], logits.numpy()) < 1e-4


def test_onnx_vit_tokens_of_unknown_layout_refuse_spatial_pooling(vit_onnx):
    _, path = vit_onnx
    layers = list_layers(path, preprocessing=RECIPE, details=True)
    tokens = [name for name, info in layers.items() if info.shape == (17, 192)]
    assert tokens and all(layers[name].layout == "unknown" for name in tokens)
    with pytest.raises(InvalidParameterError, match="cannot tell its channels"):
        PretrainedCNNFeaturizer(path, preprocessing=RECIPE, layer=tokens[-1]).fit(_images(1))


# -- TensorFlow: a SavedModel and a TFLite file of one Keras model ---------------------

_TF_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    out = sys.argv[1]
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    c2 = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                                name="c2")(x)
    pooled = tf.keras.layers.GlobalAveragePooling2D(name="gap")(c2)
    logits = tf.keras.layers.Dense(5, name="fc")(pooled)
    model = tf.keras.Model(inputs, logits)
    model.export(os.path.join(out, "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(os.path.join(out, "model.tflite"), "wb") as handle:
        handle.write(converter.convert())
    batch = np.load(os.path.join(out, "batch.npy"))  # skfeat's recipe, NHWC
    probe = tf.keras.Model(inputs, [c2, pooled, logits])
    c2_out, pooled_out, logits_out = probe.predict(batch, verbose=0)
    np.savez(os.path.join(out, "expected.npz"), c2=c2_out, pooled=pooled_out, logits=logits_out)
    """
)
TF_RECIPE = {"resize_size": 36, "crop_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3}


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory):
    if importlib.util.find_spec("tensorflow") is None:  # not imported here: it runs apart
        pytest.skip("tensorflow not installed")
    out = tmp_path_factory.mktemp("tf")
    images = _images(4, side=(40, 50))
    np.save(out / "batch.npy", _batch(images, TF_RECIPE).permute(0, 2, 3, 1).numpy())
    done = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, images, dict(np.load(out / "expected.npz"))


@pytest.mark.slow
def test_saved_model_penultimate_and_logits_match_tensorflow(tf_files):
    out, images, expected = tf_files
    featurizer = PretrainedCNNFeaturizer(
        str(out / "saved_model"), preprocessing=TF_RECIPE, layer=["penultimate", "logits"]
    )
    got = featurizer.fit_transform(images)
    assert _close(got[:, :16], expected["pooled"]) < 1e-4
    assert _close(got[:, 16:], expected["logits"]) < 1e-4


@pytest.mark.slow
def test_saved_model_lists_its_outputs_only(tf_files):
    out, _, _ = tf_files
    layers = list_layers(str(out / "saved_model"), preprocessing=TF_RECIPE)
    assert layers == {"output_0": (5,), "penultimate": (16,), "logits": (5,)}


@pytest.mark.slow
def test_tflite_channel_last_map_matches_tensorflow(tf_files):
    out, images, expected = tf_files
    path = str(out / "model.tflite")
    layers = list_layers(path, preprocessing=TF_RECIPE, details=True)
    (c2,) = [name for name in layers if "c2" in name and "Relu" in name]
    assert layers[c2].shape == (16, 16, 16) and layers[c2].layout == "map_last"
    names = list(layers)  # the file's own order, aliases last
    assert names.index(c2) < names.index("functional_1/gap_1/Mean")
    assert names[-2:] == ["penultimate", "logits"]
    got = PretrainedCNNFeaturizer(
        path, preprocessing=TF_RECIPE, layer=[c2, "penultimate", "logits"]
    ).fit_transform(images)
    assert _close(got[:, :16], expected["c2"].mean(axis=(1, 2))) < 1e-4
    assert _close(got[:, 16:32], expected["pooled"]) < 1e-4
    assert _close(got[:, 32:], expected["logits"]) < 1e-4
    # skfeat's flatten keeps (C, H, W) order on every layout: TF's (H, W, C), moved.
    flat = PretrainedCNNFeaturizer(path, preprocessing=TF_RECIPE, layer=c2, pooling="flatten")
    channel_first = expected["c2"].transpose(0, 3, 1, 2).reshape(len(images), -1)
    assert _close(flat.fit_transform(images), channel_first) < 1e-4


@pytest.mark.slow
def test_tf_graph_fixed_to_its_size_says_the_crop_to_use(tf_files):
    out, _, _ = tf_files
    with pytest.raises(UnknownModelError, match=r"takes 32x32 images, but the recipe crops to 64"):
        list_layers(str(out / "model.tflite"), preprocessing=RECIPE)


# -- errors ----------------------------------------------------------------------------


def test_model_file_without_preprocessing_says_to_pass_it(resnet_onnx):
    _, path = resnet_onnx
    with pytest.raises(InvalidParameterError, match="does not say how its images were prepared"):
        PretrainedCNNFeaturizer(path).fit(_images(1))


def test_model_file_refuses_runtime_torch(resnet_onnx):
    _, path = resnet_onnx
    with pytest.raises(InvalidParameterError, match="runtime='torch' cannot run the ONNX file"):
        PretrainedCNNFeaturizer(path, preprocessing=RECIPE, runtime="torch").fit(_images(1))


def test_model_file_refuses_weights(resnet_onnx):
    _, path = resnet_onnx
    with pytest.raises(UnknownModelError, match="the file carries its weights"):
        PretrainedCNNFeaturizer(path, preprocessing=RECIPE, weights="x.pth").fit(_images(1))


def test_missing_model_file_and_non_savedmodel_folder(tmp_path):
    with pytest.raises(UnknownModelError, match="does not exist"):
        list_layers(str(tmp_path / "absent.onnx"), preprocessing=RECIPE)
    with pytest.raises(UnknownModelError, match=r"folder without saved_model\.pb"):
        list_layers(tmp_path, preprocessing=RECIPE)


def test_unreadable_model_file_says_so(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(UnknownModelError, match="OpenVINO cannot read the ONNX file"):
        list_layers(str(path), preprocessing=RECIPE)


def test_invalid_preprocessing_says_what_it_needs(resnet_onnx):
    _, path = resnet_onnx
    with pytest.raises(InvalidParameterError, match="does not say how its images were prepared"):
        list_layers(path, preprocessing={"crop_size": 64})
    with pytest.raises(InvalidParameterError, match="preprocessing"):
        list_layers(path, preprocessing={"resize_size": 72, "crop_size": 64, "mean": (0.5,)})


def test_two_heads_make_penultimate_ambiguous(tmp_path):
    pytest.importorskip("onnx")

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Linear(4, 3)
            self.head_dist = torch.nn.Linear(4, 3)

        def forward(self, x):
            pooled = self.conv(x).mean(dim=(2, 3))
            return (self.head(pooled) + self.head_dist(pooled.flip(1))) / 2

    path = tmp_path / "two_heads.onnx"
    _export(
        TwoHeads().eval(),
        (torch.zeros(2, 3, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["image"],
        dynamic_axes={"image": {0: "n"}},
    )
    recipe = {"resize_size": 32, "crop_size": 32}
    assert "penultimate" not in list_layers(str(path), preprocessing=recipe)
    with pytest.raises(UnknownLayerError, match=r"'penultimate' is ambiguous.* 2 linear layers"):
        PretrainedCNNFeaturizer(str(path), preprocessing=recipe).fit(_images(1))


def test_the_command_line_extracts_from_a_model_file(resnet_onnx, tmp_path, capsys):
    import json

    from PIL import Image

    from skfeat._cli import main

    _, path = resnet_onnx
    folder = tmp_path / "photos"
    folder.mkdir()
    images = _images()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "features.npy"
    args = ["extract", str(folder), "-o", str(out), "--model", path, "--layer", "penultimate"]
    assert main([*args, "--preprocessing", json.dumps(RECIPE), "-q"]) == 0
    expected = PretrainedCNNFeaturizer(path, preprocessing=RECIPE, layer="penultimate")
    np.testing.assert_allclose(np.load(out), expected.fit_transform(images), atol=1e-6)
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "other.npy")]) == 1  # no recipe: refused
    assert "does not say how its images were prepared" in capsys.readouterr().err
