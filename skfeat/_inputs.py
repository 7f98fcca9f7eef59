"""From ``X`` to a list of items, and from one item to an upright RGB uint8 array.

``as_items`` accepts the containers users hold (list, tuple, object array, pandas or
polars Series, one-column DataFrame, 3-D/4-D numeric arrays) and checks the call as a
whole before any model work. ``decode`` turns one item (path, bytes, PIL image or
array) into an ``(H, W, 3)`` uint8 array, or raises :class:`ImageDecodeError`
naming the item. Only numpy and Pillow are used here.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skfeat.exceptions import ImageDecodeError, InvalidInputError

__all__ = ["as_items", "decode", "describe_item", "input_column_name"]

_WHITE = 255.0


def input_column_name(X: Any) -> str | None:
    """The column name when ``X`` is a one-column DataFrame, else None."""
    if _is_dataframe(X):
        return str(next(iter(X.columns)))
    return None


def _is_dataframe(X: Any) -> bool:
    return hasattr(X, "columns") and getattr(X, "ndim", 2) == 2 and not isinstance(X, np.ndarray)


def as_items(X: Any) -> list[Any]:
    """Turn ``X`` into a list with one item per image, in order.

    Raises
    ------
    InvalidInputError
        When ``X`` as a whole cannot be a sequence of images: a bare string or path,
        a 2-D numeric table, an empty sequence, a DataFrame with several columns.
    """
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
            f"DataFrame), got {type(X).__name__}."
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
    return type(item).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def decode(item: Any, index: int, *, min_side: int | None = None) -> np.ndarray:
    """Decode one item into an upright ``(H, W, 3)`` uint8 RGB array.

    With ``min_side``, a JPEG file or bytes may be decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, ``PIL.Image.draft``), as far as its short side stays
    at least ``min_side`` pixels. Other formats, PIL images and arrays are unaffected.

    Raises
    ------
    ImageDecodeError
        Naming ``index``, the path or type, and the cause.
    """
    try:
        if isinstance(item, np.ndarray):
            return array_to_rgb(item)
        return pil_to_rgb(_open(item, min_side))
    except ImageDecodeError:
        raise
    except (OSError, ValueError, TypeError, SyntaxError) as err:
        cause = str(err) or type(err).__name__
        raise ImageDecodeError(
            f"Could not read image {index} ({describe_item(item)}): {cause}"
        ) from err


def _open(item: Any, min_side: int | None = None) -> Any:
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            raise ValueError("the path is a directory, not an image file")
        return _draft(Image.open(path), min_side)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _draft(Image.open(io.BytesIO(bytes(item))), min_side)
    if item is None:
        raise TypeError("the item is None, not an image")
    raise TypeError(f"expected a path, bytes, a PIL image or an array, got {type(item).__name__}")


def _draft(image: Any, min_side: int | None) -> Any:
    # Pillow picks the largest scale in (8, 4, 2, 1) that keeps both sides >= min_side.
    if min_side and image.format == "JPEG":
        image.draft(None, (min_side, min_side))
    return image


def pil_to_rgb(image: Any) -> np.ndarray:
    """Convert a PIL image to upright RGB uint8: EXIF applied, alpha on white, 16-bit scaled."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        return _grey_to_rgb(_scale_16bit(values))
    if mode == "F":
        return _grey_to_rgb(float_to_uint8(np.asarray(image, dtype=np.float64)))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        return composite_on_white(rgba)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


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


def float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map floats in [0, 1] to uint8; anything else is an error."""
    if not np.all(np.isfinite(values)):
        raise ValueError("the array contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"float pixels must lie in [0, 1], got values in [{low:g}, {high:g}]; "
            "divide by 255 for 0-255 data"
        )
    return np.rint(values * 255.0).astype(np.uint8)


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Convert an ``(H, W)`` or ``(H, W, 1|3|4)`` array to RGB uint8."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"an image array must be (H, W) or (H, W, C) with C in (1, 3, 4), got shape "
            f"{array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image array is empty, shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = _scale_16bit(array.astype(np.float64))
    elif array.dtype.kind == "f":
        pixels = float_to_uint8(array.astype(np.float64))
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    else:
        raise ValueError(
            f"unsupported pixel dtype {array.dtype}; use uint8, uint16 or float in [0, 1]"
        )
    channels = pixels.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if channels == 4:
        return composite_on_white(pixels)
    return np.ascontiguousarray(pixels)
