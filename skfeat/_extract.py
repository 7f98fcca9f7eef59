"""Which layers a backbone has, and how to read several of them in one pass.

Layers are named modules, found by running the network once on a ``meta`` input
(no memory, no weights) with a hook on every module. A module that runs more than
once per forward (a shared ReLU) has no single output and is left out. The aliases
``"penultimate"`` (the input of the final linear classifier) and ``"logits"`` (the
network's output) are added.

Extraction hooks the requested modules, pools each activation as soon as it is
produced (so large maps are never kept) and stops the forward pass right after the
last requested layer, so nothing past it is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from skfeat._pooling import pool_vectors

__all__ = [
    "LOGITS",
    "PENULTIMATE",
    "Architecture",
    "LayerInfo",
    "Target",
    "extract",
    "trace_architecture",
]

PENULTIMATE = "penultimate"
LOGITS = "logits"


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer.

    Parameters
    ----------
    name : str
        Module name (``"layer4"``) or alias (``"penultimate"``, ``"logits"``).
    shape : tuple of int
        Output shape for one image at the backbone's input size: ``(C, H, W)`` or ``(D,)``.
    order : int
        When it is produced during the forward pass; larger is later.
    module : str
        The module to hook; for ``"penultimate"`` the classifier, whose input is read.
    """

    name: str
    shape: tuple[int, ...]
    order: int
    module: str


@dataclass(frozen=True)
class Architecture:
    """The readable layers of one backbone, in forward order."""

    layers: dict[str, LayerInfo]
    classifier: str | None = None

    def names(self) -> list[str]:
        return list(self.layers)


@dataclass(frozen=True)
class Target:
    """One requested (layer, pooling) pair and where its columns go in the output."""

    layer: LayerInfo
    pooling: str | Callable[[Any], Any]
    start: int
    stop: int
    pooling_name: str = field(default="", compare=False)


class _StopForward(Exception):
    """Raised from the last needed hook: everything after it is skipped."""


def trace_architecture(module: Any, crop_size: int) -> Architecture:
    """Run ``module`` once on a meta input and record every module's output shape."""
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

    layers: dict[str, LayerInfo] = {}
    classifier = None
    penultimate = None
    for order, (kind, name, shape) in enumerate(events):
        if kind == "in":
            classifier, penultimate = name, LayerInfo(PENULTIMATE, shape, order, name)
        elif calls[name] == 1 and name not in layers:
            layers[name] = LayerInfo(name, shape, order, name)
    if penultimate is not None and len(penultimate.shape) == 1:
        layers[PENULTIMATE] = penultimate
    else:
        classifier = None
    layers[LOGITS] = LayerInfo(LOGITS, tuple(output.shape[1:]), len(events), "")
    return Architecture(layers=layers, classifier=classifier)


def _module_device(module: Any) -> Any:
    import torch

    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def _hooks(module: Any, targets: Sequence[Target], store: dict[int, Any]) -> Iterator[None]:
    import torch

    modules = dict(module.named_modules())
    last_order = max(target.layer.order for target in targets)
    by_layer: dict[str, list[tuple[int, Target]]] = {}
    for index, target in enumerate(targets):
        by_layer.setdefault(target.layer.name, []).append((index, target))

    def keep(layer: LayerInfo, activation: Any) -> None:
        if activation.dtype != torch.float32:
            activation = activation.float()  # pool in fp32: bf16 loses gem's cube
        for index, target in by_layer[layer.name]:
            pooled = pool_vectors(target.pooling, activation)
            # A copy: later in-place ops (ReLU(inplace=True)) must not change it.
            store[index] = pooled.to(torch.float32, copy=True)
        if layer.order == last_order:
            raise _StopForward

    handles = []
    for pairs in by_layer.values():
        layer = pairs[0][1].layer
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


def extract(module: Any, batch: Any, targets: Sequence[Target]) -> list[Any]:
    """Run ``batch`` through ``module`` and return one pooled fp32 tensor per target.

    The forward pass stops right after the deepest requested layer.
    """
    import torch

    store: dict[int, Any] = {}
    with _hooks(module, targets, store):
        try:
            output = module(batch)
        except _StopForward:
            output = None
    if output is not None:  # only when "logits" was requested: it is the last layer
        if isinstance(output, (tuple, list)):
            output = output[0]
        for index, target in enumerate(targets):
            if target.layer.name == LOGITS:
                pooled = pool_vectors(target.pooling, output.float())
                store[index] = pooled.to(torch.float32, copy=True)
    return [store[index] for index in range(len(targets))]
