"""Model files in OpenVINO: their layers, and one compiled graph per set of layers read.

A model file (ONNX, TensorFlow SavedModel, TFLite, OpenVINO IR) is read with
OpenVINO's own readers. Its layers are the graph's named tensors (the ONNX or TFLite
tensor names), in graph order; each is listed with its shape for one image and its
layout, which is read from the graph the way torch backbones' layouts are
(:mod:`skfeat._layouts`): the graph is reshaped to inputs of two and three times the
crop's side, and the axes that grow with it are the positions. A graph that does not
take other sizes gives each tensor at one size only, and then only what the graph's
operations define (an OpenVINO convolution's output is ``(N, C, H, W)``) decides;
otherwise the layout is unknown and spatial poolings are refused.

``"logits"`` is the graph's output; ``"penultimate"`` is the input of the linear layer
(``MatMul``, which ONNX ``Gemm`` becomes) nearest the output, when there is exactly
one and it reads vectors.

The images go in as the user's recipe prepares them, ``(N, 3, H, W)`` float32, and
as ``(N, H, W, 3)`` to a graph whose input is channel-last (TensorFlow and TFLite).
The tensors read are added to the graph as outputs, the graph is compiled once per
process for the CPU, and each output is pooled with skfeat's poolings.

TensorFlow's converter renames a SavedModel's inner tensors (it moves the layout
transposes around them), so a SavedModel gives its outputs and ``"penultimate"``
only; a TFLite or ONNX export of the same model gives every tensor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skfeat._extract import LOGITS, PENULTIMATE, Architecture, LayerInfo
from skfeat._layouts import VECTOR, LayoutHints, infer_layouts, probe_sizes
from skfeat._optional import import_optional
from skfeat._preprocess import DataConfig, normalize_batch
from skfeat.exceptions import SkfeatError, UnknownModelError

__all__ = ["FileGraph", "file_graph_for", "read_architecture"]

_TRACE_BATCH = 2  # with 1, an axis that is not the batch could pass for it
_NOT_LAYERS = frozenset({"Parameter", "Constant", "Result", "ShapeOf"})
# OpenVINO operations whose output is (N, C, H, W) by definition, whatever the source.
_CHANNEL_FIRST_OPS = frozenset(
    {"Convolution", "GroupConvolution", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool"}
)
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_PENULTIMATE_KEY = "<penultimate>"
_LOGITS_KEY = "<logits>"


def _openvino() -> Any:
    return import_optional("openvino", extra="openvino", purpose="A model file")


# -- reading the graph ----------------------------------------------------------------


@dataclass
class _Graph:
    """A model file's graph as OpenVINO reads it."""

    model: Any  # openvino.Model
    outputs: list[str]  # the graph's own outputs, by tensor name
    order: list[str] | None = None  # the file's own tensor order, where conversion moves it


def _name(output: Any) -> str | None:
    names = output.get_names()
    return min(names) if names else None


def _tensors(model: Any) -> dict[str, Any]:
    """Named floating-point tensors of ``model``, in graph order: name -> output port."""
    found: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in _NOT_LAYERS:
            continue
        for output in op.outputs():
            name = _name(output)
            if name is not None and output.get_element_type().is_real():
                found.setdefault(name, output)
    return found


def _read(backend: Any, tensors: Sequence[str] | None = None) -> _Graph:
    """Read ``backend``'s file. TFLite keeps only its outputs' tensor names, so there
    ``tensors`` (None: every tensor) are made outputs while it is converted."""
    ov = _openvino()
    path = backend.name
    try:
        if backend.file_format != "tflite":
            model = ov.Core().read_model(path)
            return _Graph(model, [_name(output) or "" for output in model.outputs])
        from openvino.frontend import FrontEndManager

        frontend = FrontEndManager().load_by_model(path)
        loaded = frontend.load(path)
        outputs = [min(place.get_names()) for place in loaded.get_outputs()]
        if tensors is None:
            decoded = frontend.decode(frontend.load(path))
            tensors = [
                name
                for op in decoded.get_ordered_ops()
                if op.get_type_name() not in _NOT_LAYERS
                for output in op.outputs()
                if (name := _name(output)) is not None
            ]
        names = list(dict.fromkeys([*outputs, *tensors]))
        places = [loaded.get_place_by_tensor_name(name) for name in names]
        loaded.override_all_outputs([place for place in places if place is not None])
        # The converter moves layout transposes, and with them named tensors, later.
        return _Graph(frontend.convert(loaded), outputs, order=list(tensors))
    except Exception as error:  # any reader failure is the file's, said as such
        raise UnknownModelError(
            f"OpenVINO cannot read the {backend.format_name} file {path!r} "
            f"({type(error).__name__}: {error}). Check that it is a complete "
            f"{backend.format_name} model."
        ) from error


@dataclass(frozen=True)
class _Input:
    """The graph's image input: channel-first or channel-last, and its declared side."""

    channels_last: bool
    side: int | None  # None: any size

    def shape(self, side: int, batch: int = _TRACE_BATCH) -> list[int]:
        return [batch, side, side, 3] if self.channels_last else [batch, 3, side, side]


def _image_input(model: Any, label: str) -> _Input:
    parameters = model.get_parameters()
    if len(parameters) != 1:
        names = [_name(p.output(0)) for p in parameters]
        raise UnknownModelError(
            f"The graph of {label!r} has {len(parameters)} inputs ({names}); skfeat feeds "
            "one batch of images. Export the model with the image as its only input."
        )
    parameter = parameters[0]
    shape = parameter.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise UnknownModelError(
            f"The input of {label!r} has shape {shape}, not an image batch (N, 3, H, W) or "
            "(N, H, W, 3). Export the model with a 4-axis image input."
        )
    if parameter.get_element_type().get_type_name() != "f32":
        raise UnknownModelError(
            f"The input of {label!r} is {parameter.get_element_type()}, but skfeat feeds "
            "float32 images normalised by the recipe (preprocessing=). Export the model "
            "with a float32 input (a quantised TFLite model's uint8 input is not served)."
        )
    dims = [d.get_length() if d.is_static else None for d in shape]
    first, last = dims[1] == 3, dims[3] == 3
    if first == last:
        raise UnknownModelError(
            f"The input of {label!r} has shape {shape}: skfeat cannot tell whether it is "
            "(N, 3, H, W) or (N, H, W, 3). Export the model with its channel axis fixed "
            "to 3."
        )
    spatial = dims[1:3] if last else dims[2:4]
    if spatial[0] != spatial[1]:
        raise UnknownModelError(
            f"The input of {label!r} has shape {shape}: skfeat feeds square crops, so both "
            "sides must be free or equal."
        )
    return _Input(channels_last=last, side=spatial[0])


def _is_constant(value: Any, memo: dict[str, bool]) -> bool:
    """Whether ``value`` is computed from constants only (weights, maybe converted)."""
    node = value.get_node()
    key = node.get_name()
    if key not in memo:
        kind = node.get_type_name()
        memo[key] = kind == "Constant" or (
            kind != "Parameter"
            and node.get_input_size() > 0
            and all(_is_constant(v, memo) for v in node.input_values())
        )
    return memo[key]


def _output(model: Any, name: str) -> Any:
    """The tensor the graph outputs under ``name`` (the port feeding its Result)."""
    for output in model.outputs:
        if name in output.get_names():
            return output.get_node().input_value(0)
    raise SkfeatError(f"The graph has no output named {name!r}.")


def _head_inputs(output: Any) -> list[Any]:
    """The data inputs of the linear layers (MatMul with constant weights) nearest
    ``output``, searching back from it."""
    memo: dict[str, bool] = {}
    seen: set[str] = set()
    found: list[Any] = []
    stack = [output]
    while stack:
        value = stack.pop()
        source = value.get_node()
        if source.get_name() in seen or _is_constant(value, memo):
            continue
        seen.add(source.get_name())
        if source.get_type_name() == "MatMul":
            data = [v for v in source.input_values() if not _is_constant(v, memo)]
            if len(data) == 1:  # weights on the other side: a linear layer
                found.append(data[0])
                continue
        stack.extend(source.input_values())
    return found


def _shapes(graph: _Graph, input_: _Input, side: int) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape (with the batch axis) with the input reshaped to ``side``."""
    probe = graph.model.clone()
    probe.reshape({0: input_.shape(side)})
    shapes = {}
    ports = dict(_tensors(probe))
    if len(graph.outputs) == 1:
        ports[_LOGITS_KEY] = _output(probe, graph.outputs[0])
        heads = _head_inputs(ports[_LOGITS_KEY])
        if len(heads) == 1:
            ports[_PENULTIMATE_KEY] = heads[0]
    for name, port in ports.items():
        shape = port.get_partial_shape()
        if shape.is_static:
            shapes[name] = tuple(int(d) for d in shape.to_shape())
    return shapes


def read_architecture(backend: Any, crop_size: int) -> Architecture:
    """The readable tensors of ``backend``'s file at ``crop_size``, in graph order.

    Raises
    ------
    UnknownModelError
        When the file cannot be read, its input is not one image batch, or its
        declared input size is not ``crop_size``.
    """
    label = backend.label
    graph = _read(backend)
    model = graph.model
    input_ = _image_input(model, label)
    if input_.side is not None and input_.side != crop_size:
        raise UnknownModelError(
            f"The graph of {label!r} takes {input_.side}x{input_.side} images, but the "
            f"recipe crops to {crop_size}. Pass preprocessing with crop_size={input_.side}."
        )
    traces = {}
    for side in probe_sizes(crop_size):
        try:
            traces[side] = _shapes(graph, input_, side)
        except Exception as error:  # a graph fixed to one size: what it declares decides
            if side == crop_size:
                raise UnknownModelError(
                    f"The graph of {label!r} does not run on a batch of {_TRACE_BATCH} "
                    f"images of {crop_size}x{crop_size} ({type(error).__name__}: {error}). "
                    "Export it with a free batch axis."
                ) from error
    tensors = _tensors(model)
    if graph.order is not None:
        rank = {name: index for index, name in enumerate(graph.order)}
        tensors = dict(sorted(tensors.items(), key=lambda item: rank.get(item[0], len(rank))))
    channel_first = frozenset(
        name
        for name, port in tensors.items()
        if port.get_node().get_type_name() in _CHANNEL_FIRST_OPS
    )
    reference = traces[crop_size]
    layouts = infer_layouts(
        {
            side: {n: s for n, s in shapes.items() if n in reference}
            for side, shapes in traces.items()
        },
        reference=crop_size,
        batch=_TRACE_BATCH,
        hints=LayoutHints(channel_first=channel_first),
    )

    def info(name: str, key: str, order: int, module: str, reads_input: bool = False) -> Any:
        return LayerInfo(name, reference[key][1:], order, module, layouts[key], reads_input)

    layers = {
        name: info(name, name, order, name)
        for order, name in enumerate(tensors)
        if name in reference
    }
    refused = {}
    if len(graph.outputs) != 1:
        refused[LOGITS] = refused[PENULTIMATE] = (
            f"the graph has {len(graph.outputs)} outputs ({graph.outputs}), so 'logits' and "
            "'penultimate' do not name one tensor; read an output by its name as layer="
        )
    else:
        layers[LOGITS] = info(LOGITS, _LOGITS_KEY, len(tensors) + 1, graph.outputs[0])
        heads = _head_inputs(_output(model, graph.outputs[0]))
        why = _why_no_penultimate(heads, layouts.get(_PENULTIMATE_KEY), reference, label)
        if why is None:
            module = _name(heads[0]) or ""
            layers[PENULTIMATE] = info(PENULTIMATE, _PENULTIMATE_KEY, len(tensors), module, True)
        else:
            refused[PENULTIMATE] = why
    return Architecture(layers=layers, refused=refused)


def _why_no_penultimate(
    heads: list[Any], layout: Any, reference: dict[str, tuple[int, ...]], label: str
) -> str | None:
    if not heads:
        return (
            "the graph has no linear layer (MatMul) before its output, so it has no "
            "'penultimate'; read its output with layer='logits' (an embedding model's output "
            "is its embedding), or a tensor by name"
        )
    if len(heads) > 1:
        names = [
            _name(head) or f"the output of {head.get_node().get_friendly_name()}" for head in heads
        ]
        return (
            f"'penultimate' is ambiguous, as the output is computed by {len(heads)} linear "
            f"layers (MatMul), reading {names}; pass the one you mean by name as layer="
        )
    if layout is None or layout.kind != VECTOR:
        shape = reference.get(_PENULTIMATE_KEY, ("?",))[1:]
        return (
            f"the last linear layer (MatMul) reads {shape} per image, not a vector, so it "
            "is not a classifier over an embedding; read a tensor by name"
        )
    return None


# -- running the graph -----------------------------------------------------------------


@dataclass
class FileGraph:
    """A model file compiled with the tensors read as its outputs.

    ``run`` takes the engine's uint8 ``(N, 3, crop, crop)`` batch and gives the pooled
    float32 features, one array per read.
    """

    compiled: Any
    slots: dict[str, int]  # layer name -> its output in the compiled graph
    channels_last: bool
    config: DataConfig
    _requests: threading.local = field(default_factory=threading.local, repr=False)

    def run(self, batch: Any, reads: Sequence[tuple[Any, Any]]) -> list[np.ndarray]:
        """The pooled float32 features of a uint8 batch, one array per read of ``reads``."""
        import torch

        request = getattr(self._requests, "request", None)
        if request is None:  # one infer request per thread: requests are not shared
            request = self._requests.request = self.compiled.create_infer_request()
        images = normalize_batch(batch, self.config, torch.float32)
        if self.channels_last:
            images = images.permute(0, 2, 3, 1)
        request.infer({0: np.ascontiguousarray(images.numpy())})
        outputs: dict[int, Any] = {}
        pooled = []
        for layer, pooling in reads:
            slot = self.slots[layer.name]
            if slot not in outputs:  # a copy: the request reuses its buffers
                data = np.array(request.get_output_tensor(slot).data, dtype=np.float32)
                outputs[slot] = torch.from_numpy(data)
            values = pooling.apply(outputs[slot], layer)
            pooled.append(values.to(torch.float32).numpy().copy())
        return pooled


# Per process: one compiled graph per file contents, tensors read, precision, threads.
_GRAPHS: dict[tuple[Any, ...], FileGraph] = {}
_GRAPHS_LOCK = threading.Lock()


def file_graph_for(plan: Any, precision: str, n_threads: int | None = None) -> FileGraph:
    """The compiled graph that reads ``plan``'s layers from its model file.

    Raises
    ------
    SkfeatError
        For a precision the CPU plugin has no inference mode for.
    """
    import torch

    if precision not in _OV_PRECISION:
        raise SkfeatError(
            f"precision={precision!r} has no OpenVINO inference on the CPU for model "
            f"files. Use precision='fp32' or 'bf16'."
        )
    threads = torch.get_num_threads() if n_threads is None else n_threads
    layers = tuple(dict.fromkeys(layer.name for layer, _ in plan.reads))
    signature = tuple((layer.name, pooling.name, pooling.function) for layer, pooling in plan.reads)
    key = (os.getpid(), plan.backend.key, signature, plan.data_config.crop_size, precision, threads)
    with _GRAPHS_LOCK:
        known = _GRAPHS.get(key)
        if known is None:
            known = _GRAPHS[key] = _build(plan, layers, precision, threads)
    return known


def _build(plan: Any, layers: tuple[str, ...], precision: str, threads: int) -> FileGraph:
    ov = _openvino()
    backend = plan.backend
    infos = {layer.name: layer for layer, _ in plan.reads}
    named = [infos[name].module for name in layers if name not in (PENULTIMATE, LOGITS)]
    graph = _read(backend, named)
    model = graph.model
    input_ = _image_input(model, backend.label)
    tensors = _tensors(model)
    ports = []
    for name in layers:
        if name == LOGITS:
            ports.append(_output(model, graph.outputs[0]))
        elif name == PENULTIMATE:  # unique: checked when traced
            ports.append(_head_inputs(_output(model, graph.outputs[0]))[0])
        else:
            ports.append(tensors[infos[name].module])
    reader = ov.Model(ports, model.get_parameters(), "skfeat_reads")
    reader.reshape({0: input_.shape(plan.data_config.crop_size, batch=-1)})
    compiled = ov.Core().compile_model(
        reader,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    slots = {name: index for index, name in enumerate(layers)}
    return FileGraph(compiled, slots, input_.channels_last, plan.data_config)
