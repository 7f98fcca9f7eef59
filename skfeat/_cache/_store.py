"""The activation store: :class:`ActivationCache`, in memory or on disk.

An entry is the set of pooled float32 vectors of one image under one model
namespace (architecture, weights, preprocessing, precision), stored as
``{"layer|pooling": vector}``. Raw feature maps are never stored.

The handle is what travels: ``copy.deepcopy`` (and so :func:`sklearn.base.clone`)
returns the same object, and a pickle carries only ``directory`` and ``max_bytes``
(plus a token for in-memory caches), so clones, folds and grid candidates share one
store in a process, and joblib or Dask workers share an on-disk one. Handles to the
same store in one process share their counters and, in memory, their contents.

On disk, each entry is one file ``<directory>/<namespace>/<2 hex>/<image key>.skfc``
holding a small JSON header (its image key, its namespace, the names and widths of its
vectors), the float32 payload and a BLAKE2b checksum; no pickle. Files are written to a
temporary name and renamed into place, so readers never see half an entry and
concurrent writers of the same entry are safe. An entry file is read only if it is a
regular file of the length its header implies, so a FIFO or a device put in its place
can neither block nor flood the reader. A damaged entry (truncated, altered, another
image's or another namespace's, a vector of the wrong width, a NaN or an infinity,
which are never stored) is detected on read, removed, counted and recomputed. Hits
refresh the file's modification time, which orders eviction (least recently used
first) when ``max_bytes`` is exceeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._validation import is_int
from skfeat.exceptions import InvalidParameterError

__all__ = ["DEFAULT_MAX_BYTES", "ENTRY_SUFFIX", "ActivationCache", "Entry", "resolve_cache"]

DEFAULT_MAX_BYTES = 2 * 1024**3
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
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 3600.0
_EVICT_TO = 0.9  # evict down to this fraction of max_bytes, so eviction runs rarely
_INFO_FILE = "namespace.json"

Entry = dict[str, np.ndarray]


@dataclass
class _State:
    """What all handles to one store share within a process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    corrupt: int = 0
    # In memory: (namespace, image key) -> entry, least recently used first.
    memory: OrderedDict[tuple[str, str], Entry] = field(default_factory=OrderedDict)
    memory_bytes: int = 0
    # On disk: bytes at the last scan plus bytes this process wrote since.
    disk_bytes: int | None = None
    described: set[str] = field(default_factory=set)


# In-memory stores live as long as a handle does; on-disk ones only hold counters,
# kept for the process so that ActivationCache(path).stats() counts earlier work.
_MEMORY_STATES: weakref.WeakValueDictionary[str, _State] = weakref.WeakValueDictionary()
_DISK_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


def _shared_state(registry: Any, key: str) -> _State:
    with _STATES_LOCK:
        state = registry.get(key)
        if state is None:
            state = _State()
            registry[key] = state
        return state


def _restore(directory: str | None, max_bytes: int | None, token: str) -> ActivationCache:
    cache = ActivationCache.__new__(ActivationCache)
    cache._open(None if directory is None else Path(directory), max_bytes, token)
    return cache


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
    unpickles to the same store within a process and to an empty one elsewhere, so
    use a directory when the work runs in several processes.

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
        """Attach this handle to its store (shared by every handle to it in this process)."""
        self._directory = directory
        self._max_bytes = max_bytes
        self._token = token
        if self._directory is None:
            self._state = _shared_state(_MEMORY_STATES, self._token)
        else:
            self._state = _shared_state(_DISK_STATES, os.fspath(self._directory))

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
        return _restore, (directory, self._max_bytes, self._token)

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
        if self._directory is None:
            with self._state.lock:
                entries, size = len(self._state.memory), self._state.memory_bytes
        else:
            files = list(self._entry_files())
            entries, size = len(files), sum(file.size for file in files)
        state = self._state
        return {
            "hits": state.hits,
            "misses": state.misses,
            "evictions": state.evictions,
            "corrupt": state.corrupt,
            "entries": entries,
            "bytes": size,
        }

    def clear(self) -> None:
        """Remove every entry and reset the counters.

        On disk only skfeat's own files are removed (entries, temporary files and
        namespace descriptions), then the folders they leave empty.
        """
        state = self._state
        with state.lock:
            state.memory.clear()
            state.memory_bytes = 0
            state.hits = state.misses = state.evictions = state.corrupt = 0
            state.described.clear()
            state.disk_bytes = None
        if self._directory is None or not self._directory.is_dir():
            return
        for root, _dirs, files in os.walk(self._directory, topdown=False):
            for name in files:
                if (
                    name.endswith(ENTRY_SUFFIX)
                    or name.startswith(_TEMP_PREFIX)
                    or (name == _INFO_FILE)
                ):
                    _remove(os.path.join(root, name))
            if root != os.fspath(self._directory):
                try:
                    os.rmdir(root)
                except OSError:
                    pass  # not empty: holds files that are not ours

    # -- used by the cached transform (not public) ---------------------------------------

    def _record(self, *, hits: int, misses: int) -> None:
        """Count lookups: ``hits`` images found, ``misses`` images to compute."""
        with self._state.lock:
            self._state.hits += hits
            self._state.misses += misses

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
        read = self._memory_get if self._directory is None else self._disk_get
        entries: list[Entry | None] = []
        damaged = 0
        for key in keys:
            entry = read(namespace, key)
            if isinstance(entry, _Damaged) or (entry is not None and not _intact(entry, widths)):
                self._discard(namespace, key)
                damaged += 1
                entry = None
            entries.append(entry)
        return entries, damaged

    def _discard(self, namespace: str, key: str) -> None:
        """Remove a damaged entry and count it."""
        state = self._state
        with state.lock:
            state.corrupt += 1
            if self._directory is None:
                old = state.memory.pop((namespace, key), None)
                if old is not None:
                    state.memory_bytes -= _entry_nbytes(old)
        if self._directory is not None:
            _remove(self._entry_path(namespace, key))

    def _put_many(self, namespace: str, entries: Mapping[str, Entry]) -> None:
        """Store entries (replacing older ones), then evict down to ``max_bytes``.

        Raises
        ------
        OSError
            When the directory cannot be created or written.
        """
        if not entries:
            return
        if self._directory is None:
            for key, entry in entries.items():
                self._memory_put(namespace, key, entry)
            return
        written = sum(self._disk_put(namespace, key, entry) for key, entry in entries.items())
        if self._max_bytes is None:
            return
        state = self._state
        with state.lock:
            # The size is what the last scan found plus what this process wrote since;
            # a scan (which also sees other processes' entries) runs when it is unknown
            # or past the limit.
            if state.disk_bytes is not None:
                state.disk_bytes += written
            over = state.disk_bytes is None or state.disk_bytes > self._max_bytes
        if over:
            self._disk_evict()

    def _describe(self, namespace: str, description: Mapping[str, Any]) -> None:
        """Write what a namespace stands for beside its entries, for people browsing it."""
        if self._directory is None or namespace in self._state.described:
            return
        path = self._directory / namespace / _INFO_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(dict(description), indent=2, sort_keys=True, default=str)
            _atomic_write(path, text.encode())
        self._state.described.add(namespace)

    # -- in memory ---------------------------------------------------------------------

    def _memory_get(self, namespace: str, key: str) -> Entry | None:
        state = self._state
        with state.lock:
            entry = state.memory.get((namespace, key))
            if entry is not None:
                state.memory.move_to_end((namespace, key))
            return entry

    def _memory_put(self, namespace: str, key: str, entry: Entry) -> None:
        frozen = {}
        for name, vector in entry.items():
            vector = np.array(vector, dtype=np.float32, copy=True).reshape(-1)
            vector.flags.writeable = False  # callers must not change the stored values
            frozen[name] = vector
        size = _entry_nbytes(frozen)
        state = self._state
        with state.lock:
            old = state.memory.pop((namespace, key), None)
            if old is not None:
                state.memory_bytes -= _entry_nbytes(old)
            state.memory[(namespace, key)] = frozen
            state.memory_bytes += size
            while (
                self._max_bytes is not None
                and state.memory_bytes > self._max_bytes
                and state.memory
            ):
                _, evicted = state.memory.popitem(last=False)
                state.memory_bytes -= _entry_nbytes(evicted)
                state.evictions += 1

    # -- on disk -----------------------------------------------------------------------

    def _entry_path(self, namespace: str, key: str) -> Path:
        assert self._directory is not None
        return self._directory / namespace / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def _disk_get(self, namespace: str, key: str) -> Entry | _Damaged | None:
        path = self._entry_path(namespace, key)
        try:
            data, header = _read_entry_file(path)
        except FileNotFoundError:
            return None
        except _Damaged as damaged:
            return damaged
        except OSError:
            return None  # unreadable: recompute rather than fail
        entry = _entry_of(data, header, key, namespace)
        if entry is None:
            return _Damaged()
        try:
            os.utime(path)  # the modification time orders eviction: this one was just used
        except OSError:
            pass
        return entry

    def _disk_put(self, namespace: str, key: str, entry: Entry) -> int:
        path = self._entry_path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_entry(entry, key=key, namespace=namespace)
        _atomic_write(path, data)
        return len(data)

    def _entry_files(self) -> Iterator[_File]:
        if self._directory is None or not self._directory.is_dir():
            return
        now = time.time()
        for root, _dirs, files in os.walk(self._directory):
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

    def _disk_evict(self) -> None:
        files = sorted(self._entry_files(), key=lambda file: file.mtime_ns)
        total = sum(file.size for file in files)
        evicted = 0
        if self._max_bytes is not None and total > self._max_bytes:
            target = int(self._max_bytes * _EVICT_TO)
            for file in files:
                if total <= target:
                    break
                if _remove(file.path):
                    evicted += 1
                total -= file.size
        with self._state.lock:
            self._state.disk_bytes = total
            self._state.evictions += evicted


class _Damaged(Exception):
    """An entry file that is not an entry: raised while reading, returned after."""


def _read_entry_file(path: Path) -> tuple[bytes, tuple[int, dict[str, Any]]]:
    """An entry file's bytes and header, read only from a regular file of the length its
    header implies.

    Raises
    ------
    _Damaged
        When the file is not a regular file, or its length is not the one its
        header implies (its header is read first, at most ``_MAX_HEADER`` bytes).
    OSError
        When it cannot be opened (FileNotFoundError: there is no entry).
    """
    handle = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise _Damaged(path)
        size = info.st_size
        data = _read_up_to(handle, min(size, _PREFIX_SIZE + _MAX_HEADER))
        header = _read_header(data)
        if header is None or _entry_size(*header) != size:
            raise _Damaged(path)
        if len(data) < size:
            data += _read_up_to(handle, size - len(data))
        if len(data) != size:
            raise _Damaged(path)  # shrank while read
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


def _intact(entry: Entry, widths: Mapping[str, int] | None) -> bool:
    """Whether every vector has the width ``widths`` gives for its name (where it does)."""
    if widths is None:
        return True
    return all(vector.size == widths.get(name, vector.size) for name, vector in entry.items())


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    mtime_ns: int


def _entry_nbytes(entry: Entry) -> int:
    return sum(vector.nbytes for vector in entry.values())


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


def decode_entry(
    data: bytes, *, key: str | None = None, namespace: str | None = None
) -> Entry | None:
    """Parse :func:`encode_entry`'s bytes; None when they are truncated or damaged.

    Damaged includes a NaN or an infinity (never stored) and, with ``key`` or
    ``namespace``, an entry that records others (a file copied over another's).
    """
    header = _read_header(data)
    if header is None or _entry_size(*header) != len(data):
        return None
    return _entry_of(data, header, key, namespace)


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
    data: bytes, header: tuple[int, dict[str, Any]], key: str | None, namespace: str | None
) -> Entry | None:
    """The vectors of an entry of the right size, once its checksum and fields are checked."""
    length, fields = header
    body = memoryview(data)[_PREFIX_SIZE:-_DIGEST_SIZE]
    if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != data[-_DIGEST_SIZE:]:
        return None
    if (key is not None and fields["key"] != key) or (
        namespace is not None and fields["namespace"] != namespace
    ):
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
