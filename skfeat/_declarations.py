"""What a model declares about its layouts, read from its types and attributes.

The traced sizes (:mod:`skfeat._layouts`) count tokens and tell spatial axes from
channels; what they cannot tell comes from the model itself: the module types that
compute ``(N, C, H, W)`` by definition, timm's ``num_prefix_tokens``,
``has_class_token``, ``patch_embed.grid_size``, ``feature_info`` and ``output_fmt``,
torchvision ViT's ``class_token`` and ``seq_length``. A model that takes one input size
only is resized for tracing through its own ``set_input_size``. torch is imported
inside the functions only.
"""

from __future__ import annotations

import re
from typing import Any

from skfeat._layouts import LayoutHints

__all__ = ["collect_hints", "copy_at_size"]

# Modules whose 4-D output is (N, C, H, W) because of what they compute: they act on
# dim 1 as channels or on the last two dims as space. Names, so torch is not imported.
_CHANNEL_FIRST_TYPES = (
    *("Conv2d", "ConvTranspose2d", "LazyConv2d", "LazyConvTranspose2d"),
    *("BatchNorm2d", "LazyBatchNorm2d", "InstanceNorm2d", "LazyInstanceNorm2d"),
    *("GroupNorm", "LocalResponseNorm", "Dropout2d", "PixelShuffle", "PixelUnshuffle"),
    *("MaxPool2d", "AvgPool2d", "LPPool2d", "FractionalMaxPool2d"),
    *("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "UpsamplingNearest2d", "UpsamplingBilinear2d"),
    *("ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d", "CircularPad2d"),
)

# Parameters that ViTs commonly name for their prefix tokens; a number after the name
# (CoaT's cls_token1..4) is one token per stage, not one more token.
_TOKEN_PARAMETER = re.compile(
    r"(cls_token|class_token|class_embedding|dist_token|reg_token|register_tokens)(\d*)"
)
_CLASS_PARAMETERS = ("cls_token", "class_token", "class_embedding")


def collect_hints(module: Any) -> LayoutHints:
    """Read what ``module`` declares about its layouts.

    Only the module's own types and attributes are read; nothing runs.

    Parameters
    ----------
    module : torch.nn.Module
        The network as traced (on any device, ``meta`` included).

    Returns
    -------
    hints : LayoutHints
        Module types that fix ``(N, C, H, W)``; prefix tokens, class token and patch
        grid of timm and torchvision ViTs (or of a module with ``cls_token``-style
        parameters); timm's stage channels, reductions and output format.

    See Also
    --------
    infer_layouts : Uses these declarations.

    Examples
    --------
    >>> import torch
    >>> from torchvision.models import vit_b_16
    >>> from skfeat._declarations import collect_hints
    >>> with torch.device("meta"):
    ...     hints = collect_hints(vit_b_16())
    >>> hints.prefix_tokens, hints.class_token, hints.patch_grid, "conv_proj" in hints.channel_first
    (1, True, (14, 14), True)
    """
    import torch

    types = tuple(
        getattr(torch.nn, name) for name in _CHANNEL_FIRST_TYPES if hasattr(torch.nn, name)
    )
    channel_first = frozenset(
        name for name, sub in module.named_modules() if name and isinstance(sub, types)
    )
    prefix, class_token, grid, source = _token_declaration(module)
    stages, stage_format = _stage_declaration(module)
    return LayoutHints(
        channel_first=channel_first,
        prefix_tokens=prefix,
        class_token=class_token,
        patch_grid=grid,
        stages=stages,
        stage_format=stage_format,
        source=source,
    )


def copy_at_size(module: Any, side: int) -> Any | None:
    """A copy of ``module`` set to take ``side`` x ``side`` inputs, through its own API.

    timm's ViTs, EVA, BEiT, Swin and MaxViT refuse another input size unless told, and
    tell through ``set_input_size``, which rescales their position embeddings and
    windows without changing any module name. Other modules are returned as None:
    trace the module itself at ``side`` (CNNs take any size) and skip the side when
    that fails.

    Parameters
    ----------
    module : torch.nn.Module
        Best on the ``meta`` device, where the copy costs no memory.
    side : int
        The input side.

    Returns
    -------
    copy : torch.nn.Module or None
        The resized copy, or None when the module has no ``set_input_size`` or it fails.

    See Also
    --------
    probe_sizes : The sides to trace at.

    Examples
    --------
    >>> import timm, torch
    >>> from skfeat._declarations import copy_at_size
    >>> with torch.device("meta"):
    ...     vit = timm.create_model("test_vit", pretrained=False)
    ...     print(copy_at_size(vit, 320).patch_embed.grid_size)
    (20, 20)
    """
    import copy

    targets = _outermost(module, lambda sub: callable(getattr(sub, "set_input_size", None)))
    if not targets:
        return None
    clone = copy.deepcopy(module)
    submodules = dict(clone.named_modules())
    try:
        for path, _ in targets:  # a wrapper around a timm model: resize the model inside
            submodules[path].set_input_size(img_size=(side, side))
    except Exception:  # an unusual configuration: the caller falls back to the module itself
        return None
    return clone


def _token_declaration(module: Any) -> tuple[int | None, bool, tuple[int, int] | None, str]:
    """Prefix tokens, class token, patch grid and where they were read.

    The declaring module may sit inside a wrapper (``nn.Sequential(vit)``, a user's
    ``self.backbone``). Declarations inside it are its parts (EVA's attention blocks
    repeat ``num_prefix_tokens``); two separate declaring modules leave it unknown.
    """
    found = _outermost(module, lambda sub: _own_token_declaration(sub) is not None)
    declared = _own_token_declaration(found[0][1]) if len(found) == 1 else None
    if declared is None:
        return None, False, None, ""
    prefix, has_class, grid, source = declared
    path = found[0][0]
    return prefix, has_class, grid, source + (f" (in {path!r})" if path else "")


def _outermost(module: Any, declares: Any) -> list[tuple[str, Any]]:
    """The submodules (the module included) for which ``declares`` holds, none inside another."""
    found: list[tuple[str, Any]] = []
    for path, sub in module.named_modules():
        if any(outer == "" or path.startswith(outer + ".") for outer, _ in found):
            continue
        if declares(sub):
            found.append((path, sub))
    return found


def _own_token_declaration(
    module: Any,
) -> tuple[int, bool, tuple[int, int] | None, str] | None:
    embed = getattr(module, "patch_embed", None) or getattr(module, "pixel_embed", None)
    grid = getattr(embed, "grid_size", None)  # timm's PatchEmbed; TNT's PixelEmbed
    grid = tuple(int(g) for g in grid) if isinstance(grid, (tuple, list)) and grid else None
    prefix = getattr(module, "num_prefix_tokens", None)
    if isinstance(prefix, int) and not isinstance(prefix, bool):
        has_class = getattr(module, "has_class_token", None)
        if not isinstance(has_class, bool):
            has_class = getattr(module, "cls_token", None) is not None
        return prefix, has_class and prefix > 0, grid, "timm's num_prefix_tokens"
    seq_length = getattr(module, "seq_length", None)
    image_size = getattr(module, "image_size", None)
    patch_size = getattr(module, "patch_size", None)
    if (
        getattr(module, "class_token", None) is not None
        and isinstance(seq_length, int)
        and isinstance(image_size, int)
        and isinstance(patch_size, int)
        and (image_size // patch_size) ** 2 + 1 == seq_length
    ):
        side = image_size // patch_size
        return 1, True, (side, side), "torchvision's class_token"
    counts: dict[str, int] = {}  # stem -> tokens; numbered ones (cls_token1..N) are per stage
    names = []
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    for name, param in own:
        match = _TOKEN_PARAMETER.fullmatch(name)
        tokens = _token_count(param)
        if match is not None and tokens is not None:
            stem = match.group(1)
            counts[stem] = max(counts.get(stem, 0), tokens)
            names.append(name)
    if counts:
        has_class = any(stem in counts for stem in _CLASS_PARAMETERS)
        return sum(counts.values()), has_class, grid, f"the module's {' and '.join(names)}"
    return None


def _token_count(param: Any) -> int | None:
    """Tokens in a prefix-token parameter: ``(1, n, C)``, ``(n, C)`` or one ``(C,)``."""
    shape = tuple(getattr(param, "shape", ()))
    if len(shape) == 3 and shape[0] == 1:
        return int(shape[1])
    if len(shape) == 2:
        return int(shape[0])
    if len(shape) == 1:
        return 1  # CLIP's class_embedding
    return None


def _stage_declaration(module: Any) -> tuple[dict[str, tuple[int, int]], str | None]:
    """timm's ``feature_info`` stages and ``output_fmt``, named as in ``module``."""
    found = _outermost(module, lambda sub: isinstance(getattr(sub, "feature_info", None), list))
    if len(found) != 1:
        return {}, None
    path, owner = found[0]
    prefix = f"{path}." if path else ""
    stages = {}
    for entry in owner.feature_info:
        if isinstance(entry, dict) and {"module", "num_chs", "reduction"} <= entry.keys():
            name = prefix + str(entry["module"])
            stages[name] = (int(entry["num_chs"]), int(entry["reduction"]))
    fmt = getattr(owner, "output_fmt", None)
    fmt = str(getattr(fmt, "value", fmt)) if fmt is not None else None
    return stages, fmt if fmt in ("NCHW", "NHWC") else None
