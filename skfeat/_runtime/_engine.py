"""The engine: a run plan over many images, streamed, one backbone pass per batch.

Images are decoded and resized in a thread pool a few batches ahead of the model,
and pooled rows are written into a preallocated output, so memory does not grow with
the number of images. What makes it fast, each measured on the project's 2-core AVX2
machine (figures in ``docs/benchmarks.md``):

* decode overlaps inference: ``n_jobs`` threads read, decode and resize while the
  model runs (threads, not processes: nothing to pickle, no copy of torch per worker);
  a file is read once, and those bytes are decoded (and, with a cache, keyed); each
  decoding thread runs torch's operators on one OpenMP thread
  (:mod:`skfeat._runtime._threads`), so they do not crowd the model's threads;
* JPEGs are decoded at reduced DCT scale when that keeps the short side at least
  three times the resize target (see :func:`skfeat._preprocess.draft_min_side`), then
  resized as uint8 tensors;
* the model runs in ``eval()`` under ``torch.inference_mode``, in channels-last
  memory format, with every BatchNorm that follows an unread convolution folded into
  it (:mod:`skfeat._runtime._registry`; module names and hooks are kept);
* reduced precision only where :mod:`skfeat._runtime._precision` says it is fast and
  faithful;
* with ``runtime="openvino"``, the forward pass runs as one OpenVINO graph per
  backbone, checked against PyTorch before use, and the poolings with torch after it
  (:mod:`skfeat._runtime._openvino`);
* on out-of-memory the batch is halved and retried, rows are neither lost nor
  repeated, and the working size is remembered for the process.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from skfeat._extract import LOGITS, extract
from skfeat._inputs import decode, read_item
from skfeat._plan import RunPlan
from skfeat._preprocess import (
    DataConfig,
    draft_min_side,
    normalize_batch,
    resize_and_crop,
    stack_images,
)
from skfeat._progress import transform_bar
from skfeat._runtime._precision import autocast_dtype
from skfeat._runtime._registry import PreparedModel, get_model, tune
from skfeat._runtime._settings import RunSettings
from skfeat._runtime._threads import limit_to_one_thread
from skfeat.exceptions import ImageDecodeError, SkfeatError

__all__ = ["Failure", "featurize"]

_PREFETCH_BATCHES = 2
# The largest batch that fitted, per (weights, device, precision, input size), after an
# out-of-memory error; kept for the life of the process.
_BATCH_LIMITS: dict[tuple[str, str, str, int], int] = {}


@dataclass(frozen=True)
class Failure:
    """An image that could not be read; its row is filled instead of computed."""

    index: int
    error: ImageDecodeError


OnRead = Callable[[int, bytes], None]


def _read(item: Any, index: int, on_read: Callable[[bytes], None] | None) -> bytes | None:
    """A path's bytes, read once and shown to ``on_read``; None for in-memory items."""
    source = read_item(item, index)
    if source is item:
        return None
    if on_read is not None:
        on_read(source)
    return source


def _prepare_one(
    item: Any,
    index: int,
    config: DataConfig,
    keep_going: bool,
    min_side: int,
    on_read: Callable[[bytes], None] | None = None,
    decoder: str = "pil",
) -> Any:
    try:
        data = _read(item, index, on_read)
        rgb = decode(item, index, min_side=min_side, data=data, decoder=decoder)
        return resize_and_crop(rgb, config)
    except ImageDecodeError as error:
        if not keep_going:
            raise
        return Failure(index, error)


def featurize(
    plan: RunPlan,
    items: Sequence[Any],
    settings: RunSettings,
    positions: Sequence[int] | None = None,
    on_read: OnRead | None = None,
) -> tuple[np.ndarray, list[Failure]]:
    """Compute the ``(len(items), plan.n_features)`` float32 matrix, row i for item i.

    With ``on_error="raise"`` the first unreadable image (in input order) raises its
    :class:`ImageDecodeError`. With ``"nan"`` or ``"zeros"`` its row is filled with
    that value, the other images of its batch are computed as usual, and the
    failures are returned beside the matrix.

    ``positions`` says where each item sits in the caller's input (default: its index
    in ``items``), so errors and failures name the image as the user numbered it when
    only some items are computed (the activation cache's misses). Neither the batch
    size nor the precision changes which row holds which image.

    ``on_read(row, data)`` is called, in a decoding thread, with the bytes of each
    file as read, before they are decoded: the cache keys the row by them.
    """
    backend, config = plan.backend, plan.data_config
    if backend.source == "file":  # a model file: OpenVINO runs its graph, no torch module
        from skfeat._runtime._file_graph import file_graph_for

        prepared, graph = None, file_graph_for(plan, settings.precision)
    else:
        prepared, graph = _torch_model(plan, settings)
    run = _Run(
        prepared=prepared,
        config=config,
        plan=plan,
        dtype=autocast_dtype(settings.precision),
        limit_key=(backend.key, str(settings.device), settings.precision, config.crop_size),
        graph=graph,
    )
    size = min(settings.batch_size, _BATCH_LIMITS.get(run.limit_key, settings.batch_size))
    n_images = len(items)
    output = np.empty((n_images, plan.n_features), dtype=np.float32)
    on_error = settings.on_error
    keep_going = on_error != "raise"
    min_side = draft_min_side(config)
    labels = range(n_images) if positions is None else positions
    failures: list[Failure] = []
    with (
        transform_bar(n_images, settings.progress) as bar,
        ThreadPoolExecutor(
            max_workers=settings.n_threads,
            thread_name_prefix="skfeat-decode",
            initializer=limit_to_one_thread,
        ) as pool,
    ):
        pending: deque[tuple[int, list[Future[Any]]]] = deque()
        starts = iter(range(0, n_images, size))

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                stop = min(start + size, n_images)
                futures = [
                    pool.submit(
                        _prepare_one,
                        items[i],
                        labels[i],
                        config,
                        keep_going,
                        min_side,
                        None if on_read is None else functools.partial(on_read, i),
                        settings.decoder,
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
    return output, failures


def _torch_model(plan: RunPlan, settings: RunSettings) -> tuple[PreparedModel, Any]:
    """The loaded, tuned backbone, and its OpenVINO graph for ``runtime="openvino"``."""
    backend = plan.backend
    prepared = get_model(backend, settings.device, plan.classifier)
    if not prepared.head_loaded and any(t.layer.name == LOGITS for t in plan.targets):
        raise SkfeatError(
            f"layer='logits' was requested, but the weights {backend.weights!r} have no "
            "classifier, so the logits would come from random values. Use "
            "layer='penultimate' or a convolutional layer."
        )
    read = frozenset(t.layer.module for t in plan.targets if t.layer.module)
    graph = None
    with prepared.lock:
        tune(prepared, backend, plan.classifier, read)
        if settings.runtime == "openvino":
            from skfeat._runtime._openvino import graph_for

            graph = graph_for(prepared, plan, settings.precision, fallback=settings.fallback)
    return prepared, graph


@dataclass
class _Run:
    """One featurize call's model settings; runs batches, halving them on out-of-memory."""

    prepared: PreparedModel | None  # None for a model file, which OpenVINO runs
    config: DataConfig
    plan: RunPlan
    dtype: Any
    limit_key: tuple[str, str, str, int]
    graph: Any = None  # an OpenVINO graph (_openvino.Graph, _file_graph.FileGraph), or torch

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
                if self.prepared is not None:
                    _release_cached_memory(self.prepared.device)
                continue
            chunk_rows = rows[done : done + size]
            for target, values in zip(self.plan.targets, pooled, strict=True):
                output[chunk_rows, target.start : target.stop] = values
            done += size

    def _forward(self, images: list[Any]) -> list[np.ndarray]:
        """The pooled float32 features of one batch, one array per read."""
        import torch

        batch = stack_images(images)  # channels-last uint8
        if self.graph is not None:
            return self.graph.run(batch, self.plan.reads)
        assert self.prepared is not None  # only a model file runs without one, in a graph
        device = self.prepared.device
        if device.type == "cuda":
            # Pinned host memory lets the copy run asynchronously with the host.
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        if device.type in ("cpu", "cuda"):  # already so on the host, unless copied
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device.type, dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with self.prepared.lock, torch.inference_mode(), autocast:
            inputs = normalize_batch(batch, self.config, torch.float32)
            pooled = extract(self.prepared.module, inputs, self.plan.reads)
        return [values.cpu().numpy() for values in pooled]


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
