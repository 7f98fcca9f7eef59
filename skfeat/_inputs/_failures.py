"""How a failed image is reported: its cause, its error, and the call's warning.

Every decode failure becomes one :class:`~skfeat.exceptions.ImageDecodeError` that
names the image (index and path, or type and shape) and the cause in words
(:func:`cause_of`); a call with ``on_error="nan"`` or ``"zeros"`` gathers its failures
into one :class:`~skfeat.exceptions.ImageDecodeWarning` (:func:`decode_warning`).
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skfeat.exceptions import ImageDecodeError, ImageDecodeWarning

__all__ = [
    "Refused",
    "cause_of",
    "decode_error",
    "decode_warning",
    "describe_item",
    "not_found",
    "with_on_error_hint",
]

_SHOWN_IN_WARNING = 5
_ON_ERROR_HINT = (
    "Pass on_error='nan' to keep going with a NaN row for each unreadable image, "
    "or find them all first with skfeat.check_images(X)."
)


class Refused(ValueError):
    """A decode failure whose message is already the cause to report."""


def describe_item(item: Any) -> str:
    """A short description of an item for messages: its path, or its type and shape."""
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} and dtype {item.dtype}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{type(item).__name__} of length {len(item)}"
    if item is None:
        return "None"
    module = type(item).__module__
    name = type(item).__name__
    return f"{module.split('.')[0]}.{name}" if module.startswith("PIL") else name


def decode_error(index: int, item: Any, cause: str) -> ImageDecodeError:
    """The error for image ``index``: its message and its fields name the image and the cause."""
    source = describe_item(item)
    error = ImageDecodeError(f"Could not read image {index} ({source}): {cause}")
    error.index, error.source, error.cause = index, source, cause
    return error


def not_found(path: Path) -> str:
    """The cause for a missing file, with a pointer when the path is a URL."""
    if str(path).startswith(("http:/", "https:/")):
        return "file not found; URLs are not downloaded, fetch the file first"
    return "file not found"


def cause_of(err: BaseException, item: Any, data: bytes | None = None) -> str:
    """The cause of one image's failure in words, from the exception and its bytes."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(err, Refused):
        return str(err)
    if isinstance(err, Image.DecompressionBombError):
        size = str(err).split(", could be")[0]  # Pillow's own "Image size (...) exceeds ..."
        return (
            f"refused as a possible decompression bomb: {size}; if you trust the file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS"
        )
    if isinstance(err, FileNotFoundError):
        return not_found(Path(item)) if isinstance(item, (str, os.PathLike)) else "file not found"
    if isinstance(err, PermissionError):
        return "permission denied: the file cannot be read"
    if isinstance(err, IsADirectoryError):
        return "the path is a directory, not an image file"
    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file: " + _guess_content(item if data is None else data)
    if isinstance(err, MemoryError):
        return "not enough memory to decode the image"
    text = str(err).rstrip(".")
    if isinstance(err, (OSError, ValueError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_PRINTABLE = frozenset(string.printable.encode())


def _guess_content(data: Any) -> str:
    """Why Pillow did not recognise the bytes, from their first few."""
    try:
        head = bytes(data[:64])
    except TypeError:
        return "not an image format Pillow can read"
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "it looks like an HTML or XML page (a failed download?), not an image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "it is an AVIF image; install pillow-avif-plugin, or Pillow >= 11.3, to read it"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "it is a HEIF/HEIC image; install pillow-heif to read it"
    if head and all(byte in _PRINTABLE for byte in head):
        return "it looks like a text file, not an image"
    return "not an image format Pillow can read"


def with_on_error_hint(error: ImageDecodeError) -> ImageDecodeError:
    """The same error, its message ending with how to keep going past it."""
    hinted = ImageDecodeError(f"{str(error).rstrip('.')}. {_ON_ERROR_HINT}")
    hinted.index, hinted.source, hinted.cause = error.index, error.source, error.cause
    return hinted


def decode_warning(
    errors: Sequence[ImageDecodeError], n_images: int, on_error: str
) -> ImageDecodeWarning:
    """One warning for a whole call: how many failed, the first few, and what to do."""
    filled = "NaN" if on_error == "nan" else "zeros"
    lines = [
        f"{len(errors)} of {n_images} images could not be read; their rows are {filled} "
        f"(on_error={on_error!r}):"
    ]
    lines += [f"  image {e.index} ({e.source}): {e.cause}" for e in errors[:_SHOWN_IN_WARNING]]
    if len(errors) > _SHOWN_IN_WARNING:
        lines.append(f"  ... and {len(errors) - _SHOWN_IN_WARNING} more.")
    lines.append("skfeat.check_images(X) lists every image that cannot be read, and why.")
    warning = ImageDecodeWarning("\n".join(lines))
    warning.errors, warning.n_images = tuple(errors), n_images
    return warning
