"""Chunked, resumable writers for ``skfeat extract``: Parquet, NumPy and CSV.

A writer works inside a private folder beside the output. Each chunk of rows is made
durable before the run records it as done, and rewriting a chunk gives the same bytes,
so a run killed at any moment resumes to the same file as an uninterrupted one.
:meth:`Writer.finish` builds the final file in that folder; the caller then renames it
into place, which is atomic on one file system.

- Parquet: one part file per chunk; ``finish`` streams them, one row group each, into
  the final file with :class:`pyarrow.parquet.ParquetWriter`.
- NumPy: a preallocated ``.npy`` memory map (:func:`numpy.lib.format.open_memmap`),
  rows written in place; the paths go to a text file beside it.
- CSV: rows appended to one file; its size after each chunk is recorded, and a resumed
  run cuts the file back to the last recorded size.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._cli._common import CommandError

__all__ = ["FORMATS", "Writer", "make_writer", "paths_file_for"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".csv": "csv"}
_FLOAT_FORMAT = "%.9g"  # nine significant digits round-trip any float32 exactly


def paths_file_for(output: Path) -> Path:
    """The text file of paths written beside an ``.npy`` output: ``x.npy`` -> ``x.paths.txt``."""
    return output.with_suffix(".paths.txt")


class Writer:
    """Writes chunks of rows into ``workdir``; subclasses know one format.

    Parameters
    ----------
    workdir : Path
        Private folder for partial files; exists already.
    paths : list of str
        Every image path, one per output row.
    feature_names : list of str
        The feature column names.
    metadata : dict
        What produced the features (model, layers...), stored where the format allows.
    """

    final_name = "result"

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

    def start(self, state: dict[str, Any]) -> None:
        """Prepare the partial files; ``state`` holds what earlier runs recorded."""

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        """Write chunk ``index`` (rows ``start:start+len(features)``); return state to record."""
        raise NotImplementedError

    def finish(self, n_chunks: int, output: Path) -> list[tuple[Path, Path]]:
        """Build the final files; return ``(built file, destination)`` pairs, main file last."""
        raise NotImplementedError


class ParquetWriter(Writer):
    """A ``path`` column and one float32 column per feature, or one list column."""

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

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        import pyarrow.parquet as pq

        part = self._part(index)
        temporary = part.with_suffix(".tmp")
        pq.write_table(self._table(start, features), temporary)
        _fsync(temporary)
        os.replace(temporary, part)
        return {}

    def finish(self, n_chunks: int, output: Path) -> list[tuple[Path, Path]]:
        import pyarrow.parquet as pq

        final = self.workdir / "result.parquet"
        with pq.ParquetWriter(final, self._schema()) as writer:
            for index in range(n_chunks):
                table = pq.read_table(self._part(index)).replace_schema_metadata(
                    self._schema().metadata
                )
                writer.write_table(table, row_group_size=max(1, table.num_rows))
        # The parts stay until the caller removes the folder: a run killed from here
        # on can still resume and rebuild the file.
        return [(final, output)]


class NpyWriter(Writer):
    """A float32 ``(n_images, n_features)`` array; paths in ``<stem>.paths.txt``."""

    def _array_path(self) -> Path:
        return self.workdir / "result.npy"

    def start(self, state: dict[str, Any]) -> None:
        from numpy.lib.format import open_memmap

        shape = (len(self.paths), len(self.feature_names))
        array_path = self._array_path()
        if array_path.exists() and state.get("chunks_done", 0) > 0:
            self.array = open_memmap(array_path, mode="r+")
            if self.array.shape != shape or self.array.dtype != np.float32:
                raise CommandError(f"the partial file {str(array_path)!r} is damaged.")
        else:
            self.array = open_memmap(array_path, mode="w+", dtype=np.float32, shape=shape)
        listing = self.workdir / "result.paths.txt"
        listing.write_text("".join(f"{path}\n" for path in self.paths), encoding="utf-8")

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        self.array[start : start + len(features)] = features
        self.array.flush()
        return {}

    def finish(self, n_chunks: int, output: Path) -> list[tuple[Path, Path]]:
        self.array.flush()
        del self.array
        return [
            (self.workdir / "result.paths.txt", paths_file_for(output)),
            (self._array_path(), output),
        ]


class CsvWriter(Writer):
    """A header ``path,<feature names>``, then one row per image."""

    def _file(self) -> Path:
        return self.workdir / "result.csv"

    def start(self, state: dict[str, Any]) -> None:
        target = self._file()
        if state.get("chunks_done", 0) > 0 and target.exists():
            with target.open("r+b") as handle:
                handle.truncate(state["csv_bytes"])  # drop a chunk cut off mid-write
        else:
            with target.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(["path", *self.feature_names])

    def write(self, index: int, start: int, features: np.ndarray) -> dict[str, Any]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        values = np.char.mod(_FLOAT_FORMAT, features.astype(np.float64))
        for path, row in zip(self.paths[start : start + len(features)], values, strict=True):
            writer.writerow([path, *row])
        with self._file().open("a", newline="", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        return {"csv_bytes": self._file().stat().st_size}

    def finish(self, n_chunks: int, output: Path) -> list[tuple[Path, Path]]:
        return [(self._file(), output)]


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
