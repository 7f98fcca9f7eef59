"""The cached transform: the engine behind an :class:`~skfeat.ActivationCache`.

A transform with a cache hashes each image's content, fetches the entries it has,
and runs the engine only on the images it lacks. For those it computes the requested
(layer, pooling) reads and, for images seen for the first time, every stored pooling
of the plan's stages, so that the other candidates of a grid search over ``layer``
and ``pooling`` find them. Entries hold elementary components (``"layer3|gem"``):
composites such as ``avgmax`` are assembled from theirs, and a vector layer keeps one
copy whatever the pooling (:func:`skfeat._pooling.components`).

A computed row is stored under the key of the bytes the engine decoded, never under
the key of the look-up, which read the file earlier: a file replaced in between gets
its new content's entry, and the images that shared its old key are computed on
their own. Lookups keep no file in memory: a miss is read again by the engine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skfeat._cache._keys import bytes_key, compute_signature, content_key, namespace_key
from skfeat._cache._store import ActivationCache, Entry
from skfeat._extract import LayerInfo
from skfeat._plan import RunPlan, Target
from skfeat._pooling import pooled_width, stored_components
from skfeat._runtime import Failure, RunSettings, featurize
from skfeat._warnings import warn_at_caller
from skfeat.exceptions import CacheWarning

__all__ = ["featurize_cached"]

_CHUNK = 1024  # misses computed and stored per engine call: bounds memory, keeps progress

Component = tuple[LayerInfo, str]


def _name(component: Component) -> str:
    return f"{component[0].name}|{component[1]}"


def _components_of(target: Target) -> list[Component]:
    return [(target.layer, part) for part in target.pooling.components(target.layer)]


def _unique(parts: Sequence[Component]) -> list[Component]:
    return list({_name(part): part for part in parts}.values())


def featurize_cached(
    plan: RunPlan, items: Sequence[Any], settings: RunSettings, cache: ActivationCache
) -> tuple[np.ndarray, list[Failure]]:
    """The ``(len(items), plan.n_features)`` matrix of ``plan``, through ``cache``.

    Rows are stored under the runtime of ``settings``, which must be the one that
    computes them: the estimator settles ``runtime="auto"`` first
    (:func:`~skfeat._runtime._openvino.settle_runtime`), so rows computed by a fallback
    to torch go under torch's key. Failed rows are filled by the
    engine and never stored. Identical images are computed once. Lookups and
    computations go by chunks, so memory does not grow with the number of images.
    Damaged entries are recomputed, with one :class:`~skfeat.exceptions.CacheWarning`
    for the call.
    """
    signature = compute_signature(**settings.signature())
    model_key, fingerprint = plan.backend.key, plan.data_config.fingerprint()
    namespace = namespace_key(model_key, fingerprint, signature)
    description = {"model": model_key, "preprocessing": plan.data_config, "compute": signature}
    requested = _unique([part for target in plan.targets for part in _components_of(target)])
    stages = [(layer, part) for layer in plan.stages for part in stored_components(layer)]
    needed = [_name(part) for part in requested]
    widths = {_name(part): pooled_width(part[1], part[0]) for part in [*requested, *stages]}

    with ThreadPoolExecutor(max_workers=max(1, settings.n_threads)) as pool:
        keys = list(pool.map(content_key, items))
    first: dict[str, int] = {}  # image key -> the first position holding it
    source = [  # position -> the position whose row it gets (itself unless a duplicate)
        position if key is None else first.setdefault(key, position)
        for position, key in enumerate(keys)
    ]

    output = np.empty((len(items), plan.n_features), dtype=np.float32)
    fresh: list[int] = []  # never seen: compute the stages too
    partial: dict[int, Entry] = {}  # seen, but without some requested component
    damaged = 0
    unique = list(first.items())
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        found, chunk_damaged = cache._get_many(namespace, [key for key, _ in chunk], widths)
        damaged += chunk_damaged
        for (_key, position), entry in zip(chunk, found, strict=True):
            if entry is None:
                fresh.append(position)
            elif all(name in entry for name in needed):
                output[position] = _assemble(entry, plan)
            else:
                partial[position] = entry
    cache._record(hits=len(unique) - len(fresh) - len(partial), misses=len(fresh) + len(partial))
    if damaged:
        _warn_damaged(cache, damaged)

    misses = _Misses(plan, items, settings, cache, namespace, description, keys, partial, output)
    misses.compute(fresh, _unique([*requested, *stages]))
    unkeyed = [position for position, key in enumerate(keys) if key is None]
    misses.compute(sorted([*partial, *unkeyed]), requested)
    # A file that changed since its look-up was computed from its new content; the
    # images that shared its old key get their own rows.
    alone = [p for p, origin in enumerate(source) if origin != p and origin in misses.changed]
    misses.compute(alone, _unique([*requested, *stages]))
    for position in alone:
        source[position] = position

    failures = misses.failures
    errors = {failure.index: failure for failure in failures}
    for position, origin in enumerate(source):
        if origin != position:
            output[position] = output[origin]
            if origin in errors:  # a duplicate of an image that failed: same failure
                failures.append(dataclasses.replace(errors[origin], index=position))
    failures.sort(key=lambda failure: failure.index)
    return output, failures


@dataclass
class _Misses:
    """The images a cached transform computes, and the entries it stores for them."""

    plan: RunPlan
    items: Sequence[Any]
    settings: RunSettings
    cache: ActivationCache
    namespace: str
    description: dict[str, Any]
    keys: list[str | None]  # at look-up
    partial: dict[int, Entry]
    output: np.ndarray
    failures: list[Failure] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)  # read with another key than at look-up
    storing: bool = True

    def compute(self, positions: Sequence[int], parts: Sequence[Component]) -> None:
        """Compute ``parts`` for the items at ``positions``, and store their entries."""
        reading = self.plan.reading(parts)
        for start in range(0, len(positions), _CHUNK):
            chunk = list(positions[start : start + _CHUNK])
            rows: dict[int, str] = {}  # row -> the key of the bytes read
            matrix, failures = featurize(
                reading,
                [self.items[p] for p in chunk],
                self.settings,
                chunk,
                functools.partial(_key_into, rows),
            )
            read = {chunk[row]: key for row, key in rows.items()}
            self.failures += failures
            self.changed.update(p for p, key in read.items() if key != self.keys[p])
            failed = {failure.index for failure in failures}
            entries: dict[str, Entry] = {}
            for row, position in enumerate(chunk):
                values = {
                    _name(part): matrix[row, target.start : target.stop]
                    for part, target in zip(parts, reading.targets, strict=True)
                }
                self.output[position] = _assemble(values, self.plan)
                key = self._key(position, read)
                if key is not None and position not in failed and _finite(values):
                    # What was found for the look-up key is this content's only if the
                    # bytes decoded still have that key.
                    found = self.partial.get(position, {}) if key == self.keys[position] else {}
                    entries[key] = {**found, **values}
            if self.storing:
                self.storing = _store(self.cache, self.namespace, self.description, entries)

    def _key(self, position: int, read: dict[int, str]) -> str | None:
        """The key of what was decoded: a file's bytes as read, else the item's own."""
        if isinstance(self.items[position], (str, os.PathLike)):
            return read.get(position)
        return self.keys[position]


def _key_into(keys: dict[int, str], row: int, data: bytes) -> None:
    keys[row] = bytes_key(data)  # in a decoding thread, as the engine reads a file


def _finite(values: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(vector).all() for vector in values.values())


def _assemble(entry: Entry, plan: RunPlan) -> np.ndarray:
    row = np.empty(plan.n_features, dtype=np.float32)
    for target in plan.targets:
        parts = [entry[_name(part)] for part in _components_of(target)]
        row[target.start : target.stop] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return row


def _store(
    cache: ActivationCache, namespace: str, description: dict[str, Any], entries: dict[str, Entry]
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
        warn_at_caller(
            f"Could not write to the activation cache {cache!r} ({type(err).__name__}: "
            f"{err}). The features are correct but were not stored; free space or pass a "
            "writable directory as cache=.",
            CacheWarning,
        )
        return False
    return True


def _warn_damaged(cache: ActivationCache, damaged: int) -> None:
    entries = "entry" if damaged == 1 else "entries"
    warn_at_caller(
        f"{damaged} damaged {entries} in the activation cache {cache!r} (truncated, altered, "
        "or not the entry of its image) removed and recomputed; the features returned are "
        "correct. If this recurs, check the disk, and that no other program writes into "
        "the cache directory.",
        CacheWarning,
    )
