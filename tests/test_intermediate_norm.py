"""Transformer blocks as their authors read them: ``intermediate_norm``, block indices, DINOv2.

Each parity case runs a small random-weight model (4 blocks, 64 channels) through
:class:`PretrainedCNNFeaturizer` and through the model's own API on the same
preprocessed images: timm's ``forward_intermediates(norm=True/False)`` and
``get_intermediate_layers``, timm's ``fc_norm`` after pooling for EVA and BEiT, and
torchvision ViT's ``encoder.ln`` on its encoder layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skfeat import ActivationCache, PretrainedCNNFeaturizer
from skfeat._backends import resolve_backend
from skfeat._preprocess import normalize_batch, resize_and_crop
from skfeat.exceptions import InvalidParameterError, UnknownLayerError

from conftest import BatchLog

timm = pytest.importorskip("timm")

DEPTH, WIDTH = 4, 64
POOLINGS = ("cls", "avg", "max", "gem", "clsavg", "flatten")


def _seeded(build: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build()
    # Random LayerNorm weights: an identity norm would hide a norm applied or not.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _timm(name: str, **kwargs: Any) -> Any:
    return _seeded(
        lambda: timm.create_model(
            name, pretrained=False, depth=DEPTH, embed_dim=WIDTH, num_heads=2, **kwargs
        )
    )


def vit() -> Any:
    return _timm("vit_tiny_patch16_224", patch_size=32)


def dinov2() -> Any:
    # DINOv2 with 4 registers, its patch 14, at the 224 px of a user module's recipe
    return _timm("vit_small_patch14_reg4_dinov2", img_size=224)


def eva() -> Any:
    return _timm("eva02_tiny_patch14_224", patch_size=28)  # global_pool="avg": fc_norm


def beit() -> Any:
    return _timm("beit_base_patch16_224", patch_size=32)  # global_pool="avg": fc_norm


def torchvision_vit() -> Any:
    from torchvision.models import VisionTransformer

    return _seeded(
        lambda: VisionTransformer(
            image_size=224,
            patch_size=32,
            num_layers=DEPTH,
            num_heads=2,
            hidden_dim=WIDTH,
            mlp_dim=2 * WIDTH,
        )
    )


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]


def _inputs(model: Any, images: list[np.ndarray]) -> torch.Tensor:
    """The batch skfeat feeds ``model``: its own preprocessing, written out."""
    config = resolve_backend(model, "DEFAULT").data_config()
    batch = torch.stack([resize_and_crop(image, config) for image in images])
    return normalize_batch(batch, config, torch.float32)


def _features(model: Any, images: list[np.ndarray], **params: Any) -> np.ndarray:
    params.setdefault("n_jobs", 1)
    return PretrainedCNNFeaturizer(model, precision="fp32", **params).fit_transform(images)


def _pool(tokens: torch.Tensor, prefix: int, pooling: str) -> torch.Tensor:
    """The poolings written out on ``(N, T, C)`` tokens with ``prefix`` prefix tokens."""
    patches = tokens[:, prefix:]
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "avg":
        return patches.mean(1)
    if pooling == "max":
        return patches.amax(1)
    if pooling == "gem":
        return patches.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    if pooling == "clsavg":
        return torch.cat([tokens[:, 0], patches.mean(1)], 1)
    return tokens.flatten(1)


def _close(got: np.ndarray, expected: torch.Tensor) -> None:
    expected_array = expected.detach().numpy()
    assert got.shape == expected_array.shape
    np.testing.assert_allclose(got, expected_array, rtol=0, atol=1e-5)


# -- timm forward_intermediates: pre-norm ViTs -----------------------------------------------


@pytest.mark.parametrize(
    "build", [vit, pytest.param(dinov2, marks=pytest.mark.slow)], ids=["vit", "dinov2-reg4"]
)
@pytest.mark.parametrize("norm", [True, False], ids=["norm", "raw"])
def test_timm_forward_intermediates(build, norm):
    model = build()
    images = _images()
    with torch.no_grad():
        out = model.forward_intermediates(
            _inputs(model, images),
            indices=[1, 3],
            norm=norm,
            output_fmt="NLC",
            return_prefix_tokens=True,
            intermediates_only=True,
        )
    prefix = model.num_prefix_tokens
    policy = "final" if norm else "none"
    for index, (patches, prefix_tokens) in zip([1, 3], out, strict=True):
        tokens = torch.cat([prefix_tokens, patches], 1)
        for pooling in POOLINGS:
            got = _features(
                model, images, layer=f"blocks.{index}", pooling=pooling, intermediate_norm=policy
            )
            _close(got, _pool(tokens, prefix, pooling))


def test_dinov2_get_intermediate_layers_and_its_linear_probe():
    """DINOv2's linear input: class tokens of the last 4 normed blocks, mean patch of the last."""
    model = dinov2()
    images = _images()
    with torch.no_grad():
        layers = model.get_intermediate_layers(
            _inputs(model, images), n=4, return_prefix_tokens=True, norm=True
        )
    class_tokens = [prefix[:, 0] for _, prefix in layers]
    mean_patch = layers[-1][0].mean(1)  # patch tokens only: the 4 registers left out
    last4 = ["blocks.-4", "blocks.-3", "blocks.-2", "blocks.-1"]
    got = _features(model, images, layer=last4, pooling=["cls", "cls", "cls", "clsavg"])
    assert got.shape == (len(images), (4 + 1) * WIDTH)
    _close(got, torch.cat([*class_tokens, mean_patch], 1))
    _close(_features(model, images, layer=last4, pooling="cls"), torch.cat(class_tokens, 1))


def test_the_last_normed_block_is_the_final_norm():
    model = dinov2()
    images = _images()
    last = _features(model, images, layer="blocks.-1", pooling="clsavg")
    np.testing.assert_array_equal(last, _features(model, images, layer="norm", pooling="clsavg"))


# -- fc_norm models: the norm after pooling ----------------------------------------------------


@pytest.mark.parametrize(
    "build", [pytest.param(eva, marks=pytest.mark.slow), beit], ids=["eva02", "beit"]
)
def test_fc_norm_models_normalise_each_pooled_vector(build):
    model = build()
    assert isinstance(model.norm, torch.nn.Identity) and model.global_pool == "avg"
    images = _images()
    x = _inputs(model, images)
    with torch.no_grad():
        out = model.forward_intermediates(
            x, indices=[2, 3], output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
        )
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    prefix = model.num_prefix_tokens
    for index, (patches, prefix_tokens) in zip([2, 3], out, strict=True):
        tokens = torch.cat([prefix_tokens, patches], 1)
        for pooling in ("cls", "avg", "max", "gem"):
            with torch.no_grad():
                normed = model.fc_norm(_pool(tokens, prefix, pooling))
            layer = f"blocks.{index}"
            _close(_features(model, images, layer=layer, pooling=pooling), normed)
            raw = _features(model, images, layer=layer, pooling=pooling, intermediate_norm="none")
            _close(raw, _pool(tokens, prefix, pooling))  # timm's norm=True: the same here
        with torch.no_grad():
            both = torch.cat([model.fc_norm(tokens[:, 0]), model.fc_norm(patches.mean(1))], 1)
        _close(_features(model, images, layer=f"blocks.{index}", pooling="clsavg"), both)
    # the last block's mean patch token after fc_norm is the model's own embedding
    _close(_features(model, images, layer="blocks.-1", pooling="avg"), pre_logits)
    featurizer = PretrainedCNNFeaturizer(model, layer="blocks.2", pooling="avg").fit(images)
    assert featurizer.layer_norms_ == {"blocks.2": "fc_norm"}
    assert featurizer.get_feature_names_out()[0] == "blocks.2+fc_norm_avg_0000"


def test_fc_norm_refuses_what_gives_no_pooled_vector():
    model = eva()
    for pooling, what in [
        ("flatten", "pooling='flatten'"),
        (lambda x: x[:, 0], "a callable pooling"),
    ]:
        with pytest.raises(
            InvalidParameterError,
            match=rf"intermediate_norm='final' on layer 'blocks.1' applies the model's 'fc_norm', "
            rf"which normalises pooled vectors of 64 values, but {what} does not",
        ):
            PretrainedCNNFeaturizer(model, layer="blocks.1", pooling=pooling).fit(["x.jpg"])
        PretrainedCNNFeaturizer(
            model, layer="blocks.1", pooling=pooling, intermediate_norm="none"
        ).fit(["x.jpg"])


# -- torchvision ViT: encoder.ln ---------------------------------------------------------------


def test_torchvision_vit_blocks_get_encoder_ln():
    model = torchvision_vit()
    images = _images()
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(DEPTH)]
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
        for name in blocks
    ]
    head_input: list[torch.Tensor] = []
    handles.append(
        model.heads.head.register_forward_pre_hook(lambda _m, i: head_input.append(i[0]))
    )
    with torch.no_grad():
        model(_inputs(model, images))
        normed = {name: model.encoder.ln(tokens) for name, tokens in captured.items()}
    for handle in handles:
        handle.remove()
    for pooling in ("cls", "avg", "gem"):
        got = _features(model, images, layer=blocks[1], pooling=pooling)
        _close(got, _pool(normed[blocks[1]], 1, pooling))
        raw = _features(model, images, layer=blocks[1], pooling=pooling, intermediate_norm="none")
        _close(raw, _pool(captured[blocks[1]], 1, pooling))
    last = "encoder.layers.encoder_layer_-1"
    _close(_features(model, images, layer=last, pooling="cls"), head_input[0])
    featurizer = PretrainedCNNFeaturizer(model, layer=last, pooling="cls").fit(images)
    assert featurizer.layers_ == [blocks[-1]]
    assert featurizer.layer_norms_ == {blocks[-1]: "encoder.ln"}


# -- where the policy changes nothing ------------------------------------------------------------


def test_no_effect_outside_the_blocks_and_without_a_final_norm(tiny_model, random_images):
    model = vit()
    images = _images()
    for layer, pooling in [("norm", "cls"), ("penultimate", "avg"), ("blocks.1.mlp", "avg")]:
        final, none = (
            PretrainedCNNFeaturizer(
                model, layer=layer, pooling=pooling, intermediate_norm=policy, n_jobs=1
            ).fit(images)
            for policy in ("final", "none")
        )
        assert final.layer_norms_ == none.layer_norms_ == {layer: None}
        assert list(final.get_feature_names_out()) == list(none.get_feature_names_out())
        assert final.get_feature_names_out()[0] == f"{layer}_{pooling}_0000"
        np.testing.assert_array_equal(final.transform(images), none.transform(images))
    for policy in ("final", "none"):
        cnn = PretrainedCNNFeaturizer(tiny_model, layer="stage2", intermediate_norm=policy)
        assert cnn.fit(random_images).layer_norms_ == {"stage2": None}
    none = PretrainedCNNFeaturizer(model, layer="blocks.1", intermediate_norm="none").fit(images)
    assert none.layer_norms_ == {"blocks.1": None}
    assert none.get_feature_names_out()[0] == "blocks.1_avg_0000"


def test_the_norm_is_part_of_names_and_cache_entries():
    model = vit()
    images = _images()
    cache = ActivationCache()
    for policy in ("final", "none", "final"):
        cached = _features(model, images, layer="blocks.2", intermediate_norm=policy, cache=cache)
        np.testing.assert_array_equal(
            cached, _features(model, images, layer="blocks.2", intermediate_norm=policy)
        )
    assert not np.allclose(
        _features(model, images, layer="blocks.2"),
        _features(model, images, layer="blocks.2", intermediate_norm="none"),
    )


# -- block indices ------------------------------------------------------------------------------


def test_negative_indices_resolve_once_to_the_real_name():
    model = vit()
    images = _images()
    featurizer = PretrainedCNNFeaturizer(model, layer=["blocks.0", "blocks.-1"]).fit(images)
    assert featurizer.layers_ == ["blocks.0", "blocks.3"]
    assert featurizer.get_feature_names_out()[-1] == "blocks.3+norm_avg_0063"
    np.testing.assert_array_equal(
        _features(model, images, layer="blocks.-2"), _features(model, images, layer="blocks.2")
    )
    with pytest.raises(
        UnknownLayerError,
        match=r"Layer 'blocks.-5' is out of range: .* has 4 "
        r"layers blocks.0 to blocks.3, so negative indices go from blocks.-1 to "
        r"blocks.-4",
    ):
        PretrainedCNNFeaturizer(model, layer="blocks.-5").fit(images)
    with pytest.raises(
        InvalidParameterError,
        match=r"layer names 'blocks.3' and 'blocks.-1' are "
        r"the same layer, 'blocks.3'",
    ):
        PretrainedCNNFeaturizer(model, layer=["blocks.3", "blocks.-1"]).fit(images)
    cnn = PretrainedCNNFeaturizer("resnet18", weights=None, layer=["layer4.-1", "layer3.-2"])
    assert cnn.fit(["x.jpg"]).layers_ == ["layer4.1", "layer3.0"]  # any numbered run


# -- parameters and errors ----------------------------------------------------------------------


def test_parameters_are_checked():
    with pytest.raises(
        InvalidParameterError,
        match=r"'intermediate_norm' parameter .* must be one of 'final', 'none'",
    ):
        PretrainedCNNFeaturizer("resnet18", weights=None, intermediate_norm="pre").fit(["x.jpg"])
    with pytest.raises(InvalidParameterError, match=r"a list of one pooling per layer \(2 here"):
        PretrainedCNNFeaturizer(
            "resnet18", weights=None, layer=["layer3", "layer4"], pooling=["avg"]
        ).fit(["x.jpg"])


def test_token_poolings_on_a_layer_without_tokens_name_the_layers_that_have_them():
    with pytest.raises(
        InvalidParameterError,
        match=r"pooling='cls' needs a class token, but layer 'penultimate' gives vectors of 64 "
        r"values. Use pooling='avg' \(vectors pass through unchanged\) or read a token layer "
        r"with a class token: 'blocks.0', 'blocks.1', \.\.\., 'blocks.3', 'norm'\.",
    ):
        PretrainedCNNFeaturizer(vit(), pooling="cls").fit(["x.jpg"])
    with pytest.raises(
        InvalidParameterError,
        match=r"'encoder.layers.encoder_layer_0', "
        r"'encoder.layers.encoder_layer_1', \.\.\., 'encoder.layers.encoder_layer_3', "
        r"'encoder.ln'\.",
    ):
        PretrainedCNNFeaturizer(torchvision_vit(), pooling="clsavg").fit(["x.jpg"])
    with pytest.raises(
        InvalidParameterError,
        match=r"layer 'layer4' is a map .* or pick another "
        r"model: this one has no token layer with a class token\.",
    ):
        PretrainedCNNFeaturizer("resnet18", weights=None, layer="layer4", pooling="cls").fit(["x"])


# -- the DINOv2 grid in one pass -------------------------------------------------------------------


@pytest.mark.slow
def test_grid_over_last_blocks_and_poolings_runs_the_backbone_about_once(tmp_path):
    model = dinov2()
    log = BatchLog(tmp_path / "forward-log.txt")
    model.register_forward_pre_hook(log)
    rng = np.random.default_rng(1)
    images = list(rng.integers(0, 256, size=(18, 40, 40, 3), dtype=np.uint8))
    labels = np.arange(len(images)) % 2
    featurizer = PretrainedCNNFeaturizer(model, cache=ActivationCache(), n_jobs=1, batch_size=6)
    pipe = Pipeline(
        [("features", featurizer), ("scale", StandardScaler()), ("clf", LogisticRegression())]
    )
    last4 = ["blocks.-4", "blocks.-3", "blocks.-2", "blocks.-1"]
    grid = [
        {
            "features__layer": [["blocks.-1"], last4],
            "features__pooling": ["cls", "avg", "clsavg", "gem"],
        },
        {"features__layer": [last4], "features__pooling": [["cls", "cls", "cls", "clsavg"]]},
    ]
    search = GridSearchCV(pipe, grid, cv=3).fit(images, labels)
    assert len(search.cv_results_["params"]) == 9
    # 9 candidates x 3 folds + refit, and at most 1.1 passes asked: each image runs once
    assert log.images() == len(images)


def test_the_command_line_passes_the_policy():
    from skfeat._cli import build_parser

    args = build_parser().parse_args(
        ["extract", "photos", "-o", "out.npy", "--intermediate-norm", "none"]
    )
    assert vars(args)["featurizer.intermediate_norm"] == "none"
    left_out = build_parser().parse_args(["extract", "photos", "-o", "o.npy"])
    assert vars(left_out)["featurizer.intermediate_norm"] is None


@pytest.mark.parametrize("build", [eva, dinov2], ids=["fc_norm", "norm"])
def test_openvino_applies_the_policy_as_torch_does(build):
    """OpenVINO's graph gives the tokens; the final norm, before or after pooling, is applied."""
    pytest.importorskip("openvino")
    model = build()
    images = _images()
    params = {"layer": ["blocks.-2", "blocks.-1"], "pooling": ["avg", "clsavg"]}
    on_torch = _features(model, images, runtime="torch", **params)
    on_openvino = _features(model, images, runtime="openvino", **params)
    np.testing.assert_allclose(on_openvino, on_torch, atol=1e-4, rtol=0)
    raw = _features(model, images, runtime="openvino", intermediate_norm="none", **params)
    assert np.abs(raw - on_torch).max() > 1e-2  # the policy changes the numbers it checks
