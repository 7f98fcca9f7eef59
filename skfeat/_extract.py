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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from skfeat._layouts import Layout, layout_of_shape
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
        The module to hook; for ``"penultimate"`` the classifier, whose input is read.
    layout : Layout
        What the axes of ``shape`` mean.
    """

    name: str
    shape: tuple[int, ...]
    order: int
    module: str
    layout: Layout


@dataclass(frozen=True)
class Architecture:
    """The readable layers of one backbone, in forward order."""

    layers: dict[str, LayerInfo]
    classifier: str | None = None

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
    try:
        return trace_architecture(backend.tracing_module("meta"), crop_size)
    except Exception:  # some custom ops have no meta kernel: trace for real, on CPU
        return trace_architecture(backend.tracing_module("cpu"), crop_size)


def trace_architecture(module: Any, crop_size: int) -> Architecture:
    """Run ``module`` once on a zero input and record every module's output shape."""
    import torch

    events: list[tuple[str, str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}
    handles = []
    names = {id(sub): name for name, sub in module.named_modules() if name}

    def after(sub: Any, _inputs: Any, output: Any) -> None:
        name = names[id(sub)]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor):
            events.append(("out", name, tuple(output.shape[1:])))

    def before_linear(sub: Any, inputs: Any) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            events.append(("in", names[id(sub)], tuple(inputs[0].shape[1:])))

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
            output = module(torch.zeros(1, 3, crop_size, crop_size, device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    if isinstance(output, (tuple, list)):
        output = output[0]

    def info(name: str, shape: tuple[int, ...], order: int, hooked: str) -> LayerInfo:
        return LayerInfo(name, shape, order, hooked, layout_of_shape(shape))

    layers: dict[str, LayerInfo] = {}
    classifier = None
    penultimate = None
    for order, (kind, name, shape) in enumerate(events):
        if kind == "in":
            classifier, penultimate = name, info(PENULTIMATE, shape, order, name)
        elif calls[name] == 1 and name not in layers:
            layers[name] = info(name, shape, order, name)
    if penultimate is not None and len(penultimate.shape) == 1:
        layers[PENULTIMATE] = penultimate
    else:
        classifier = None
    layers[LOGITS] = info(LOGITS, tuple(output.shape[1:]), len(events), "")
    return Architecture(layers=layers, classifier=classifier)


def _module_device(module: Any) -> Any:
    import torch

    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def find_layer(architecture: Architecture, name: str, label: str) -> LayerInfo:
    """The layer called ``name``, or an :class:`UnknownLayerError` with close names."""
    if name in architecture.layers:
        return architecture.layers[name]
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


def list_layers(model: Any, weights: Any = "DEFAULT", *, details: bool = False) -> dict[str, Any]:
    """List the layers of ``model`` that ``layer=`` accepts, with their output shapes.

    The network runs once on an empty ``meta`` input: no weights are loaded and no
    memory is used. Modules that run more than once per forward pass (a shared
    activation) have no single output and are not listed.

    Parameters
    ----------
    model : str or torch.nn.Module
        As for :class:`PretrainedCNNFeaturizer`, for example ``"resnet50"``.
    weights : str, path or None, default="DEFAULT"
        Only changes the input size when the weights' recipe does.
    details : bool, default=False
        Describe each layer fully (layout and width per pooling) instead of giving
        its shape alone.

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
    backend = resolve_backend(model, weights)
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
    by_layer: dict[str, list[tuple[int, Read]]] = {}
    for index, read in enumerate(reads):
        by_layer.setdefault(read[0].name, []).append((index, read))

    def keep(layer: LayerInfo, activation: Any) -> None:
        if activation.dtype != torch.float32:
            activation = activation.float()  # pool in fp32: bf16 loses gem's cube
        for index, (_, pooling) in by_layer[layer.name]:
            pooled = pooling.apply(activation, layer)
            # A copy: later in-place ops (ReLU(inplace=True)) must not change it.
            store[index] = pooled.to(torch.float32, copy=True)
        if layer.order == last_order:
            raise _StopForward

    handles = []
    for pairs in by_layer.values():
        layer = pairs[0][1][0]
        if layer.name == LOGITS:
            continue
        sub = modules[layer.module]
        if layer.name == PENULTIMATE:
            handles.append(
                sub.register_forward_pre_hook(
                    lambda _m, inputs, layer=layer: keep(layer, inputs[0])
                )
            )
        else:
            handles.append(
                sub.register_forward_hook(lambda _m, _i, output, layer=layer: keep(layer, output))
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
