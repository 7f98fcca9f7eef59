"""Transformer blocks: which layers they are, what a negative index names, their final norm.

A vision transformer's blocks are the numbered children of one module whose outputs
are tokens of one shape: timm ``blocks.N``, torchvision ``encoder.layers.encoder_layer_N``.
Numbers are 0-based, as the modules are named; a negative number counts from the end
of any numbered run of layers (``"blocks.-1"`` is the last block, ``"features.-1"`` the
last stage of a torchvision MobileNet) and is resolved once, in ``fit``, to the real name.

The final norm is the normalisation the model itself applies after its last block:
to every token before pooling (timm ``norm``, torchvision ``encoder.ln``, Hugging Face
``layernorm``), or to the pooled vector after pooling (timm ``fc_norm``: EVA, BEiT and
ViTs with ``global_pool="avg"``). It is found on the module, not guessed from a name:
the per-token norm is the normalisation module whose input is the very tensor the last
block returned (one forward pass on a ``meta`` input, no memory); the pooled-vector
norm is timm's ``fc_norm`` when it is a normalisation of the blocks' width.
``intermediate_norm="final"`` applies that same module to the output of any block.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skfeat._layouts import TOKENS, VECTOR
from skfeat.exceptions import UnknownLayerError

if TYPE_CHECKING:
    from skfeat._extract import Architecture, LayerInfo

__all__ = [
    "INTERMEDIATE_NORMS",
    "FinalNorm",
    "final_norm",
    "numbered_runs",
    "resolve_index",
    "token_blocks",
    "token_layers",
]

INTERMEDIATE_NORMS = ("final", "none")
# "blocks.-1", "encoder_layer_-2": the number follows a dot or an underscore.
_NEGATIVE = re.compile(r"^(?P<prefix>(?:.*[._])?)-(?P<count>\d+)$")
_POOLED_NORM = "fc_norm"  # timm's name for the norm of the pooled vector

# One final norm (or None) per (backend.trace_key, input size) and process.
_NORMS: dict[Any, FinalNorm | None] = {}
_NORMS_LOCK = threading.Lock()


@dataclass(frozen=True)
class FinalNorm:
    """The model's own norm after its last block, as module names.

    Parameters
    ----------
    before_pooling : str or None
        A module normalising each token (timm ``norm``, torchvision ``encoder.ln``).
    after_pooling : str or None
        A module normalising the pooled vector (timm ``fc_norm``).
    """

    before_pooling: str | None = None
    after_pooling: str | None = None

    @property
    def label(self) -> str:
        """What goes after the layer name in feature names: ``"norm"``, ``"fc_norm"``."""
        return "+".join(name for name in (self.before_pooling, self.after_pooling) if name)


def children(parent: str, layers: Sequence[str]) -> list[str]:
    """The names in ``layers`` one level below ``parent`` (``""``: the top level)."""
    prefix = parent + "." if parent else ""
    return [n for n in layers if n.startswith(prefix) and "." not in n[len(prefix) :]]


def numbered_runs(names: Sequence[str]) -> list[list[str]]:
    """Names numbered in sequence: ``blocks.0``, ``blocks.1`` or ``encoder_layer_1``.

    ``norm1`` and ``norm2`` are two parts of one block, not a sequence; callers also
    keep only runs of modules that contain others (blocks, not ``ln_1``).
    """
    runs: dict[str, list[str]] = {}
    for name in names:
        last = name.rpartition(".")[2]
        stem = last.rstrip("0123456789")
        if stem != last and (stem == "" or stem.endswith("_")):
            runs.setdefault(stem, []).append(name)
    return list(runs.values())


def token_blocks(traced: Architecture) -> list[str]:
    """The blocks of a vision transformer, in forward order; empty for other models.

    Numbered children of one module, each containing others, with token outputs of
    one shape (at least two of them).
    """
    layers = traced.layers
    tokens = [name for name, info in layers.items() if info.layout.kind == TOKENS]
    blocks: set[str] = set()
    for parent in {name.rpartition(".")[0] for name in tokens}:
        for run in numbered_runs(children(parent, tokens)):
            containers = all(any(n.startswith(name + ".") for n in layers) for name in run)
            if len(run) >= 2 and containers and len({layers[name].shape for name in run}) == 1:
                blocks.update(run)
    return sorted(blocks, key=lambda name: layers[name].order)


def trunk_output(traced: Architecture, blocks: Sequence[str]) -> LayerInfo | None:
    """The last token output after the blocks (timm ``norm``, torchvision ``encoder.ln``)."""
    if not blocks:
        return None
    layers = traced.layers
    last = max(layers[name].order for name in blocks)
    after = [
        info
        for name, info in layers.items()
        if info.layout.kind == TOKENS
        and info.order > last
        and not any(b.startswith(name + ".") for b in blocks)
    ]
    return max(after, key=lambda info: info.order) if after else None


def token_layers(traced: Architecture, *, class_token: bool = False) -> list[str]:
    """The token layers people read: the blocks and the trunk's output after them."""
    blocks = token_blocks(traced)
    output = trunk_output(traced, blocks)
    names = [*blocks, *([output.name] if output is not None else [])]
    if class_token:
        names = [name for name in names if traced.layers[name].layout.class_token]
    return names


def resolve_index(traced: Architecture, name: str, label: str) -> str:
    """The real name of ``name``: ``"blocks.-1"`` -> ``"blocks.11"``; others unchanged.

    A negative number counts back through a run ``<prefix>0``, ``<prefix>1``, ...
    numbered without gaps; anything else is refused rather than guessed.

    Raises
    ------
    UnknownLayerError
        For a negative index past the start of the run, or of a run that has gaps.
    """
    match = _NEGATIVE.match(name)
    if name in traced.layers or match is None:
        return name
    prefix, count = match["prefix"], int(match["count"])
    numbers = sorted(
        int(other[len(prefix) :])
        for other in traced.layers
        if other.startswith(prefix) and other[len(prefix) :].isdigit()
    )
    if not numbers or count == 0:
        return name  # not an index into a run: the caller's lookup says so
    if numbers != list(range(len(numbers))):
        raise UnknownLayerError(
            f"Layer {name!r} counts back from the end of {prefix}N, but the layers of "
            f"{label!r} so numbered are not 0 to {len(numbers) - 1} without gaps "
            f"({numbers}), so skfeat cannot tell which one it means. Name the layer by "
            f"its number; see skfeat.list_layers({label!r})."
        )
    if count > len(numbers):
        raise UnknownLayerError(
            f"Layer {name!r} is out of range: {label!r} has {len(numbers)} layers "
            f"{prefix}0 to {prefix}{len(numbers) - 1}, so negative indices go from "
            f"{prefix}-1 to {prefix}-{len(numbers)}."
        )
    return f"{prefix}{len(numbers) - count}"


def final_norm(backend: Any, traced: Architecture, crop_size: int) -> FinalNorm | None:
    """The norm ``backend``'s model applies after its last block, once per process.

    None when the model has no token blocks, or no norm after them (an ``Identity``
    in its place counts as none).
    """
    blocks = token_blocks(traced)
    if not blocks:
        return None
    key = backend.trace_key
    if key is None:
        return _find_norm(backend, traced, blocks, crop_size)
    with _NORMS_LOCK:
        if (key, crop_size) in _NORMS:
            return _NORMS[(key, crop_size)]
    found = _find_norm(backend, traced, blocks, crop_size)
    with _NORMS_LOCK:
        _NORMS[(key, crop_size)] = found
    return found


def _find_norm(
    backend: Any, traced: Architecture, blocks: list[str], crop_size: int
) -> FinalNorm | None:
    error: Exception | None = None
    for device in ("meta", "cpu"):  # some custom ops have no meta kernel: then on CPU
        try:
            module = backend.tracing_module(device)
            before = _norm_of_last_block(module, blocks, crop_size)
            break
        except Exception as failure:
            error = failure
    else:
        assert error is not None
        raise error
    after = None
    pooled = traced.layers.get(_POOLED_NORM)
    channels = traced.layers[blocks[-1]].shape[-1]
    modules = dict(module.named_modules())
    if (
        pooled is not None
        and pooled.layout.kind == VECTOR
        and pooled.shape == (channels,)
        and _is_norm(modules.get(_POOLED_NORM))
    ):
        after = _POOLED_NORM
    if before is None and after is None:
        return None
    return FinalNorm(before, after)


def _is_norm(module: Any) -> bool:
    """A normalisation module (LayerNorm, RMSNorm, timm's own...), not an Identity."""
    if module is None:
        return False
    return any("Norm" in cls.__name__ for cls in type(module).__mro__[:-1])


def _norm_of_last_block(module: Any, blocks: list[str], side: int) -> str | None:
    """The normalisation module (outside the blocks) that reads the last block's output."""
    import torch

    modules = dict(module.named_modules())
    last: dict[str, Any] = {}
    readers: list[str] = []

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        last["output"] = output

    def reads(name: str) -> Any:
        def hook(_module: Any, inputs: Any) -> None:
            if inputs and "output" in last and inputs[0] is last["output"]:
                readers.append(name)

        return hook

    handles = [modules[blocks[-1]].register_forward_hook(keep)]
    for name, sub in modules.items():
        inside = any(name == b or name.startswith(b + ".") for b in blocks)
        if name and not inside and _is_norm(sub):
            handles.append(sub.register_forward_pre_hook(reads(name)))
    device = next((tensor.device for tensor in module.parameters()), torch.device("cpu"))
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(2, 3, side, side, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return readers[0] if readers else None
