"""From ``X`` to a list of items, and from one item to an upright RGB uint8 array.

One module per job, imported one way (``_failures`` at the bottom):

- :mod:`~skfeat._inputs._items`: ``X`` as a whole to a list of items.
- :mod:`~skfeat._inputs._reading`: one file's bytes, bounded, from regular files only.
- :mod:`~skfeat._inputs._pixels`: pixels to upright RGB uint8 (EXIF, modes, alpha).
- :mod:`~skfeat._inputs._decoding`: one item to RGB, under the decode policy.
- :mod:`~skfeat._inputs._failures`: causes, errors and the call's warning.

Only numpy and Pillow are used here (and simplejpeg, when asked for).
"""

from __future__ import annotations

from skfeat._inputs._decoding import DECODERS, decode, read_item
from skfeat._inputs._failures import decode_warning, describe_item, with_on_error_hint
from skfeat._inputs._items import as_items, input_column_name
from skfeat._inputs._pixels import ImageHeader, array_to_rgb, pil_to_rgb
from skfeat._inputs._reading import max_file_bytes, read_file

__all__ = [
    "DECODERS",
    "ImageHeader",
    "array_to_rgb",
    "as_items",
    "decode",
    "decode_warning",
    "describe_item",
    "input_column_name",
    "max_file_bytes",
    "pil_to_rgb",
    "read_file",
    "read_item",
    "with_on_error_hint",
]
