"""The OpenVINO runtime: one converted graph per backbone, checked first, kept on disk.

For ``runtime="openvino"`` (and ``"auto"`` on a CPU where OpenVINO is installed) the
engine's forward pass, from the uint8 batch to the activations of the layers read, is
traced and converted with ``openvino.convert_model``: normalisation and the backbone
up to the deepest layer read, in one graph with one output per layer, for any batch
size. The poolings run after it, with torch, on those activations, so one graph
serves every pooling and every set of layers it holds: a grid search over ``layer``
and ``pooling`` keeps one graph per backbone, precision and thread count, not one per
candidate. A call that reads a layer the graph lacks replaces it by a graph of both
layer sets (at most once per layer; with a cache, the first graph already holds
every stored stage). The graph is compiled for the CPU with as many threads as torch
uses, in OpenVINO's fp32 or, for ``precision="bf16"``, with its bf16 inference hint.

Before first use in a process the fp32 graph, traced on random pixels, is checked
against PyTorch fp32 on three bundled photos at a batch size it was not traced with:
every activation within :data:`PROBE_RTOL` of the largest value of its output and
every row within :data:`PROBE_MIN_COSINE` of PyTorch's. A backbone that does not
convert, or that fails the check, raises for ``runtime="openvino"`` and runs with
torch after one :class:`~skfeat.exceptions.DeviceWarning` for ``runtime="auto"``;
either way the answer is remembered for the process.

Converted graphs of named backbones are kept on disk
(:mod:`skfeat._runtime._graph_store`), so another process loads one instead of
converting it again; what is loaded is checked the same way, and one that fails is
converted anew.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from skfeat._extract import LayerInfo, extract
from skfeat._pooling import PoolingSpec
from skfeat._preprocess import DataConfig, normalize_batch, stack_images
from skfeat._runtime import _graph_store
from skfeat._runtime._registry import get_model, tune
from skfeat._runtime._settings import RunSettings
from skfeat._warnings import warn_at_caller
from skfeat.exceptions import DeviceWarning, SkfeatError

__all__ = [
    "PROBE_MIN_COSINE",
    "PROBE_RTOL",
    "Graph",
    "available",
    "graph_for",
    "load",
    "settle_runtime",
]

# Measured on random and real weights (docs/benchmarks.md): fp32 graphs differ from
# PyTorch by about 1e-6 of an output's largest value; a conversion bug is far larger.
PROBE_RTOL = 1e-3
PROBE_MIN_COSINE = 1.0 - 1e-5
_PROBE_IMAGES = 3  # traced at batch 2: the check also shows that the batch axis is free
_TRACE_BATCH = 2
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}

# How each graph of this process was had: "converted" or "loaded" (from disk).
EVENTS: collections.Counter[str] = collections.Counter()


@functools.cache
def available() -> bool:
    """Whether OpenVINO can be imported here (what ``runtime="auto"`` picks it by).

    Examples
    --------
    >>> from skfeat._runtime._openvino import available
    >>> isinstance(available(), bool)
    True
    """
    from skfeat._optional import importable

    return importable("openvino")


def load() -> ModuleType:
    """The openvino module, or :class:`~skfeat.exceptions.MissingDependencyError`."""
    from skfeat._optional import import_optional

    return import_optional("openvino", extra="openvino", purpose="runtime='openvino'")


def _raw(x: Any) -> Any:
    return x


# Reads a layer's activation as it is: the graph's outputs, pooled after.
_RAW = PoolingSpec("raw", _raw)


@dataclass
class Graph:
    """A compiled graph: uint8 ``(N, 3, crop, crop)`` batch in, activations out.

    The graph's own input is the same pixels height, width, channels
    (``(N, crop, crop, 3)``), the memory layout of
    :func:`~skfeat._preprocess.stack_images`' batches, so they go in uncopied. It has
    one output per layer of ``layers``, in that order.
    """

    compiled: Any
    layers: tuple[LayerInfo, ...]
    # The model's norms of pooled vectors (timm's fc_norm), by module name: they run in
    # torch after pooling, as in the torch runtime; the graph gives the tokens.
    pooled_norms: Mapping[str, Any] = field(default_factory=dict)
    _requests: threading.local = field(default_factory=threading.local, repr=False)

    @functools.cached_property
    def outputs(self) -> dict[str, int]:
        """Each layer's output in the compiled graph, by layer name."""
        return {layer.name: index for index, layer in enumerate(self.layers)}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.outputs)

    def run(self, batch: Any, reads: Sequence[tuple[LayerInfo, PoolingSpec]]) -> list[np.ndarray]:
        """The pooled float32 features of a uint8 ``(N, 3, crop, crop)`` torch batch.

        One array per ``(layer, pooling)`` of ``reads``, in read order; each layer
        must be one of the graph's.
        """
        import torch

        request = getattr(self._requests, "request", None)
        if request is None:  # one infer request per thread: requests are not shared
            request = self._requests.request = self.compiled.create_infer_request()
        pixels = batch.permute(0, 2, 3, 1).numpy()  # a view for a channels-last batch
        request.infer({0: np.ascontiguousarray(pixels)})
        activations: dict[str, Any] = {}
        pooled = []
        with torch.inference_mode():
            for layer, pooling in reads:
                if layer.name not in activations:
                    data = request.get_output_tensor(self.outputs[layer.name]).data
                    activations[layer.name] = torch.from_numpy(data).reshape(
                        len(pixels), *layer.shape
                    )
                after = layer.norm.after_pooling if layer.norm is not None else None
                each = self.pooled_norms[after].forward if after is not None else None
                values = pooling.apply(activations[layer.name], layer, each=each)
                # A copy: the request reuses its output buffers for the next batch.
                pooled.append(np.array(values.to(torch.float32).numpy(), dtype=np.float32))
        return pooled


class _Refused(Exception):
    """The backbone did not convert, or its graph did not match PyTorch."""


@dataclass
class _Slot:
    """The graph of one backbone, precision and thread count, and what was refused."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    graph: Graph | None = None
    refused: dict[frozenset[str], str] = field(default_factory=dict)


# Per process; each slot has its own lock, so two backbones convert at the same time.
_GRAPHS: dict[tuple[Any, ...], _Slot] = {}
_GRAPHS_LOCK = threading.Lock()  # guards the dict only


def graph_for(prepared: Any, plan: Any, precision: str, *, fallback: bool) -> Graph | None:
    """The compiled graph holding ``plan``'s layers, or None to run with torch.

    Call with ``prepared.lock`` held, after tuning: the graph is traced from
    ``prepared.module`` as the torch runtime would run it. It is compiled for as many
    threads as torch uses (``torch.get_num_threads()``).

    Raises
    ------
    SkfeatError
        When the graph cannot be had and ``fallback`` is False (``runtime="openvino"``).

    Warns
    -----
    DeviceWarning
        Once per backbone and layers, when ``fallback`` is True and torch runs instead.
    """
    import torch

    threads = torch.get_num_threads()
    key = (os.getpid(), plan.backend.key, plan.data_config.fingerprint(), precision, threads)
    with _GRAPHS_LOCK:
        slot = _GRAPHS.setdefault(key, _Slot())
    wanted = {layer.name: layer for layer, _ in plan.reads}
    wanted.update({layer.name: layer for layer in plan.stages})
    with slot.lock:
        graph = slot.graph
        if graph is not None and wanted.keys() <= graph.names:
            return graph
        held = {layer.name: layer for layer in graph.layers} if graph is not None else {}
        layers = tuple(sorted({**held, **wanted}.values(), key=lambda layer: layer.order))
        names = frozenset(layer.name for layer in layers)
        reason = slot.refused.get(names)
        if reason is None:
            try:
                slot.graph = _build(prepared, layers, plan, precision, threads)
                return slot.graph
            except _Refused as why:
                reason = slot.refused[names] = str(why)
                if fallback:
                    warn_at_caller(
                        DeviceWarning(
                            f"runtime='auto' runs {plan.backend.label} with torch: OpenVINO "
                            f"{reason}. The features are torch's; pass runtime='torch' to "
                            "choose it and silence this warning."
                        )
                    )
    if fallback:
        return None
    raise SkfeatError(
        f"runtime='openvino' cannot run {plan.backend.label}: OpenVINO {reason}. "
        "Use runtime='torch' (or 'auto', which falls back to torch)."
    )


def settle_runtime(plan: Any, settings: RunSettings) -> RunSettings:
    """``settings`` as they will run ``plan``: torch where ``runtime="auto"`` falls back.

    For ``runtime="auto"`` on OpenVINO, the graph is had (or refused, with its one
    warning) now, so that the cache keys rows by the runtime that computes them and
    the estimator reports it. Other settings are returned as they are.
    """
    if settings.runtime != "openvino" or not settings.fallback:
        return settings
    prepared = get_model(plan.backend, settings.device, plan.classifier)
    read = frozenset(target.layer.module for target in plan.targets if target.layer.module)
    with prepared.lock:
        tune(prepared, plan.backend, plan.classifier, read)
        graph = graph_for(prepared, plan, settings.precision, fallback=True)
    if graph is not None:
        return settings
    return dataclasses.replace(settings, runtime="torch", fallback=False)


def _read_module(module: Any, layers: Sequence[LayerInfo], config: DataConfig) -> Any:
    """What the torch runtime computes, as one module to trace: uint8 pixels to activations.

    The module takes ``(N, crop, crop, 3)`` pixels (:class:`Graph`'s input layout).

    The forward pass stops after the deepest layer read (:func:`extract`), so the
    trace, and the graph, hold nothing after it.
    """
    import torch

    reads = [(layer, _RAW) for layer in layers]

    class ReadGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = module

        def forward(self, pixels: Any) -> tuple[Any, ...]:
            batch = pixels.permute(0, 3, 1, 2)
            inputs = normalize_batch(batch, config, torch.float32)
            return tuple(extract(self.backbone, inputs, reads))

    return ReadGraph().eval()


def _build(
    prepared: Any, layers: tuple[LayerInfo, ...], plan: Any, precision: str, threads: int
) -> Graph:
    import torch

    ov = load()
    config = plan.data_config
    probe = _probe_batch(config)
    # Every layer the graph outputs is read: none may carry a folded BatchNorm.
    tune(prepared, plan.backend, plan.classifier, frozenset(x.module for x in layers if x.module))
    wrapper = _read_module(prepared.module, layers, config)
    norms = {
        layer.norm.after_pooling: prepared.module.get_submodule(layer.norm.after_pooling)
        for layer in layers
        if layer.norm is not None and layer.norm.after_pooling is not None
    }
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapper(probe.permute(0, 2, 3, 1))]
    core = ov.Core()
    # Only named backbones: a user's module may change its code under the same weights.
    entry = None if plan.backend.owner is not None else _graph_store.entry_for(plan, layers)
    converted = _graph_store.read(core, entry) if entry is not None else None
    if entry is not None and converted is not None:
        try:
            fp32 = _compile(core, converted, "fp32", threads)
            _check(Graph(fp32, layers, norms).run(probe, _raw_reads(layers)), expected)
            EVENTS["loaded"] += 1
        except Exception:  # not what this backbone computes here: converted anew
            _graph_store.remove(entry)
            converted = None
    if converted is None:
        converted = _convert(ov, wrapper, config)
        EVENTS["converted"] += 1
        fp32 = _compile(core, converted, "fp32", threads)
        _check(Graph(fp32, layers, norms).run(probe, _raw_reads(layers)), expected)
        if entry is not None:
            _graph_store.write(ov, converted, entry)
    if precision == "fp32":
        return Graph(fp32, layers, norms)
    if precision not in _OV_PRECISION:
        raise _Refused(f"has no {precision} inference on the CPU")
    return Graph(_compile(core, converted, precision, threads), layers, norms)


def _raw_reads(layers: Sequence[LayerInfo]) -> list[tuple[LayerInfo, PoolingSpec]]:
    return [(layer, _RAW) for layer in layers]


def _convert(ov: ModuleType, wrapper: Any, config: DataConfig) -> Any:
    import torch

    crop = config.crop_size
    # Traced on noise, checked on photos: what the trace wrongly fixed (a Python number
    # taken from a tensor, a batch size) shows as a difference.
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(
        0, 256, (_TRACE_BATCH, crop, crop, 3), dtype=torch.uint8, generator=generator
    )
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and converter chatter
            return ov.convert_model(
                wrapper, example_input=example, input=[((-1, crop, crop, 3), ov.Type.u8)]
            )
    except Exception as error:  # any failure to convert is a reason to refuse, not crash
        raise _Refused(
            f"could not convert the backbone ({type(error).__name__}: {error})"
        ) from error


def _compile(core: Any, converted: Any, precision: str, threads: int) -> Any:
    return core.compile_model(
        converted,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )


def _check(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Raise :class:`_Refused` unless every output matches PyTorch's within the tolerance."""
    if len(got) != len(expected):
        raise _Refused(f"gave {len(got)} outputs where PyTorch gives {len(expected)}")
    for index, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        if ours.shape != theirs.shape:
            raise _Refused(
                f"output {index} has shape {ours.shape}, PyTorch's {theirs.shape}: the "
                "graph fixed a size it should not have"
            )
        if not np.isfinite(ours).all():
            raise _Refused(f"output {index} holds NaN or inf on the check images")
        scale = float(np.abs(theirs).max()) or 1.0
        worst = float(np.abs(ours - theirs).max()) / scale
        cosine = _min_cosine(ours, theirs)
        if worst > PROBE_RTOL or cosine < PROBE_MIN_COSINE:
            raise _Refused(
                f"did not match PyTorch fp32 on the check images (output {index}: largest "
                f"difference {worst:.2g} of the output's scale, allowed {PROBE_RTOL:g}; "
                f"smallest cosine {cosine:.7f}, allowed {PROBE_MIN_COSINE})"
            )


def _min_cosine(ours: np.ndarray, theirs: np.ndarray) -> float:
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = theirs.reshape(len(theirs), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
    return float(np.where(both_zero, 1.0, cosine).min())


def _probe_batch(config: DataConfig) -> Any:
    """Three bundled photos of different classes, prepared as the engine prepares them."""
    from skfeat._datasets import load_flowers_sample
    from skfeat._inputs import decode
    from skfeat._preprocess import resize_and_crop

    paths = load_flowers_sample().paths
    step = len(paths) // _PROBE_IMAGES
    chosen = paths[::step][:_PROBE_IMAGES]
    return stack_images([resize_and_crop(decode(p, i), config) for i, p in enumerate(chosen)])
