"""Where ``skfeat extract`` and ``skfeat check`` find their images.

``SRC`` is a folder (searched recursively for image files), a glob pattern, a text
file with one path per line, a CSV or Parquet file with a column of paths, or one
image file. Paths are returned as strings, exactly as they will appear in the output.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from skfeat._cli._common import CommandError

__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "TABLE_SUFFIXES", "image_paths"]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
TABLE_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})
_GLOB_CHARS = frozenset("*?[")


def image_paths(source: str, column: str | None = None) -> list[str]:
    """The image paths named by ``source``, in a stable order.

    A folder gives its image files sorted by path (subfolders included); a glob gives
    its matching files sorted; a list or table keeps its own order.

    Parameters
    ----------
    source : str
        Folder, glob pattern, text file of paths, CSV/Parquet file, or an image file.
    column : str, optional
        The column of paths in a CSV or Parquet ``source``.

    Returns
    -------
    paths : list of str
        At least one path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["b.png", "a.jpg", "sub/c.JPG", "notes.txt"]:
    ...     (folder / name).parent.mkdir(exist_ok=True)
    ...     (folder / name).touch()
    >>> [pathlib.Path(p).relative_to(folder).as_posix() for p in image_paths(str(folder))]
    ['a.jpg', 'b.png', 'sub/c.JPG']
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if column is not None and not (path.is_file() and suffix in TABLE_SUFFIXES):
        raise CommandError(
            f"--column {column!r} applies to a CSV or Parquet SRC, but {source!r} is not one."
        )
    if path.is_dir():
        paths = _folder(path)
        where = f"in folder {source!r} (searched recursively)"
    elif path.is_file() and suffix in TABLE_SUFFIXES:
        paths = _table(path, column)
        where = f"in column {column!r} of {source!r}"
    elif path.is_file() and suffix in LIST_SUFFIXES:
        paths = _listing(path)
        where = f"in the list {source!r}"
    elif path.is_file():
        paths = [source]
        where = ""
    elif _GLOB_CHARS & set(source):
        paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        where = f"matching the pattern {source!r}"
    else:
        raise CommandError(
            f"SRC {source!r} does not exist. Pass a folder, a glob pattern (quote it), a "
            "text file of paths, or a CSV/Parquet file with --column."
        )
    if not paths:
        extensions = " ".join(sorted(IMAGE_SUFFIXES))
        raise CommandError(f"no images found {where} (image extensions: {extensions}).")
    return paths


def _folder(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # skip .git, .ipynb_checkpoints
        found += [
            os.path.join(root, name)
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        ]
    # Sort by path parts, so "a/b.jpg" comes before "a-b.jpg" the same on every OS.
    return sorted(found, key=lambda p: Path(p).parts)


def _listing(listing: Path) -> list[str]:
    lines = listing.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _table(table: Path, column: str | None) -> list[str]:
    from skfeat._optional import import_optional

    if table.suffix.lower() == ".csv":
        import csv

        with table.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            _check_column(table, column, columns)
            # Every row is kept, empty cells too: rows must line up with the table.
            return [row[column] or "" for row in reader]
    parquet = import_optional("pyarrow.parquet", extra="parquet", purpose="reading a Parquet SRC")
    columns = list(parquet.read_schema(table).names)
    _check_column(table, column, columns)
    values = parquet.read_table(table, columns=[column]).column(0).to_pylist()
    return ["" if value is None else str(value) for value in values]


def _check_column(table: Path, column: str | None, columns: list[str]) -> None:
    if column is None:
        raise CommandError(
            f"SRC {str(table)!r} is a table: name its column of image paths with --column "
            f"(columns: {', '.join(columns)})."
        )
    if column not in columns:
        raise CommandError(
            f"column {column!r} not found in {str(table)!r}; its columns are {', '.join(columns)}."
        )
