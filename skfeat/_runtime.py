"""Running a backbone over many images: the per-process model registry and the engine.

The registry loads each (backbone, weights, device) once per process and keeps it
for the life of the process, so estimators stay small to pickle and every worker
(loky, Dask, Ray) loads its weights once. The engine streams: images are decoded and
resized in a thread pool a few batches ahead of the model, and pooled rows are
written into a preallocated output, so memory does not grow with the number of images.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from skfeat._backends import Backend
from skfeat._backends._module import ModuleBackend
from skfeat._extract import LOGITS, Target, extract
from skfeat._inputs import decode
from skfeat._preprocess import DataConfig, normalize_batch, resize_and_crop
from skfeat.exceptions import ImageDecodeError, SkfeatError

__all__ = [
    "Failure",
    "PreparedModel",
    "featurize",
    "get_model",
    "resolve_device",
    "resolve_n_threads",
]

_PREFETCH_BATCHES = 2


@dataclass
class PreparedModel:
    """A backbone with its weights, in eval mode, on its device."""

    module: Any
    device: Any
    head_loaded: bool
    lock: threading.Lock


_REGISTRY: dict[tuple[int, str, str], PreparedModel] = {}
_MODULE_REGISTRY: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], PreparedModel]] = (
    weakref.WeakKeyDictionary()
)
_REGISTRY_LOCK = threading.Lock()
LOAD_COUNT = {"loads": 0}  # read by tests to check one load per process


def resolve_device(device: str) -> Any:
    """``"auto"`` becomes cuda, then mps, then cpu; anything else is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SkfeatError(
            f"device={device!r} was requested but CUDA is not available here. "
            "Use device='auto' or device='cpu'."
        )
    return resolved


def get_model(backend: Backend, device: Any, classifier: str | None) -> PreparedModel:
    """The loaded backbone for this process, loading it on first use."""
    if isinstance(backend, ModuleBackend):
        per_module = _MODULE_REGISTRY.setdefault(backend.module, {})
        # The weights' fingerprint, not their name: a file replaced in place or a
        # module changed in place must not be served from the stale copy.
        key: Any = (backend.key, str(device))
        registry: dict[Any, PreparedModel] = per_module
    else:
        key = (os.getpid(), backend.key, str(device))
        registry = _REGISTRY
    with _REGISTRY_LOCK:
        prepared = registry.get(key)
        if prepared is None:
            module, head_loaded = backend.load(head=classifier)
            module = module.to(device)
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            prepared = PreparedModel(module.eval(), device, head_loaded, threading.Lock())
            registry[key] = prepared
            LOAD_COUNT["loads"] += 1
    return prepared


def resolve_n_threads(n_jobs: int | None) -> int:
    """Decode threads: None means all cores (at most 8), negative counts back from all."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return min(cores, 8)
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


@dataclass(frozen=True)
class Failure:
    """An image that could not be read; its row is filled instead of computed."""

    index: int
    error: ImageDecodeError


def _prepare_one(item: Any, index: int, config: DataConfig, keep_going: bool) -> Any:
    try:
        return resize_and_crop(decode(item, index), config)
    except ImageDecodeError as error:
        if not keep_going:
            raise
        return Failure(index, error)


def featurize(
    items: Sequence[Any],
    *,
    backend: Backend,
    data_config: DataConfig,
    targets: Sequence[Target],
    classifier: str | None,
    n_features: int,
    batch_size: int,
    device: str,
    n_jobs: int | None,
    progress: bool,
    on_error: str = "raise",
    positions: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[Failure]]:
    """Compute the ``(len(items), n_features)`` float32 feature matrix, row i for item i.

    With ``on_error="raise"`` the first unreadable image (in input order) raises its
    :class:`ImageDecodeError`. With ``"nan"`` or ``"zeros"`` its row is filled with
    that value, the other images of its batch are computed as usual, and the
    failures are returned beside the matrix.

    ``positions`` says where each item sits in the caller's input (default: its index
    in ``items``), so errors and failures name the image as the user numbered it when
    only some items are computed (the activation cache's misses).
    """
    import torch

    torch_device = resolve_device(device)
    prepared = get_model(backend, torch_device, classifier)
    if not prepared.head_loaded and any(t.layer.name == LOGITS for t in targets):
        raise SkfeatError(
            f"layer='logits' was requested, but the weights {backend.weights!r} have no "
            "classifier, so the logits would come from random values. Use "
            "layer='penultimate' or a convolutional layer."
        )
    n_images = len(items)
    output = np.empty((n_images, n_features), dtype=np.float32)
    keep_going = on_error != "raise"
    labels = range(n_images) if positions is None else positions
    failures: list[Failure] = []
    bar = _progress_bar(n_images, progress)
    n_threads = resolve_n_threads(n_jobs)
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="skfeat-decode") as pool:
        pending: deque[tuple[int, list[Future[Any]]]] = deque()
        starts = iter(range(0, n_images, batch_size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                stop = min(start + batch_size, n_images)
                futures = [
                    pool.submit(_prepare_one, items[i], labels[i], data_config, keep_going)
                    for i in range(start, stop)
                ]
                pending.append((start, futures))

        for _ in range(_PREFETCH_BATCHES + 1):
            submit_next()
        try:
            while pending:
                start, futures = pending.popleft()
                prepared_images = [future.result() for future in futures]
                submit_next()
                rows = np.arange(start, start + len(prepared_images))
                ok = np.array([not isinstance(p, Failure) for p in prepared_images], dtype=bool)
                failures += [p for p in prepared_images if isinstance(p, Failure)]
                output[rows[~ok]] = np.nan if on_error == "nan" else 0.0
                if ok.any():
                    images = [p for p in prepared_images if not isinstance(p, Failure)]
                    batch = torch.stack(images).to(torch_device)
                    pooled = _forward(prepared, batch, data_config, targets)
                    for target, values in zip(targets, pooled, strict=True):
                        output[rows[ok], target.start : target.stop] = values.cpu().numpy()
                if bar is not None:
                    bar.update(len(rows))
        except BaseException:
            for _, futures in pending:
                for future in futures:
                    future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    return output, failures


def _forward(
    prepared: PreparedModel, batch: Any, config: DataConfig, targets: Sequence[Target]
) -> list[Any]:
    import torch

    with prepared.lock, torch.inference_mode():
        inputs = normalize_batch(batch, config, torch.float32)
        return extract(prepared.module, inputs, targets)


def _progress_bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="skfeat", smoothing=0.1)
