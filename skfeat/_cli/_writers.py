"""Chunked, resumable writers for ``skfeat extract``: Parquet, NumPy and CSV.

A writer works inside a private folder beside the output. Each chunk of rows is made
durable before the run records it as done, and rewriting a chunk gives the same bytes,
so a run killed at any moment resumes to the same file as an uninterrupted one.
:meth:`Writer.finish` builds the final files in that folder and :meth:`Writer.moves`
says where each goes; the caller renames them into place, which is atomic on one file
system.

Every byte goes out through ordinary writes (ours or pyarrow's), never through a memory
map, so a full disk arrives as an :class:`OSError` (see :func:`out_of_space_errno`), not
as a signal. A write that fails leaves no half-written file behind to be read later.

- Parquet: one part file per chunk; ``finish`` streams them, one row group each, into
  the final file with :class:`pyarrow.parquet.ParquetWriter`.
- NumPy: the ``.npy`` header of :func:`numpy.save`, then the whole file reserved with
  :func:`os.posix_fallocate` where the file system allows it, so a full disk fails at
  the start; each chunk's rows are written at their offset with :func:`os.pwrite`. The
  paths go to a text file beside it.
- CSV: a header, then each chunk written at the size recorded after the one before, so
  a resumed run overwrites a chunk cut off mid-write.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._cli._common import CommandError

__all__ = [
    "FORMATS",
    "Writer",
    "format_size",
    "make_writer",
    "out_of_space_errno",
    "paths_file_for",
]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".csv": "csv"}
_FLOAT_FORMAT = "%.9g"  # nine significant digits round-trip any float32 exactly
_CSV_NUMBER_BYTES = 16  # the longest %.9g of a float32, "-1.17549435e-38", and its comma
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_ARROW_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow's "Detail: [errno 28] ..."
# posix_fallocate's answers for "this file system cannot reserve space".
_NO_RESERVE = frozenset(
    {errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENOSYS}
)


def paths_file_for(output: Path) -> Path:
    """The text file of paths written beside an ``.npy`` output: ``x.npy`` -> ``x.paths.txt``."""
    return output.with_suffix(".paths.txt")


def out_of_space_errno(error: BaseException) -> int | None:
    """``errno.ENOSPC`` or ``errno.EDQUOT`` when ``error`` says the disk is full, else None.

    Looks at :class:`OSError`'s ``errno`` and at pyarrow's messages (``Detail: [errno 28]
    ...``, which not every pyarrow error carries as ``errno``), along the chain of causes.

    Examples
    --------
    >>> import errno
    >>> out_of_space_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    True
    >>> out_of_space_errno(OSError("Detail: [errno 122] Disk quota exceeded")) == errno.EDQUOT
    True
    >>> out_of_space_errno(OSError(errno.EACCES, "Permission denied")) is None
    True
    """
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _OUT_OF_SPACE:
            return current.errno
        for match in _ARROW_ERRNO.finditer(str(current)):
            if int(match.group(1)) in _OUT_OF_SPACE:
                return int(match.group(1))
        current = current.__cause__ or current.__context__
    return None


def format_size(n_bytes: int) -> str:
    """A size for people, with the exact count.

    Examples
    --------
    >>> format_size(96640)
    '94.4 KiB (96,640 bytes)'
    >>> format_size(300)
    '300 bytes'
    """
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    value = float(n_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit} ({n_bytes:,} bytes)"


class Writer:
    """Writes chunks of rows into ``workdir``; subclasses know one format.

    Parameters
    ----------
    workdir : Path
        Private folder for partial files; exists already when :meth:`start` is called.
    paths : list of str
        Every image path, one per output row.
    feature_names : list of str
        The feature column names.
    metadata : dict
        What produced the features (model, layers...), stored where the format allows.
    options : dict
        Format options (``list_column``).
    """

    suffix = ""

    def __init__(
        self,
        workdir: Path,
        paths: list[str],
        feature_names: list[str],
        metadata: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.workdir = workdir
        self.paths = paths
        self.feature_names = feature_names
        self.metadata = metadata
        self.options = options

    @property
    def result(self) -> Path:
        """The main file :meth:`finish` builds in the folder."""
        return self.workdir / f"result{self.suffix}"

    def start(self, state: dict[str, Any]) -> None:
        """Prepare the partial files; ``state`` holds what earlier runs recorded."""

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        """Write chunk ``index`` (rows ``start:start+len(features)``); return state to record."""
        raise NotImplementedError

    def finish(self, n_chunks: int) -> None:
        """Build the final files in the folder, from the ``n_chunks`` chunks written."""

    def moves(self, output: Path) -> list[tuple[Path, Path]]:
        """``(built file, destination)`` pairs for ``output``, main file last."""
        return [(self.result, output)]

    def space_needed(self, rows_done: int) -> tuple[int, str]:
        """The bytes the rest of the run still writes, and how to say it.

        ``rows_done`` rows are written already. Returns the count and a phrase with
        ``{}`` where the size goes ("{} in all", "about {} more").
        """
        raise NotImplementedError

    def _damaged(self, path: Path, detail: str) -> CommandError:
        return CommandError(
            f"the partial file {str(path)!r} is missing or damaged ({detail}), so the run "
            f"cannot resume from it. Delete {str(self.workdir)!r} and run again to start over."
        )


class ParquetWriter(Writer):
    """A ``path`` column and one float32 column per feature, or one list column."""

    suffix = ".parquet"

    def _table(self, start: int, features: np.ndarray) -> Any:
        import pyarrow as pa

        paths = pa.array(self.paths[start : start + len(features)], type=pa.string())
        if self.options["list_column"]:
            flat = pa.array(features.reshape(-1), type=pa.float32())
            vectors = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
            return pa.table({"path": paths, "features": vectors}, schema=self._schema())
        columns = [paths, *(pa.array(features[:, j]) for j in range(features.shape[1]))]
        return pa.Table.from_arrays(columns, schema=self._schema())

    def _schema(self) -> Any:
        import pyarrow as pa

        if self.options["list_column"]:
            fields = [
                pa.field("path", pa.string()),
                pa.field("features", pa.list_(pa.float32(), len(self.feature_names))),
            ]
        else:
            fields = [pa.field("path", pa.string())]
            fields += [pa.field(name, pa.float32()) for name in self.feature_names]
        meta = {"skfeat": json.dumps(self.metadata, sort_keys=True)}
        if self.options["list_column"]:
            meta["skfeat.feature_names"] = json.dumps(self.feature_names)
        return pa.schema(fields, metadata=meta)

    def _part(self, index: int) -> Path:
        return self.workdir / f"chunk-{index:06d}.parquet"

    def start(self, state: dict[str, Any]) -> None:
        for index in range(int(state.get("chunks_done", 0))):
            if not self._part(index).is_file():
                raise self._damaged(self._part(index), f"chunk {index + 1} is recorded as done")

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        import pyarrow.parquet as pq

        part = self._part(index)
        temporary = part.with_suffix(".tmp")
        try:
            pq.write_table(self._table(start, features), temporary)
            _fsync(temporary)
        except BaseException:
            temporary.unlink(missing_ok=True)  # half a part is never read; free its space
            raise
        os.replace(temporary, part)
        return {}

    def finish(self, n_chunks: int) -> None:
        import pyarrow.parquet as pq

        final = self.result
        try:
            with pq.ParquetWriter(final, self._schema()) as writer:
                for index in range(n_chunks):
                    table = pq.read_table(self._part(index)).replace_schema_metadata(
                        self._schema().metadata
                    )
                    writer.write_table(table, row_group_size=max(1, table.num_rows))
            _fsync(final)
        except BaseException:
            final.unlink(missing_ok=True)  # never leave a file that looks finished
            raise
        # The parts stay until the caller removes the folder: a run killed from here
        # on can still resume and rebuild the file.

    def space_needed(self, rows_done: int) -> tuple[int, str]:
        parts = sum(path.stat().st_size for path in self.workdir.glob("chunk-*.parquet"))
        # The parts still to write, then the final file, built while every part is kept.
        left = (len(self.paths) - rows_done) + len(self.paths)
        if rows_done and parts:
            return int(parts / rows_done * left), "about {} more"
        # No part yet: the values and paths alone; each part's footer comes on top.
        per_row = 4 * len(self.feature_names) + 8
        per_row += sum(len(path.encode("utf-8", "replace")) for path in self.paths) / max(
            1, len(self.paths)
        )
        return int(per_row * left), "at least {} more"


class NpyWriter(Writer):
    """A float32 ``(n_images, n_features)`` array; paths in ``<stem>.paths.txt``."""

    suffix = ".npy"
    _dtype = np.dtype(np.float32)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header = _npy_header((len(self.paths), len(self.feature_names)), self._dtype)
        self._row_bytes = len(self.feature_names) * self._dtype.itemsize
        self._size = len(self._header) + len(self.paths) * self._row_bytes
        self._reserved = False

    def _listing(self) -> Path:
        return self.workdir / "result.paths.txt"

    def _listing_bytes(self) -> bytes:
        return "".join(f"{path}\n" for path in self.paths).encode("utf-8")

    def start(self, state: dict[str, Any]) -> None:
        array_path = self.result
        resuming = state.get("chunks_done", 0) > 0
        if resuming:
            if not array_path.is_file():
                raise self._damaged(array_path, "it is not there")
            with array_path.open("rb") as handle:
                header = handle.read(len(self._header))
            size = array_path.stat().st_size
            if header != self._header or size != self._size:
                raise self._damaged(
                    array_path, f"{size} bytes, expected a float32 array of {self._size} bytes"
                )
        flags = os.O_RDWR | _O_BINARY | (0 if resuming else os.O_CREAT | os.O_TRUNC)
        fd = os.open(array_path, flags, 0o666)
        try:
            self._reserved = _reserve(fd, self._size)
            if not resuming:
                _write_at(fd, self._header, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            if not resuming:
                array_path.unlink(missing_ok=True)  # give back what was reserved
            raise
        os.close(fd)
        _write_file(self._listing(), self._listing_bytes())

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        rows = np.ascontiguousarray(features, dtype=self._dtype)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(
                f"chunk {index} has shape {rows.shape}, expected (n, {len(self.feature_names)})"
            )
        fd = os.open(self.result, os.O_RDWR | _O_BINARY)
        try:
            _write_at(fd, rows.tobytes(), len(self._header) + start * self._row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        return {}

    def moves(self, output: Path) -> list[tuple[Path, Path]]:
        return [(self._listing(), paths_file_for(output)), (self.result, output)]

    def space_needed(self, rows_done: int) -> tuple[int, str]:
        if not self.result.is_file():
            needed = self._size
        elif self._reserved:
            needed = 0
        else:  # a file with holes: the rows not written yet
            needed = self._size - len(self._header) - rows_done * self._row_bytes
        listing = self._listing()
        if not listing.is_file() or listing.stat().st_size != len(self._listing_bytes()):
            needed += len(self._listing_bytes())
        return needed, "{} in all" if not self.result.is_file() else "{} more"


class CsvWriter(Writer):
    """A header ``path,<feature names>``, then one row per image."""

    suffix = ".csv"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header = _csv_bytes([["path", *self.feature_names]])
        self._size = len(self._header)

    def start(self, state: dict[str, Any]) -> None:
        target = self.result
        if state.get("chunks_done", 0) > 0:
            recorded = state.get("csv_bytes")
            size = target.stat().st_size if target.is_file() else None
            if not isinstance(recorded, int) or size is None or size < recorded:
                raise self._damaged(target, f"{size} bytes, {recorded} recorded as written")
            os.truncate(target, recorded)  # drop a chunk cut off mid-write
            self._size = recorded
        else:
            _write_file(target, self._header)
            self._size = len(self._header)

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        values = np.char.mod(_FLOAT_FORMAT, features.astype(np.float64))
        rows = zip(self.paths[start : start + len(features)], values, strict=True)
        data = _csv_bytes([path, *row] for path, row in rows)
        fd = os.open(self.result, os.O_WRONLY | _O_BINARY)
        try:
            _write_at(fd, data, self._size)
            os.fsync(fd)
        except BaseException:
            _cut_back(fd, self._size)  # free what the cut-off chunk holds
            raise
        finally:
            os.close(fd)
        self._size += len(data)
        return {"csv_bytes": self._size}

    def space_needed(self, rows_done: int) -> tuple[int, str]:
        size = self.result.stat().st_size if self.result.is_file() else 0
        left = self.paths[rows_done:]
        if rows_done and size > len(self._header):
            return int((size - len(self._header)) / rows_done * len(left)), "about {} more"
        # No row yet: the longest a row can be (a quoted path, each number at full length).
        bound = sum(2 * len(path.encode("utf-8", "replace")) + 3 for path in left)
        bound += len(left) * (_CSV_NUMBER_BYTES * len(self.feature_names) + 2)
        return bound + (0 if size else len(self._header)), "up to {} more"


_O_BINARY = getattr(os, "O_BINARY", 0)  # no newline translation on Windows


def _npy_header(shape: tuple[int, int], dtype: np.dtype) -> bytes:
    """The header :func:`numpy.save` writes for a C-order array of ``shape`` and ``dtype``."""
    from numpy.lib import format as npy_format

    header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buffer, header)
    except ValueError:  # too long for version 1.0: numpy.save moves to 2.0 the same way
        buffer = io.BytesIO()
        npy_format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _csv_bytes(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _reserve(fd: int, size: int) -> bool:
    """Allocate ``size`` bytes for the file now, so that a full disk fails here.

    Returns False where the file system cannot reserve space: the file is then ``size``
    bytes with holes, and the ordinary writes that fill them report a full disk as an
    error.
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return True
        except OSError as error:
            if error.errno not in _NO_RESERVE:
                raise
    os.ftruncate(fd, size)
    return False


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        if hasattr(os, "pwrite"):
            written = os.pwrite(fd, view, offset)
        else:
            os.lseek(fd, offset, os.SEEK_SET)
            written = os.write(fd, view)
        view = view[written:]
        offset += written


def _write_file(path: Path, data: bytes) -> None:
    """``path`` holds exactly ``data``, on disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            _cut_back(fd, 0)
            raise
    finally:
        os.close(fd)


def _cut_back(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the write's own error is the one to report


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def make_writer(
    fmt: str,
    workdir: Path,
    paths: list[str],
    feature_names: list[str],
    metadata: dict[str, Any],
    options: dict[str, Any],
) -> Writer:
    """The writer for ``fmt`` (a value of :data:`FORMATS`)."""
    classes = {"parquet": ParquetWriter, "npy": NpyWriter, "csv": CsvWriter}
    return classes[fmt](workdir, paths, feature_names, metadata, options)
