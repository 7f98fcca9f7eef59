"""JPEG pixels decoded by simplejpeg (libjpeg-turbo's TurboJPEG API), for ``decoder="simplejpeg"``.

:func:`skfeat._inputs.decode` still opens every file with Pillow first: format, mode,
size, EXIF orientation and the decompression-bomb check come from Pillow's header, and
only a JPEG whose Pillow mode is ``"RGB"`` (YCbCr or RGB) or ``"L"`` (grey) has its
pixels decoded here. CMYK and YCCK JPEGs, every other format, and any file simplejpeg
cannot decode stay with Pillow, so which files fail, and their messages, are Pillow's.

The pixels are libjpeg-turbo's accurate integer IDCT and smooth chroma upsampling
(``fastdct=False, fastupsample=False``, as Pillow decodes), at the same reduced DCT
scale as ``PIL.Image.draft`` (1/2, 1/4 or 1/8 only): without scaling they equal
Pillow's bit for bit, and with it they match to within a level or two.

simplejpeg is imported on first use only, so ``import skfeat`` never loads it.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FAST_MODES", "available", "decode_rgb", "draft_scale", "load"]

FAST_MODES = ("RGB", "L")  # Pillow's modes of the JPEGs decoded here; CMYK stays with Pillow
_DRAFT_SCALES = (8, 4, 2)  # PIL.Image.draft's reductions; libjpeg-turbo's 3/8, 5/8... are not used
_ONE_BLOCK = 8


@functools.cache
def available() -> bool:
    """Whether simplejpeg can be imported (what ``decoder="auto"`` picks it by).

    Returns
    -------
    bool
        False when simplejpeg is not installed, or when its build cannot load with the
        installed numpy (simplejpeg < 1.7.4 with numpy 2 fails on import).

    Examples
    --------
    >>> from skfeat._jpeg import available
    >>> isinstance(available(), bool)
    True
    """
    from skfeat._optional import importable

    return importable("simplejpeg")


def load() -> ModuleType:
    """The simplejpeg module, or :class:`~skfeat.exceptions.MissingDependencyError`.

    Raises
    ------
    MissingDependencyError
        When simplejpeg is not installed, with the pip command that installs it.
    """
    from skfeat._optional import import_optional

    return import_optional("simplejpeg", extra="jpeg", purpose="decoder='simplejpeg'")


def draft_scale(width: int, height: int, min_side: int | None) -> int:
    """The DCT reduction ``PIL.Image.draft(None, (min_side, min_side))`` picks for a JPEG.

    The largest of 8, 4 and 2 that ``width // min_side`` and ``height // min_side``
    both reach, else 1 (no scaling); no ``min_side`` means no scaling.

    Examples
    --------
    >>> from skfeat._jpeg import draft_scale
    >>> draft_scale(4000, 3000, 768), draft_scale(3000, 2000, 768), draft_scale(1200, 900, 768)
    (2, 2, 1)
    """
    if not min_side:
        return 1
    reachable = min(width // min_side, height // min_side)
    return next((scale for scale in _DRAFT_SCALES if reachable >= scale), 1)


def decode_rgb(data: bytes, width: int, height: int, min_side: int | None) -> np.ndarray:
    """Decode a YCbCr or grey JPEG to ``(H, W, 3)`` uint8 RGB, as stored (EXIF not applied).

    Parameters
    ----------
    data : bytes
        The whole file.
    width, height : int
        Its size from Pillow's header.
    min_side : int, optional
        Decoded at the reduced scale :func:`draft_scale` picks, as Pillow's draft does.

    Returns
    -------
    numpy.ndarray
        ``(ceil(height / scale), ceil(width / scale), 3)`` uint8 pixels.

    Raises
    ------
    ValueError
        When libjpeg-turbo reports an error or a warning (``strict=True``: a truncated
        or corrupt file), or could not scale as Pillow does (images under 8 px); the
        caller then lets Pillow decode the file.
    """
    scale = draft_scale(width, height, min_side)
    if scale > 1 and max(width, height) < _ONE_BLOCK:
        # libjpeg-turbo decodes at the smallest eighth that reaches the size asked for;
        # from 8 px up that is 1/scale, below it can be 3/8 where Pillow's draft has 1/2.
        raise ValueError(f"a {width}x{height} JPEG is scaled by Pillow, not simplejpeg")
    wanted = (-(-height // scale), -(-width // scale))
    minimum = wanted if scale > 1 else (0, 0)  # 0: decode at full size
    pixels = load().decode_jpeg(
        data,
        colorspace="RGB",  # grey comes out replicated, faster than GRAY and a repeat
        fastdct=False,
        fastupsample=False,
        min_height=minimum[0],
        min_width=minimum[1],
        strict=True,
    )
    if pixels.shape[:2] != wanted:  # its header disagrees with Pillow's: Pillow decodes
        raise ValueError(f"decoded at {pixels.shape[:2]}, expected {wanted}")
    return pixels
