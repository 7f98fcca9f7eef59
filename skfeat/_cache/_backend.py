"""What a store of entries does, whatever holds them: the interface of the backends.

:class:`~skfeat._cache._store.ActivationCache` is a handle on one backend, in memory
(:mod:`~skfeat._cache._memory`) or on disk (:mod:`~skfeat._cache._disk`). A backend is
shared by every handle to its store in a process, and so are its counters.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from skfeat._cache._entry import Entry

__all__ = ["Backend"]


class Backend(ABC):
    """Entries keyed by (namespace, image key), and the counters of their use.

    ``get`` raises :class:`~skfeat._cache._entry.Damaged` for an entry that is not
    intact; ``discard`` removes it and counts it. ``lock`` guards the counters.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.corrupt = 0

    @abstractmethod
    def get(self, namespace: str, key: str) -> Entry | None:
        """The entry of ``key``, or None when there is none."""

    @abstractmethod
    def put_many(self, namespace: str, entries: Mapping[str, Entry], max_bytes: int | None) -> None:
        """Store entries, replacing older ones, then evict down to ``max_bytes``."""

    @abstractmethod
    def discard(self, namespace: str, key: str) -> None:
        """Remove a damaged entry and count it in ``corrupt``."""

    @abstractmethod
    def size(self) -> tuple[int, int]:
        """How many entries the store holds, and their bytes."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every entry and reset the counters."""

    @abstractmethod
    def describe(self, namespace: str, description: Mapping[str, Any]) -> None:
        """Record what a namespace stands for, where people browsing the store read it."""

    def record(self, *, hits: int, misses: int) -> None:
        """Count lookups: ``hits`` images found, ``misses`` images to compute."""
        with self.lock:
            self.hits += hits
            self.misses += misses

    def reset_counters(self) -> None:
        """Zero the counters; the caller holds ``lock``."""
        self.hits = self.misses = self.evictions = self.corrupt = 0
