"""The activation store's handle: :class:`ActivationCache`, in memory or on disk.

An entry is the set of pooled float32 vectors of one image under one model
namespace (architecture, weights, preprocessing, precision), stored as
``{"layer|pooling": vector}``. Raw feature maps are never stored. Where entries live
is a backend's job (:mod:`~skfeat._cache._memory`, :mod:`~skfeat._cache._disk`), and
how an entry is written is the entry format's (:mod:`~skfeat._cache._entry`).

The handle is what travels: ``copy.deepcopy`` (and so :func:`sklearn.base.clone`)
returns the same object, and a pickle carries only ``directory`` and ``max_bytes``
(plus a token for in-memory caches, and the process that pickled it), so clones,
folds and grid candidates share one store in a process, and joblib or Dask workers
share an on-disk one. Handles to the same store in one process share one backend:
its counters and, in memory, its contents. An in-memory cache unpickled in another
process shares nothing with the original, and says so with a warning.

A damaged entry (truncated, altered, another image's or another namespace's, a
vector of the wrong width, a NaN or an infinity, which are never stored) is detected
on read, removed, counted and recomputed.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from skfeat._cache._backend import Backend
from skfeat._cache._disk import DiskBackend
from skfeat._cache._entry import Damaged, Entry
from skfeat._cache._memory import MemoryBackend
from skfeat._validation import is_int
from skfeat._warnings import warn_at_caller
from skfeat.exceptions import CacheWarning, InvalidParameterError

__all__ = ["DEFAULT_MAX_BYTES", "ActivationCache", "Entry", "resolve_cache"]

DEFAULT_MAX_BYTES = 2 * 1024**3

# In-memory stores live as long as a handle does; on-disk ones only hold counters,
# kept for the process so that ActivationCache(path).stats() counts earlier work.
_MEMORY_BACKENDS: weakref.WeakValueDictionary[str, MemoryBackend] = weakref.WeakValueDictionary()
_DISK_BACKENDS: dict[str, DiskBackend] = {}
_BACKENDS_LOCK = threading.Lock()
_WARNED_TOKENS: set[str] = set()  # in-memory stores this process has warned about


def _shared(registry: Any, key: str, make: Callable[[], Backend]) -> Any:
    with _BACKENDS_LOCK:
        backend = registry.get(key)
        if backend is None:
            backend = make()
            registry[key] = backend
        return backend


def _restore(
    directory: str | None, max_bytes: int | None, token: str, pickled_in: int | None = None
) -> ActivationCache:
    """Unpickle a handle; an in-memory store from another process is a new, empty one.

    A store this process holds is the same store, wherever the pickle came from (a
    worker's results coming back); one it does not hold warns, once per store.
    """
    if directory is None and pickled_in is not None and pickled_in != os.getpid():
        with _BACKENDS_LOCK:
            unknown = token not in _MEMORY_BACKENDS and token not in _WARNED_TOKENS
            if unknown:
                _WARNED_TOKENS.add(token)
        if unknown:
            _warn_not_shared(pickled_in)
    cache = ActivationCache.__new__(ActivationCache)
    cache._open(None if directory is None else Path(directory), max_bytes, token)
    return cache


def _warn_not_shared(pickled_in: int) -> None:
    warn_at_caller(
        f"An in-memory ActivationCache was sent from process {pickled_in} to process "
        f"{os.getpid()} (a worker of joblib, GridSearchCV(n_jobs=...) or Dask): it starts "
        "empty here and what is computed here is not shared. The features are correct, "
        'but computed again; pass a directory to share the cache: ActivationCache("/path") '
        '(or cache="/path").',
        CacheWarning,
    )


class ActivationCache:
    """A store of pooled activations, shared by clones, folds and grid candidates.

    Give it to :class:`~skfeat.PretrainedCNNFeaturizer` as ``cache=``. Features are
    keyed by the image's content (file bytes, array bytes, pixels), the model and its
    weights, the preprocessing recipe and the compute precision, so a change in any
    of them is a miss, never a stale result. On a miss the featurizer stores every
    named pooling (except ``"flatten"``) of the model's usual stages, so a grid search
    over ``layer`` and ``pooling`` runs the backbone about once per image.

    Parameters
    ----------
    directory : str, path or None, default=None
        Where entries live. None keeps them in this process's memory; a directory
        (created on first use, ``~`` expanded) persists them and shares them with
        other processes, such as the workers of ``GridSearchCV(n_jobs=2)``.
    max_bytes : int or None, default=2 GiB
        Size limit of the stored entries. When a write goes past it, the least
        recently used entries are removed. None means no limit. On disk the size is
        checked after each batch of writes, so it can briefly exceed the limit.

    See Also
    --------
    PretrainedCNNFeaturizer : Its ``cache`` parameter takes this object, a directory
        path or True (a per-user cache directory).

    Notes
    -----
    ``copy.deepcopy(cache)`` returns ``cache`` itself, so :func:`sklearn.base.clone`
    keeps the store shared. A pickle holds only the handle: an on-disk cache reopens
    its directory when unpickled (in another process too); an in-memory cache
    unpickles to the same store within a process and to an empty one elsewhere, with
    a :class:`~skfeat.exceptions.CacheWarning`, so use a directory when the work runs
    in several processes.

    Examples
    --------
    >>> import numpy as np
    >>> from skfeat import ActivationCache, PretrainedCNNFeaturizer
    >>> images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    >>> cache = ActivationCache()
    >>> featurizer = PretrainedCNNFeaturizer(
    ...     "resnet18", weights=None, layer="layer3", cache=cache, n_jobs=1
    ... )
    >>> first = featurizer.fit_transform(images)
    >>> again = featurizer.set_params(layer="layer2", pooling="gem").fit_transform(images)
    >>> cache.stats()["hits"], cache.stats()["misses"]
    (3, 3)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise InvalidParameterError(
                f"ActivationCache's directory must be None (in memory) or a directory path. "
                f"Got {directory!r} instead."
            )
        if directory is not None and not os.fspath(directory):
            raise InvalidParameterError(
                "ActivationCache's directory must not be empty. Pass a directory path, or "
                "None to keep the cache in memory."
            )
        if max_bytes is not None and not is_int(max_bytes):
            raise InvalidParameterError(
                f"ActivationCache's max_bytes must be an int or None (no limit). "
                f"Got {max_bytes!r} instead."
            )
        if max_bytes is not None and max_bytes < 0:
            raise InvalidParameterError(
                f"ActivationCache's max_bytes must be >= 0 or None (no limit). "
                f"Got {max_bytes!r} instead."
            )
        path = None if directory is None else Path(directory).expanduser().absolute()
        self._open(path, None if max_bytes is None else int(max_bytes), uuid.uuid4().hex)

    def _open(self, directory: Path | None, max_bytes: int | None, token: str) -> None:
        """Attach this handle to its store's backend (shared by every handle to it here)."""
        self._directory = directory
        self._max_bytes = max_bytes
        self._token = token
        self._backend: Backend
        if directory is None:
            self._backend = _shared(_MEMORY_BACKENDS, token, MemoryBackend)
        else:
            self._backend = _shared(
                _DISK_BACKENDS, os.fspath(directory), lambda: DiskBackend(directory)
            )

    # -- the handle ----------------------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        """The directory of an on-disk cache, or None for an in-memory one."""
        return self._directory

    @property
    def max_bytes(self) -> int | None:
        """The size limit in bytes, or None for no limit."""
        return self._max_bytes

    def __repr__(self) -> str:
        directory = None if self._directory is None else os.fspath(self._directory)
        return f"ActivationCache(directory={directory!r}, max_bytes={self._max_bytes!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> ActivationCache:
        return self  # clones, folds and candidates share one store

    def __copy__(self) -> ActivationCache:
        return self

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        directory = None if self._directory is None else os.fspath(self._directory)
        return _restore, (directory, self._max_bytes, self._token, os.getpid())

    # -- public operations -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Return the counters and size of the store.

        Returns
        -------
        stats : dict of str to int
            ``hits`` and ``misses``: distinct images looked up by this process that
            were found or had to be computed; ``evictions``: entries removed to stay
            under ``max_bytes``; ``corrupt``: damaged entries found and recomputed;
            ``entries`` and ``bytes``: what the store holds now (on disk: written by
            any process).
        """
        backend = self._backend
        entries, size = backend.size()
        return {
            "hits": backend.hits,
            "misses": backend.misses,
            "evictions": backend.evictions,
            "corrupt": backend.corrupt,
            "entries": entries,
            "bytes": size,
        }

    def clear(self) -> None:
        """Remove every entry and reset the counters.

        On disk only skfeat's own files are removed (entries, temporary files and
        namespace descriptions), then the folders they leave empty.
        """
        self._backend.clear()

    # -- used by the cached transform (not public) ---------------------------------------

    def _record(self, *, hits: int, misses: int) -> None:
        """Count lookups: ``hits`` images found, ``misses`` images to compute."""
        self._backend.record(hits=hits, misses=misses)

    def _get_many(
        self, namespace: str, keys: Iterable[str], widths: Mapping[str, int] | None = None
    ) -> tuple[list[Entry | None], int]:
        """The entry of each image key (None where there is none), and how many were damaged.

        A damaged entry is removed, counted in ``stats()["corrupt"]`` and given as
        None, to be recomputed: one that holds a vector whose width is not the one
        ``widths`` gives for its name and, on disk, one that is not a regular file,
        cannot be parsed, fails its checksum, is another key's or another
        namespace's, or holds a NaN or an infinity (rows that are not finite are
        never stored).
        """
        entries: list[Entry | None] = []
        damaged = 0
        for key in keys:
            try:
                entry = self._backend.get(namespace, key)
                if entry is not None and not _intact(entry, widths):
                    raise Damaged(key)
            except Damaged:
                self._backend.discard(namespace, key)
                damaged += 1
                entry = None
            entries.append(entry)
        return entries, damaged

    def _put_many(self, namespace: str, entries: Mapping[str, Entry]) -> None:
        """Store entries (replacing older ones), then evict down to ``max_bytes``.

        Raises
        ------
        OSError
            When the directory cannot be created or written.
        """
        if entries:
            self._backend.put_many(namespace, entries, self._max_bytes)

    def _describe(self, namespace: str, description: Mapping[str, Any]) -> None:
        """Write what a namespace stands for beside its entries, for people browsing it."""
        self._backend.describe(namespace, description)


def _intact(entry: Entry, widths: Mapping[str, int] | None) -> bool:
    """Whether every vector has the width ``widths`` gives for its name (where it does)."""
    if widths is None:
        return True
    return all(vector.size == widths.get(name, vector.size) for name, vector in entry.items())


def resolve_cache(cache: Any) -> ActivationCache | None:
    """The featurizer's ``cache`` parameter as a store (None: no caching)."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, ActivationCache):
        return cache
    if cache is True:
        from skfeat._cache._keys import default_cache_directory

        return ActivationCache(default_cache_directory())
    return ActivationCache(cache)
