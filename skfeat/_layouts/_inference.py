"""Inference of a layer's layout from its traced sizes and the model's declarations.

The rules are those of :mod:`skfeat._layouts`: spatial axes grow with the input side,
a token count with its square, channels stay put; a layout is named only when exactly
one fits every size seen, and extra tokens only when the model declares as many
prefix tokens. This module imports without torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from skfeat._layouts._types import Layout, LayoutHints

__all__ = ["infer_layout", "infer_layouts", "probe_sizes"]


def probe_sizes(reference: int) -> tuple[int, int, int]:
    """Input sides to trace at: the reference side and its double and triple.

    Multiples keep every divisibility a model needs (patch sizes, window partitions),
    and three sides tell apart the small axes that two cannot (a fixed axis of 2 from
    a spatial one, a one-patch grid from a short sequence).

    Parameters
    ----------
    reference : int
        The side the features are read at (the preprocessing crop).

    Returns
    -------
    sides : tuple of int
        ``reference``, ``2 * reference`` and ``3 * reference``.

    See Also
    --------
    infer_layouts : Reads the layouts from the traces at these sides.

    Examples
    --------
    >>> from skfeat._layouts import probe_sizes
    >>> probe_sizes(518)
    (518, 1036, 1554)
    """
    return reference, 2 * reference, 3 * reference


def infer_layouts(
    traces: Mapping[int, Mapping[str, tuple[int, ...]]],
    *,
    reference: int,
    batch: int = 1,
    hints: LayoutHints | None = None,
) -> dict[str, Layout]:
    """The layout of every layer traced at the ``reference`` input side.

    Each layer is judged by :func:`infer_layout` on the sides where it was seen,
    together with what the model declares.

    Parameters
    ----------
    traces : mapping of int to mapping of str to tuple of int
        Input side to ``{layer: output shape}``, each shape with its batch axis, as
        recorded by a forward pass on a ``(batch, 3, side, side)`` input. Sides where
        the forward failed are left out; a layer missing at some side is judged on
        the sides where it was seen.
    reference : int
        The side the features are read at; its trace gives the layers.
    batch : int, default=1
        The batch size of the traces. Use 2: with 1, an output whose first axis is
        not the batch (windows folded into it, a sequence-first ``(T, N, C)``) goes
        unseen wherever that axis happens to be 1, and so does one that mixes images.
    hints : LayoutHints or None, default=None
        What the model declares (:func:`skfeat._declarations.collect_hints`).

    Returns
    -------
    layouts : dict of str to Layout
        Layer name to layout, in the order of ``traces[reference]``.

    See Also
    --------
    probe_sizes : The sides to trace at.
    skfeat._declarations.collect_hints : What the model declares.

    Examples
    --------
    A Swin stage is channel-last: its first two axes grow with the input.

    >>> from skfeat._layouts import infer_layouts
    >>> traces = {
    ...     224: {"features.7": (2, 7, 7, 768), "flatten": (2, 768)},
    ...     448: {"features.7": (2, 14, 14, 768), "flatten": (2, 768)},
    ...     672: {"features.7": (2, 21, 21, 768), "flatten": (2, 768)},
    ... }
    >>> layouts = infer_layouts(traces, reference=224, batch=2)
    >>> layouts["features.7"].kind, layouts["flatten"].kind
    ('map_last', 'vector')
    """
    if reference not in traces:
        raise ValueError(f"reference={reference!r} is not one of the traced sides {list(traces)}.")
    hints = hints if hints is not None else LayoutHints()
    maps = frozenset(
        tuple(shape[1:])
        for name, shape in traces[reference].items()
        if name in hints.channel_first and len(shape) == 4
    )
    hints = dataclasses.replace(hints, traced_maps=hints.traced_maps | maps)
    layouts = {}
    for name in traces[reference]:
        shapes = {side: trace[name] for side, trace in traces.items() if name in trace}
        layouts[name] = infer_layout(name, shapes, reference=reference, batch=batch, hints=hints)
    return layouts


def infer_layout(
    name: str,
    shapes: Mapping[int, tuple[int, ...]],
    *,
    reference: int,
    batch: int = 1,
    hints: LayoutHints | None = None,
) -> Layout:
    """The layout of one layer, from its output shapes at several input sides.

    A layout is named only when the shapes and the declarations agree on exactly one;
    otherwise the layout is ``"unknown"`` and its reason says what was seen.

    Parameters
    ----------
    name : str
        The layer's module name, for messages and for the module-type hints.
    shapes : mapping of int to tuple of int
        Input side to output shape, with the batch axis.
    reference : int
        The side the features are read at; it must be in ``shapes``.
    batch : int, default=1
        The batch size of the traces.
    hints : LayoutHints or None, default=None
        What the model declares (:func:`skfeat._declarations.collect_hints`).

    Returns
    -------
    layout : Layout
        ``"unknown"``, with a reason, unless the shapes and the declarations agree on
        exactly one layout.

    See Also
    --------
    infer_layouts : The same for every traced layer.

    Examples
    --------
    A ViT block, traced at 224 and 448 px: ``197 = 1 + 14 * 14`` and ``785 = 1 + 28 * 28``
    tokens, and the model declares one prefix token, its class token.

    >>> from skfeat._layouts import LayoutHints, infer_layout
    >>> hints = LayoutHints(prefix_tokens=1, class_token=True)
    >>> infer_layout("blocks.11", {224: (1, 197, 768), 448: (1, 785, 768)},
    ...              reference=224, hints=hints)
    Layout(kind='tokens', prefix_tokens=1, class_token=True, reason='', evidence=...)

    The same output seen at one size only, from a module that declares nothing:

    >>> layout = infer_layout("block", {224: (1, 197, 768)}, reference=224)
    >>> layout.kind
    'unknown'
    >>> print(layout.reason)
    output (197, 768) per image at 224 px, traced at that size only, and the model declares
    no token or patch-grid layout that explains it
    """
    if reference not in shapes:
        raise ValueError(f"reference={reference!r} is not one of the traced sides {list(shapes)}.")
    hints = hints if hints is not None else LayoutHints()
    sides = sorted(shapes)
    seen = _seen({side: shapes[side][1:] for side in sides})
    folded = [side for side in sides if not shapes[side] or shapes[side][0] != batch]
    if folded:
        side = folded[0]
        return _unknown(
            f"output {shapes[side]} at {side} px for a batch of {batch}: its first axis is not "
            "the batch, so its rows are not images (windows or heads folded into the batch "
            "axis, or a sequence-first layout)"
        )
    per_image = {side: tuple(shapes[side][1:]) for side in sides}
    ranks = {len(shape) for shape in per_image.values()}
    if len(ranks) > 1:
        return _unknown(f"output {seen}: its number of axes changes with the input size")
    rank = ranks.pop()
    if rank == 1:
        return Layout("vector", evidence=f"one axis per image: {seen}")
    if rank not in (2, 3):
        return _unknown(
            f"output {seen}: {rank} axes per image, where maps have 3, tokens 2 and vectors 1"
        )
    fit = _geometry(per_image)
    if rank == 2:
        return _tokens(per_image[reference], reference, fit, hints, seen)
    return _map(name, per_image[reference], reference, fit, hints, seen)


# --- geometry ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """How one axis behaves across the traced sides."""

    values: tuple[int, ...]
    fixed: bool  # the same at every side: a channel (or an adaptively pooled) axis
    spatial: bool  # within rounding of side / stride at every side
    extras: frozenset[int]  # p such that value = p + g*g with g spatial and growing

    def describe(self) -> str:
        if self.fixed:
            return f"stays {self.values[0]}"
        if self.spatial and not self.extras:
            return f"grows with the input ({_join(self.values)})"
        if self.extras and not self.spatial:
            return f"grows like a patch count ({_join(self.values)})"
        if self.extras:
            return f"grows either way ({_join(self.values)})"
        return f"changes but not in step with the input ({_join(self.values)})"


@dataclass(frozen=True)
class _Fit:
    """What the traced sizes say about one layer: which layouts fit, and why."""

    fits: tuple[str, ...]
    axes: tuple[_Axis, ...]
    extras: int | None = None  # tokens: the extra tokens besides the patch grid
    grid: int = 0
    why: str = ""


def _geometry(per_image: Mapping[int, tuple[int, ...]]) -> _Fit | None:
    """Which layouts the shapes at several sides allow, or None from one side only."""
    sides = sorted(per_image)
    if len(sides) < 2:
        return None
    rank = len(per_image[sides[0]])
    axes = tuple(_axis(tuple(per_image[side][i] for side in sides), sides) for i in range(rank))
    described = "; ".join(f"axis {i} {axis.describe()}" for i, axis in enumerate(axes))
    if rank == 2:
        count, width = axes
        if not (width.fixed and count.extras):
            return _Fit((), axes, why=described)
        if len(count.extras) > 1 or count.spatial:
            return _Fit(
                (),
                axes,
                why=f"{described}: the token count fits more than one split into extra "
                "tokens and a patch grid, or a 1-D sequence; more input sizes would tell",
            )
        extras = next(iter(count.extras))
        return _Fit(("tokens",), axes, extras=extras, grid=math.isqrt(count.values[0] - extras))
    first, second, last = axes
    fits = tuple(
        kind
        for kind, ok in (
            ("map", first.fixed and _same_rate(second, last, sides)),
            ("map_last", _same_rate(first, second, sides) and last.fixed),
        )
        if ok
    )
    if len(fits) > 1:
        described += ": both a map (C, H, W) and a channel-last map (H, W, C) fit"
    return _Fit(fits, axes, why=described)


def _axis(values: tuple[int, ...], sides: Sequence[int]) -> _Axis:
    fixed = len(set(values)) == 1
    return _Axis(values, fixed, _spatial(values, sides), _token_extras(values, sides))


def _same_rate(height: _Axis, width: _Axis, sides: Sequence[int]) -> bool:
    """Whether two axes are the rows and columns of one map: spatial, at one rate.

    A square input gives a square map (or one collapsed to 1 x 1), so a one-row axis
    beside a growing one is not taken for space. Unpadded convolutions (Inception-v3's
    ``Mixed_5b``: 35, 72, 109 px at 299, 598, 897) make a map grow in step with the
    input but a few pixels short: seen at three or more sides, a fixed offset is
    allowed (:func:`_affine`).
    """
    values, doubled = height.values + width.values, [*sides, *sides]
    return _spatial(values, doubled) or _affine(values, doubled)


def _affine(values: Sequence[int], sides: Sequence[int]) -> bool:
    """Whether ``value = q * side + b`` within 1, q > 0, for a small offset ``b``.

    Needs three distinct sides (two always fit a line) and an offset under a quarter
    of the smallest value, so the map is mostly proportional to the input.
    """
    if len(set(sides)) < 3 or min(values) < 1:
        return False
    n = len(values)
    mean_side, mean_value = sum(sides) / n, sum(values) / n
    spread = sum((side - mean_side) ** 2 for side in sides)
    rate = (
        sum((s - mean_side) * (v - mean_value) for s, v in zip(sides, values, strict=True)) / spread
    )
    offset = mean_value - rate * mean_side
    residual = max(abs(v - rate * s - offset) for s, v in zip(sides, values, strict=True))
    return rate > 0 and residual <= 1 and abs(offset) <= min(values) / 4


def _spatial(values: Sequence[int], sides: Sequence[int]) -> bool:
    """Whether some rate q puts every value within 1 of q * side (strided rounding)."""
    if min(values) < 1:
        return False
    low, high = Fraction(0), None
    for value, side in zip(values, sides, strict=True):
        low = max(low, Fraction(value - 1, side))
        upper = Fraction(value + 1, side)
        high = upper if high is None else min(high, upper)
    return high is not None and low < high


def _token_extras(values: Sequence[int], sides: Sequence[int]) -> frozenset[int]:
    """Every p with ``value = p + g * g`` at each side, ``g`` spatial and growing."""
    found = set()
    for root in range(1, math.isqrt(values[0]) + 1):
        extras = values[0] - root * root
        grids = []
        for value in values:
            cells = value - extras
            grid = math.isqrt(cells) if cells > 0 else 0
            if grid < 1 or grid * grid != cells:
                break
            grids.append(grid)
        else:
            if len(set(grids)) == len(grids) and _spatial(grids, sides):
                found.add(extras)
    return frozenset(found)


# --- decisions -----------------------------------------------------------------------


def _tokens(
    shape: tuple[int, ...], side: int, fit: _Fit | None, hints: LayoutHints, seen: str
) -> Layout:
    count = shape[0]
    declared = hints.prefix_tokens
    if fit is None:
        if hints.patch_grid is not None:
            cells = hints.patch_grid[0] * hints.patch_grid[1]
            grid = "x".join(map(str, hints.patch_grid))
            if count == cells:
                return Layout("tokens", evidence=f"{count} tokens = the {grid} patch grid")
            if declared and count == cells + declared:
                return Layout(
                    "tokens",
                    prefix_tokens=declared,
                    class_token=hints.class_token,
                    evidence=f"{count} tokens = {declared} declared by {hints.source} + the "
                    f"{grid} patch grid",
                )
        traced = _traced_grid(count, hints)
        if traced is not None:
            return traced
        return _unknown(
            f"output {seen}, traced at that size only, and the model declares no token or "
            "patch-grid layout that explains it"
        )
    if "tokens" not in fit.fits:
        return _unknown(f"output {seen}: {fit.why}; a token sequence (T, C) has T = p + g*g")
    grid = f"{fit.grid}x{fit.grid}"
    if fit.extras == 0:
        return Layout("tokens", evidence=f"{count} tokens = a {grid} patch grid")
    if declared is None or declared != fit.extras:
        says = (
            f"{hints.source} declares {declared} prefix tokens"
            if declared is not None
            else "the model declares none"
        )
        return _unknown(
            f"output {seen}: {fit.extras} tokens besides a {grid} patch grid, but {says}, so "
            "where they sit and what they are is not known"
        )
    return Layout(
        "tokens",
        prefix_tokens=declared,
        class_token=hints.class_token,
        evidence=f"{count} tokens = {declared} declared by {hints.source} + a {grid} patch grid",
    )


def _traced_grid(count: int, hints: LayoutHints) -> Layout | None:
    """Tokens at one size: ``count`` is a traced square map's grid, after the declared prefix.

    Only when exactly one split fits: ``g * g`` or ``p + g * g`` with ``p`` declared.
    """
    grids = {shape[1] for shape in hints.traced_maps if shape[1] == shape[2]}
    declared = hints.prefix_tokens or 0
    splits = {
        extras
        for extras in {0, declared}
        if count > extras
        and math.isqrt(count - extras) ** 2 == count - extras
        and math.isqrt(count - extras) in grids
    }
    if len(splits) != 1:
        return None
    extras = splits.pop()
    grid = math.isqrt(count - extras)
    where = f"the {grid}x{grid} grid of a traced convolution's map"
    if extras == 0:
        return Layout("tokens", evidence=f"{count} tokens = {where}")
    return Layout(
        "tokens",
        prefix_tokens=extras,
        class_token=hints.class_token,
        evidence=f"{count} tokens = {extras} declared by {hints.source} + {where}",
    )


def _map(
    name: str,
    shape: tuple[int, ...],
    side: int,
    fit: _Fit | None,
    hints: LayoutHints,
    seen: str,
) -> Layout:
    fits = fit.fits if fit is not None else ()
    if name in hints.channel_first:
        # The module's type fixes (N, C, H, W); it decides what sizes alone cannot
        # (an adaptive pool's fixed 7x7) unless they clearly say otherwise.
        if fits and "map" not in fits:
            return _unknown(
                f"output {seen}: the module's type gives (C, H, W), but the sizes fit "
                f"{fits[0]!r} ({fit.why if fit else ''})"
            )
        return Layout("map", evidence="the module's type computes (N, C, H, W)")
    if len(fits) == 1:
        return Layout(fits[0], evidence=f"sizes seen: {seen}")
    if fit is not None:
        return _unknown(
            f"output {seen}: {fit.why}; a map has two axes that grow with the input and one "
            "that stays (C, H, W or H, W, C)"
        )
    declared = _declared_map(name, shape, side, hints)
    if declared is not None:
        return declared
    if tuple(shape) in hints.traced_maps and len(set(shape)) > 1:
        return Layout("map", evidence="the same (C, H, W) as a traced convolution's output")
    return _unknown(
        f"output {seen}, traced at that size only, and the model declares nothing that says "
        "which axis holds the channels"
    )


def _declared_map(
    name: str, shape: tuple[int, ...], side: int, hints: LayoutHints
) -> Layout | None:
    """A map layout from timm's stage declarations or the patch grid, at one size."""
    if name in hints.stages:
        channels, reduction = hints.stages[name]
        spatial = {k for k in range(3) if abs(shape[k] - side / reduction) < 1}
        orders = [
            kind
            for kind, channel_axis in (("map", 0), ("map_last", 2))
            if shape[channel_axis] == channels and spatial >= {0, 1, 2} - {channel_axis}
        ]
        declared = {"NCHW": "map", "NHWC": "map_last"}.get(hints.stage_format or "")
        if len(orders) == 1 and declared in (None, orders[0]):
            return Layout(
                orders[0],
                evidence=f"stage of {channels} channels at stride {reduction}, as the model "
                "declares",
            )
    if hints.patch_grid is not None:
        grid = tuple(hints.patch_grid)
        orders = [
            kind
            for kind, spatial in (("map", shape[1:]), ("map_last", shape[:2]))
            if spatial == grid
        ]
        if len(orders) == 1:
            return Layout(orders[0], evidence=f"two axes are the declared {grid} patch grid")
    return None


def _unknown(reason: str) -> Layout:
    return Layout("unknown", reason=reason)


def _seen(per_image: Mapping[int, tuple[int, ...]]) -> str:
    parts = [f"{shape} at {side} px" for side, shape in per_image.items()]
    first, *rest = parts
    return first.replace(" at ", " per image at ", 1) + "".join(f", {part}" for part in rest)


def _join(values: Sequence[int]) -> str:
    return ", ".join(map(str, values))
