"""From ``X`` as a whole to a list of items, one per image, in order.

:func:`as_items` accepts the containers users hold (list, tuple, object array, pandas
or polars Series, one-column DataFrame, 3-D/4-D numeric arrays) and checks the call as
a whole before any model work. Items are not opened here.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from skfeat.exceptions import InvalidInputError

__all__ = ["as_items", "input_column_name"]


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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
