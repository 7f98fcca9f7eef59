"""The layout type: what the axes of one layer's output mean, and what a model declares.

:class:`Layout` names a layer's output as a channel-first map, a channel-last map, a
token sequence, a vector or unknown (with a reason); :class:`LayoutHints` holds what a
model declares about its layouts, which :mod:`skfeat._layouts._inference` weighs
against the traced sizes. This module imports without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "LAYOUT_KINDS",
    "MAP",
    "MAP_LAST",
    "TOKENS",
    "UNKNOWN",
    "VECTOR",
    "Layout",
    "LayoutHints",
]

MAP = "map"
MAP_LAST = "map_last"
TOKENS = "tokens"
VECTOR = "vector"
UNKNOWN = "unknown"
LAYOUT_KINDS = (MAP, MAP_LAST, TOKENS, VECTOR, UNKNOWN)

_AXES = {
    "map": "(C, H, W)",
    "map_last": "(H, W, C)",
    "tokens": "(T, C)",
    "vector": "(D,)",
}


@dataclass(frozen=True)
class Layout:
    """The layout of one layer's output for one image.

    It says which axis holds the channels, and for tokens how many prefix tokens come
    before the patch tokens, so that poolings and widths follow the layer's own axes.

    Parameters
    ----------
    kind : {"map", "map_last", "tokens", "vector", "unknown"}
        ``"map"`` is ``(C, H, W)``, ``"map_last"`` is ``(H, W, C)``, ``"tokens"`` is
        ``(T, C)``, ``"vector"`` is ``(D,)``.
    prefix_tokens : int, default=0
        Tokens only: how many tokens come before the patch tokens (class,
        distillation, register tokens).
    class_token : bool, default=False
        Tokens only: whether token 0 is a class token.
    reason : str, default=""
        Unknown only: what was seen and why the layout cannot be known.
    evidence : str, default=""
        What decided the layout, for messages; not part of equality.

    See Also
    --------
    infer_layout : Decides the layout of one layer.

    Examples
    --------
    >>> from skfeat._layouts import Layout
    >>> Layout("tokens", prefix_tokens=5, class_token=True).describe()
    'tokens (T, C), 5 prefix tokens, token 0 the class token'
    >>> Layout("map_last").channels((7, 7, 768))
    768
    """

    kind: str
    prefix_tokens: int = 0
    class_token: bool = False
    reason: str = ""
    evidence: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"Layout kind {self.kind!r} is not one of {LAYOUT_KINDS}.")
        if self.kind != "tokens" and (self.prefix_tokens or self.class_token):
            raise ValueError(f"A {self.kind!r} layout has no prefix or class tokens.")
        if self.prefix_tokens < 0 or (self.class_token and self.prefix_tokens < 1):
            raise ValueError(
                f"prefix_tokens={self.prefix_tokens!r} with class_token={self.class_token!r}: "
                "the class token is one of the prefix tokens."
            )
        if (self.kind == "unknown") != bool(self.reason):
            raise ValueError("An unknown layout, and only an unknown one, needs a reason.")

    @property
    def known(self) -> bool:
        """Whether the layout is anything but ``"unknown"``."""
        return self.kind != "unknown"

    def describe(self) -> str:
        """A short label for layer listings.

        Returns
        -------
        label : str
            For example ``'map (H, W, C)'`` or ``'tokens (T, C), 1 prefix token, token 0
            the class token'``.
        """
        if self.kind == "unknown":
            return "unknown"
        label = f"{self.kind.removesuffix('_last')} {_AXES[self.kind]}"
        if self.kind == "tokens" and self.prefix_tokens:
            plural = "s" if self.prefix_tokens > 1 else ""
            label += f", {self.prefix_tokens} prefix token{plural}"
            if self.class_token:
                label += ", token 0 the class token"
        return label

    def channels(self, shape: Sequence[int]) -> int:
        """The channel width of an output in this layout.

        Parameters
        ----------
        shape : sequence of int
            The output shape for one image, without the batch axis.

        Returns
        -------
        channels : int
            ``C`` of a map or a token sequence, ``D`` of a vector.
        """
        if not self.known:
            raise ValueError(f"An unknown layout has no channel axis: {self.reason}")
        return int(shape[0] if self.kind in ("map", "vector") else shape[-1])


@dataclass(frozen=True)
class LayoutHints:
    """What a model declares about its layers, as read by
    :func:`skfeat._declarations.collect_hints`.

    Declarations settle what the traced sizes cannot: which extra tokens are prefix
    tokens and whether the first is a class token, and the layout of a layer seen at
    one input size only.

    Parameters
    ----------
    channel_first : frozenset of str, default=frozenset()
        Modules whose output is ``(N, C, H, W)`` by their type (``Conv2d`` ...).
    prefix_tokens : int or None, default=None
        How many tokens the model puts before its patch tokens, when it says.
    class_token : bool, default=False
        Whether the first prefix token is a class token.
    patch_grid : tuple of int or None, default=None
        The patch grid ``(rows, columns)`` at the traced reference size.
    stages : mapping of str to tuple of int, default={}
        Stage module to ``(channels, reduction)``, from timm's ``feature_info``.
    stage_format : {"NCHW", "NHWC"} or None, default=None
        The axis order the model declares for its stage outputs (timm ``output_fmt``).
    source : str, default=""
        Where the token declarations come from, for messages.
    traced_maps : frozenset of tuple of int, default=frozenset()
        The ``(C, H, W)`` outputs of the ``channel_first`` modules at the reference
        side; :func:`infer_layouts` fills it in. For a model traced at one size only
        they settle a layer of the same shape (a map), or a token count of ``p + g*g``
        for a square ``g`` x ``g`` map among them (the patch grid).

    See Also
    --------
    skfeat._declarations.collect_hints : Reads these from a module.

    Examples
    --------
    >>> from skfeat._layouts import LayoutHints
    >>> LayoutHints(prefix_tokens=5, class_token=True).prefix_tokens
    5
    """

    channel_first: frozenset[str] = frozenset()
    prefix_tokens: int | None = None
    class_token: bool = False
    patch_grid: tuple[int, int] | None = None
    stages: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    stage_format: str | None = None
    source: str = ""
    traced_maps: frozenset[tuple[int, ...]] = frozenset()
