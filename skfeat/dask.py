"""Featurize a Dask collection of images, one partition at a time, on any Dask cluster.

The same fitted featurizer that runs locally runs on the workers: each partition
is passed to its :meth:`~skfeat.PretrainedCNNFeaturizer.transform`, so precision,
device, ``on_error`` and ``cache`` behave exactly as in a local call, and row ``i``
of a partition's features belongs to row ``i`` of its images.

The featurizer travels once, as a small pickle that holds names and no weights;
every worker process loads the weights on its first partition and keeps them for
the partitions that follow. ``device="auto"`` picks the device each worker sees,
so one worker per GPU (``dask-cuda``) puts each worker on its own GPU.

Needs ``pip install "skfeat[dask]"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skfeat._optional import import_optional
from skfeat.exceptions import ImageDecodeError, InvalidInputError

_PURPOSE = "skfeat.dask"
dask = import_optional("dask", extra="dask", purpose=_PURPOSE)
da = import_optional("dask.array", extra="dask", purpose=_PURPOSE)
dd = import_optional("dask.dataframe", extra="dask", purpose=_PURPOSE)
pd = import_optional("pandas", extra="dask", purpose=_PURPOSE)

__all__ = ["featurize", "featurize_array"]


def featurize(data: Any, featurizer: Any, *, column: str | None = None) -> Any:
    """Lazily compute the features of a Dask column of images, as a Dask DataFrame.

    Each partition is featurized by one task, with the same numbers that
    ``featurizer.transform`` gives locally, row for row.

    Parameters
    ----------
    data : dask.dataframe.Series or dask.dataframe.DataFrame
        The images, one per row: paths (str or path-like) or encoded bytes; any item
        that :meth:`~skfeat.PretrainedCNNFeaturizer.transform` reads locally. A
        DataFrame needs ``column``.
    featurizer : PretrainedCNNFeaturizer
        A fitted featurizer is used as it is. An unfitted one is not changed: a clone
        of it is fitted on the client (fit reads no image and no weights).
    column : str, optional
        The image column of ``data`` when it is a DataFrame. It is passed to the
        featurizer as a one-column DataFrame, as ``featurizer.transform(df[[column]])``
        would be locally.

    Returns
    -------
    features : dask.dataframe.DataFrame
        One float32 column per name of ``featurizer.get_feature_names_out()``, with
        the index and divisions of ``data``. Nothing runs until it is computed.

    Raises
    ------
    InvalidInputError
        When ``data`` is not a Dask Series or DataFrame, or ``column`` does not match it.

    See Also
    --------
    featurize_array : The same features as a Dask Array.

    Notes
    -----
    The featurizer is placed in the task graph once, as one small task that every
    partition depends on, so each worker process receives and unpickles it once. A
    featurizer built on your own ``torch.nn.Module`` carries that module's weights in
    its pickle; named models (``"resnet50"``, ``"timm:..."``) carry none and load
    them on the worker, once per process.

    An unreadable image raises on the worker, and the error reaches the client with
    the partition's number added; with ``on_error="nan"`` or ``"zeros"`` its row is
    filled as it is locally (the warning is emitted in the worker's log).

    Examples
    --------
    >>> import dask
    >>> import dask.dataframe as dd
    >>> import numpy as np
    >>> import pandas as pd
    >>> from PIL import Image
    >>> from skfeat import PretrainedCNNFeaturizer
    >>> from skfeat.dask import featurize
    >>> def png(seed):
    ...     pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), np.uint8)
    ...     buffer = __import__("io").BytesIO()
    ...     Image.fromarray(pixels).save(buffer, format="PNG")
    ...     return buffer.getvalue()
    >>> table = pd.DataFrame({"image": [png(i) for i in range(6)]}, index=range(10, 16))
    >>> with dask.config.set({"dataframe.convert-string": False}):  # keep bytes as bytes
    ...     ddf = dd.from_pandas(table, npartitions=3)
    >>> featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1)
    >>> features = featurize(ddf, featurizer, column="image")
    >>> features.npartitions, features.columns[0]
    (3, 'penultimate_avg_0000')
    >>> with dask.config.set(scheduler="synchronous"):
    ...     frame = features.compute()
    >>> frame.shape, frame.index.tolist() == table.index.tolist()
    ((6, 512), True)
    """
    images = _select_images(data, column, "featurize")
    fitted = _fitted(featurizer, images)
    names = np.asarray(fitted.get_feature_names_out(), dtype=object)
    meta = _feature_frame(np.empty((0, len(names)), np.float32), names, images._meta.index)
    return images.map_partitions(
        _transform_partition,
        _ship(fitted),
        names,
        meta=meta,
        align_dataframes=False,
    )


def featurize_array(
    data: Any, featurizer: Any, *, column: str | None = None, lengths: bool = True
) -> Any:
    """Lazily compute the features of a Dask column of images, as a Dask Array.

    The numbers are those of :func:`featurize`, as one float32 block of rows per
    partition.

    Parameters
    ----------
    data : dask.dataframe.Series or dask.dataframe.DataFrame
        The images, one per row, as for :func:`featurize`.
    featurizer : PretrainedCNNFeaturizer
        Fitted, or fitted here as a clone, as for :func:`featurize`.
    column : str, optional
        The image column of ``data`` when it is a DataFrame.
    lengths : bool, default=True
        Compute the number of rows of each partition now (this reads the image
        column, not the images), so that the array has known chunk sizes. With
        False nothing is computed and the row chunks are unknown (``nan``).

    Returns
    -------
    features : dask.array.Array of shape (n_images, n_features_out), dtype float32
        One row chunk per partition of ``data``, in order, and one column chunk.

    Raises
    ------
    InvalidInputError
        When ``data`` is not a Dask Series or DataFrame, or ``column`` does not match it.

    See Also
    --------
    featurize : The same features as a Dask DataFrame with the input's index.

    Examples
    --------
    >>> import dask
    >>> import dask.dataframe as dd
    >>> import numpy as np
    >>> import pandas as pd
    >>> from PIL import Image
    >>> from skfeat import PretrainedCNNFeaturizer
    >>> from skfeat.dask import featurize_array
    >>> def png(seed):
    ...     pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), np.uint8)
    ...     buffer = __import__("io").BytesIO()
    ...     Image.fromarray(pixels).save(buffer, format="PNG")
    ...     return buffer.getvalue()
    >>> with dask.config.set({"dataframe.convert-string": False}):  # keep bytes as bytes
    ...     images = dd.from_pandas(pd.Series([png(i) for i in range(5)]), npartitions=2)
    >>> featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1)
    >>> features = featurize_array(images, featurizer)
    >>> features.chunks
    ((3, 2), (512,))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     features.compute().dtype
    dtype('float32')
    """
    images = _select_images(data, column, "featurize_array")
    fitted = _fitted(featurizer, images)
    n_features = len(fitted.get_feature_names_out())
    if lengths:
        row_chunks = tuple(int(n) for n in images.map_partitions(len).compute())
    else:
        row_chunks = (np.nan,) * images.npartitions
    shipped = _ship(fitted)
    transform_block = dask.delayed(_transform, pure=True)
    blocks = [
        da.from_delayed(
            transform_block(part, shipped, number),
            shape=(n_rows, n_features),
            dtype=np.float32,
            meta=np.empty((0, n_features), np.float32),
        )
        for number, (part, n_rows) in enumerate(zip(images.to_delayed(), row_chunks, strict=True))
    ]
    return da.concatenate(blocks, axis=0)


# -- client side ----------------------------------------------------------------------


def _select_images(data: Any, column: str | None, caller: str) -> Any:
    """The Dask Series, or one-column Dask DataFrame, that holds the images."""
    if isinstance(data, dd.Series):
        if column is not None:
            raise InvalidInputError(
                f"column={column!r} was given, but data is a Dask Series, which is the image "
                f"column itself. Call {caller}(series, featurizer) without column."
            )
        return data
    if isinstance(data, dd.DataFrame):
        columns = list(data.columns)
        if column is None:
            raise InvalidInputError(
                f"data is a Dask DataFrame with columns {columns[:5]!r}; say which holds "
                f"the images: {caller}(ddf, featurizer, column='path')."
            )
        if column not in columns:
            raise InvalidInputError(
                f"column={column!r} is not a column of data; its columns are {columns[:10]!r}."
            )
        return data[[column]]
    raise InvalidInputError(
        f"Expected a Dask Series or Dask DataFrame of images, got {type(data).__module__}."
        f"{type(data).__qualname__}. For data in memory call featurizer.transform(X), "
        "or make it a Dask collection with dask.dataframe.from_pandas(X, npartitions=...)."
    )


def _fitted(featurizer: Any, images: Any) -> Any:
    """The featurizer itself when fitted, else a clone fitted on placeholder rows.

    ``fit`` reads no image, so placeholder values of the column's dtype are enough,
    and nothing is computed; the column name is kept, so a DataFrame column is
    checked against it on the workers as it would be locally.
    """
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(featurizer)
    except NotFittedError:
        from dask.dataframe.utils import meta_nonempty

        return clone(featurizer).fit(meta_nonempty(images._meta))
    return featurizer


def _ship(fitted: Any) -> Any:
    """The featurizer as one task of its own, so a worker unpickles it once."""
    return dask.delayed(fitted, pure=True, traverse=False)


def _feature_frame(values: np.ndarray, names: np.ndarray, index: Any) -> Any:
    return pd.DataFrame(values, columns=pd.Index(names, dtype=object), index=index, copy=False)


# -- worker side ----------------------------------------------------------------------


def _transform(images: Any, fitted: Any, partition: int) -> np.ndarray:
    """The local ``transform`` of one partition, as a float32 array."""
    n_features = len(fitted.get_feature_names_out())
    if len(images) == 0:  # transform refuses empty input; an empty partition is normal
        return np.empty((0, n_features), np.float32)
    try:
        features = fitted.transform(images)
    except ImageDecodeError as err:
        located = ImageDecodeError(f"In partition {partition} of the Dask data: {err}")
        located.index, located.source, located.cause = err.index, err.source, err.cause
        raise located from err
    # a featurizer with set_output(transform="pandas"/"polars") returns a frame
    values = features.to_numpy() if hasattr(features, "to_numpy") else features
    return np.asarray(values, dtype=np.float32)


def _transform_partition(
    images: Any, fitted: Any, names: np.ndarray, partition_info: dict[str, Any] | None = None
) -> Any:
    partition = -1 if partition_info is None else partition_info["number"]
    return _feature_frame(_transform(images, fitted, partition), names, images.index)
