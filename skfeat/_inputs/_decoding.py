"""From one item (path, bytes, PIL image or array) to an upright RGB uint8 array.

:func:`decode` turns one item into an ``(H, W, 3)`` uint8 array, or raises
:class:`~skfeat.exceptions.ImageDecodeError` naming the item and the cause. The
decode policy, besides the pixel conversions of :mod:`skfeat._inputs._pixels`:

- Animated files give their first frame.
- Images over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused from their header, before
  any pixel is decoded (decompression bombs); truncated files are errors.
- HEIC (``pillow-heif``) and AVIF (``pillow-avif-plugin``) are read when those
  Pillow plugins are installed.

With ``decoder="simplejpeg"`` the pixels of YCbCr and grey JPEGs are decoded by
simplejpeg (:mod:`skfeat._jpeg`) instead of Pillow, under the same policy: the header,
its checks and every failure stay Pillow's.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from skfeat._inputs._failures import Refused, cause_of, decode_error
from skfeat._inputs._pixels import (
    ImageHeader,
    array_to_rgb,
    exif_orientation,
    pil_to_rgb,
    to_upright,
)
from skfeat._inputs._reading import read_file

__all__ = ["DECODERS", "decode", "read_item"]

DECODERS = ("pil", "simplejpeg")  # what may decode the pixels of a file


def read_item(item: Any, index: int) -> Any:
    """What :func:`decode` decodes: a path's bytes (see :func:`read_file`), or the item.

    Raises
    ------
    ImageDecodeError
        When the path cannot be read, naming ``index``, the path and the cause.
    """
    if not isinstance(item, (str, os.PathLike)):
        return item
    try:
        return read_file(item)
    except Exception as err:
        raise decode_error(index, item, cause_of(err, item)) from err


def decode(
    item: Any,
    index: int,
    *,
    min_side: int | None = None,
    header: ImageHeader | None = None,
    data: bytes | None = None,
    decoder: str = "pil",
) -> np.ndarray:
    """Decode one item into an upright ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    item : str, PathLike, bytes, PIL.Image.Image or ndarray
        One image.
    index : int
        Its position in ``X``, for the message.
    min_side : int, optional
        A JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
        ``PIL.Image.draft``) as far as its short side stays at least ``min_side``.
    header : ImageHeader, optional
        Filled with format, mode and size as they become known.
    data : bytes, optional
        The bytes of the path ``item``, already read by :func:`read_item`: these are
        decoded, and the file is not read again. Messages still name the path.
    decoder : {"pil", "simplejpeg"}, default="pil"
        What decodes the pixels of a file or bytes. ``"simplejpeg"`` decodes YCbCr and
        grey JPEGs with simplejpeg (libjpeg-turbo), at the same DCT scale as Pillow's
        draft; Pillow still reads the header (format, size, EXIF orientation, the
        decompression-bomb check), and decodes everything else: CMYK and YCCK JPEGs,
        other formats, and any JPEG simplejpeg fails on, so that failures and their
        messages are Pillow's. PIL images and arrays ignore it.

    Raises
    ------
    ImageDecodeError
        Naming ``index``, the path or type, and the cause.
    ValueError
        When ``decoder`` is not one of ``DECODERS``.
    MissingDependencyError
        When ``decoder="simplejpeg"`` and simplejpeg is not installed.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
    if decoder == "simplejpeg":
        from skfeat import _jpeg

        _jpeg.load()  # a missing module is the call's error, not one image's
    header = ImageHeader() if header is None else header
    try:
        if isinstance(item, np.ndarray):
            return array_to_rgb(item, header)
        if isinstance(item, (str, os.PathLike)) and data is None:
            data = read_file(item)
        source = item if data is None else data
        with _opened(source) as image:
            if image is item:  # the caller's own PIL image: never drafted (modified)
                return _decode_pil(image, header, None)
            return _decode_pil(image, header, min_side, source if decoder != "pil" else None)
    except Exception as err:  # any failure of one image is that image's, never the call's
        raise decode_error(index, item, cause_of(err, item, data)) from err


@contextmanager
def _opened(item: Any) -> Iterator[Any]:
    """Open bytes lazily (header only) and close them after; pass PIL images."""
    from PIL import Image

    if isinstance(item, Image.Image):
        yield item  # the caller's image: loaded, but never drafted nor closed
        return
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise Refused("the bytes are empty (0 bytes)")
        source = io.BytesIO(bytes(item))
    elif item is None:
        raise Refused("the item is None, not an image")
    else:
        raise Refused(
            f"unsupported item type {type(item).__name__}; expected a path, bytes, "
            "a PIL image or an array"
        )
    _register_plugins()
    with Image.open(source) as image:
        yield image


@functools.cache
def _register_plugins() -> tuple[str, ...]:
    """Register the optional Pillow plugins that are installed (HEIC, AVIF); once."""
    from PIL import features

    registered = []
    try:
        importlib.import_module("pillow_heif").register_heif_opener()
        registered.append("pillow_heif")
    except ImportError:
        pass
    if not features.check("avif"):  # Pillow >= 11.3 reads AVIF itself
        try:
            importlib.import_module("pillow_avif")  # registers on import
            registered.append("pillow_avif")
        except ImportError:
            pass
    return tuple(registered)


def _decode_pil(
    image: Any, header: ImageHeader, min_side: int | None, jpeg_data: Any = None
) -> np.ndarray:
    """Decode an opened image; ``jpeg_data``: its bytes, for simplejpeg to try first."""
    from PIL import Image

    header.format, header.mode = image.format, image.mode
    header.width, header.height = image.size
    _refuse_bomb(image.size, Image.MAX_IMAGE_PIXELS)
    if jpeg_data is not None and image.format == "JPEG":
        rgb = _decode_simplejpeg(image, jpeg_data, min_side)
        if rgb is not None:
            header.height, header.width = rgb.shape[:2]
            return rgb
    if min_side and image.format == "JPEG":
        # Pillow picks the largest scale in (8, 4, 2, 1) that keeps both sides >= min_side.
        image.draft(None, (min_side, min_side))
    image.load()
    rgb = pil_to_rgb(image)
    header.height, header.width = rgb.shape[:2]
    return rgb


def _decode_simplejpeg(image: Any, data: Any, min_side: int | None) -> np.ndarray | None:
    """Upright RGB from simplejpeg, or None: the file is Pillow's to decode (or fail on)."""
    from skfeat import _jpeg

    if image.mode not in _jpeg.FAST_MODES:  # CMYK and YCCK: Pillow's conversion
        return None
    try:
        rgb = _jpeg.decode_rgb(data, image.width, image.height, min_side)
    except Exception:  # truncated, corrupt, unsupported: Pillow decides, with its message
        return None
    return to_upright(rgb, exif_orientation(image))


def _refuse_bomb(size: tuple[int, int], limit: int | None) -> None:
    # Pillow raises above 2 * MAX_IMAGE_PIXELS and only warns between 1x and 2x; refuse
    # from 1x, from the header alone, before a single pixel is decoded.
    width, height = size
    if limit is not None and width * height > limit:
        raise Refused(
            f"refused as a possible decompression bomb: {width}x{height} = "
            f"{width * height} pixels, over PIL.Image.MAX_IMAGE_PIXELS = {limit}; if you "
            "trust the file, raise that limit"
        )
