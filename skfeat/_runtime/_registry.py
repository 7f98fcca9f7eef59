"""The per-process model registry: each backbone loaded once, tuned once, then shared.

The registry loads each (backbone, weights, device) once per process and keeps it
for the life of the process (or of the user's module it was copied from), so
estimators stay small to pickle and every worker (loky, Dask, Ray) loads its weights
once. Loading puts the network in ``eval()`` without gradients; tuning folds every
BatchNorm that follows an unread convolution into it (:mod:`skfeat._runtime._fuse`)
and switches to channels-last memory format.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from skfeat._runtime._fuse import fold_conv_bn

__all__ = ["PreparedModel", "get_model", "tune"]


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


# Keyed by process id too: a forked child reloads rather than share its parent's copy.
_REGISTRY: dict[tuple[Any, ...], PreparedModel] = {}
# Models copied from a user's module live as long as that module.
_BY_OWNER: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], PreparedModel]] = (
    weakref.WeakKeyDictionary()
)
_REGISTRY_LOCK = threading.Lock()


def get_model(backend: Any, device: Any, classifier: str | None) -> PreparedModel:
    """The loaded backbone for this process, loading it on first use.

    The key holds the weights' fingerprint, not their name: a weights file replaced
    in place, or a user's module changed in place, is loaded again.
    """
    owner = backend.owner
    key = (os.getpid(), backend.key, str(device))
    with _REGISTRY_LOCK:
        registry = _REGISTRY if owner is None else _BY_OWNER.setdefault(owner, {})
        prepared = registry.get(key)
        if prepared is None:
            module, head_loaded = _load(backend, device, classifier)
            prepared = PreparedModel(module, device, head_loaded, threading.Lock())
            registry[key] = prepared
    return prepared


def _load(backend: Any, device: Any, classifier: str | None) -> tuple[Any, bool]:
    module, head_loaded = backend.load(head=classifier)
    module = module.to(device)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval(), head_loaded


def tune(
    prepared: PreparedModel, backend: Any, classifier: str | None, read: frozenset[str]
) -> None:
    """Fold BatchNorms and switch to channels-last, once per process and model.

    ``read`` names the modules whose outputs this call reads. The backend's module
    is skfeat's own copy (a user's module is copied on load), so it is changed in
    place. A convolution whose output is read is never folded; if a later call reads
    one that an earlier call folded, the weights are reloaded. Call with
    ``prepared.lock`` held.
    """
    import torch

    if prepared.tuned and not read & prepared.folded:
        return
    if read & prepared.folded:
        prepared.module, _ = _load(backend, prepared.device, classifier)
    prepared.protected |= read
    prepared.folded = frozenset(fold_conv_bn(prepared.module, prepared.protected))
    if prepared.device.type in ("cpu", "cuda"):
        prepared.module.to(memory_format=torch.channels_last)
    prepared.tuned = True
