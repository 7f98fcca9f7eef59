"""``check_images``: find the images that cannot be read, before a long run.

Every item is decoded in full, exactly as :class:`PretrainedCNNFeaturizer` would
decode it, so a truncated file or a bad array is caught here too, but no model is
loaded and nothing is resized: a scan is far cheaper than a transform.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skfeat._inputs import ImageHeader, as_items, decode, describe_item
from skfeat._optional import import_optional
from skfeat._runtime import resolve_n_threads
from skfeat._validation import check_choice, check_n_jobs
from skfeat.exceptions import ImageDecodeError

__all__ = ["CHECK_COLUMNS", "check_images"]

CHECK_COLUMNS = ("index", "item", "ok", "format", "mode", "width", "height", "error")


def check_images(X: Any, *, n_jobs: int | None = None, as_frame: bool | str = "auto") -> Any:
    """Report, for each input, whether it decodes, what it is, and why not.

    Each item is decoded in full (a truncated file fails here as it would in
    ``transform``), in a pool of threads, without loading any model.

    Parameters
    ----------
    X : sequence of images
        What you would pass to :meth:`PretrainedCNNFeaturizer.transform`: paths,
        bytes, PIL images or arrays, in a list, tuple, array, Series or one-column
        DataFrame.
    n_jobs : int or None, default=None
        Decoding threads. None uses all cores (at most 8); negative values count
        back from all cores.
    as_frame : {"auto", True, False}, default="auto"
        Return a pandas DataFrame (True), a list of dicts (False), or a DataFrame
        when pandas is installed and a list of dicts otherwise ("auto").

    Returns
    -------
    report : pandas.DataFrame or list of dict
        One row per input, in order, with the columns:

        - ``index``: the position of the item in ``X``.
        - ``item``: the path as a str, or a short description of an in-memory item
          (``"array of shape (48, 64, 3) and dtype float32"``).
        - ``ok``: True when the image decodes.
        - ``format``: Pillow's format (``"JPEG"``, ``"PNG"``...), None for arrays and
          in-memory PIL images.
        - ``mode``: Pillow's mode as stored (``"RGB"``, ``"CMYK"``, ``"I;16"``...),
          or the dtype of an array.
        - ``width``, ``height``: the size of the upright image; for a file that
          fails after its header was read, the size the header declares.
        - ``error``: why it cannot be read, or None.

    Raises
    ------
    InvalidInputError
        When ``X`` as a whole is not a sequence of images (a bare string, a 2-D
        numeric table, an empty list...).

    See Also
    --------
    PretrainedCNNFeaturizer : Its ``on_error`` parameter keeps going past bad images.

    Examples
    --------
    >>> import numpy as np
    >>> from skfeat import check_images
    >>> images = [np.zeros((4, 6, 3), dtype=np.uint8), np.full((4, 6), np.nan), None]
    >>> report = check_images(images, n_jobs=1, as_frame=False)
    >>> [row["ok"] for row in report]
    [True, False, False]
    >>> report[2]["error"]
    'the item is None, not an image'
    """
    check_choice(as_frame, ("auto", True, False), "as_frame", "check_images")
    check_n_jobs(n_jobs, "check_images")
    items = as_items(X)
    n_threads = min(resolve_n_threads(n_jobs), len(items))
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="skfeat-check") as pool:
        rows = list(pool.map(_check_one, items, range(len(items))))
    if as_frame is False:
        return rows
    if as_frame == "auto":
        try:
            import pandas as pd
        except ImportError:
            return rows
    else:
        pd = import_optional("pandas", extra="pandas", purpose="check_images(as_frame=True)")
    frame = pd.DataFrame(rows, columns=list(CHECK_COLUMNS))
    return frame.astype({"width": "Int64", "height": "Int64"})


def _check_one(item: Any, index: int) -> dict[str, Any]:
    header = ImageHeader()
    error = None
    try:
        decode(item, index, header=header)
    except ImageDecodeError as failure:
        error = failure.cause
    return {
        "index": index,
        "item": os.fspath(item) if isinstance(item, (str, os.PathLike)) else describe_item(item),
        "ok": error is None,
        "format": header.format,
        "mode": header.mode,
        "width": header.width,
        "height": header.height,
        "error": error,
    }
