"""Layer layouts: read from the model (sizes and declarations), never guessed from one shape."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from skfeat._declarations import collect_hints, copy_at_size
from skfeat._layouts import (
    Layout,
    LayoutHints,
    infer_layout,
    infer_layouts,
    probe_sizes,
)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

BATCH = 2
MAP = Layout("map")
MAP_LAST = Layout("map_last")
VECTOR = Layout("vector")
PATCHES = Layout("tokens")
UNKNOWN = "unknown"  # in the family tables: any reason


def tokens(prefix: int, class_token: bool = True) -> Layout:
    return Layout("tokens", prefix_tokens=prefix, class_token=class_token)


def trace(module: nn.Module, side: int, batch: int = BATCH) -> dict[str, tuple[int, ...]]:
    """Output shape (with the batch axis) of every module that runs once, and the input
    of the last linear layer as ``"penultimate"``, as skfeat's tracer records them."""
    names = {id(sub): name for name, sub in module.named_modules() if name}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    classifier_input: list[tuple[int, ...]] = []

    def after(sub: nn.Module, _inputs: Any, output: Any) -> None:
        name = names[id(sub)]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor):
            shapes.setdefault(name, tuple(output.shape))

    def before_linear(_sub: nn.Module, inputs: Any) -> None:
        classifier_input.append(tuple(inputs[0].shape))

    handles = []
    for sub in module.modules():
        if id(sub) in names:
            handles.append(sub.register_forward_hook(after))
            if isinstance(sub, nn.Linear):
                handles.append(sub.register_forward_pre_hook(before_linear))
    device = next(module.parameters(), torch.zeros(0)).device
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(batch, 3, side, side, device=device))
    finally:
        for handle in handles:
            handle.remove()
    found = {name: shape for name, shape in shapes.items() if calls[name] == 1}
    if classifier_input:
        found["penultimate"] = classifier_input[-1]
    return found


def layouts_at_probe_sizes(
    module: nn.Module, reference: int, resized: Callable[[int], nn.Module] | None = None
) -> dict[str, Layout]:
    """Trace ``module`` at the probe sizes, resized through its own API where it needs it.

    A side the model refuses is skipped, as the tracer does.
    """
    traces = {}
    for side in probe_sizes(reference):
        if side == reference:
            variant = module
        elif resized is not None:
            variant = resized(side)
        else:
            variant = copy_at_size(module, side) or module
        try:
            traces[side] = trace(variant, side)
        except (AssertionError, RuntimeError, ValueError):
            continue
    assert reference in traces
    return infer_layouts(traces, reference=reference, batch=BATCH, hints=collect_hints(module))


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


def timm_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kwargs)


def torchvision_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None, **kwargs)


def timm_crop(module: nn.Module) -> int:
    from timm.data import resolve_data_config

    return int(resolve_data_config({}, model=module)["input_size"][-1])


# --- Layout ------------------------------------------------------------------------


def test_layout_describes_itself():
    assert MAP.describe() == "map (C, H, W)"
    assert MAP_LAST.describe() == "map (H, W, C)"
    assert VECTOR.describe() == "vector (D,)"
    assert PATCHES.describe() == "tokens (T, C)"
    assert tokens(1).describe() == "tokens (T, C), 1 prefix token, token 0 the class token"
    assert tokens(4, class_token=False).describe() == "tokens (T, C), 4 prefix tokens"
    assert Layout("unknown", reason="seen once").describe() == "unknown"


def test_layout_channels_follow_the_layout():
    assert MAP.channels((96, 56, 56)) == 96
    assert MAP_LAST.channels((56, 56, 96)) == 96
    assert tokens(5).channels((1374, 384)) == 384
    assert VECTOR.channels((1000,)) == 1000
    with pytest.raises(ValueError, match="no channel axis: seen once"):
        Layout("unknown", reason="seen once").channels((3, 4, 5))


def test_layout_equality_ignores_evidence():
    assert Layout("map", evidence="Conv2d") == MAP
    assert Layout("map", evidence="Conv2d").known
    assert not Layout("unknown", reason="r").known


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "grid"}, r"Layout kind 'grid' is not one of \('map', "),
        ({"kind": "map", "prefix_tokens": 1}, "A 'map' layout has no prefix or class tokens"),
        ({"kind": "tokens", "class_token": True}, "the class token is one of the prefix tokens"),
        ({"kind": "tokens", "prefix_tokens": -1}, "prefix_tokens=-1"),
        ({"kind": "unknown"}, "An unknown layout, and only an unknown one, needs a reason"),
        ({"kind": "map", "reason": "x"}, "An unknown layout, and only an unknown one"),
    ],
)
def test_layout_refuses_inconsistent_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Layout(**kwargs)


def test_probe_sizes_are_multiples_of_the_reference():
    assert probe_sizes(224) == (224, 448, 672)


# --- the decision from shapes --------------------------------------------------------


def at(*shapes: tuple[int, ...], sides: tuple[int, ...] = (224, 448, 672)) -> dict:
    return dict(zip(sides, shapes, strict=False))


def test_channel_last_map_from_growing_leading_axes():
    shapes = at((2, 7, 7, 768), (2, 14, 14, 768), (2, 21, 21, 768))
    assert infer_layout("features.7", shapes, reference=224, batch=2) == MAP_LAST


def test_channel_first_map_from_growing_trailing_axes():
    shapes = at((1, 2048, 7, 7), (1, 2048, 14, 14), (1, 2048, 21, 21))
    assert infer_layout("layer4", shapes, reference=224) == MAP


def test_one_channel_and_collapsed_maps_are_maps():
    assert infer_layout("depth", at((1, 1, 56, 56), (1, 1, 112, 112)), reference=224) == MAP
    assert infer_layout("pool", at((1, 768, 1, 1), (1, 768, 1, 1)), reference=224) == MAP
    assert infer_layout("pool", at((1, 1, 1, 768), (1, 1, 1, 768)), reference=224) == MAP_LAST


def test_rounded_strides_still_scale():
    # ResNet at 225 px: ceil(225 / 32) = 8, ceil(450 / 32) = 15, ceil(675 / 32) = 22
    shapes = at((1, 512, 8, 8), (1, 512, 15, 15), (1, 512, 22, 22), sides=(225, 450, 675))
    assert infer_layout("layer4", shapes, reference=225) == MAP


def test_tokens_without_prefix_need_no_declaration():
    shapes = at((1, 196, 192), (1, 784, 192), (1, 1764, 192))
    layout = infer_layout("patch_embed", shapes, reference=224)
    assert layout == PATCHES
    assert layout.evidence == "196 tokens = a 14x14 patch grid"


def test_prefix_tokens_must_be_declared_by_the_model():
    shapes = at((1, 1374, 384), (1, 5481, 384), sides=(518, 1036))
    declared = LayoutHints(prefix_tokens=5, class_token=True, source="timm's num_prefix_tokens")
    assert infer_layout("blocks.11", shapes, reference=518, hints=declared) == tokens(5)
    layout = infer_layout("blocks.11", shapes, reference=518)
    assert layout.kind == "unknown"
    assert layout.reason == (
        "output (1374, 384) per image at 518 px, (5481, 384) at 1036 px: 5 tokens besides a "
        "37x37 patch grid, but the model declares none, so where they sit and what they are "
        "is not known"
    )
    wrong = LayoutHints(prefix_tokens=1, class_token=True, source="the module's cls_token")
    layout = infer_layout("blocks.11", shapes, reference=518, hints=wrong)
    assert "but the module's cls_token declares 1 prefix tokens" in layout.reason


def test_attention_heads_are_unknown():
    shapes = at((1, 3, 197, 64), (1, 3, 785, 64), (1, 3, 1765, 64))
    layout = infer_layout("blocks.0.attn.q_norm", shapes, reference=224)
    assert layout.kind == "unknown"
    assert "axis 0 stays 3; axis 1 grows like a patch count (197, 785, 1765); axis 2 stays 64" in (
        layout.reason
    )


def test_axes_that_do_not_scale_are_unknown_unless_the_type_says():
    shapes = at((1, 512, 7, 7), (1, 512, 7, 7), (1, 512, 7, 7))
    layout = infer_layout("avgpool", shapes, reference=224)
    assert layout.kind == "unknown"
    assert "axis 1 stays 7; axis 2 stays 7" in layout.reason
    typed = LayoutHints(channel_first=frozenset({"avgpool"}))
    assert infer_layout("avgpool", shapes, reference=224, hints=typed) == MAP


def test_type_against_clear_sizes_is_unknown():
    shapes = at((1, 7, 7, 768), (1, 14, 14, 768))
    typed = LayoutHints(channel_first=frozenset({"odd"}))
    layout = infer_layout("odd", shapes, reference=224, hints=typed)
    assert layout.kind == "unknown"
    assert "the module's type gives (C, H, W), but the sizes fit 'map_last'" in layout.reason


def test_windows_folded_into_the_batch_are_unknown():
    # timm Swin's window attention: (batch * windows, 49, C)
    shapes = at((128, 49, 96), (512, 49, 96))
    layout = infer_layout("layers.0.blocks.0.attn", shapes, reference=224, batch=2)
    assert layout.reason == (
        "output (128, 49, 96) at 224 px for a batch of 2: its first axis is not the batch, so "
        "its rows are not images (windows or heads folded into the batch axis, or a "
        "sequence-first layout)"
    )


def test_sequence_first_tokens_are_unknown():
    # nn.MultiheadAttention without batch_first, older open_clip: (T, N, C)
    shapes = at((197, 2, 768), (785, 2, 768))
    layout = infer_layout("transformer", shapes, reference=224, batch=2)
    assert "output (197, 2, 768) at 224 px for a batch of 2: its first axis" in layout.reason


def test_one_window_at_the_reference_is_caught_at_another_size():
    shapes = at((1, 49, 768), (4, 49, 768))
    assert "at 448 px for a batch of 1" in infer_layout("w", shapes, reference=224).reason


def test_vectors_rank_changes_and_other_ranks():
    assert infer_layout("fc", at((2, 1000), (2, 1000)), reference=224, batch=2) == VECTOR
    assert infer_layout("fc", at((2, 1000)), reference=224, batch=2) == VECTOR
    changing = infer_layout("x", at((1, 8, 7, 7), (1, 8, 196)), reference=224)
    assert "its number of axes changes with the input size" in changing.reason
    video = infer_layout("x", at((1, 8, 4, 7, 7), (1, 8, 4, 14, 14)), reference=224)
    assert "4 axes per image, where maps have 3, tokens 2 and vectors 1" in video.reason
    scalar = infer_layout("x", at((1,), (1,)), reference=224)
    assert "0 axes per image" in scalar.reason


def test_one_size_alone_is_unknown():
    layout = infer_layout("block", at((1, 64, 7, 7)), reference=224)
    assert layout.reason == (
        "output (64, 7, 7) per image at 224 px, traced at that size only, and the model "
        "declares nothing that says which axis holds the channels"
    )
    layout = infer_layout("block", at((1, 197, 768)), reference=224)
    assert "traced at that size only" in layout.reason


def test_one_size_with_declarations():
    hints = LayoutHints(
        prefix_tokens=1, class_token=True, patch_grid=(14, 14), source="torchvision's class_token"
    )
    assert infer_layout("encoder.ln", at((1, 197, 768)), reference=224, hints=hints) == tokens(1)
    assert infer_layout("patches", at((1, 196, 768)), reference=224, hints=hints) == PATCHES
    assert infer_layout("grid", at((1, 768, 14, 14)), reference=224, hints=hints) == MAP
    assert infer_layout("grid", at((1, 14, 14, 768)), reference=224, hints=hints) == MAP_LAST
    assert not infer_layout("other", at((1, 50, 768)), reference=224, hints=hints).known
    assert not infer_layout("square", at((1, 14, 14, 14)), reference=224, hints=hints).known


def test_one_size_with_declared_stages():
    hints = LayoutHints(stages={"layers.3": (768, 32)}, stage_format="NHWC")
    assert infer_layout("layers.3", at((1, 7, 7, 768)), reference=224, hints=hints) == MAP_LAST
    # the declared format must agree with where the declared channels are
    nchw = LayoutHints(stages={"layers.3": (768, 32)}, stage_format="NCHW")
    assert not infer_layout("layers.3", at((1, 7, 7, 768)), reference=224, hints=nchw).known
    free = LayoutHints(stages={"layers.3": (768, 32)})
    assert infer_layout("layers.3", at((1, 768, 7, 7)), reference=224, hints=free) == MAP


def test_two_sizes_leave_small_grids_open():
    # 3 -> 6 tokens fits a 1-D sequence and 2 extra tokens + a 1x1 -> 2x2 grid
    shapes = at((1, 3, 16), (1, 6, 16), sides=(32, 64))
    layout = infer_layout("seq", shapes, reference=32)
    assert "more than one split into extra tokens and a patch grid, or a 1-D sequence" in (
        layout.reason
    )
    both = infer_layout("tiny", at((1, 1, 1, 1), (1, 1, 1, 1)), reference=224)
    assert "both a map (C, H, W) and a channel-last map (H, W, C) fit" in both.reason


def test_reference_must_be_traced():
    with pytest.raises(ValueError, match=r"reference=300 is not one of the traced sides \[224\]"):
        infer_layout("x", at((1, 3)), reference=300)
    with pytest.raises(ValueError, match="reference=300 is not one of the traced sides"):
        infer_layouts({224: {"x": (1, 3)}}, reference=300)


def test_infer_layouts_keeps_order_and_uses_the_sides_where_a_layer_was_seen():
    traces = {
        224: {"a": (1, 8, 7, 7), "b": (1, 7, 7, 8)},
        448: {"a": (1, 8, 14, 14)},
    }
    layouts = infer_layouts(traces, reference=224)
    assert list(layouts) == ["a", "b"]
    assert layouts["a"] == MAP
    assert "traced at that size only" in layouts["b"].reason


# --- declarations read from modules ---------------------------------------------------


def test_hints_of_a_torchvision_vit():
    hints = collect_hints(on_meta(torchvision_model("vit_b_16")))
    assert (hints.prefix_tokens, hints.class_token, hints.patch_grid) == (1, True, (14, 14))
    assert hints.channel_first == {"conv_proj"}
    assert hints.source == "torchvision's class_token"


@pytest.mark.parametrize(
    ("name", "prefix", "class_token", "grid"),
    [
        ("vit_tiny_patch16_224", 1, True, (14, 14)),
        ("deit_tiny_distilled_patch16_224", 2, True, (14, 14)),
        ("vit_small_patch14_reg4_dinov2", 5, True, (37, 37)),
        ("vit_dwee_patch16_reg1_gap_256", 1, False, (16, 16)),  # a register, no class token
        ("vit_base_patch16_siglip_224", 0, False, (14, 14)),
        ("eva02_tiny_patch14_224", 1, True, (16, 16)),
    ],
)
def test_hints_of_timm_vits(name, prefix, class_token, grid):
    hints = collect_hints(on_meta(timm_model(name)))
    assert (hints.prefix_tokens, hints.class_token, hints.patch_grid) == (prefix, class_token, grid)
    assert hints.source == "timm's num_prefix_tokens"


def test_hints_of_timm_stages():
    hints = collect_hints(on_meta(timm_model("swin_tiny_patch4_window7_224")))
    assert hints.stage_format == "NHWC"
    assert hints.stages["layers.3"] == (768, 32)
    assert hints.prefix_tokens is None
    cnn = collect_hints(on_meta(timm_model("resnet18")))
    assert cnn.stages["layer4"] == (512, 32)
    assert {"conv1", "bn1", "layer4.1.conv2"} <= cnn.channel_first
    assert "fc" not in cnn.channel_first


class UserViT(nn.Module):
    """A hand-written ViT with a class token and register tokens, declared as parameters."""

    def __init__(self, width: int = 16, registers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, 8, stride=8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.reg_token = nn.Parameter(torch.zeros(1, registers, width)) if registers else None
        self.block = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token] + ([self.reg_token] if self.reg_token is not None else [])
        x = torch.cat([p.expand(x.shape[0], -1, -1) for p in prefix] + [x], dim=1)
        return self.norm(self.block(x))[:, 0]


def test_a_user_vit_declares_its_tokens_by_parameter_names():
    hints = collect_hints(UserViT())
    assert (hints.prefix_tokens, hints.class_token, hints.patch_grid) == (3, True, None)
    assert hints.source == "the module's cls_token and reg_token"
    layouts = layouts_at_probe_sizes(on_meta(UserViT), reference=64)
    assert layouts["embed"] == MAP
    assert layouts["block"] == layouts["norm"] == tokens(3)


def test_a_user_module_that_declares_nothing():
    hints = collect_hints(nn.Sequential(nn.Linear(4, 4)))
    assert hints == LayoutHints()


def test_copy_at_size_uses_the_models_own_api():
    vit = on_meta(timm_model("test_vit"))
    resized = copy_at_size(vit, 320)
    assert resized.patch_embed.grid_size == (20, 20)
    assert vit.patch_embed.grid_size == (10, 10)  # the original is left alone
    assert copy_at_size(on_meta(torchvision_model("resnet18")), 448) is None


def test_a_wrapped_timm_model_is_resized_and_read_inside_its_wrapper():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = timm.create_model("test_vit", pretrained=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    wrapper = on_meta(Wrapper)
    assert copy_at_size(wrapper, 320).backbone.patch_embed.grid_size == (20, 20)
    hints = collect_hints(wrapper)
    assert (hints.prefix_tokens, hints.patch_grid) == (1, (10, 10))
    assert hints.source == "timm's num_prefix_tokens (in 'backbone')"
    assert hints.stages["backbone.blocks.5"] == (64, 16)
    assert layouts_at_probe_sizes(wrapper, 160)["backbone.blocks.5"] == tokens(1)


def test_two_declaring_submodules_declare_nothing():
    class TwoTowers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = UserViT(registers=0), UserViT(registers=2)

    hints = collect_hints(TwoTowers())
    assert (hints.prefix_tokens, hints.class_token, hints.source) == (None, False, "")


def test_copy_at_size_gives_none_when_the_resize_fails():
    class Refuses(nn.Module):
        def set_input_size(self, img_size: Any) -> None:
            raise ValueError("fixed size")

    assert copy_at_size(Refuses(), 448) is None


def test_import_does_not_load_torch():
    code = (
        "import sys\n"
        "from skfeat._layouts import infer_layout, probe_sizes\n"
        "infer_layout('x', {224: (1, 8, 7, 7), 448: (1, 8, 14, 14)}, reference=224)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {"PYTHONPATH": ":".join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- the families that must work (meta device, random weights) -----------------------

FAMILIES = [
    pytest.param(
        torchvision_model("swin_t"),
        None,
        {
            "features.1": MAP_LAST,
            "features.5": MAP_LAST,
            "features.7": MAP_LAST,
            "norm": MAP_LAST,
            "permute": MAP,
            "avgpool": MAP,
            "flatten": VECTOR,
            "penultimate": VECTOR,
        },
        id="torchvision-swin_t",
    ),
    pytest.param(
        torchvision_model("convnext_tiny"),
        None,
        {
            "features.1": MAP,
            "features.7": MAP,
            "features.1.0.block.2": MAP_LAST,  # the LayerNorm between two permutes
            "classifier.0": MAP,
            "penultimate": VECTOR,
        },
        id="torchvision-convnext_tiny",
    ),
    pytest.param(
        torchvision_model("vit_b_16"),
        lambda side: on_meta(torchvision_model("vit_b_16", image_size=side)),
        {
            "conv_proj": MAP,
            "encoder.layers.encoder_layer_0.mlp": tokens(1),
            "encoder.layers.encoder_layer_11": tokens(1),
            "encoder.ln": tokens(1),
            "penultimate": VECTOR,
        },
        id="torchvision-vit_b_16",
    ),
    pytest.param(
        torchvision_model("resnet18"),
        None,
        {"layer1": MAP, "layer4": MAP, "avgpool": MAP, "penultimate": VECTOR},
        id="torchvision-resnet18",
    ),
    pytest.param(
        torchvision_model("mobilenet_v3_small"),
        None,
        {"features.12": MAP, "avgpool": MAP, "penultimate": VECTOR},
        id="torchvision-mobilenet_v3_small",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        torchvision_model("efficientnet_b0"),
        None,
        {"features.8": MAP, "avgpool": MAP, "penultimate": VECTOR},
        id="torchvision-efficientnet_b0",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        torchvision_model("maxvit_t"),
        lambda side: on_meta(torchvision_model("maxvit_t", input_size=(side, side))),
        {
            "stem": MAP,
            "blocks.3": MAP,
            "blocks.0.layers.0.layers.window_attention.partition_op": UNKNOWN,  # windows
            "classifier.0": MAP,
            "penultimate": VECTOR,
        },
        id="torchvision-maxvit_t",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("test_vit"),
        None,
        {
            "patch_embed": MAP_LAST,  # built with dynamic_img_size: patches stay (H, W, C)
            "blocks.5": tokens(1),
            "blocks.0.attn.q_norm": UNKNOWN,  # (heads, T, d)
            "norm": tokens(1),
            "penultimate": VECTOR,
        },
        id="timm-test_vit",
    ),
    pytest.param(
        timm_model("vit_tiny_patch16_224"),
        None,
        {
            "patch_embed.proj": MAP,
            "patch_embed": PATCHES,
            "blocks.0.attn.qkv": tokens(1),
            "blocks.11": tokens(1),
            "norm": tokens(1),
            "fc_norm": VECTOR,
            "penultimate": VECTOR,
        },
        id="timm-vit_tiny",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("deit_tiny_distilled_patch16_224"),
        None,
        {"blocks.11": tokens(2), "norm": tokens(2), "patch_embed": PATCHES},
        id="timm-deit_tiny_distilled",
    ),
    pytest.param(
        timm_model("vit_small_patch14_reg4_dinov2"),
        None,
        {"blocks.11": tokens(5), "norm": tokens(5), "patch_embed": PATCHES, "fc_norm": VECTOR},
        id="timm-dinov2_reg4",
    ),
    pytest.param(
        timm_model("vit_small_patch14_dinov2"),
        None,
        {"blocks.11": tokens(1), "norm": tokens(1)},
        id="timm-dinov2",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("vit_dwee_patch16_reg1_gap_256"),
        None,
        {"blocks.0": tokens(1, class_token=False), "fc_norm": VECTOR},
        id="timm-vit_reg1_gap",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("eva02_tiny_patch14_224"),
        None,
        {"blocks.11": tokens(1), "patch_embed": PATCHES, "fc_norm": VECTOR},
        id="timm-eva02_tiny",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("vit_base_patch16_clip_224"),
        None,
        {"norm_pre": tokens(1), "blocks.11": tokens(1), "norm": tokens(1)},
        id="timm-vit_clip",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("swin_tiny_patch4_window7_224"),
        None,
        {
            "patch_embed.proj": MAP,
            "patch_embed": MAP_LAST,
            "layers.0": MAP_LAST,
            "layers.3": MAP_LAST,
            "layers.0.blocks.0.attn": UNKNOWN,  # windows folded into the batch axis
            "norm": MAP_LAST,
            "penultimate": VECTOR,
        },
        id="timm-swin_tiny",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("convnext_atto"),
        None,
        {"stem": MAP, "stages.3": MAP, "head.norm": MAP, "penultimate": VECTOR},
        id="timm-convnext_atto",
    ),
    pytest.param(
        timm_model("test_convnext"),
        None,
        {"stages.3": MAP, "stages.0.blocks.0.mlp.fc1": MAP_LAST, "penultimate": VECTOR},
        id="timm-test_convnext",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        timm_model("tf_efficientnet_lite0"),
        None,
        {"blocks.6": MAP, "conv_head": MAP, "global_pool": VECTOR, "penultimate": VECTOR},
        id="timm-tf_efficientnet_lite0",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize(("build", "resized", "expected"), FAMILIES)
def test_family_layouts(build, resized, expected):
    module = on_meta(build)
    is_timm = type(module).__module__.startswith("timm")
    reference = timm_crop(module) if is_timm else 224
    layouts = layouts_at_probe_sizes(module, reference, resized)
    found = {
        name: layouts[name].kind if expected[name] == UNKNOWN else layouts[name]
        for name in expected
    }
    assert found == expected


def test_dinov2_is_read_at_its_own_input_size():
    assert timm_crop(on_meta(timm_model("vit_small_patch14_reg4_dinov2"))) == 518


def test_timm_swin_at_one_size():
    # window attention folds windows into the batch; stages are read from feature_info
    timm_swin = on_meta(timm_model("swin_tiny_patch4_window7_224"))
    layouts = infer_layouts(
        {224: trace(timm_swin, 224)}, reference=224, batch=BATCH, hints=collect_hints(timm_swin)
    )
    assert "its first axis is not the batch" in layouts["layers.0.blocks.0.attn"].reason
    assert layouts["layers.3"] == MAP_LAST  # from the declared stages, at one size


def test_a_torchvision_vit_as_a_user_module_is_read_from_its_declarations():
    # A module instance cannot be rebuilt, and refuses other sizes: one size, plus hints.
    layouts = layouts_at_probe_sizes(on_meta(torchvision_model("vit_b_16")), 224)
    assert layouts["conv_proj"] == MAP
    assert layouts["encoder.layers.encoder_layer_11"] == tokens(1)
    assert layouts["encoder.layers.encoder_layer_11"].evidence == (
        "197 tokens = 1 declared by torchvision's class_token + the 14x14 patch grid"
    )


# --- references from the models' own tensors (CPU, tiny random-weight models) ----------


def capture(module: nn.Module, side: int, layer: str, classifier: str) -> tuple[Any, Any, Any]:
    """The output of ``layer``, the input of ``classifier`` and the model's output."""
    modules = dict(module.named_modules())
    got: dict[str, Any] = {}
    handles = [
        modules[layer].register_forward_hook(lambda _m, _i, out: got.setdefault("layer", out)),
        modules[classifier].register_forward_pre_hook(
            lambda _m, inputs: got.setdefault("classifier", inputs[0])
        ),
    ]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            output = module.eval()(torch.randn(2, 3, side, side))
    finally:
        for handle in handles:
            handle.remove()
    return got["layer"], got["classifier"], output


def pool_by_layout(layout: Layout, x: torch.Tensor, how: str = "avg") -> torch.Tensor:
    if layout.kind == "map":
        return x.mean(dim=(2, 3))
    if layout.kind == "map_last":
        return x.mean(dim=(1, 2))
    assert layout.kind == "tokens"
    if how == "cls":
        assert layout.class_token
        return x[:, 0]
    return x[:, layout.prefix_tokens :].mean(dim=1)


def tiny_swin() -> nn.Module:
    from torchvision.models import SwinTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SwinTransformer(
            patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2]
        )


def test_swin_avg_by_layout_equals_the_models_own_pooling():
    swin = tiny_swin()
    layouts = layouts_at_probe_sizes(swin, 32)
    assert layouts["norm"] == MAP_LAST
    norm, head_input, _ = capture(swin, 32, "norm", "head")
    assert norm.shape == (2, 4, 4, 16)
    torch.testing.assert_close(pool_by_layout(layouts["norm"], norm), head_input)
    # the bug this prevents: (C, H, W) pooling of (H, W, C) gives H numbers, not C
    assert norm.mean(dim=(2, 3)).shape == (2, 4)


def tiny_torchvision_vit(side: int) -> nn.Module:
    from torchvision.models import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VisionTransformer(
            image_size=side, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
        )


def test_torchvision_vit_class_token_equals_the_head_input():
    vit = tiny_torchvision_vit(32)
    layouts = layouts_at_probe_sizes(vit, 32, tiny_torchvision_vit)
    assert layouts["encoder.ln"] == tokens(1)
    ln, head_input, _ = capture(vit, 32, "encoder.ln", "heads.head")
    torch.testing.assert_close(pool_by_layout(layouts["encoder.ln"], ln, "cls"), head_input)


def tiny_timm(name: str, **kwargs: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, depth=1, num_heads=2, **kwargs)


def test_timm_vit_class_token_equals_the_head_input():
    vit = tiny_timm("vit_tiny_patch16_224", img_size=32, embed_dim=16)
    layouts = layouts_at_probe_sizes(vit, 32)
    assert layouts["norm"] == tokens(1)
    norm, head_input, _ = capture(vit, 32, "norm", "head")
    torch.testing.assert_close(pool_by_layout(layouts["norm"], norm, "cls"), head_input)


def test_distilled_deit_prefix_tokens_feed_its_two_heads():
    deit = tiny_timm("deit_tiny_distilled_patch16_224", img_size=32, embed_dim=16)
    layouts = layouts_at_probe_sizes(deit, 32)
    assert layouts["norm"] == tokens(2)
    norm, head_input, _ = capture(deit, 32, "norm", "head")
    torch.testing.assert_close(norm[:, 0], head_input)
    _, dist_input, _ = capture(deit, 32, "norm", "head_dist")
    torch.testing.assert_close(norm[:, 1], dist_input)


def test_dinov2_registers_are_left_out_of_the_patch_average():
    # global_pool="avg": timm averages the patch tokens after the 5 prefix tokens
    dino = tiny_timm("vit_small_patch14_reg4_dinov2", img_size=28, embed_dim=16, global_pool="avg")
    layouts = layouts_at_probe_sizes(dino, 28)
    assert layouts["blocks.0"] == tokens(5)
    block, _, output = capture(dino, 28, "blocks.0", "fc_norm")
    expected = dino.fc_norm(pool_by_layout(layouts["blocks.0"], block))
    torch.testing.assert_close(expected, output)
    wrong = dino.fc_norm(block[:, 1:].mean(dim=1))  # registers counted as patches
    assert not torch.allclose(wrong, output)


# --- property: synthetic user modules ------------------------------------------------

SIDES = probe_sizes(32)


class Synthetic(nn.Module):
    """A user module whose output shape follows the input side as ``shape_at`` says.

    ``fold`` multiplies the batch axis (windows folded into it); ``declared`` adds
    ``cls_token``/``reg_token`` parameters; ``only`` refuses every other input side.
    """

    def __init__(
        self,
        shape_at: Callable[[int], tuple[int, ...]],
        fold: int = 1,
        declared: int = 0,
        only: int | None = None,
    ) -> None:
        super().__init__()
        self.shape_at = shape_at
        self.fold = fold
        self.only = only
        if declared:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        if declared > 1:
            self.reg_token = nn.Parameter(torch.zeros(1, declared - 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        if self.only is not None and side != self.only:
            raise ValueError(f"takes {self.only} px only")
        # on meta whatever the input: the shapes can be large, and only they matter
        return torch.zeros((x.shape[0] * self.fold, *self.shape_at(side)), device="meta")


def synthetic_layout(module: Synthetic) -> Layout:
    return layouts_at_probe_sizes(nn.Sequential(module), SIDES[0])["0"]


def spatial(stride: int, ceil: bool) -> Callable[[int], int]:
    return (lambda side: -(-side // stride)) if ceil else (lambda side: side // stride)


channels = st.integers(1, 64)
strides = st.sampled_from([1, 2, 4, 8, 16, 32])
patches = st.sampled_from([2, 4, 8, 16, 32])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=channels, stride=strides, ceil=st.booleans(), last=st.booleans())
def test_clean_maps_are_read_in_their_layout(c, stride, ceil, last):
    size = spatial(stride, ceil)
    shape_at = (lambda s: (size(s), size(s), c)) if last else (lambda s: (c, size(s), size(s)))
    assert synthetic_layout(Synthetic(shape_at)) == (MAP_LAST if last else MAP)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c=channels,
    patch=st.sampled_from([2, 4, 8, 16]),  # a 1x1 grid is also a short sequence: unknown
    prefix=st.integers(0, 6),
    declared=st.booleans(),
)
def test_clean_tokens_need_declared_prefix_tokens(c, patch, prefix, declared):
    module = Synthetic(lambda s: (prefix + (s // patch) ** 2, c), declared=prefix * declared)
    layout = synthetic_layout(module)
    if prefix and not declared:
        assert "the model declares none" in layout.reason
    else:
        assert layout == tokens(prefix, class_token=bool(prefix))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["heads", "fixed", "folded", "one_size"]),
    a=st.integers(2, 12),
    c=channels,
    patch=patches,
)
def test_ambiguous_outputs_are_unknown(kind, a, c, patch):
    grid = lambda s: s // patch  # noqa: E731
    module = {
        "heads": Synthetic(lambda s: (a, 1 + grid(s) ** 2, c)),
        "fixed": Synthetic(lambda s: (a, 7, 7)),
        "folded": Synthetic(lambda s: (49, c), fold=4),
        "one_size": Synthetic(lambda s: (c, grid(s), grid(s)), only=SIDES[0]),
    }[kind]
    assert synthetic_layout(module).kind == "unknown"


AXIS = st.one_of(
    st.tuples(st.just("fixed"), st.integers(1, 64)),
    st.tuples(st.just("spatial"), st.sampled_from([1, 2, 4, 8, 16, 32]), st.booleans()),
    st.tuples(st.just("tokens"), st.sampled_from([2, 4, 8, 16]), st.integers(0, 6)),
)


def axis_size(axis: tuple, side: int) -> int:
    if axis[0] == "fixed":
        return axis[1]
    if axis[0] == "spatial":
        return spatial(axis[1], axis[2])(side)
    return axis[2] + (side // axis[1]) ** 2


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(axes=st.lists(AXIS, min_size=2, max_size=3))
def test_a_known_layout_is_never_wrong(axes):
    """Whatever the axes do, a layout that is named is what the module computes."""
    module = Synthetic(lambda s: tuple(axis_size(axis, s) for axis in axes))
    layout = synthetic_layout(module)
    values = [tuple(axis_size(axis, s) for s in SIDES) for axis in axes]
    constant = [len(set(v)) == 1 for v in values]
    kinds = [axis[0] for axis in axes]

    def space(i: int, j: int) -> bool:
        # the rows and columns of one map: equal sizes, both spatial or both collapsed to 1
        both_spatial = kinds[i] == kinds[j] == "spatial"
        return values[i] == values[j] and (both_spatial or values[i] == (1, 1, 1))

    if layout.kind == "map":
        assert constant[0] and space(1, 2), (axes, values)
    elif layout.kind == "map_last":
        assert constant[2] and space(0, 1), (axes, values)
    elif layout.kind == "tokens":
        assert kinds == ["tokens", "fixed"] and axes[0][2] == 0, (axes, values)
        assert layout == PATCHES
    else:
        assert layout.kind == "unknown"
    # and a clean one is named
    grows = [len(set(v)) > 1 for v in values]
    if kinds == ["fixed", "spatial", "spatial"] and space(1, 2) and grows[1]:
        assert layout == MAP, (axes, values)
    if kinds == ["spatial", "spatial", "fixed"] and space(0, 1) and grows[0]:
        assert layout == MAP_LAST, (axes, values)
    if kinds == ["tokens", "fixed"] and axes[0][2] == 0:
        assert layout == PATCHES, (axes, values)
