"""Every layer of every family, pooled by its real layout: references from the model itself.

Each case runs a backbone with random weights on the same preprocessed images two
ways: through :class:`PretrainedCNNFeaturizer` (layer + named pooling), and by hand,
with a hook on the model and the pooling written out on the model's own tensors, or
the model's own API (timm's ``forward_head(..., pre_logits=True)``). A layer pooled over
the wrong axes (a channel-last Swin stage read as ``(C, H, W)`` gives 7 numbers per
image instead of 768) fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from skfeat import PretrainedCNNFeaturizer, list_layers
from skfeat._backends import resolve_backend
from skfeat._preprocess import normalize_batch, resize_and_crop
from skfeat.exceptions import InvalidParameterError

pytest.importorskip("timm")


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(2)]


def _model_tensors(model: str, images: list[np.ndarray], hooked: list[str]) -> dict[str, Any]:
    """The outputs of ``hooked`` modules (``"name:in"``: its input), and timm's pre-logits."""
    backend = resolve_backend(model, None)
    config = backend.data_config()
    module, _ = backend.load()
    batch = torch.stack([resize_and_crop(image, config) for image in images])
    x = normalize_batch(batch, config, torch.float32)
    captured: dict[str, Any] = {}
    handles = []
    for key in hooked:
        name, _, part = key.partition(":")
        sub = module.get_submodule(name)
        if part == "in":
            hook = sub.register_forward_pre_hook(
                lambda _m, i, key=key: captured.setdefault(key, i[0])
            )
        else:
            hook = sub.register_forward_hook(lambda _m, _i, o, key=key: captured.setdefault(key, o))
        handles.append(hook)
    with torch.no_grad():
        module(x)
        if model.startswith("timm:"):
            features = module.forward_features(x)
            captured["pre_logits"] = module.forward_head(features, pre_logits=True)
    for handle in handles:
        handle.remove()
    return {key: value.clone() for key, value in captured.items()}


def _gem(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.clamp(min=1e-6).pow(3).mean(dims).pow(1 / 3)


slow = pytest.mark.slow
# (model, layer, pooling, hooked modules, reference from the captured tensors)
CASES: list[Any] = [
    pytest.param(
        "swin_t",
        "norm",
        "avg",
        ["head:in"],
        lambda t: t["head:in"],
        id="swin_t-norm-avg=head-input",
    ),
    pytest.param(
        "swin_t",
        "features.5",
        "max",
        ["features.5"],
        lambda t: t["features.5"].amax((1, 2)),  # (H, W, C): 384 channels, not 14 rows
        id="swin_t-stage-max",
        marks=slow,
    ),
    pytest.param(
        "vit_b_16",
        "encoder.ln",
        "cls",
        ["heads.head:in"],
        lambda t: t["heads.head:in"],
        id="vit_b_16-ln-cls=head-input",
        marks=slow,
    ),
    pytest.param(
        "vit_b_16",
        "encoder.layers.encoder_layer_5",
        "avg",
        ["encoder.layers.encoder_layer_5"],
        lambda t: t["encoder.layers.encoder_layer_5"][:, 1:].mean(1),
        id="vit_b_16-block-avg",
        marks=slow,
    ),
    pytest.param(
        "convnext_tiny",
        "features.7",
        "gem",
        ["features.7"],
        lambda t: _gem(t["features.7"], (2, 3)),
        id="convnext_tiny-stage-gem",
        marks=slow,
    ),
    pytest.param(
        "maxvit_t",
        "blocks.3",
        "avg",
        ["blocks.3"],
        lambda t: t["blocks.3"].mean((2, 3)),
        id="maxvit_t-stage-avg",
        marks=slow,
    ),
    pytest.param(
        "timm:vit_tiny_patch16_224",
        "norm",
        "cls",
        [],
        lambda t: t["pre_logits"],
        id="timm-vit-norm-cls=pre-logits",
    ),
    pytest.param(
        "timm:vit_tiny_patch16_224",
        "blocks.7",
        "clsavg",
        ["blocks.7"],
        lambda t: torch.cat([t["blocks.7"][:, 0], t["blocks.7"][:, 1:].mean(1)], 1),
        id="timm-vit-block-clsavg",
    ),
    pytest.param(
        "timm:deit_tiny_distilled_patch16_224",
        "penultimate",
        "avg",
        ["norm"],
        lambda t: (t["norm"][:, 0] + t["norm"][:, 1]) / 2,  # timm's pre-logits of distilled DeiT
        id="deit-distilled-penultimate",
    ),
    pytest.param(
        "timm:deit_tiny_distilled_patch16_224",
        "norm",
        "gem",
        ["norm"],
        lambda t: _gem(t["norm"][:, 2:], (1,)),  # class and distillation tokens left out
        id="deit-distilled-norm-gem",
    ),
    pytest.param(
        "timm:vit_small_patch14_dinov2",
        "norm",
        "clsavg",
        ["norm"],
        lambda t: torch.cat([t["norm"][:, 0], t["norm"][:, 1:].mean(1)], 1),
        id="dinov2-norm-clsavg",
        marks=slow,
    ),
    pytest.param(
        "timm:vit_small_patch14_reg4_dinov2",
        "blocks.11",
        "avg",
        ["blocks.11"],
        lambda t: t["blocks.11"][:, 5:].mean(1),  # class token and 4 registers left out
        id="dinov2-reg4-block-avg",
        marks=slow,
    ),
    pytest.param(
        "timm:vit_small_patch14_reg4_dinov2",
        "penultimate",
        "avg",
        [],
        lambda t: t["pre_logits"],
        id="dinov2-reg4-penultimate=pre-logits",
        marks=slow,
    ),
    pytest.param(
        "timm:swin_tiny_patch4_window7_224",
        "norm",
        "avg",
        [],
        lambda t: t["pre_logits"],
        id="timm-swin-norm-avg=pre-logits",
        marks=slow,
    ),
    pytest.param(
        "timm:convnext_atto",
        "stages.3",
        "max",
        ["stages.3"],
        lambda t: t["stages.3"].amax((2, 3)),
        id="timm-convnext-stage-max",
    ),
    pytest.param(
        "timm:eva02_tiny_patch14_224",
        "penultimate",
        "avg",
        [],
        lambda t: t["pre_logits"],
        id="eva02-penultimate=pre-logits",
        marks=slow,
    ),
    pytest.param(
        "timm:vit_base_patch16_clip_224",
        "norm",
        "cls",
        [],
        lambda t: t["pre_logits"],
        id="clip-vit-norm-cls=pre-logits",
        marks=slow,
    ),
]


@pytest.mark.parametrize(("model", "layer", "pooling", "hooked", "reference"), CASES)
def test_pooling_by_layout_equals_the_models_own_tensors(
    model: str, layer: str, pooling: str, hooked: list[str], reference: Callable[..., Any]
):
    images = _images()
    featurizer = PretrainedCNNFeaturizer(
        model, weights=None, layer=layer, pooling=pooling, intermediate_norm="none"
    )  # the blocks as the model's tensors hold them; the final norm: test_intermediate_norm.py
    features = featurizer.set_params(n_jobs=1, precision="fp32").fit_transform(images)
    expected = reference(_model_tensors(model, images, hooked)).numpy()
    assert features.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(features, expected, rtol=0, atol=2e-5 * scale)


def test_token_avg_is_the_mean_of_the_patch_tokens_in_flatten():
    images = _images()
    model = "timm:deit_tiny_distilled_patch16_224"
    shape = list_layers(model, weights=None)["blocks.3"]
    assert shape == (198, 192)

    def features(pooling: str) -> np.ndarray:
        return PretrainedCNNFeaturizer(
            model, weights=None, layer="blocks.3", pooling=pooling, n_jobs=1
        ).fit_transform(images)

    tokens = features("flatten").reshape(len(images), *shape)  # prefix tokens first
    np.testing.assert_allclose(features("avg"), tokens[:, 2:].mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features("cls"), tokens[:, 0], rtol=1e-6, atol=1e-7)


def test_widths_and_names_are_known_before_any_image():
    featurizer = PretrainedCNNFeaturizer(
        "timm:vit_tiny_patch16_224", weights=None, layer=["blocks.10", "norm"], pooling="clsavg"
    ).fit(["never-read.jpg"])
    assert featurizer.n_features_out_ == 2 * 2 * 192
    names = featurizer.get_feature_names_out()
    assert names[0] == "blocks.10+norm_clsavg_0000" and names[-1] == "norm_clsavg_0383"
    cls = PretrainedCNNFeaturizer("timm:vit_tiny_patch16_224", weights=None, layer="blocks.11")
    assert cls.set_params(pooling="cls").fit(["x.jpg"]).get_feature_names_out()[42] == (
        "blocks.11+norm_cls_0042"
    )


def test_layouts_are_listed():
    layers = list_layers("timm:vit_small_patch14_reg4_dinov2", weights=None, details=True)
    block = layers["blocks.11"]
    assert (block.shape, block.layout, block.prefix_tokens, block.class_token) == (
        (1374, 384),  # 1 + 4 + 37 x 37 tokens: DINOv2's own 518 px input
        "tokens",
        5,
        True,
    )
    assert block.widths["cls"] == 384 and block.widths["flatten"] == 1374 * 384
    swin = list_layers("swin_t", weights=None, details=True)
    assert swin["features.7"].layout == "map_last" and swin["features.7"].widths["avg"] == 768


def test_class_token_poolings_where_there_is_none_say_why():
    with pytest.raises(
        InvalidParameterError,
        match=r"pooling='cls' reads the class token of a token layer, but layer 'layer4' is a "
        r"map \(C, H, W\) of shape \(512, 7, 7\)",
    ):
        PretrainedCNNFeaturizer("resnet18", weights=None, layer="layer4", pooling="cls").fit(["x"])
    with pytest.raises(
        InvalidParameterError,
        match=r"pooling='clsavg' needs a class token, but layer 'penultimate' gives vectors",
    ):
        PretrainedCNNFeaturizer("resnet18", weights=None, pooling="clsavg").fit(["x"])
