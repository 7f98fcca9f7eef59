"""Users' own torch modules: preprocessing, timm models as modules, heads, outputs.

Each feature is checked against the module run by hand on the same pixels: the
recipe applied with torchvision's functional transforms, the layer read with a hook
or the model's own method.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from skfeat import PretrainedCNNFeaturizer, list_layers
from skfeat._backends._recipe import resolve_preprocessing
from skfeat._preprocess import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from skfeat.exceptions import InvalidParameterError, ModelTraceError, UnknownLayerError

timm = pytest.importorskip("timm")


def _featurize(model, images, **params):
    params.setdefault("n_jobs", 1)
    return PretrainedCNNFeaturizer(model, **params).fit_transform(images)


def _by_hand(images, resize, crop, mean=IMAGENET_MEAN, std=IMAGENET_STD, mode="bilinear"):
    """The recipe applied with torchvision alone: (N, 3, crop, crop) float32."""
    out = []
    for image in images:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        tensor = F.resize(tensor, [resize], interpolation=InterpolationMode(mode), antialias=True)
        tensor = F.center_crop(tensor, [crop, crop]).float() / 255.0
        out.append(F.normalize(tensor, list(mean), list(std)))
    return torch.stack(out)


def _read(module, name, batch, *, reads_input=False):
    """One submodule's output (or input) on ``batch``, through a hook."""
    seen = {}
    sub = dict(module.named_modules())[name]
    if reads_input:
        handle = sub.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("x", inputs[0]))
    else:
        handle = sub.register_forward_hook(lambda _m, _i, output: seen.setdefault("x", output))
    with torch.no_grad():
        module.eval()(batch)
    handle.remove()
    return seen["x"]


# -- preprocessing ------------------------------------------------------------------


def test_preprocessing_dict_is_the_recipe_fed_to_the_module(tiny_model, random_images):
    recipe = {"resize_size": 40, "crop_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    featurizer = PretrainedCNNFeaturizer(tiny_model, preprocessing=recipe, n_jobs=1)
    features = featurizer.fit_transform(random_images)
    assert featurizer.data_config_ == DataConfig(40, 32, "bilinear", (0.5,) * 3, (0.25,) * 3)
    batch = _by_hand(random_images, 40, 32, (0.5,) * 3, (0.25,) * 3)
    expected = _read(tiny_model, "fc", batch, reads_input=True).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-4)
    assert list_layers(tiny_model, preprocessing=recipe)["stage2"] == (32, 4, 4)


def test_timm_data_config_form_equals_the_same_recipe_in_skfeat_form():
    own = lambda: DataConfig(256, 224)  # noqa: E731
    timm_form = {
        "input_size": (3, 299, 299),
        "crop_pct": 299 / 342,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_mode": "center",
    }
    skfeat_form = {"resize_size": 342, "crop_size": 299, "interpolation": "bicubic"}
    skfeat_form |= {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert resolve_preprocessing(timm_form, own, "f") == resolve_preprocessing(
        skfeat_form, own, "f"
    )


def test_keys_left_out_keep_the_source_recipe_and_its_crop_ratio():
    own = lambda: DataConfig(256, 224, "bicubic", (0.1,) * 3, (0.2,) * 3)  # noqa: E731
    config = resolve_preprocessing({"crop_size": 299}, own, "f")
    assert (config.resize_size, config.crop_size) == (341, 299)  # floor(299 * 256 / 224)
    assert (config.interpolation, config.mean, config.std) == ("bicubic", (0.1,) * 3, (0.2,) * 3)
    timm_config = resolve_preprocessing({"input_size": (3, 448, 448)}, own, "f")
    assert (timm_config.resize_size, timm_config.crop_size) == (512, 448)
    assert resolve_preprocessing({"mean": (0.5,) * 3}, own, "f").crop_size == 224


def test_timm_data_config_of_a_timm_model_is_accepted_as_it_is():
    model = timm.create_model("resnet18", pretrained=False)
    config = timm.data.resolve_data_config(model=model)
    resolved = resolve_preprocessing(config, lambda: DataConfig(1, 1), "f")
    assert resolved == PretrainedCNNFeaturizer("timm:resnet18").fit([0]).data_config_


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        ("imagenet", r"must be None \(the model's own recipe\), a dict .*Got 'imagenet'"),
        ({"crop": 224}, r"unknown key 'crop'\. Did you mean 'crop_pct', 'crop_size'"),
        ({"input_size": (3, 224, 224), "crop_size": 224}, r"mixes timm's keys \['input_size'\]"),
        ({"input_size": 224}, r"input_size=224 must be timm's \(channels, height, width\)"),
        ({"input_size": (3, 224, 256)}, r"\(3, 224, 256\) .* skfeat feeds square crops"),
        ({"input_size": (1, 224, 224)}, r"3-channel RGB"),
        ({"crop_size": 0}, r"crop_size=0 must be an int >= 1"),
        ({"resize_size": 200, "crop_size": 224}, r"resizes the short side to 200 but crops 224"),
        ({"interpolation": "lanczos"}, r"interpolation must be one of"),
        ({"mean": (0.5, 0.5)}, r"mean must have 3 values"),
        ({"std": (0.0, 1.0, 1.0)}, r"std must be positive"),
        ({"input_size": (3, 224, 224), "interpolation": "lanczos"}, r"interpolation must be one"),
        ({"input_size": (3, 224, 224), "crop_pct": -1}, r"crop_pct=-1 must be a number > 0"),
    ],
)
def test_bad_preprocessing_is_refused_saying_what_to_pass(preprocessing, message, tiny_model):
    featurizer = PretrainedCNNFeaturizer(tiny_model, preprocessing=preprocessing)
    with pytest.raises(InvalidParameterError, match=message):
        featurizer.fit([0])


def test_preprocessing_is_a_param_cloned_pickled_and_in_the_cache_key(tiny_model, random_images):
    from skfeat import ActivationCache

    recipe = {"resize_size": 40, "crop_size": 32}
    featurizer = PretrainedCNNFeaturizer(tiny_model, preprocessing=recipe, n_jobs=1)
    assert featurizer.get_params()["preprocessing"] == recipe
    assert clone(featurizer).get_params()["preprocessing"] == recipe
    featurizer.fit(random_images)
    restored = pickle.loads(pickle.dumps(featurizer))
    assert restored.data_config_ == featurizer.data_config_
    cache = ActivationCache()
    small = _featurize(tiny_model, random_images, preprocessing=recipe, cache=cache)
    large = _featurize(tiny_model, random_images, cache=cache)
    again = _featurize(tiny_model, random_images, preprocessing=recipe, cache=cache)
    assert not np.allclose(small, large)  # another recipe is another cache entry
    np.testing.assert_array_equal(small, again)
    np.testing.assert_allclose(
        small, _featurize(tiny_model, random_images, preprocessing=recipe), atol=1e-6
    )


class _FixedSize(nn.Module):
    """Takes 40 px images only, as a flattening classifier does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 40 * 40, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


def test_module_of_another_input_size_gets_a_trace_error_then_works_when_told(random_images):
    module = _FixedSize().eval()
    with pytest.raises(
        ModelTraceError,
        match=r"Could not run 'module:_FixedSize' .* "
        r"\(2, 3, 224, 224\) .*RuntimeError.*preprocessing=\{'crop_size'",
    ):
        PretrainedCNNFeaturizer(module).fit([0])
    recipe = {"resize_size": 48, "crop_size": 40}
    assert list_layers(module, preprocessing=recipe)["conv"] == (4, 40, 40)
    features = _featurize(module, random_images, preprocessing=recipe, layer="logits")
    np.testing.assert_allclose(
        features, module(_by_hand(random_images, 48, 40)).detach(), atol=1e-4
    )


# -- timm models passed as modules ----------------------------------------------------


def _tiny_vit(name="vit_tiny_patch16_224", **kwargs):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, depth=2, **kwargs).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_timm_model_as_module_gives_timms_pre_logits_and_data_config(name, random_images):
    model = _tiny_vit(name)
    featurizer = PretrainedCNNFeaturizer(model, n_jobs=1)
    features = featurizer.fit_transform(random_images[:3])
    config = timm.data.resolve_data_config(model=model)
    resize = int(config["input_size"][-1] / config["crop_pct"])
    assert featurizer.data_config_.resize_size == resize
    assert featurizer.data_config_.interpolation == config["interpolation"] == "bicubic"
    batch = _by_hand(random_images[:3], resize, 224, config["mean"], config["std"], "bicubic")
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)
    assert not hasattr(model, "skfeat_pre_logits")  # the user's module is left alone


def test_timm_subclass_with_its_own_forward_is_read_as_written():
    class Custom(type(_tiny_vit())):
        def forward(self, x):
            return self.head(self.forward_features(x)[:, 1:].mean(1))

    model = Custom(depth=2, embed_dim=192, num_heads=3).eval()
    layers = list_layers(model)
    assert "skfeat_pre_logits" not in layers
    assert layers["penultimate"] == (192,)  # the input of the head it calls


# -- several heads ------------------------------------------------------------------


class _Wrapper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_penultimate_of_two_heads_is_refused_naming_them():
    model = _Wrapper(_tiny_vit("deit_tiny_distilled_patch16_224"))
    with pytest.raises(
        UnknownLayerError,
        match=r"'penultimate' of 'module:_Wrapper' cannot be read: 2 heads read vectors .*"
        r"'inner.head', 'inner.head_dist'.*the last before them is 'inner.norm'.*timm:<name>",
    ):
        PretrainedCNNFeaturizer(model).fit([0])
    assert "inner.norm" in list_layers(model)


@pytest.mark.slow
def test_crossvit_module_list_of_heads_is_read_as_timm_does(random_images):
    layers = list_layers("timm:crossvit_tiny_240")
    assert layers["penultimate"] == (96 + 192,)  # both branches' class tokens
    assert layers["blocks.0[1]"] == (1 + 14 * 14, 192)  # its second branch runs at 224 px
    featurizer = PretrainedCNNFeaturizer("timm:crossvit_tiny_240", weights=None, n_jobs=1)
    features = featurizer.fit_transform(random_images[:2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # skfeat's random init
        model = timm.create_model("crossvit_tiny_240", pretrained=False).eval()
    config = featurizer.data_config_
    batch = _by_hand(random_images[:2], config.resize_size, 240, mode="bicubic")
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)
    with pytest.raises(UnknownLayerError, match=r"2 heads .*'inner.head.0', 'inner.head.1'"):
        PretrainedCNNFeaturizer(_Wrapper(model)).fit([0])


@pytest.mark.slow
def test_a_timm_convolutional_classifier_gives_timms_logits(random_images):
    featurizer = PretrainedCNNFeaturizer("timm:dla34", weights=None, layer="logits", n_jobs=1)
    features = featurizer.fit_transform(random_images[:2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # skfeat's random init
        model = timm.create_model("dla34", pretrained=False).eval()
    config = featurizer.data_config_
    batch = _by_hand(
        random_images[:2], config.resize_size, 224, config.mean, config.std, config.interpolation
    )
    with torch.no_grad():
        np.testing.assert_allclose(features, model(batch).numpy(), atol=1e-4)


class _Chain(nn.Module):
    """A VGG-like classifier: three linear layers in a chain, the last one the head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=4)
        self.classifier = nn.Sequential(
            nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 3)
        )

    def forward(self, x):
        return self.classifier(self.conv(x).mean((2, 3))) * 2.0


def test_a_chain_of_linear_layers_has_the_last_ones_input_as_penultimate(random_images):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _Chain().eval()
    features = _featurize(model, random_images)
    expected = _read(model, "classifier.4", _by_hand(random_images, 256, 224), reads_input=True)
    assert features.shape == (8, 9)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)


def test_one_head_run_on_two_tokens_is_refused():
    class TwoTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 16, stride=16)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            return (self.head(tokens[:, 0]) + self.head(tokens[:, 1])) / 2

    with pytest.raises(UnknownLayerError, match=r"the head 'head' runs 2 times per forward"):
        PretrainedCNNFeaturizer(TwoTokens()).fit([0])


def test_frozen_parameters_do_not_hide_the_head(tiny_model):
    for parameter in tiny_model.parameters():
        parameter.requires_grad_(False)
    assert list_layers(tiny_model)["penultimate"] == (32,)


# -- outputs ------------------------------------------------------------------------


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean((2, 3))


class _TupleBlocks(nn.Module):
    """A block returning (map, vector), and a network output of the given kind."""

    def __init__(self, output="dict"):
        super().__init__()
        self.block = _Pair()
        self.fc = nn.Linear(4, 3)
        self.output = output

    def forward(self, x):
        _, pooled = self.block(x)
        logits = self.fc(pooled)
        if self.output == "dict":
            return {"features": pooled, "logits": logits}
        if self.output == "no-logits":
            return {"features": pooled}
        return logits, pooled


def test_tuple_outputs_are_listed_and_read_by_element(random_images):
    model = _TupleBlocks().eval()
    layers = list_layers(model, details=True)
    assert layers["block[0]"].shape == (4, 28, 28) and layers["block[0]"].layout == "map"
    assert layers["block[1]"].shape == (4,) and "block" not in layers
    features = _featurize(model, random_images, layer=["block[0]", "block[1]", "logits"])
    batch = _by_hand(random_images, 256, 224)
    with torch.no_grad():
        feature_map, pooled = model.block(batch)
        logits = model(batch)["logits"]
    expected = torch.cat([feature_map.mean((2, 3)), pooled, logits], 1)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)
    with pytest.raises(
        UnknownLayerError,
        match=r"'block' .* its output is a tuple, not a "
        r"tensor; read one of its tensors by name: 'block\[0\]', 'block\[1\]'",
    ):
        PretrainedCNNFeaturizer(model, layer="block").fit([0])


def test_a_module_with_a_pretrained_cfg_gets_its_recipe(tiny_model):
    tiny_model.pretrained_cfg = {
        "input_size": (3, 40, 40),
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }
    config = PretrainedCNNFeaturizer(tiny_model).fit([0]).data_config_
    assert config == DataConfig(40, 40, "bicubic", (0.5,) * 3, (0.5,) * 3)


def test_network_output_rule_tuple_first_dict_logits_else_refused(random_images):
    batch = _by_hand(random_images, 256, 224)
    model = _TupleBlocks("tuple").eval()
    features = _featurize(model, random_images, layer="logits")
    np.testing.assert_allclose(features, model(batch)[0].detach().numpy(), atol=1e-4)
    with pytest.raises(
        UnknownLayerError,
        match=r"'logits' .* returns a dict without a "
        r"'logits' entry \(keys: 'features'\)",
    ):
        PretrainedCNNFeaturizer(_TupleBlocks("no-logits"), layer="logits").fit([0])
    with pytest.raises(UnknownLayerError, match=r"'penultimate' .* without a 'logits' entry"):
        PretrainedCNNFeaturizer(_TupleBlocks("no-logits")).fit([0])


@pytest.mark.slow
def test_hugging_face_model_as_module_unwraps_its_model_output(random_images):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.ViTForImageClassification(config).eval()
    layers = list_layers(model, details=True)
    assert layers["vit.layernorm"].layout == "tokens"
    assert layers["vit.layernorm"].prefix_tokens == 1 and layers["vit.layernorm"].class_token
    featurizer = PretrainedCNNFeaturizer(model, layer=["vit.layernorm", "logits"], pooling="cls")
    with pytest.raises(InvalidParameterError, match="pooling='cls'"):
        featurizer.fit([0])  # logits are a vector: cls does not apply
    features = _featurize(model, random_images[:3], layer="logits")
    batch = _by_hand(random_images[:3], 256, 224)
    with torch.no_grad():
        output = model(batch, output_hidden_states=True)
    np.testing.assert_allclose(features, output.logits.numpy(), atol=1e-4)
    tokens = _featurize(model, random_images[:3], layer="vit.layernorm", pooling="cls")
    last = model.vit.layernorm(output.hidden_states[-1])[:, 0]
    np.testing.assert_allclose(tokens, last.detach().numpy(), atol=1e-4)


# -- refusals -----------------------------------------------------------------------


@pytest.mark.slow
def test_logits_of_a_headless_model_is_an_error():
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    with pytest.raises(
        UnknownLayerError,
        match=r"'logits' .* no classifier: its output comes "
        r"from 'fc', an nn.Identity.*layer='fc'",
    ):
        PretrainedCNNFeaturizer(model, layer="logits").fit([0])
    headless_timm = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(UnknownLayerError, match=r"no classifier.*layer='penultimate'"):
        PretrainedCNNFeaturizer(headless_timm, layer="logits").fit([0])
    assert list_layers(headless_timm)["penultimate"] == (512,)


def test_a_module_run_twice_is_refused_with_the_reason():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            return self.act(self.conv(self.act(x))).mean((2, 3))

    with pytest.raises(UnknownLayerError, match=r"'act' .* it runs 2 times per forward pass"):
        PretrainedCNNFeaturizer(Shared(), layer="act").fit([0])


# -- layouts of models traced at one size, unpadded maps, prefix-token names -------------


def test_unpadded_convolutions_grow_by_a_fixed_offset_and_are_maps():
    from skfeat._layouts import infer_layout

    inception = {299: (2, 256, 35, 35), 598: (2, 256, 72, 72), 897: (2, 256, 109, 109)}
    assert infer_layout("Mixed_5b", inception, reference=299, batch=2).kind == "map"
    uneven = {299: (2, 256, 35, 35), 598: (2, 256, 72, 72), 897: (2, 256, 120, 120)}
    assert infer_layout("Mixed_5b", uneven, reference=299, batch=2).kind == "unknown"


class _Unpadded(nn.Module):
    """Two unpadded branches concatenated in a block of no channel-first type."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, stride=4)
        self.a = nn.Sequential(*(nn.Conv2d(4, 4, 3) for _ in range(3)))
        self.b = nn.Sequential(*(nn.Conv2d(4, 4, 3) for _ in range(3)))

    def forward(self, x):
        x = self.stem(x)
        return torch.cat([self.a(x), self.b(x)], 1)


def test_a_block_of_unpadded_convolutions_is_read_as_a_map(random_images):
    from collections import OrderedDict

    parts = [("mixed", _Unpadded()), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten())]
    model = nn.Sequential(OrderedDict([*parts, ("fc", nn.Linear(8, 2))])).eval()
    recipe = {"crop_size": 128}
    details = list_layers(model, preprocessing=recipe, details=True)
    assert details["mixed"].shape == (8, 26, 26)  # 128 / 4 - 6: 26, 58, 90 px
    assert details["mixed"].layout == "map"
    features = _featurize(model, random_images, preprocessing=recipe, layer="mixed")
    with torch.no_grad():
        expected = model.mixed(_by_hand(random_images, 146, 128)).mean((2, 3))
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)


def test_token_layers_of_a_one_size_model_follow_a_traced_convolution_grid():
    from skfeat._layouts import LayoutHints, infer_layouts

    traces = {224: {"proj": (2, 64, 14, 14), "blocks.0": (2, 197, 64), "flat": (2, 196, 64)}}
    hints = LayoutHints(frozenset({"proj"}), prefix_tokens=1, class_token=True, source="cls")
    layouts = infer_layouts(traces, reference=224, batch=2, hints=hints)
    assert layouts["blocks.0"].prefix_tokens == 1 and layouts["blocks.0"].class_token
    assert layouts["flat"].kind == "tokens" and layouts["flat"].prefix_tokens == 0
    # 25 tokens are a 5x5 grid, or 9 declared prefix tokens and a 4x4 grid: refused
    both = {224: {"p5": (2, 8, 5, 5), "p4": (2, 8, 4, 4), "t": (2, 25, 8)}}
    hints = LayoutHints(frozenset({"p5", "p4"}), prefix_tokens=9, source="x")
    assert infer_layouts(both, reference=224, batch=2, hints=hints)["t"].kind == "unknown"
    no_grid = {224: {"proj": (2, 64, 14, 14), "t": (2, 50, 64)}}
    assert infer_layouts(no_grid, reference=224, batch=2, hints=hints)["t"].kind == "unknown"


class _Tokens(nn.Module):
    """A ViT-like module with the given prefix-token parameters."""

    def __init__(self, **params):
        super().__init__()
        for name, shape in params.items():
            setattr(self, name, nn.Parameter(torch.zeros(shape)))


@pytest.mark.parametrize(
    ("params", "prefix", "has_class"),
    [
        ({"class_embedding": (16,)}, 1, True),  # CLIP
        ({f"cls_token{i}": (1, 1, 16) for i in range(1, 5)}, 1, True),  # CoaT, one per stage
        ({"cls_token": (1, 1, 16), "register_tokens": (1, 4, 16)}, 5, True),
        ({"reg_token": (4, 16)}, 4, False),
    ],
)
def test_prefix_token_parameter_names(params, prefix, has_class):
    from skfeat._declarations import collect_hints

    hints = collect_hints(_Tokens(**params))
    assert (hints.prefix_tokens, hints.class_token) == (prefix, has_class)


def test_fixed_size_timm_token_models_have_known_token_layers():
    coat = list_layers("timm:coat_lite_tiny", details=True)
    block = coat["serial_blocks1.0"]
    assert (block.shape, block.layout, block.prefix_tokens) == ((3137, 64), "tokens", 1)
    tnt = list_layers("timm:tnt_s_patch16_224", details=True)["norm"]
    assert (tnt.shape, tnt.layout, tnt.prefix_tokens, tnt.class_token) == (
        (197, 384),
        "tokens",
        1,
        True,
    )


@pytest.mark.slow
def test_inception_v3_mixed_blocks_are_maps(random_images):
    import torchvision

    details = list_layers("inception_v3", details=True)
    for name in ("Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d"):
        assert details[name].layout == "map", name
    assert details["Mixed_5b"].shape == (256, 35, 35)
    featurizer = PretrainedCNNFeaturizer("inception_v3", weights=None, layer="Mixed_5b", n_jobs=1)
    features = featurizer.fit_transform(random_images[:2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # skfeat's random init
        model = torchvision.models.inception_v3(weights=None, init_weights=True).eval()
    config = featurizer.data_config_
    batch = _by_hand(
        random_images[:2], config.resize_size, 299, config.mean, config.std, config.interpolation
    )
    expected = _read(model, "Mixed_5b", batch).mean((2, 3))
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-4)
