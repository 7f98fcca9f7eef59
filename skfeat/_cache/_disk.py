"""The on-disk backend: one file per entry, written atomically, evicted by age of use.

Each entry is one file ``<directory>/<namespace>/<2 hex>/<image key>.skfc`` in the
format of :mod:`skfeat._cache._entry`. Files are written to a temporary name and
renamed into place, so readers never see half an entry and concurrent writers of the
same entry are safe. Hits refresh the file's modification time, which orders eviction
(least recently used first) when ``max_bytes`` is exceeded. Temporary files left by a
process that died mid-write are removed after an hour.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skfeat._cache._backend import Backend
from skfeat._cache._entry import ENTRY_SUFFIX, Entry, encode_entry, read_entry

__all__ = ["DiskBackend"]

_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 3600.0
_EVICT_TO = 0.9  # evict down to this fraction of max_bytes, so eviction runs rarely
_INFO_FILE = "namespace.json"


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    mtime_ns: int


class DiskBackend(Backend):
    """Entries as files under ``directory``, shared with every process that opens it."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        # Bytes at the last scan plus bytes this process wrote since (None: unknown).
        self._bytes: int | None = None
        self._described: set[str] = set()

    def _path(self, namespace: str, key: str) -> Path:
        return self.directory / namespace / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def get(self, namespace: str, key: str) -> Entry | None:
        path = self._path(namespace, key)
        try:
            entry = read_entry(path, key=key, namespace=namespace)
        except FileNotFoundError:
            return None
        except OSError:
            return None  # unreadable: recompute rather than fail
        try:
            os.utime(path)  # the modification time orders eviction: this one was just used
        except OSError:
            pass
        return entry

    def put_many(self, namespace: str, entries: Mapping[str, Entry], max_bytes: int | None) -> None:
        written = sum(self._put(namespace, key, entry) for key, entry in entries.items())
        if max_bytes is None:
            return
        with self.lock:
            # The size is what the last scan found plus what this process wrote since;
            # a scan (which also sees other processes' entries) runs when it is unknown
            # or past the limit.
            if self._bytes is not None:
                self._bytes += written
            over = self._bytes is None or self._bytes > max_bytes
        if over:
            self._evict(max_bytes)

    def _put(self, namespace: str, key: str, entry: Entry) -> int:
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_entry(entry, key=key, namespace=namespace)
        _atomic_write(path, data)
        return len(data)

    def discard(self, namespace: str, key: str) -> None:
        with self.lock:
            self.corrupt += 1
        _remove(self._path(namespace, key))

    def size(self) -> tuple[int, int]:
        files = list(self._entry_files())
        return len(files), sum(file.size for file in files)

    def describe(self, namespace: str, description: Mapping[str, Any]) -> None:
        """Write what a namespace stands for beside its entries, for people browsing it."""
        if namespace in self._described:
            return
        path = self.directory / namespace / _INFO_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(dict(description), indent=2, sort_keys=True, default=str)
            _atomic_write(path, text.encode())
        self._described.add(namespace)

    def clear(self) -> None:
        """Remove skfeat's own files (entries, temporary files and namespace descriptions),
        then the folders they leave empty, and reset the counters."""
        with self.lock:
            self.reset_counters()
            self._described.clear()
            self._bytes = None
        if not self.directory.is_dir():
            return
        for root, _dirs, files in os.walk(self.directory, topdown=False):
            for name in files:
                if (
                    name.endswith(ENTRY_SUFFIX)
                    or name.startswith(_TEMP_PREFIX)
                    or (name == _INFO_FILE)
                ):
                    _remove(os.path.join(root, name))
            if root != os.fspath(self.directory):
                try:
                    os.rmdir(root)
                except OSError:
                    pass  # not empty: holds files that are not ours

    def _entry_files(self) -> Iterator[_File]:
        if not self.directory.is_dir():
            return
        now = time.time()
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue  # removed meanwhile by another process
                if name.endswith(ENTRY_SUFFIX):
                    yield _File(path, info.st_size, info.st_mtime_ns)
                elif name.startswith(_TEMP_PREFIX) and now - info.st_mtime > _STALE_TEMP_SECONDS:
                    _remove(path)  # left behind by a process that died mid-write

    def _evict(self, max_bytes: int) -> None:
        files = sorted(self._entry_files(), key=lambda file: file.mtime_ns)
        total = sum(file.size for file in files)
        evicted = 0
        if total > max_bytes:
            target = int(max_bytes * _EVICT_TO)
            for file in files:
                if total <= target:
                    break
                if _remove(file.path):
                    evicted += 1
                total -= file.size
        with self.lock:
            self._bytes = total
            self.evictions += evicted


def _remove(path: str | os.PathLike[str]) -> bool:
    try:
        os.remove(path)
    except OSError:
        return False
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    handle, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
