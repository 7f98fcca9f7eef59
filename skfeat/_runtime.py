"""Running a backbone over many images: the per-process model registry and the engine.

The registry loads each (backbone, weights, device) once per process and keeps it
for the life of the process, so estimators stay small to pickle and every worker
(loky, Dask, Ray) loads its weights once. The engine streams: images are decoded and
resized in a thread pool a few batches ahead of the model, and pooled rows are
written into a preallocated output, so memory does not grow with the number of images.

What makes it fast, each measured on the project's 2-core AVX2 machine (figures in
``docs/benchmarks.md``):

* decode overlaps inference: ``n_jobs`` threads decode and resize while the model
  runs (threads, not processes: nothing to pickle, no copy of torch per worker);
* JPEGs are decoded at reduced DCT scale when that keeps the short side at least
  three times the resize target (see :func:`skfeat._preprocess.draft_min_side`), then
  resized as uint8 tensors;
* the model runs in ``eval()`` under ``torch.inference_mode``, in channels-last
  memory format, with every BatchNorm that follows an unread convolution folded into
  it (:mod:`skfeat._fuse`; module names and hooks are kept);
* reduced precision only where :mod:`skfeat._precision` says it is fast and faithful;
* ``batch_size="auto"``: :data:`CPU_AUTO_BATCH_SIZE` on CPU; on CUDA the largest
  power of two that a free-memory estimate allows (at most 256). On out-of-memory
  the batch is halved and retried, rows are neither lost nor repeated, and the
  working size is remembered for the process.
"""

from __future__ import annotations

import contextlib
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
from skfeat._fuse import fold_conv_bn
from skfeat._inputs import decode
from skfeat._precision import autocast_dtype, resolve_precision
from skfeat._preprocess import DataConfig, draft_min_side, normalize_batch, resize_and_crop
from skfeat.exceptions import ImageDecodeError, SkfeatError

__all__ = [
    "CPU_AUTO_BATCH_SIZE",
    "Failure",
    "PreparedModel",
    "featurize",
    "get_model",
    "resolve_batch_size",
    "resolve_device",
    "resolve_n_threads",
]

_PREFETCH_BATCHES = 2
# Measured end to end on a 2-core AVX2 CPU (docs/benchmarks.md), fp32 channels-last:
# batch 8 beat 32 by 21% on resnet50 and 15% on mobilenet_v3_large; larger batches
# spill the 1 MB L2 cache per core.
CPU_AUTO_BATCH_SIZE = 8
_CUDA_MAX_AUTO_BATCH = 256
# Rough activation memory per image, in multiples of the float32 input: conservative for
# ResNet-50-sized CNNs at inference; out-of-memory halving covers the rest.
_ACTIVATION_FACTOR = 64
# The largest batch that fitted, per (weights, device, precision, input size), after an
# out-of-memory error; kept for the life of the process.
_BATCH_LIMITS: dict[tuple[str, str, str, int], int] = {}


@dataclass
class PreparedModel:
    """A backbone with its weights, in eval mode, on its device."""

    module: Any
    device: Any
    head_loaded: bool
    lock: threading.Lock
    tuned: bool = False
    folded: frozenset[str] = frozenset()  # convolutions carrying their BatchNorm
    protected: frozenset[str] = frozenset()  # modules read so far: never folded away


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
            module, head_loaded = _load(backend, device, classifier)
            prepared = PreparedModel(module, device, head_loaded, threading.Lock())
            registry[key] = prepared
    return prepared


def _load(backend: Backend, device: Any, classifier: str | None) -> tuple[Any, bool]:
    module, head_loaded = backend.load(head=classifier)
    module = module.to(device)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    LOAD_COUNT["loads"] += 1
    return module.eval(), head_loaded


def _tune(
    prepared: PreparedModel, backend: Backend, classifier: str | None, targets: Sequence[Target]
) -> None:
    """Fold BatchNorms and switch to channels-last, once per process and model.

    The backend's module is skfeat's own copy (a user's module is copied on load), so
    it is changed in place. A convolution whose output is read is never folded; if a
    later call reads one that an earlier call folded, the weights are reloaded.
    """
    import torch

    read = frozenset(target.layer.module for target in targets if target.layer.module)
    if prepared.tuned and not read & prepared.folded:
        return
    if read & prepared.folded:
        prepared.module, _ = _load(backend, prepared.device, classifier)
    prepared.protected |= read
    prepared.folded = frozenset(fold_conv_bn(prepared.module, prepared.protected))
    if prepared.device.type in ("cpu", "cuda"):
        prepared.module.to(memory_format=torch.channels_last)
    prepared.tuned = True


def resolve_n_threads(n_jobs: int | None) -> int:
    """Decode threads: None means all cores (at most 8), negative counts back from all."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return min(cores, 8)
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


def resolve_batch_size(batch_size: int | str, device: Any, crop_size: int) -> int:
    """Images per forward pass: an int is kept; ``"auto"`` depends on the device.

    CPU (and MPS): :data:`CPU_AUTO_BATCH_SIZE`. CUDA: the largest power of two, from 8
    to 256, whose estimated activations fill at most half of the free GPU memory.
    """
    if batch_size != "auto":
        return int(batch_size)
    if device.type != "cuda":
        return CPU_AUTO_BATCH_SIZE
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    per_image = 3 * crop_size * crop_size * 4 * _ACTIVATION_FACTOR
    fits = max(1, free // 2 // per_image)
    size = 8
    while size * 2 <= min(fits, _CUDA_MAX_AUTO_BATCH):
        size *= 2
    return size


@dataclass(frozen=True)
class Failure:
    """An image that could not be read; its row is filled instead of computed."""

    index: int
    error: ImageDecodeError


def _prepare_one(item: Any, index: int, config: DataConfig, keep_going: bool, min_side: int) -> Any:
    try:
        return resize_and_crop(decode(item, index, min_side=min_side), config)
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
    batch_size: int | str,
    device: str,
    n_jobs: int | None,
    progress: bool,
    on_error: str = "raise",
    positions: Sequence[int] | None = None,
    precision: str = "auto",
) -> tuple[np.ndarray, list[Failure]]:
    """Compute the ``(len(items), n_features)`` float32 feature matrix, row i for item i.

    With ``on_error="raise"`` the first unreadable image (in input order) raises its
    :class:`ImageDecodeError`. With ``"nan"`` or ``"zeros"`` its row is filled with
    that value, the other images of its batch are computed as usual, and the
    failures are returned beside the matrix.

    ``positions`` says where each item sits in the caller's input (default: its index
    in ``items``), so errors and failures name the image as the user numbered it when
    only some items are computed (the activation cache's misses).

    ``batch_size`` is an int or ``"auto"`` (:func:`resolve_batch_size`); ``precision``
    is resolved by :func:`skfeat._precision.resolve_precision`. Neither changes which
    row holds which image.
    """
    torch_device = resolve_device(device)
    prepared = get_model(backend, torch_device, classifier)
    if not prepared.head_loaded and any(t.layer.name == LOGITS for t in targets):
        raise SkfeatError(
            f"layer='logits' was requested, but the weights {backend.weights!r} have no "
            "classifier, so the logits would come from random values. Use "
            "layer='penultimate' or a convolutional layer."
        )
    with prepared.lock:
        _tune(prepared, backend, classifier, targets)
    resolved = resolve_precision(precision, torch_device, backend.label)
    run = _Run(
        prepared=prepared,
        config=data_config,
        targets=targets,
        dtype=autocast_dtype(resolved),
        limit_key=(backend.key, str(torch_device), resolved, data_config.crop_size),
    )
    size = resolve_batch_size(batch_size, torch_device, data_config.crop_size)
    size = min(size, _BATCH_LIMITS.get(run.limit_key, size))
    n_images = len(items)
    output = np.empty((n_images, n_features), dtype=np.float32)
    keep_going = on_error != "raise"
    min_side = draft_min_side(data_config)
    labels = range(n_images) if positions is None else positions
    failures: list[Failure] = []
    bar = _progress_bar(n_images, progress)
    n_threads = resolve_n_threads(n_jobs)
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="skfeat-decode") as pool:
        pending: deque[tuple[int, list[Future[Any]]]] = deque()
        starts = iter(range(0, n_images, size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                stop = min(start + size, n_images)
                futures = [
                    pool.submit(
                        _prepare_one, items[i], labels[i], data_config, keep_going, min_side
                    )
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
                    run.infer(images, rows[ok], output)
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


@dataclass
class _Run:
    """One featurize call's model settings; runs batches, halving them on out-of-memory."""

    prepared: PreparedModel
    config: DataConfig
    targets: Sequence[Target]
    dtype: Any
    limit_key: tuple[str, str, str, int]

    def infer(self, images: list[Any], rows: np.ndarray, output: np.ndarray) -> None:
        """Write the features of ``images`` into ``output[rows]``, in chunks that fit."""
        done = 0
        while done < len(images):
            size = min(len(images) - done, _BATCH_LIMITS.get(self.limit_key, len(images)))
            try:
                pooled = self._forward(images[done : done + size])
            except Exception as error:
                if size == 1 or not _is_out_of_memory(error):
                    raise
                _BATCH_LIMITS[self.limit_key] = size // 2
                _release_cached_memory(self.prepared.device)
                continue
            chunk_rows = rows[done : done + size]
            for target, values in zip(self.targets, pooled, strict=True):
                output[chunk_rows, target.start : target.stop] = values.cpu().numpy()
            done += size

    def _forward(self, images: list[Any]) -> list[Any]:
        import torch

        device = self.prepared.device
        batch = torch.stack(images)
        if device.type == "cuda":
            # Pinned host memory lets the copy run asynchronously with the host.
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        if device.type in ("cpu", "cuda"):
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device.type, dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with self.prepared.lock, torch.inference_mode(), autocast:
            inputs = normalize_batch(batch, self.config, torch.float32)
            return extract(self.prepared.module, inputs, self.targets)


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _release_cached_memory(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()


def _progress_bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="skfeat", smoothing=0.1)
