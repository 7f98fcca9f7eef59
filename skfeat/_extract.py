"""Which layers a backbone has, and how to read several of them in one pass.

Layers are named modules, found by running the network once on a ``meta`` input
(no memory, no weights) with a hook on every module; each gets its output shape
and its layout (:mod:`skfeat._layouts`). A module that runs more than once per
forward (a shared ReLU) has no single output and is left out. The aliases
``"penultimate"`` (the input of the final linear classifier) and ``"logits"`` (the
network's output) are added. :func:`list_layers` shows the result.

Extraction hooks the requested modules, pools each activation as soon as it is
produced (so large maps are never kept) and stops the forward pass right after the
last requested layer, so nothing past it is computed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from skfeat._blocks import FinalNorm, resolve_index
from skfeat._declarations import collect_hints, copy_at_size
from skfeat._layouts import VECTOR, Layout, infer_layouts, probe_sizes
from skfeat._pooling import PoolingSpec, list_poolings, pooled_width
from skfeat._validation import did_you_mean, parameter_error
from skfeat.exceptions import (
    InvalidParameterError,
    ModelTraceError,
    SkfeatError,
    UnknownLayerError,
)

__all__ = [
    "LOGITS",
    "PENULTIMATE",
    "Architecture",
    "LayerDetails",
    "LayerInfo",
    "architecture",
    "extract",
    "find_layer",
    "list_layers",
    "trace_architecture",
]

PENULTIMATE = "penultimate"
LOGITS = "logits"

# One traced architecture per (backend.trace_key, input size) and process.
_ARCHITECTURES: dict[Any, Architecture] = {}
_ARCHITECTURES_LOCK = threading.Lock()


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer.

    Parameters
    ----------
    name : str
        Module name (``"layer4"``) or alias (``"penultimate"``, ``"logits"``).
    shape : tuple of int
        Output shape for one image at the backbone's input size.
    order : int
        When it is produced during the forward pass; larger is later.
    module : str
        The module to hook (empty for ``"logits"``, the network's output).
    layout : Layout
        What the axes of ``shape`` mean.
    reads_input : bool, default=False
        Whether the module's input is read rather than its output: ``"penultimate"``
        is the input of the final linear classifier.
    norm : FinalNorm or None, default=None
        The model's final norm, applied to this block's output
        (``intermediate_norm="final"``); ``name`` then ends in ``+`` and its label
        (``"blocks.3+norm"``), so reads, cache entries and feature names keep the two
        policies apart.
    element : int, str or None, default=None
        For a module returning a tuple, list or dict: the index or key of the tensor
        read (the layer is named ``module[element]``).
    """

    name: str
    shape: tuple[int, ...]
    order: int
    module: str
    layout: Layout
    reads_input: bool = False
    norm: FinalNorm | None = None
    element: Any = None

    @property
    def layer_name(self) -> str:
        """The layer as ``layer=`` names it, without the norm's label."""
        return self.name if self.norm is None else self.name[: -len(self.norm.label) - 1]


@dataclass(frozen=True)
class Architecture:
    """The readable layers of one backbone, in forward order.

    ``refused`` maps a name that is not a layer (a module returning a tuple, one that
    runs twice, an alias the network has no answer for) to why, for messages.
    """

    layers: dict[str, LayerInfo]
    classifier: str | None = None
    refused: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.layers)


class _StopForward(Exception):
    """Raised from the last needed hook: everything after it is skipped."""


def architecture(backend: Any, crop_size: int) -> Architecture:
    """The traced layers of ``backend``'s network at ``crop_size``, once per process.

    A backend whose network may change between calls (a user's module) has no
    ``trace_key`` and is traced every time.
    """
    key = backend.trace_key
    if key is None:
        return _trace(backend, crop_size)
    with _ARCHITECTURES_LOCK:
        known = _ARCHITECTURES.get((key, crop_size))
    if known is None:
        known = _trace(backend, crop_size)
        with _ARCHITECTURES_LOCK:
            _ARCHITECTURES[(key, crop_size)] = known
    return known


def _trace(backend: Any, crop_size: int) -> Architecture:
    read_graph = getattr(backend, "read_architecture", None)
    if read_graph is not None:  # a model file: its graph's named tensors, not modules
        return read_graph(crop_size)
    import torch

    error: Exception | None = None
    for device in ("meta", "cpu"):  # some custom ops have no meta kernel: then on CPU
        try:
            module = backend.tracing_module(device)

            def at_size(side: int, device: str = device, module: Any = module) -> Any:
                resized = backend.tracing_module(device, side)
                return resized if resized is not None else copy_at_size(module, side) or module

            return trace_architecture(
                module, crop_size, at_size=at_size, penultimate_module=backend.penultimate_module
            )
        except SkfeatError:
            raise
        except Exception as failure:
            if isinstance(failure, (torch.OutOfMemoryError, MemoryError)):
                raise  # a resource, not the model: the caller's error to handle
            error = failure
    raise ModelTraceError(
        f"Could not run {backend.label!r} to find its layers: on a zero batch of shape "
        f"({_TRACE_BATCH}, 3, {crop_size}, {crop_size}) its forward pass raised "
        f"{type(error).__name__}: {str(error)[:300]}. skfeat feeds a model (N, 3, H, W) "
        "float images at its recipe's crop size. If the model takes another input size, "
        "say so with preprocessing={'crop_size': ...} (or a timm data config); a model that "
        "takes other inputs (a dict, several tensors, text) needs a wrapping nn.Module "
        "whose forward takes the image batch alone."
    ) from error


_TRACE_BATCH = 2  # with 1, an output whose first axis is not the batch would go unseen
_LOGITS_KEY = "<logits>"


@dataclass
class _Pass:
    """What one forward pass on zeros recorded."""

    events: list[tuple[str, str]]  # ("out", layer) or ("in", linear), in forward order
    shapes: dict[str, tuple[int, ...]]  # key -> shape with the batch axis
    calls: dict[str, int]
    elements: dict[str, Any]  # "module[i]" -> i: one tensor of a tuple or dict output
    refused: dict[str, str]  # module -> why its output is not readable
    heads: tuple[str, ...] | None = None  # linears whose outputs make the output, if known
    logits: str = ""  # why the output is not logits, or ""
    output_module: str = ""  # the nn.Identity whose output is the network's output


def element_name(module: str, element: Any) -> str:
    """The layer name of one tensor in a module's tuple or dict output: ``blocks.0[1]``."""
    return f"{module}[{element}]"


def _tensor_elements(output: Any) -> list[tuple[Any, Any]] | None:
    """The tensors of a tuple, list or mapping output by index or key; None otherwise."""
    import torch

    if isinstance(output, Mapping):
        pairs: list[tuple[Any, Any]] = list(output.items())
    elif isinstance(output, (tuple, list)):
        pairs = list(enumerate(output))
    else:
        return None
    return [(key, value) for key, value in pairs if isinstance(value, torch.Tensor)]


def network_output(output: Any) -> tuple[Any, str]:
    """The logits in a network's output, and why not when they are not there.

    The rule: a tensor is the logits; a tuple or list gives its first element (the
    main output, as torchvision's Inception and GoogLeNet in training return); a
    dict or ``ModelOutput`` gives its ``"logits"`` entry. Anything else is refused.
    """
    import torch

    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif isinstance(output, Mapping):
        if "logits" not in output:
            keys = ", ".join(map(repr, output)) or "none"
            return None, (
                f"the network returns a {type(output).__name__} without a 'logits' entry "
                f"(keys: {keys}), so it has no class scores"
            )
        output = output["logits"]
    if not isinstance(output, torch.Tensor):
        return None, f"the network's output is a {type(output).__name__}, not a tensor"
    return output, ""


def _record(module: Any, side: int, *, find_heads: bool = False) -> _Pass:
    import torch

    events: list[tuple[str, str]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    elements: dict[str, Any] = {}
    refused: dict[str, str] = {}
    linear_nodes: dict[Any, str] = {}  # autograd node of a linear's output -> its name
    identities: dict[int, tuple[str, Any]] = {}  # id(tensor) -> (nn.Identity, tensor)
    handles = []
    names = {id(sub): name for name, sub in module.named_modules() if name}

    def after(sub: Any, _inputs: Any, output: Any) -> None:
        name = names[id(sub)]
        calls[name] = calls.get(name, 0) + 1
        is_tensor = isinstance(output, torch.Tensor)
        if find_heads and is_tensor and isinstance(sub, torch.nn.Linear) and output.grad_fn:
            linear_nodes[output.grad_fn] = name  # every call: a head used twice is seen
        if calls[name] > 1:
            return
        if is_tensor:
            events.append(("out", name))
            shapes[name] = tuple(output.shape)
            if isinstance(sub, torch.nn.Identity):
                identities[id(output)] = (name, output)
            return
        parts = _tensor_elements(output)
        if not parts:
            refused[name] = f"its output is a {type(output).__name__}, which holds no tensor"
            return
        for element, tensor in parts:
            key = element_name(name, element)
            events.append(("out", key))
            shapes[key] = tuple(tensor.shape)
            elements[key] = element
        listed = ", ".join(repr(element_name(name, element)) for element, _ in parts)
        refused[name] = (
            f"its output is a {type(output).__name__}, not a tensor; read one of its "
            f"tensors by name: {listed}"
        )

    def before_linear(sub: Any, inputs: Any) -> None:
        name = names[id(sub)]
        if inputs and isinstance(inputs[0], torch.Tensor) and _input_key(name) not in shapes:
            events.append(("in", name))
            shapes[_input_key(name)] = tuple(inputs[0].shape)

    for sub in module.modules():
        if id(sub) in names:
            handles.append(sub.register_forward_hook(after))
            if isinstance(sub, torch.nn.Linear):
                handles.append(sub.register_forward_pre_hook(before_linear))
    was_training = module.training
    try:
        module.eval()
        device = _module_device(module)
        images = torch.zeros(_TRACE_BATCH, 3, side, side, device=device)
        with torch.set_grad_enabled(find_heads):
            if find_heads:  # a graph from the input, even where parameters are frozen
                images = images.requires_grad_().clone()
            output = module(images)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    for name in [name for name, count in calls.items() if count > 1]:
        refused[name] = f"it runs {calls[name]} times per forward pass, so it has no one output"
    logits, why_not = network_output(output)
    recorded = _Pass(events, shapes, calls, elements, refused, logits=why_not)
    if logits is not None:
        shapes[_LOGITS_KEY] = tuple(logits.shape)
        recorded.output_module = identities.get(id(logits), ("", None))[0]
        if find_heads:
            recorded.heads = _heads(logits, linear_nodes)
    return recorded


def _heads(logits: Any, linear_nodes: dict[Any, str]) -> tuple[str, ...] | None:
    """The linear layers whose outputs reach ``logits`` through no other linear layer.

    Found by walking the autograd graph back from the output; None when the output
    has no graph (the module ran without gradients).
    """
    if logits.grad_fn is None:
        return None
    found: list[str] = []
    seen = set()
    stack = [logits.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in linear_nodes:
            found.append(linear_nodes[node])
            continue
        stack.extend(parent for parent, _ in node.next_functions)
    return tuple(sorted(found))


def _input_key(name: str) -> str:
    return f"<input of {name}>"


def trace_architecture(
    module: Any,
    crop_size: int,
    *,
    at_size: Callable[[int], Any] | None = None,
    penultimate_module: str | None = None,
) -> Architecture:
    """Trace ``module`` on zeros: every module's output shape and layout.

    The module runs at ``crop_size`` and, to tell channels from positions, at twice
    and three times that side (``at_size(side)`` gives the module to run there; a
    side that fails is skipped). A module returning a tuple, list or dict of tensors
    gives one layer per tensor, ``name[index]`` or ``name[key]``.

    ``penultimate_module`` names a module whose output is the pooled embedding (timm's
    pre-logits). Otherwise ``"penultimate"`` is the input of the network's classifier:
    the one linear layer whose output makes the network's output (found through the
    autograd graph, so layers in a chain such as VGG's classifier lead to the last),
    when that input is a vector. Several such layers (a distilled DeiT's ``head`` and
    ``head_dist``) have no single input: ``"penultimate"`` is then refused, naming
    them. ``"logits"`` is the network's output (:func:`network_output`), refused when
    it is an ``nn.Identity``'s (a head cut off: ``model.fc = nn.Identity()``, timm's
    ``num_classes=0``).
    """

    reference = _record(module, crop_size, find_heads=True)
    traces = {crop_size: reference.shapes}
    for side in probe_sizes(crop_size)[1:]:
        try:
            traces[side] = _record(at_size(side) if at_size else module, side).shapes
        except Exception:  # a model that takes one input size: what it declares decides
            continue
    layouts = infer_layouts(
        traces, reference=crop_size, batch=_TRACE_BATCH, hints=collect_hints(module)
    )

    def info(name: str, key: str, order: int, hooked: str, reads_input: bool = False) -> Any:
        shape = reference.shapes[key][1:]
        element = reference.elements.get(key)
        return LayerInfo(name, shape, order, hooked, layouts[key], reads_input, element=element)

    layers: dict[str, LayerInfo] = {}
    refused = dict(reference.refused)
    heads = reference.heads or ()
    inputs: dict[str, LayerInfo] = {}
    pre_logits = None
    for order, (kind, name) in enumerate(reference.events):
        module_name = name.partition("[")[0] if name in reference.elements else name
        if kind == "in":
            inputs[name] = info(PENULTIMATE, _input_key(name), order, name, reads_input=True)
        elif reference.calls[module_name] != 1:
            continue
        elif name == penultimate_module:
            if layouts[name].kind == VECTOR:
                pre_logits = info(PENULTIMATE, name, order, name)
        else:
            layers[name] = info(name, name, order, module_name)
    classifier = None
    vector_heads = [n for n in heads if n in inputs and inputs[n].layout.kind == VECTOR]
    repeated = [n for n in vector_heads if reference.calls[n] > 1]
    if penultimate_module is not None:
        if pre_logits is not None:
            layers[PENULTIMATE] = pre_logits
        classifier = vector_heads[0] if len(vector_heads) == 1 else None
    elif repeated:
        refused[PENULTIMATE] = (
            f"the head {repeated[0]!r} runs {reference.calls[repeated[0]]} times per forward "
            "pass and the output is made from all of them, so no one input is the embedding; "
            "read a layer by name"
        )
    elif len(vector_heads) == 1:
        classifier = vector_heads[0]
        layers[PENULTIMATE] = inputs[classifier]
    else:
        refused[PENULTIMATE] = _no_penultimate(reference, vector_heads, layers)
    if reference.logits:
        refused[LOGITS] = reference.logits
    elif reference.output_module:
        instead = PENULTIMATE if PENULTIMATE in layers else reference.output_module
        refused[LOGITS] = (
            f"the network has no classifier: its output comes from {reference.output_module!r}, "
            f"an nn.Identity, so it is an embedding, not class scores; read it as "
            f"layer={instead!r}"
        )
    else:
        layers[LOGITS] = info(LOGITS, _LOGITS_KEY, len(reference.events), "")
    return Architecture(layers=layers, classifier=classifier, refused=refused)


def _no_penultimate(reference: _Pass, heads: list[str], layers: dict[str, LayerInfo]) -> str:
    """Why a module has no ``"penultimate"``, and what to read instead."""
    if reference.logits:
        return f"{reference.logits}, so there is no classifier input; read a layer by name"
    if reference.heads is None:
        return (
            "the network's output carries no autograd graph (it ran without gradients), so "
            "the linear layer that computes it cannot be found; read a layer by name"
        )
    if len(heads) < 2:
        return (
            "the network's output is not computed by a linear layer reading a vector, so "
            "there is no classifier input to read; read a layer by name"
        )
    first = min(reference.events.index(("in", name)) for name in heads)
    before = [
        name
        for kind, name in reference.events[:first]
        if kind == "out" and name in layers and layers[name].layout.known
    ]
    last = f" (the last before them is {before[-1]!r})" if before else ""
    named = ", ".join(map(repr, heads))
    return (
        f"{len(heads)} heads read vectors and together make the output: {named}; their "
        "inputs differ, so no one of them is the embedding. Pass a layer name instead"
        f"{last}, or, for a timm model, model='timm:<name>' or the timm model itself, "
        "whose pre-logits embedding skfeat reads as 'penultimate'"
    )


def _module_device(module: Any) -> Any:
    import torch

    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def find_layer(architecture: Architecture, name: str, label: str) -> LayerInfo:
    """The layer called ``name``, or an :class:`UnknownLayerError` with close names.

    A negative index counts from the end of a numbered run: ``"blocks.-1"`` is the
    last block (:func:`skfeat._blocks.resolve_index`).
    """
    name = resolve_index(architecture, name, label)
    if name in architecture.layers:
        return architecture.layers[name]
    if name in architecture.refused:
        raise UnknownLayerError(
            f"Layer {name!r} of {label!r} cannot be read: {architecture.refused[name]}. See "
            f"skfeat.list_layers({label!r}) for the names and output shapes."
        )
    hint = did_you_mean(name, architecture.names(), cutoff=0.5)
    raise UnknownLayerError(
        f"Layer {name!r} not found in {label!r}.{hint} See skfeat.list_layers({label!r}) "
        "for the names and output shapes."
    )


class LayerDetails(NamedTuple):
    """One layer as :func:`list_layers` describes it with ``details=True``."""

    shape: tuple[int, ...]
    layout: str
    prefix_tokens: int
    class_token: bool
    widths: dict[str, int | None]


def list_layers(
    model: Any, weights: Any = "DEFAULT", *, preprocessing: Any = None, details: bool = False
) -> dict[str, Any]:
    """List the layers of ``model`` that ``layer=`` accepts, with their output shapes.

    The network runs once on an empty ``meta`` input: no weights are loaded and no
    memory is used. Modules that run more than once per forward pass (a shared
    activation) have no single output and are not listed.

    Parameters
    ----------
    model : str, path or torch.nn.Module
        As for :class:`PretrainedCNNFeaturizer`, for example ``"resnet50"`` or a model
        file (``"model.onnx"``), whose layers are its graph's named tensors.
    weights : str, path or None, default="DEFAULT"
        Only changes the input size when the weights' recipe does.
    preprocessing : dict or None, default=None
        As for :class:`PretrainedCNNFeaturizer`: its crop size is the input size the
        network is traced at.
    details : bool, default=False
        Describe each layer fully (layout and width per pooling) instead of giving
        its shape alone.
    preprocessing : dict or None, default=None
        A model file's recipe, as for :class:`PretrainedCNNFeaturizer`: its crop is the
        input size the graph is read at.

    Returns
    -------
    layers : dict of str to tuple of int, or dict of str to LayerDetails
        Layer name to output shape for one image, ``(C, H, W)`` or ``(D,)``, in forward
        order, ending with the aliases ``"penultimate"`` (when the model ends in a
        linear classifier) and ``"logits"``. A module returning a tuple or dict of
        tensors is listed by element, ``"name[0]"`` or ``"name[key]"``. With
        ``details=True`` each value is a named tuple
        ``(shape, layout, prefix_tokens, class_token, widths)``:
        ``layout`` is ``"map"``, ``"map_last"``, ``"tokens"``, ``"vector"`` or
        ``"unknown"``, and ``widths`` maps each named pooling to the number of
        features it gives on that layer, or None where it does not apply.

    See Also
    --------
    PretrainedCNNFeaturizer : Reads the layers named here, with ``layer=``.
    list_poolings : How each layer's output becomes a vector.
    list_models : The model names that ``model`` accepts.

    Examples
    --------
    >>> from skfeat import list_layers
    >>> layers = list_layers("resnet18")
    >>> layers["layer4"], layers["penultimate"], layers["logits"]
    ((512, 7, 7), (512,), (1000,))
    >>> details = list_layers("resnet18", details=True)["layer4"]
    >>> details.layout, details.widths["avgmax"]
    ('map', 1024)
    """
    from skfeat._backends import resolve_backend
    from skfeat._backends._recipe import resolve_preprocessing

    if not isinstance(details, bool):
        raise parameter_error("list_layers", "details", details, "a bool")
    backend = resolve_backend(model, weights, preprocessing)
    config = resolve_preprocessing(preprocessing, backend.data_config, "list_layers")
    traced = architecture(backend, config.crop_size)
    ordered = sorted(traced.layers.values(), key=lambda info: info.order)
    if not details:
        return {info.name: info.shape for info in ordered}
    return {info.name: _details(info) for info in ordered}


def _details(info: LayerInfo) -> LayerDetails:
    widths: dict[str, int | None] = {}
    for name in list_poolings():
        try:
            widths[name] = pooled_width(name, info)
        except InvalidParameterError:
            widths[name] = None
    layout = info.layout
    return LayerDetails(info.shape, layout.kind, layout.prefix_tokens, layout.class_token, widths)


# -- reading layers -------------------------------------------------------------------

Read = tuple[LayerInfo, PoolingSpec]


@contextmanager
def _hooks(module: Any, reads: Sequence[Read], store: dict[int, Any]) -> Iterator[None]:
    import torch

    modules = dict(module.named_modules())
    last_order = max(layer.order for layer, _ in reads)
    # One hook per (module, input or output): the reads of its tensor or of the elements
    # of its tuple output, each with or without the final norm, share it.
    by_hook: dict[tuple[str, bool], list[tuple[int, Read]]] = {}
    for index, read in enumerate(reads):
        layer = read[0]
        if layer.name != LOGITS:
            by_hook.setdefault((layer.module, layer.reads_input), []).append((index, read))

    def keep(pairs: list[tuple[int, Read]], value: Any) -> None:
        normed: dict[tuple[Any, str | None], Any] = {}
        stop = False
        for index, (layer, pooling) in pairs:
            norm = layer.norm
            before = norm.before_pooling if norm is not None else None
            key = (layer.element, before)
            if key not in normed:
                activation = value if layer.element is None else value[layer.element]
                # forward(), not __call__: a hook on the norm itself must not fire here.
                tokens = activation if before is None else modules[before].forward(activation)
                # Pool in fp32: bf16 loses gem's cube.
                normed[key] = tokens if tokens.dtype == torch.float32 else tokens.float()
            after = norm.after_pooling if norm is not None else None
            each = modules[after].forward if after is not None else None
            pooled = pooling.apply(normed[key], layer, each=each)
            # A copy: later in-place ops (ReLU(inplace=True)) must not change it.
            store[index] = pooled.to(torch.float32, copy=True)
            stop = stop or layer.order == last_order
        if stop:
            raise _StopForward

    handles = []
    for (name, reads_input), pairs in by_hook.items():
        sub = modules[name]
        if reads_input:
            handles.append(
                sub.register_forward_pre_hook(
                    lambda _m, inputs, pairs=pairs: keep(pairs, inputs[0])
                )
            )
        else:
            handles.append(
                sub.register_forward_hook(lambda _m, _i, output, pairs=pairs: keep(pairs, output))
            )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def extract(module: Any, batch: Any, reads: Sequence[Read]) -> list[Any]:
    """Run ``batch`` through ``module``; one pooled fp32 tensor per ``(layer, pooling)``.

    The forward pass stops right after the deepest layer read.
    """
    import torch

    store: dict[int, Any] = {}
    with _hooks(module, reads, store):
        try:
            output = module(batch)
        except _StopForward:
            output = None
    if output is not None:  # only when "logits" was read: it is the last layer
        output, _ = network_output(output)
        for index, (layer, pooling) in enumerate(reads):
            if layer.name == LOGITS:
                pooled = pooling.apply(output.float(), layer)
                store[index] = pooled.to(torch.float32, copy=True)
    return [store[index] for index in range(len(reads))]
