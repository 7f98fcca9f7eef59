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
from skfeat.exceptions import InvalidParameterError, UnknownLayerError

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
    """

    name: str
    shape: tuple[int, ...]
    order: int
    module: str
    layout: Layout
    reads_input: bool = False
    norm: FinalNorm | None = None

    @property
    def layer_name(self) -> str:
        """The layer as ``layer=`` names it, without the norm's label."""
        return self.name if self.norm is None else self.name[: -len(self.norm.label) - 1]


@dataclass(frozen=True)
class Architecture:
    """The readable layers of one backbone, in forward order.

    ``absent`` maps an alias the backbone lacks to why, for the error that asks for it.
    """

    layers: dict[str, LayerInfo]
    classifier: str | None = None
    absent: Mapping[str, str] = field(default_factory=dict)

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
        except Exception as failure:
            error = failure
    assert error is not None
    raise error


_TRACE_BATCH = 2  # with 1, an output whose first axis is not the batch would go unseen
_LOGITS_KEY = "<logits>"


@dataclass
class _Pass:
    """What one forward pass on zeros recorded."""

    events: list[tuple[str, str]]  # ("out", module) or ("in", linear), in forward order
    shapes: dict[str, tuple[int, ...]]  # key -> shape with the batch axis
    calls: dict[str, int]


def _record(module: Any, side: int) -> _Pass:
    import torch

    events: list[tuple[str, str]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    handles = []
    names = {id(sub): name for name, sub in module.named_modules() if name}

    def after(sub: Any, _inputs: Any, output: Any) -> None:
        name = names[id(sub)]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor) and name not in shapes:
            events.append(("out", name))
            shapes[name] = tuple(output.shape)

    def before_linear(sub: Any, inputs: Any) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            name = names[id(sub)]
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
        with torch.no_grad():
            output = module(torch.zeros(_TRACE_BATCH, 3, side, side, device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    if isinstance(output, (tuple, list)):
        output = output[0]
    shapes[_LOGITS_KEY] = tuple(output.shape)
    return _Pass(events, shapes, calls)


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
    side that fails is skipped). ``penultimate_module`` names a module whose output
    is the pooled embedding (timm's pre-logits); otherwise ``"penultimate"`` is the
    input of the last linear layer, when that is a vector.
    """
    reference = _record(module, crop_size)
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
        return LayerInfo(name, shape, order, hooked, layouts[key], reads_input)

    layers: dict[str, LayerInfo] = {}
    classifier = None
    linear_input = pre_logits = None
    for order, (kind, name) in enumerate(reference.events):
        if kind == "in":
            key = _input_key(name)
            if layouts[key].kind == VECTOR:
                classifier = name
                linear_input = info(PENULTIMATE, key, order, name, reads_input=True)
            else:  # a linear layer inside a block, reading tokens: not the classifier
                classifier = linear_input = None
        elif name == penultimate_module:
            if reference.calls[name] == 1 and layouts[name].kind == VECTOR:
                pre_logits = info(PENULTIMATE, name, order, name)
        elif reference.calls[name] == 1:
            layers[name] = info(name, name, order, name)
    penultimate = pre_logits if penultimate_module is not None else linear_input
    if penultimate is not None:
        layers[PENULTIMATE] = penultimate
    layers[LOGITS] = info(LOGITS, _LOGITS_KEY, len(reference.events), "")
    return Architecture(layers=layers, classifier=classifier)


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
    if name in architecture.absent:
        raise UnknownLayerError(architecture.absent[name])
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
    model: Any, weights: Any = "DEFAULT", *, details: bool = False, preprocessing: Any = None
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
        linear classifier) and ``"logits"``. With ``details=True`` each value is a
        named tuple ``(shape, layout, prefix_tokens, class_token, widths)``:
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

    if not isinstance(details, bool):
        raise parameter_error("list_layers", "details", details, "a bool")
    backend = resolve_backend(model, weights, preprocessing)
    traced = architecture(backend, backend.data_config().crop_size)
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
    # One hook per module read (its output, or its input for "penultimate"): the reads
    # of one module, with or without the final norm, share it.
    by_module: dict[tuple[str, bool], list[tuple[int, Read]]] = {}
    for index, read in enumerate(reads):
        if read[0].name != LOGITS:
            by_module.setdefault((read[0].module, read[0].reads_input), []).append((index, read))

    def keep(pairs: list[tuple[int, Read]], activation: Any) -> None:
        normed: dict[str | None, Any] = {}
        for index, (layer, pooling) in pairs:
            norm = layer.norm
            before = norm.before_pooling if norm is not None else None
            if before not in normed:
                # forward(), not __call__: a hook on the norm itself must not fire here.
                tokens = activation if before is None else modules[before].forward(activation)
                # Pool in fp32: bf16 loses gem's cube.
                normed[before] = tokens if tokens.dtype == torch.float32 else tokens.float()
            after = norm.after_pooling if norm is not None else None
            each = modules[after].forward if after is not None else None
            pooled = pooling.apply(normed[before], layer, each=each)
            # A copy: later in-place ops (ReLU(inplace=True)) must not change it.
            store[index] = pooled.to(torch.float32, copy=True)
        if pairs[0][1][0].order == last_order:
            raise _StopForward

    handles = []
    for (name, reads_input), pairs in by_module.items():
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
        if isinstance(output, (tuple, list)):
            output = output[0]
        for index, (layer, pooling) in enumerate(reads):
            if layer.name == LOGITS:
                pooled = pooling.apply(output.float(), layer)
                store[index] = pooled.to(torch.float32, copy=True)
    return [store[index] for index in range(len(reads))]
