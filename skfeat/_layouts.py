"""What the axes of a layer's output mean: its layout.

A layer gives, for one image, a channel-first map ``(C, H, W)``, a channel-last map
``(H, W, C)``, a token sequence ``(T, C)`` (with some prefix tokens before the patch
tokens), or a vector ``(D,)``. Pooling depends on it, so a layer whose layout cannot
be known is ``unknown``, and pooling it is an error rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAP", "MAP_LAST", "TOKENS", "UNKNOWN", "VECTOR", "Layout", "layout_of_shape"]

MAP = "map"
MAP_LAST = "map_last"
TOKENS = "tokens"
VECTOR = "vector"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Layout:
    """The layout of one layer's output.

    Parameters
    ----------
    kind : {"map", "map_last", "tokens", "vector", "unknown"}
        Channel-first map ``(C, H, W)``, channel-last map ``(H, W, C)``, token
        sequence ``(T, C)``, vector ``(D,)``, or not known.
    prefix_tokens : int, default=0
        Tokens only: how many tokens (class, distillation, register) come before
        the patch tokens.
    class_token : bool, default=False
        Tokens only: whether token 0 is a class token.
    reason : str, default=""
        Unknown only: what was seen, for the error that refuses to pool it.

    Examples
    --------
    >>> Layout("tokens", prefix_tokens=1, class_token=True).describe((197, 768))
    'tokens (197, 768): 1 prefix token (class token) + 196 patch tokens'
    """

    kind: str
    prefix_tokens: int = 0
    class_token: bool = False
    reason: str = ""

    def channels(self, shape: tuple[int, ...]) -> int:
        """The number of channels of an output of ``shape`` in this layout."""
        return shape[0] if self.kind in (MAP, VECTOR) else shape[-1]

    def describe(self, shape: tuple[int, ...]) -> str:
        """The layout in words, for tables and messages."""
        if self.kind == TOKENS:
            prefix = self.prefix_tokens
            what = " (class token)" if self.class_token else ""
            plural = "" if prefix == 1 else "s"
            return (
                f"tokens {shape}: {prefix} prefix token{plural}{what} + "
                f"{shape[0] - prefix} patch tokens"
            )
        words = {MAP: "map (C, H, W)", MAP_LAST: "map (H, W, C)", VECTOR: "vector"}
        return f"{words.get(self.kind, 'unknown layout')} {shape}"


def layout_of_shape(shape: tuple[int, ...]) -> Layout:
    """The layout that one output shape alone allows: maps ``(C, H, W)`` and vectors.

    Anything else is unknown: one shape cannot tell channels from positions.

    Examples
    --------
    >>> layout_of_shape((512, 7, 7)).kind, layout_of_shape((512,)).kind
    ('map', 'vector')
    >>> layout_of_shape((197, 768)).kind
    'unknown'
    """
    if len(shape) == 3:
        return Layout(MAP)
    if len(shape) == 1:
        return Layout(VECTOR)
    return Layout(
        UNKNOWN,
        reason=f"an output of shape {shape}, which is neither a map (C, H, W) nor a vector (D,)",
    )
