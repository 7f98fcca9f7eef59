"""Featurizing through an :class:`~skfeat.ActivationCache`: keys, hits, misses, one pass.

A transform with a cache hashes each image's content, fetches the entries it has,
and runs the backbone only on the images it lacks. For those it computes the
requested (layer, pooling) pairs and, for images seen for the first time, every
named pooling but ``"flatten"`` of the model's usual stages (:func:`cache_layers`),
so that the other candidates of a grid search over ``layer`` and ``pooling`` find
them. Entries store components (``"layer3|gem"``); ``"avgmax"`` is assembled from
``avg`` and ``max``, and a vector layer keeps one copy whatever the pooling.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._cache import ActivationCache, Entry
from skfeat._extract import PENULTIMATE, Architecture, LayerInfo, Target
from skfeat._pooling import GEM_P, pooled_width

__all__ = [
    "CACHE_FORMAT",
    "cache_layers",
    "compute_signature",
    "content_key",
    "default_cache_directory",
    "featurize_cached",
    "namespace_key",
    "resolve_cache",
]

CACHE_FORMAT = 1
STORED_POOLINGS = ("avg", "max", "gem")  # avgmax is avg + max; flatten only on demand
_CHUNK = 1024  # misses computed and stored per engine call: bounds memory, keeps progress
_READ_BLOCK = 1 << 20
_FILE_DIGESTS_MAX = 100_000

# A compute callable: (items, targets, n_features, positions) -> (matrix, failures).
Compute = Callable[[Sequence[Any], Sequence[Target], int, Sequence[int]], tuple[np.ndarray, list]]


def compute_signature(precision: str = "fp32") -> str:
    """What, beyond model and preprocessing, decides the numbers: part of every key.

    Anything that changes the computed values belongs here (the resolved compute
    precision, the GeM exponent, the entry format), so that changing it misses.
    """
    return f"precision={precision};gem_p={GEM_P:g};format={CACHE_FORMAT}"


def namespace_key(model_key: str, data_fingerprint: str, signature: str) -> str:
    """The folder of one (model and weights, preprocessing, compute) combination."""
    text = f"{model_key}\n{data_fingerprint}\n{signature}".encode()
    return hashlib.blake2b(text, digest_size=10).hexdigest()


def default_cache_directory() -> Path:
    """The per-user cache folder used by ``cache=True`` (platform conventions)."""
    import platformdirs

    return platformdirs.user_cache_path("skfeat", appauthor=False) / "activations"


def resolve_cache(cache: Any) -> ActivationCache | None:
    """The featurizer's ``cache`` parameter as a store (None: no caching)."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, ActivationCache):
        return cache
    if cache is True:
        return ActivationCache(default_cache_directory())
    return ActivationCache(cache)


def cache_layers(architecture: Architecture) -> list[LayerInfo]:
    """The usual stages of a backbone, which a miss stores for the other candidates.

    These are the top-level modules giving feature maps (``layer1`` ... ``layer4``
    of a ResNet), the children of a top-level container whose children span several
    resolutions (``blocks.N`` of a timm EfficientNet, ``features.N`` of torchvision's
    MobileNet, EfficientNet and VGG), and ``"penultimate"``.
    """
    layers = architecture.layers
    maps = {name: info for name, info in layers.items() if len(info.shape) == 3}
    chosen = {name for name in maps if "." not in name}
    for parent in list(chosen):
        children = [
            name
            for name in maps
            if name.startswith(parent + ".") and "." not in name[len(parent) + 1 :]
        ]
        if len({maps[name].shape[1:] for name in children}) >= 2:
            chosen.update(children)
    if PENULTIMATE in layers:
        chosen.add(PENULTIMATE)
    return sorted((layers[name] for name in chosen), key=lambda info: info.order)


# -- image keys --------------------------------------------------------------------------

_FILE_DIGESTS: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_FILE_DIGESTS_LOCK = threading.Lock()


def content_key(item: Any) -> str | None:
    """A hash of what the image is, not where it is; None when it cannot be read.

    Files and bytes are hashed by their encoded bytes (one key for the same file
    under two paths), arrays by dtype, shape and pixels, PIL images by mode, size,
    orientation, palette and pixels. An item that cannot be hashed is computed (and
    fails there with the usual message) but never stored.
    """
    try:
        if isinstance(item, (str, os.PathLike)):
            return _file_key(os.fspath(item))
        if isinstance(item, (bytes, bytearray, memoryview)):
            return _digest(b"encoded", bytes(item))
        if isinstance(item, np.ndarray):
            header = f"{item.dtype.str}{item.shape}".encode()
            return _digest(b"array", header, np.ascontiguousarray(item).tobytes())
        from PIL import Image

        if isinstance(item, Image.Image):
            return _pil_key(item)
    except (OSError, ValueError, TypeError, SyntaxError):
        return None
    return None


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _file_key(path: str) -> str:
    info = os.stat(path)
    # Hashing is skipped only for a file this process already hashed and that has
    # not changed since (same inode, size and times), as make and git do.
    identity = (
        os.path.realpath(path),
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )
    with _FILE_DIGESTS_LOCK:
        known = _FILE_DIGESTS.get(identity)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(b"encoded").to_bytes(8, "little") + b"encoded")
    with open(path, "rb") as handle:
        # Laid out as _digest(b"encoded", data): a file and its bytes share a key.
        digest.update(os.fstat(handle.fileno()).st_size.to_bytes(8, "little"))
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    key = digest.hexdigest()
    with _FILE_DIGESTS_LOCK:
        _FILE_DIGESTS[identity] = key
        if len(_FILE_DIGESTS) > _FILE_DIGESTS_MAX:
            _FILE_DIGESTS.popitem(last=False)
    return key


def _pil_key(image: Any) -> str:
    orientation = image.getexif().get(0x0112, 1)  # decoding applies it
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    meta = repr((image.mode, image.size, orientation, palette, image.info.get("transparency")))
    return _digest(b"pil", meta.encode(), image.tobytes())


# -- components --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Component:
    """One stored vector: a layer under one elementary pooling."""

    layer: LayerInfo
    pooling: str

    @property
    def name(self) -> str:
        return f"{self.layer.name}|{self.pooling}"


def _components_of(layer: LayerInfo, pooling: str) -> list[_Component]:
    if len(layer.shape) != 3:
        return [_Component(layer, "avg")]  # avg, max and flatten of a vector: the vector
    if pooling == "avgmax":
        return [_Component(layer, "avg"), _Component(layer, "max")]
    return [_Component(layer, pooling)]


def cacheable(targets: Sequence[Target]) -> bool:
    """Whether these targets can be cached: named poolings only (a callable has no key)."""
    return all(isinstance(target.pooling, str) for target in targets)


def _engine_targets(components: Sequence[_Component]) -> tuple[list[Target], int]:
    targets, start = [], 0
    for component in components:
        layer = component.layer
        width = pooled_width(component.pooling, layer.shape, layer.name)
        targets.append(Target(layer, component.pooling, start, start + width, component.pooling))
        start += width
    return targets, start


def _unique(components: Sequence[_Component]) -> list[_Component]:
    return list({component.name: component for component in components}.values())


# -- the cached transform ----------------------------------------------------------------


def featurize_cached(
    items: Sequence[Any],
    *,
    cache: ActivationCache,
    namespace: str,
    description: dict[str, Any],
    targets: Sequence[Target],
    stage_layers: Sequence[LayerInfo],
    n_features: int,
    compute: Compute,
    n_threads: int,
) -> tuple[np.ndarray, list[Any]]:
    """The ``(len(items), n_features)`` matrix of ``targets``, through ``cache``.

    ``compute(items, targets, n_features, positions)`` runs the engine and returns
    the matrix and its failures (objects with ``index``, the position in ``items``);
    failed rows are filled by it and never stored. Identical images are computed
    once. Lookups and computations go by chunks, so memory does not grow with the
    number of images.
    """
    requested = _unique([c for t in targets for c in _components_of(t.layer, str(t.pooling))])
    stages = [
        c for layer in stage_layers for p in STORED_POOLINGS for c in _components_of(layer, p)
    ]
    needed = [component.name for component in requested]

    with ThreadPoolExecutor(max_workers=max(1, n_threads)) as pool:
        keys = list(pool.map(content_key, items))
    first: dict[str, int] = {}  # image key -> the first position holding it
    source = [  # position -> the position whose row it gets (itself unless a duplicate)
        position if key is None else first.setdefault(key, position)
        for position, key in enumerate(keys)
    ]

    output = np.empty((len(items), n_features), dtype=np.float32)
    fresh: list[int] = []  # never seen: compute the stages too
    partial: dict[int, Entry] = {}  # seen, but without some requested component
    unique = list(first.items())
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        found = cache._get_many(namespace, [key for key, _ in chunk])
        for (_key, position), entry in zip(chunk, found, strict=True):
            if entry is None:
                fresh.append(position)
            elif all(name in entry for name in needed):
                output[position] = _assemble(entry, targets, n_features)
            else:
                partial[position] = entry
    cache._record(hits=len(unique) - len(fresh) - len(partial), misses=len(fresh) + len(partial))

    unkeyed = [position for position, key in enumerate(keys) if key is None]
    failures: list[Any] = []
    storing = True
    for positions, components in (
        (fresh, _unique([*requested, *stages])),
        (sorted([*partial, *unkeyed]), requested),
    ):
        engine_targets, width = _engine_targets(components)
        for start in range(0, len(positions), _CHUNK):
            chunk_positions = positions[start : start + _CHUNK]
            matrix, chunk_failures = compute(
                [items[p] for p in chunk_positions], engine_targets, width, chunk_positions
            )
            failures += chunk_failures
            failed = {failure.index for failure in chunk_failures}
            new_entries: dict[str, Entry] = {}
            for row, position in enumerate(chunk_positions):
                values = {
                    component.name: matrix[row, target.start : target.stop]
                    for component, target in zip(components, engine_targets, strict=True)
                }
                output[position] = _assemble(values, targets, n_features)
                key = keys[position]
                if key is not None and position not in failed and _finite(values):
                    new_entries[key] = {**partial.get(position, {}), **values}
            if storing:
                storing = _store(cache, namespace, description, new_entries)

    errors = {failure.index: failure for failure in failures}
    for position, origin in enumerate(source):
        if origin != position:
            output[position] = output[origin]
            if origin in errors:  # a duplicate of an image that failed: same failure
                failures.append(_replace_index(errors[origin], position))
    failures.sort(key=lambda failure: failure.index)
    return output, failures


def _finite(values: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(vector).all() for vector in values.values())


def _assemble(entry: Entry, targets: Sequence[Target], n_features: int) -> np.ndarray:
    row = np.empty(n_features, dtype=np.float32)
    for target in targets:
        parts = [entry[c.name] for c in _components_of(target.layer, str(target.pooling))]
        row[target.start : target.stop] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return row


def _replace_index(failure: Any, index: int) -> Any:
    import dataclasses

    return dataclasses.replace(failure, index=index)


def _store(
    cache: ActivationCache,
    namespace: str,
    description: dict[str, Any],
    entries: dict[str, Entry],
) -> bool:
    """Store new entries; a full or read-only disk warns, and the work goes on unstored.

    Returns whether storing should go on.
    """
    if not entries:
        return True
    try:
        cache._describe(namespace, description)
        cache._put_many(namespace, entries)
    except OSError as err:
        import warnings

        from skfeat.exceptions import CacheWarning

        warnings.warn(
            f"Could not write to the activation cache {cache!r} ({type(err).__name__}: "
            f"{err}). The features are correct but were not stored; free space or pass a "
            "writable directory as cache=.",
            CacheWarning,
            stacklevel=5,
        )
        return False
    return True
