"""Pixels to upright RGB uint8: EXIF orientation, modes, bit depths, alpha.

- EXIF orientation is applied, so a rotated file gives its upright pixels.
- Palette, grey, bilevel, CMYK and YCCK become RGB; alpha is composited on white.
- 16-bit data is scaled (``round(v / 257)``), never clipped; float arrays must lie in
  [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skfeat._inputs._failures import Refused

__all__ = [
    "ImageHeader",
    "array_to_rgb",
    "composite_on_white",
    "exif_orientation",
    "pil_to_rgb",
    "to_upright",
]

_WHITE = 255.0
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


@dataclass
class ImageHeader:
    """What is known of an image: filled as decoding goes, so a failure keeps it.

    ``format`` is Pillow's (``"JPEG"``, ``"PNG"``...) or None for arrays and
    in-memory images; ``mode`` is Pillow's mode as stored (``"CMYK"``, ``"I;16"``) or
    the dtype of an array; ``width`` and ``height`` are those of the upright image
    once decoded, or of the stored image when decoding failed after the header.
    """

    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None


# Stored pixels -> upright pixels, per EXIF orientation (2-8; 1 is upright).
_TO_UPRIGHT = {
    2: lambda pixels: pixels[:, ::-1],
    3: lambda pixels: pixels[::-1, ::-1],
    4: lambda pixels: pixels[::-1],
    5: lambda pixels: pixels.swapaxes(0, 1),
    6: lambda pixels: np.rot90(pixels, -1),
    7: lambda pixels: pixels[::-1, ::-1].swapaxes(0, 1),
    8: lambda pixels: np.rot90(pixels, 1),
}


def exif_orientation(image: Any) -> int:
    """The EXIF orientation of a PIL image (2-8), or 1 (upright) when it has none."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block is no reason to lose the picture
        return 1
    return value if value in _TO_UPRIGHT else 1


def pil_to_rgb(image: Any) -> np.ndarray:
    """Convert a PIL image to upright RGB uint8: EXIF applied, alpha on white, 16-bit scaled."""
    orientation = exif_orientation(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        rgb = _grey_to_rgb(_scale_16bit(np.asarray(image, dtype=np.float64)))
    elif mode == "F":
        rgb = _grey_to_rgb(_float_to_uint8(np.asarray(image, dtype=np.float64)))
    elif mode in _ALPHA_MODES:
        rgb = composite_on_white(np.asarray(image.convert("RGBA")))
    else:
        # L, 1, CMYK (Adobe-inverted and YCCK JPEGs included), YCbCr...: Pillow's conversion.
        rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    return to_upright(rgb, orientation)


def to_upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels turned upright per EXIF ``orientation``, C-contiguous."""
    if orientation in _TO_UPRIGHT:
        rgb = _TO_UPRIGHT[orientation](rgb)
    return np.ascontiguousarray(rgb)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    # 16-bit data spans 0..65535; 65535 / 257 = 255 maps the range exactly.
    return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(H, W, 4)`` uint8 image on a white background."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32)
    return np.rint(rgb * alpha + _WHITE * (1.0 - alpha)).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map floats in [0, 1] to uint8; NaN, infinities and values out of range are errors."""
    if not np.all(np.isfinite(values)):
        raise Refused("the array contains NaN or infinite values; pixels must be finite")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise Refused(
            f"float pixels out of range: expected values in [0, 1], got [{low:g}, {high:g}]; "
            "divide 0-255 data by 255, or pass it as uint8"
        )
    return np.rint(values * 255.0).astype(np.uint8)


def array_to_rgb(array: np.ndarray, header: ImageHeader | None = None) -> np.ndarray:
    """Convert an ``(H, W)`` or ``(H, W, 1|3|4)`` uint8, uint16, bool or float array to RGB."""
    if header is not None:
        header.mode = str(array.dtype)
        if array.ndim in (2, 3):
            header.height, header.width = array.shape[:2]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = "; it looks channels-first: pass array.transpose(1, 2, 0)"
        raise Refused(
            f"an image array must have shape (H, W) or (H, W, C) with C in (1, 3, 4), "
            f"got shape {array.shape}{hint}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise Refused(f"the image array is empty, shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = _scale_16bit(array.astype(np.float64))
    elif array.dtype.kind == "f":
        pixels = _float_to_uint8(array.astype(np.float64))
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    else:
        raise Refused(
            f"unsupported pixel dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535) or "
            "float in [0, 1], for example array.astype(np.uint8) for 0-255 integers"
        )
    channels = pixels.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if channels == 4:
        return composite_on_white(pixels)
    return np.ascontiguousarray(pixels)
