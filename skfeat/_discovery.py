"""``list_layers``: what a backbone offers to read."""

from __future__ import annotations

from typing import Any

__all__ = ["list_layers"]


def list_layers(model: Any, weights: Any = "DEFAULT") -> dict[str, tuple[int, ...]]:
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

    Returns
    -------
    layers : dict of str to tuple of int
        Layer name to output shape for one image, ``(C, H, W)`` or ``(D,)``, in forward
        order, ending with the aliases ``"penultimate"`` (when the model ends in a
        linear classifier) and ``"logits"``.

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
    """
    from skfeat._backends import resolve_backend
    from skfeat._featurizer import _architecture

    backend = resolve_backend(model, weights)
    architecture = _architecture(backend, backend.data_config().crop_size)
    ordered = sorted(architecture.layers.values(), key=lambda info: info.order)
    return {info.name: info.shape for info in ordered}
