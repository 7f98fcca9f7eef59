"""From ``X`` to a list of items, and from one item to an upright RGB uint8 array.

``as_items`` accepts the containers users hold (list, tuple, object array, pandas or
polars Series, one-column DataFrame, 3-D/4-D numeric arrays) and checks the call as a
whole before any model work. ``decode`` turns one item (path, bytes, PIL image or
array) into an ``(H, W, 3)`` uint8 array, or raises :class:`ImageDecodeError`
naming the item and the cause. The decode policy:

- EXIF orientation is applied, so a rotated file gives its upright pixels.
- Palette, grey, bilevel, CMYK and YCCK become RGB; alpha is composited on white.
- 16-bit data is scaled (``round(v / 257)``), never clipped; float arrays must lie in
  [0, 1]; animated files give their first frame.
- Images over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused from their header, before
  any pixel is decoded (decompression bombs); truncated files are errors.
- HEIC (``pillow-heif``) and AVIF (``pillow-avif-plugin``) are read when those
  Pillow plugins are installed.

With ``decoder="simplejpeg"`` the pixels of YCbCr and grey JPEGs are decoded by
simplejpeg (:mod:`skfeat._jpeg`) instead of Pillow, under the same policy: the header,
its checks and every failure stay Pillow's.

A path is read whole into memory, once (:func:`read_file`), and those bytes are what
is decoded, and what the activation cache keys, so a file replaced meanwhile can never
give one content's pixels under another's key. Only regular files are read: a FIFO, a
device or a socket is refused from its ``stat``, before it is opened, since reading
one could block or never end. One file is read up to :func:`max_file_bytes`.

Only numpy and Pillow are used here (and simplejpeg, when asked for).
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import shlex
import stat
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skfeat.exceptions import ImageDecodeError, ImageDecodeWarning, InvalidInputError

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

DECODERS = ("pil", "simplejpeg")  # what may decode the pixels of a file
_WHITE = 255.0
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_SHOWN_IN_WARNING = 5
# Every image file Pillow accepts by default fits: its largest image, MAX_IMAGE_PIXELS
# (89.5 Mpx) of uncompressed 16-bit RGBA at 8 bytes per pixel, takes 716 MB.
_FILE_BYTES_FLOOR = 1 << 30
_BYTES_PER_PIXEL_AT_MOST = 8
_READ_BLOCK = 1 << 16  # what a file that grew after it was opened is read on by
# O_NONBLOCK: opening a FIFO that was swapped in after the stat must not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0)
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_ON_ERROR_HINT = (
    "Pass on_error='nan' to keep going with a NaN row for each unreadable image, "
    "or find them all first with skfeat.check_images(X)."
)


# -- X as a whole -----------------------------------------------------------------------


def input_column_name(X: Any) -> str | None:
    """The column name when ``X`` is a one-column DataFrame, else None."""
    if _is_dataframe(X):
        return str(next(iter(X.columns)))
    return None


def _is_dataframe(X: Any) -> bool:
    return hasattr(X, "columns") and getattr(X, "ndim", 2) == 2 and not isinstance(X, np.ndarray)


def as_items(X: Any) -> list[Any]:
    """Turn ``X`` into a list with one item per image, in order.

    Items are not opened here: a list may mix paths, bytes, PIL images and arrays,
    and each is decoded by its own type later.

    Raises
    ------
    InvalidInputError
        When ``X`` as a whole cannot be a sequence of images: a bare string or path,
        a 2-D numeric table, an empty sequence, a DataFrame with several columns.
    """
    if isinstance(X, (str, os.PathLike)) and os.path.isdir(X):
        folder = os.fspath(X)
        raise InvalidInputError(
            f"Expected a sequence of images, got the folder {_short(folder)}. Pass a list of "
            f"its images, for example sorted(pathlib.Path({folder!r}).rglob('*.jpg')), or "
            f"featurize the whole folder from the shell: skfeat extract {shlex.quote(folder)} "
            "-o features.parquet (it finds the image files of every extension, recursively)."
        )
    if isinstance(X, (str, bytes, os.PathLike)):
        raise InvalidInputError(
            f"Expected a sequence of images, got a single {type(X).__name__}: {_short(X)}. "
            "Wrap it in a list: transform([path])."
        )
    if _is_dataframe(X):
        n_columns = len(X.columns)
        if n_columns != 1:
            raise InvalidInputError(
                f"Expected a DataFrame with one column of images, got {n_columns} columns "
                f"{list(X.columns)[:5]!r}. Select the image column, for example X['path'], "
                "or use a ColumnTransformer to route it."
            )
        X = X[X.columns[0]]
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 1) == 1 and not isinstance(X, np.ndarray):
        X = X.to_numpy()  # pandas / polars Series; keeps order, drops the index
    if isinstance(X, np.ndarray):
        items = _items_from_array(X)
    elif isinstance(X, Sequence) or _is_iterable_of_images(X):
        items = list(X)
    else:
        raise InvalidInputError(
            f"Expected a sequence of images (list, tuple, array, Series, one-column "
            f"DataFrame), got {type(X).__name__}. Pass a list, for example list(X)."
        )
    if not items:
        raise InvalidInputError(
            "Expected at least one image, got an empty sequence. Pass a non-empty list of "
            "paths, arrays, PIL images or bytes."
        )
    return items


def _is_iterable_of_images(X: Any) -> bool:
    return hasattr(X, "__iter__") and hasattr(X, "__len__") and not isinstance(X, dict)


def _items_from_array(X: np.ndarray) -> list[Any]:
    if X.dtype.kind in "OUS":
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise InvalidInputError(
                f"Expected a 1-D array of paths or images, got an object array of shape "
                f"{X.shape}. Reshape your data to one item per row."
            )
        return list(X)
    if X.dtype.kind in "uifb":
        if X.ndim == 4 or X.ndim == 3:
            return list(X)  # (N, H, W, C) or (N, H, W): one image per leading index
        raise InvalidInputError(
            f"Expected images, got a {X.ndim}-D numeric array of shape {X.shape}. A numeric "
            "X must be (n_images, height, width[, channels]); a 2-D array looks like a "
            "table of features, not images. Reshape your data, or wrap a single image in "
            "a list: [image]."
        )
    raise InvalidInputError(
        f"Expected paths or images, got an array of dtype {X.dtype}. Reshape your data."
    )


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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- one item ---------------------------------------------------------------------------


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


class _Refused(ValueError):
    """A decode failure whose message is already the cause to report."""


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
        raise _decode_error(index, item, _cause_of(err, item)) from err


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
        raise _decode_error(index, item, _cause_of(err, item, data)) from err


def _decode_error(index: int, item: Any, cause: str) -> ImageDecodeError:
    source = describe_item(item)
    error = ImageDecodeError(f"Could not read image {index} ({source}): {cause}")
    error.index, error.source, error.cause = index, source, cause
    return error


def max_file_bytes() -> int | None:
    """The most bytes one image file may hold to be read (None: no limit).

    ``max(1 GiB, 8 bytes x PIL.Image.MAX_IMAGE_PIXELS)``: 1 GiB holds every image
    Pillow accepts by default (89.5 Mpx of uncompressed 16-bit RGBA take 716 MB), and
    raising ``MAX_IMAGE_PIXELS`` raises it too. With ``MAX_IMAGE_PIXELS = None`` a file
    is read up to the size it had when opened. A larger file is refused from its size,
    before a byte is read, so that no file can exhaust memory; bytes passed as the
    item are not limited.
    """
    from PIL import Image

    pixels = Image.MAX_IMAGE_PIXELS
    if pixels is None:
        return None
    return max(_FILE_BYTES_FLOOR, _BYTES_PER_PIXEL_AT_MOST * int(pixels))


def read_file(path: str | os.PathLike[str], status: os.stat_result | None = None) -> bytes:
    """The bytes of one image file, read whole, once, from a regular file only.

    The file's type and size are checked from ``stat`` (``status`` when the caller
    has it) before it is opened, and again on the open descriptor: FIFOs, devices and
    sockets are never read, since reading one can block or never end. The read stops
    at :func:`max_file_bytes`.

    Raises
    ------
    OSError or ValueError
        The cause, for :func:`decode` to report: missing, a directory, not a regular
        file, empty, too large, unreadable.
    """
    if status is None:
        try:
            status = os.stat(path)  # one system call answers missing, directory, type and size
        except FileNotFoundError:
            raise _Refused(_not_found(Path(path))) from None
    limit = max_file_bytes()
    _check_file(status, limit)
    handle = os.open(path, _OPEN_FLAGS)
    try:
        opened = os.fstat(handle)  # the file opened may not be the one stat saw
        _check_file(opened, limit)
        return _read_bounded(handle, opened.st_size, limit)
    finally:
        os.close(handle)


def _check_file(status: os.stat_result, limit: int | None) -> None:
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise _Refused("the path is a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), None)
        kind = kind or f"of type {stat.S_IFMT(mode):#o}"
        raise _Refused(
            f"the path is {kind}, not a regular file; only regular files are read "
            "(read it yourself and pass the bytes)"
        )
    if status.st_size == 0:
        raise _Refused("the file is empty (0 bytes)")
    if limit is not None and status.st_size > limit:
        raise _Refused(_too_large(status.st_size, limit))


def _read_bounded(handle: int, size: int, limit: int | None) -> bytes:
    """Read to the end of a file ``size`` bytes long when opened, never past ``limit``.

    One byte more than ``size`` is asked for, to see the end; a file that grew
    meanwhile is read on, and refused once past ``limit`` (with no limit, it is read
    up to ``size``).
    """
    stop = size if limit is None else limit + 1
    parts = []
    total = 0
    want = min(size + 1, stop)
    while want > 0 and (block := os.read(handle, want)):
        parts.append(block)
        total += len(block)
        want = min(_READ_BLOCK, stop - total)
    if limit is not None and total > limit:
        raise _Refused(_too_large(total, limit, growing=True))
    return b"".join(parts)  # a single block is returned as it is, not copied


def _too_large(size: int, limit: int, growing: bool = False) -> str:
    what = "the file grew while read, past" if growing else f"the file is {size} bytes, over"
    return (
        f"{what} the limit of {limit} bytes on one image file (the larger of 1 GiB and "
        "8 bytes per pixel of PIL.Image.MAX_IMAGE_PIXELS); if you trust the file, raise "
        "PIL.Image.MAX_IMAGE_PIXELS"
    )


@contextmanager
def _opened(item: Any) -> Iterator[Any]:
    """Open bytes lazily (header only) and close them after; pass PIL images."""
    from PIL import Image

    if isinstance(item, Image.Image):
        yield item  # the caller's image: loaded, but never drafted nor closed
        return
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise _Refused("the bytes are empty (0 bytes)")
        source = io.BytesIO(bytes(item))
    elif item is None:
        raise _Refused("the item is None, not an image")
    else:
        raise _Refused(
            f"unsupported item type {type(item).__name__}; expected a path, bytes, "
            "a PIL image or an array"
        )
    _register_plugins()
    with Image.open(source) as image:
        yield image


def _not_found(path: Path) -> str:
    if str(path).startswith(("http:/", "https:/")):
        return "file not found; URLs are not downloaded, fetch the file first"
    return "file not found"


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
    return _upright(rgb, _orientation(image))


def _refuse_bomb(size: tuple[int, int], limit: int | None) -> None:
    # Pillow raises above 2 * MAX_IMAGE_PIXELS and only warns between 1x and 2x; refuse
    # from 1x, from the header alone, before a single pixel is decoded.
    width, height = size
    if limit is not None and width * height > limit:
        raise _Refused(
            f"refused as a possible decompression bomb: {width}x{height} = "
            f"{width * height} pixels, over PIL.Image.MAX_IMAGE_PIXELS = {limit}; if you "
            "trust the file, raise that limit"
        )


def _cause_of(err: BaseException, item: Any, data: bytes | None = None) -> str:
    from PIL import Image, UnidentifiedImageError

    if isinstance(err, _Refused):
        return str(err)
    if isinstance(err, Image.DecompressionBombError):
        size = str(err).split(", could be")[0]  # Pillow's own "Image size (...) exceeds ..."
        return (
            f"refused as a possible decompression bomb: {size}; if you trust the file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS"
        )
    if isinstance(err, FileNotFoundError):
        return _not_found(Path(item)) if isinstance(item, (str, os.PathLike)) else "file not found"
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


# -- pixels -----------------------------------------------------------------------------

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


def _orientation(image: Any) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block is no reason to lose the picture
        return 1
    return value if value in _TO_UPRIGHT else 1


def pil_to_rgb(image: Any) -> np.ndarray:
    """Convert a PIL image to upright RGB uint8: EXIF applied, alpha on white, 16-bit scaled."""
    orientation = _orientation(image)
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
    return _upright(rgb, orientation)


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
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
        raise _Refused("the array contains NaN or infinite values; pixels must be finite")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise _Refused(
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
        raise _Refused(
            f"an image array must have shape (H, W) or (H, W, C) with C in (1, 3, 4), "
            f"got shape {array.shape}{hint}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise _Refused(f"the image array is empty, shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = _scale_16bit(array.astype(np.float64))
    elif array.dtype.kind == "f":
        pixels = _float_to_uint8(array.astype(np.float64))
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    else:
        raise _Refused(
            f"unsupported pixel dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535) or "
            "float in [0, 1], for example array.astype(np.uint8) for 0-255 integers"
        )
    channels = pixels.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if channels == 4:
        return composite_on_white(pixels)
    return np.ascontiguousarray(pixels)


# -- reporting failures -----------------------------------------------------------------


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
