"""The entry format: one image's pooled vectors in one file, checksummed, no pickle.

An entry is the set of pooled float32 vectors of one image under one model namespace,
``{"layer|pooling": vector}``. Its bytes are a magic number, the length of a JSON
header (the image key, the namespace, the names and widths of the vectors), the
header, the float32 payload and a BLAKE2b checksum of header and payload.

:func:`read_entry` reads an entry file only if it is a regular file of the length its
header implies, so a FIFO or a device put in its place can neither block nor flood
the reader, and only if it is intact and the entry of the key and namespace asked for:
truncated, altered, another image's or another namespace's, a NaN or an infinity
(never stored) are all :class:`Damaged`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ENTRY_SUFFIX", "Damaged", "Entry", "encode_entry", "entry_nbytes", "read_entry"]

ENTRY_SUFFIX = ".skfc"
_MAGIC = b"SKFC\x02"  # the entry format, CACHE_FORMAT in skfeat._cache._keys
_HEADER_LENGTH = struct.Struct("<I")
_PREFIX_SIZE = len(_MAGIC) + _HEADER_LENGTH.size
_MAX_HEADER = 1 << 20  # far above the largest header (names and widths of every stage)
_DIGEST_SIZE = 16
_FLOAT_SIZE = 4
# O_NONBLOCK: a FIFO swapped in for an entry must not make the open wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0)

Entry = dict[str, np.ndarray]


class Damaged(Exception):
    """An entry file that is not the intact entry asked for: to remove and recompute."""


def entry_nbytes(entry: Entry) -> int:
    """The bytes an entry's vectors hold in memory."""
    return sum(vector.nbytes for vector in entry.values())


def encode_entry(entry: Mapping[str, np.ndarray], *, key: str, namespace: str) -> bytes:
    """Serialise an entry: magic, header length, JSON header, float32 payload, checksum.

    The header records the image key and the namespace the entry belongs to, and the
    name and width of each vector, so that a read can tell it is this image's.
    """
    names = sorted(entry)
    vectors = [np.ascontiguousarray(entry[name], dtype="<f4").reshape(-1) for name in names]
    header = {
        "key": key,
        "namespace": namespace,
        "names": names,
        "sizes": [int(vector.size) for vector in vectors],
    }
    text = json.dumps(header).encode()
    body = text + b"".join(vector.tobytes() for vector in vectors)
    digest = hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest()
    return _MAGIC + _HEADER_LENGTH.pack(len(text)) + body + digest


def read_entry(path: str | os.PathLike[str], *, key: str, namespace: str) -> Entry:
    """The entry of image ``key`` under ``namespace`` that the file ``path`` holds.

    Raises
    ------
    Damaged
        When the file is not a regular file, its length is not the one its header
        implies (the header is read first, at most ``_MAX_HEADER`` bytes), it fails
        its checksum, records another key or namespace, or holds a NaN or an infinity.
    OSError
        When it cannot be opened (FileNotFoundError: there is no entry).
    """
    data, header = _read_entry_file(Path(path))
    entry = _entry_of(data, header, key, namespace)
    if entry is None:
        raise Damaged(path)
    return entry


def _read_entry_file(path: Path) -> tuple[bytes, tuple[int, dict[str, Any]]]:
    """An entry file's bytes and header, read only from a regular file of the length its
    header implies."""
    handle = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise Damaged(path)
        size = info.st_size
        data = _read_up_to(handle, min(size, _PREFIX_SIZE + _MAX_HEADER))
        header = _read_header(data)
        if header is None or _entry_size(*header) != size:
            raise Damaged(path)
        if len(data) < size:
            data += _read_up_to(handle, size - len(data))
        if len(data) != size:
            raise Damaged(path)  # shrank while read
        return data, header
    finally:
        os.close(handle)


def _read_up_to(handle: int, size: int) -> bytes:
    parts = []
    total = 0
    while total < size and (block := os.read(handle, size - total)):
        parts.append(block)
        total += len(block)
    return b"".join(parts)


def _read_header(data: bytes) -> tuple[int, dict[str, Any]] | None:
    """The length and fields of the JSON header ``data`` begins with; None if it has none."""
    if len(data) < _PREFIX_SIZE or not data.startswith(_MAGIC):
        return None
    (length,) = _HEADER_LENGTH.unpack_from(data, len(_MAGIC))
    if len(data) < _PREFIX_SIZE + length:
        return None  # a header longer than the file, or than _MAX_HEADER
    try:
        header = json.loads(data[_PREFIX_SIZE : _PREFIX_SIZE + length])
        names, sizes = header["names"], header["sizes"]
        strings = [header["key"], header["namespace"], *names]
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(text, str) for text in strings) or len(names) != len(sizes):
        return None
    if not all(type(size) is int and size >= 0 for size in sizes):
        return None
    return length, header


def _entry_size(length: int, header: dict[str, Any]) -> int:
    return _PREFIX_SIZE + length + _FLOAT_SIZE * sum(header["sizes"]) + _DIGEST_SIZE


def _entry_of(
    data: bytes, header: tuple[int, dict[str, Any]], key: str, namespace: str
) -> Entry | None:
    """The vectors of an entry of the right size, once its checksum and fields are checked."""
    length, fields = header
    body = memoryview(data)[_PREFIX_SIZE:-_DIGEST_SIZE]
    if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != data[-_DIGEST_SIZE:]:
        return None
    if fields["key"] != key or fields["namespace"] != namespace:
        return None
    payload = np.frombuffer(data, dtype="<f4", offset=_PREFIX_SIZE + length)[: sum(fields["sizes"])]
    if not np.isfinite(payload).all():
        return None
    values = payload.astype(np.float32)  # one copy, in native byte order
    entry: Entry = {}
    start = 0
    for name, size in zip(fields["names"], fields["sizes"], strict=True):
        entry[name] = values[start : start + size]
        start += size
    return entry
