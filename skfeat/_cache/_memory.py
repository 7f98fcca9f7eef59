"""The in-memory backend: entries in this process, least recently used evicted first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from skfeat._cache._backend import Backend
from skfeat._cache._entry import Entry, entry_nbytes

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Entries held read-only in a dict ordered by use, and their total size."""

    def __init__(self) -> None:
        super().__init__()
        # (namespace, image key) -> entry, least recently used first.
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._bytes = 0

    def get(self, namespace: str, key: str) -> Entry | None:
        with self.lock:
            entry = self._entries.get((namespace, key))
            if entry is not None:
                self._entries.move_to_end((namespace, key))
            return entry

    def put_many(self, namespace: str, entries: Mapping[str, Entry], max_bytes: int | None) -> None:
        for key, entry in entries.items():
            self._put(namespace, key, entry, max_bytes)

    def _put(self, namespace: str, key: str, entry: Entry, max_bytes: int | None) -> None:
        frozen = {}
        for name, vector in entry.items():
            vector = np.array(vector, dtype=np.float32, copy=True).reshape(-1)
            vector.flags.writeable = False  # callers must not change the stored values
            frozen[name] = vector
        size = entry_nbytes(frozen)
        with self.lock:
            self._pop(namespace, key)
            self._entries[(namespace, key)] = frozen
            self._bytes += size
            while max_bytes is not None and self._bytes > max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= entry_nbytes(evicted)
                self.evictions += 1

    def _pop(self, namespace: str, key: str) -> None:
        old = self._entries.pop((namespace, key), None)
        if old is not None:
            self._bytes -= entry_nbytes(old)

    def discard(self, namespace: str, key: str) -> None:
        with self.lock:
            self.corrupt += 1
            self._pop(namespace, key)

    def describe(self, namespace: str, description: Mapping[str, Any]) -> None:
        pass  # no one browses a process's memory

    def size(self) -> tuple[int, int]:
        with self.lock:
            return len(self._entries), self._bytes

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self._bytes = 0
            self.reset_counters()
