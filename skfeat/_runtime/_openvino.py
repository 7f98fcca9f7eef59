"""The OpenVINO runtime: one converted graph per backbone and layers read, checked first.

For ``runtime="openvino"`` (and ``"auto"`` on a CPU where OpenVINO is installed) the
engine's forward pass, from the uint8 batch to the pooled features, is traced once per
process and converted with ``openvino.convert_model``: normalisation, the backbone up
to the deepest layer read, and every pooling, in one graph with one output per
``(layer, pooling)`` read, for any batch size. The graph is compiled for the CPU
with as many threads as torch uses, in OpenVINO's fp32 or, for ``precision="bf16"``,
with its bf16 inference hint.

Before first use the fp32 graph, traced on random pixels, is checked against PyTorch
fp32 on three bundled photos at a batch size it was not traced with: every feature within
:data:`PROBE_RTOL` of the largest value of its output and every row within
:data:`PROBE_MIN_COSINE` of PyTorch's. A backbone that does not convert, or that
fails the check, raises for ``runtime="openvino"`` and runs with torch after one
:class:`~skfeat.exceptions.DeviceWarning` for ``runtime="auto"``; either way the
answer is remembered for the process.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from skfeat._extract import extract
from skfeat._preprocess import DataConfig, normalize_batch, stack_images
from skfeat._warnings import warn_at_caller
from skfeat.exceptions import DeviceWarning, SkfeatError

__all__ = ["PROBE_MIN_COSINE", "PROBE_RTOL", "Graph", "available", "graph_for", "load"]

# Measured on random and real weights (docs/benchmarks.md): fp32 graphs differ from
# PyTorch by about 1e-6 of an output's largest value; a conversion bug is far larger.
PROBE_RTOL = 1e-3
PROBE_MIN_COSINE = 1.0 - 1e-5
_PROBE_IMAGES = 3  # traced at batch 2: the check also shows that the batch axis is free
_TRACE_BATCH = 2
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


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


@dataclass
class Graph:
    """A compiled graph: uint8 ``(N, 3, crop, crop)`` batch in, pooled features out.

    The graph's own input is the same pixels height, width, channels
    (``(N, crop, crop, 3)``), the memory layout of
    :func:`~skfeat._preprocess.stack_images`' batches, so they go in uncopied.
    """

    compiled: Any
    _requests: threading.local = field(default_factory=threading.local, repr=False)

    def run(self, batch: Any) -> list[np.ndarray]:
        """The pooled float32 outputs for a uint8 ``(N, 3, crop, crop)`` torch batch.

        One per read, in read order.
        """
        request = getattr(self._requests, "request", None)
        if request is None:  # one infer request per thread: requests are not shared
            request = self._requests.request = self.compiled.create_infer_request()
        pixels = batch.permute(0, 2, 3, 1).numpy()  # a view for a channels-last batch
        request.infer({0: np.ascontiguousarray(pixels)})
        # Copies: the request reuses its output buffers for the next batch.
        return [
            np.array(request.get_output_tensor(i).data, dtype=np.float32)
            for i in range(len(self.compiled.outputs))
        ]


class _Refused(Exception):
    """The backbone did not convert, or its graph did not match PyTorch."""


# Per process: a Graph, or the reason it could not be had.
_GRAPHS: dict[tuple[Any, ...], Graph | str] = {}
_GRAPHS_LOCK = threading.Lock()


def graph_for(
    prepared: Any, plan: Any, precision: str, *, fallback: bool, n_threads: int | None = None
) -> Graph | None:
    """The compiled graph of ``plan``'s reads, or None to run with torch.

    Call with ``prepared.lock`` held, after tuning: the graph is traced from
    ``prepared.module`` as the torch runtime would run it.

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

    threads = torch.get_num_threads() if n_threads is None else n_threads
    reads = plan.reads
    # A callable pooling is traced into the graph: the key holds the callable itself.
    signature = tuple((layer.name, pooling.name, pooling.function) for layer, pooling in reads)
    key = (os.getpid(), plan.backend.key, signature, plan.data_config.fingerprint(), precision)
    key += (threads,)
    with _GRAPHS_LOCK:
        known = _GRAPHS.get(key)
        if known is None:
            try:
                known = _build(prepared.module, reads, plan.data_config, precision, threads)
            except _Refused as why:
                known = str(why)
                if fallback:
                    warn_at_caller(
                        DeviceWarning(
                            f"runtime='auto' runs {plan.backend.label} with torch: OpenVINO "
                            f"{known}. The features are torch's; pass runtime='torch' to "
                            "choose it and silence this warning."
                        )
                    )
            _GRAPHS[key] = known
    if isinstance(known, Graph):
        return known
    if fallback:
        return None
    raise SkfeatError(
        f"runtime='openvino' cannot run {plan.backend.label}: OpenVINO {known}. "
        "Use runtime='torch' (or 'auto', which falls back to torch)."
    )


def _read_module(module: Any, reads: Any, config: DataConfig) -> Any:
    """What the torch runtime computes, as one module to trace: uint8 pixels to poolings.

    The module takes ``(N, crop, crop, 3)`` pixels (:class:`Graph`'s input layout).

    The forward pass stops after the deepest layer read (:func:`extract`), so the
    trace, and the graph, hold nothing after it.
    """
    import torch

    class ReadGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = module

        def forward(self, pixels: Any) -> tuple[Any, ...]:
            batch = pixels.permute(0, 3, 1, 2)
            inputs = normalize_batch(batch, config, torch.float32)
            return tuple(extract(self.backbone, inputs, reads))

    return ReadGraph().eval()


def _build(module: Any, reads: Any, config: DataConfig, precision: str, threads: int) -> Graph:
    import torch

    ov = load()
    crop = config.crop_size
    probe = _probe_batch(config)
    wrapper = _read_module(module, reads, config)
    # Traced on noise, checked on photos: what the trace wrongly fixed (a Python number
    # taken from a tensor, a batch size) shows as a difference.
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(
        0, 256, (_TRACE_BATCH, crop, crop, 3), dtype=torch.uint8, generator=generator
    )
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and converter chatter
            converted = ov.convert_model(
                wrapper, example_input=example, input=[((-1, crop, crop, 3), ov.Type.u8)]
            )
    except Exception as error:  # any failure to convert is a reason to refuse, not crash
        raise _Refused(
            f"could not convert the backbone ({type(error).__name__}: {error})"
        ) from error
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapper(probe.permute(0, 2, 3, 1))]
    core = ov.Core()
    fp32 = _compile(core, converted, "fp32", threads)
    _check(Graph(fp32).run(probe), expected)
    if precision == "fp32":
        return Graph(fp32)
    if precision not in _OV_PRECISION:
        raise _Refused(f"has no {precision} inference on the CPU")
    return Graph(_compile(core, converted, precision, threads))


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
