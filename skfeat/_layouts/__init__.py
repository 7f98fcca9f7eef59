"""What the axes of a layer's output mean: its layout.

A layer's output for one image is a channel-first map ``(C, H, W)`` (``"map"``), a
channel-last map ``(H, W, C)`` (``"map_last"``), a token sequence ``(T, C)`` whose first
tokens may be prefix tokens (class, distillation, register; ``"tokens"``), a vector
``(D,)`` (``"vector"``), or ``"unknown"``.

The layout is read from what the model is, never guessed from one shape:

- **Geometry.** The network is traced at several input sides (for example 224, 448
  and 672 px). Spatial axes grow with the side; a token count grows with its square
  (``T = p + g * g`` for a ``g`` x ``g`` patch grid and ``p`` extra tokens); channel axes
  stay put. A map, a channel-last map or a token sequence is named only when exactly
  one of them fits every size seen.
- **Declarations.** What the model says about itself
  (:func:`skfeat._declarations.collect_hints`): the
  module types that produce ``(N, C, H, W)`` by definition (``Conv2d``, ``BatchNorm2d``,
  2-D pools ...), timm's ``num_prefix_tokens`` / ``has_class_token`` /
  ``patch_embed.grid_size`` / ``feature_info`` / ``output_fmt``, torchvision ViT's
  ``class_token`` / ``seq_length``. Geometry counts the extra tokens but cannot tell
  where they are or what they are, so extra tokens are only accepted when the model
  declares as many prefix tokens.

Where the two disagree, or where neither is decisive (a user module traced at one
size only, axes that do not scale cleanly, windows folded into the batch axis), the
layout is ``"unknown"`` with a reason saying what was seen. This module imports
without torch.
"""

from skfeat._layouts._inference import infer_layout, infer_layouts, probe_sizes
from skfeat._layouts._types import (
    LAYOUT_KINDS,
    MAP,
    MAP_LAST,
    TOKENS,
    UNKNOWN,
    VECTOR,
    Layout,
    LayoutHints,
)

__all__ = [
    "LAYOUT_KINDS",
    "MAP",
    "MAP_LAST",
    "TOKENS",
    "UNKNOWN",
    "VECTOR",
    "Layout",
    "LayoutHints",
    "infer_layout",
    "infer_layouts",
    "probe_sizes",
]
