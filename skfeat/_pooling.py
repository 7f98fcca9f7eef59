"""Pooling: how a feature map ``(N, C, H, W)`` becomes a vector ``(N, D)``.

The registry :data:`POOLINGS` maps a name to a :class:`Pooling`, which knows its
function and the width it produces, so feature widths are known before any image
is read. The functions only use tensor methods, so this module imports without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GEM_P", "POOLINGS", "Pooling", "list_poolings", "pool_vectors", "pooled_width"]

GEM_P = 3.0
_GEM_EPS = 1e-6


def _avg(x: Any) -> Any:
    return x.mean(dim=(2, 3))


def _max(x: Any) -> Any:
    return x.amax(dim=(2, 3))


def _gem(x: Any) -> Any:
    # Generalised mean (Radenović et al. 2018); the clamp keeps the root real.
    return x.clamp(min=_GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


def _avgmax(x: Any) -> Any:
    import torch

    return torch.cat([_avg(x), _max(x)], dim=1)


def _flatten(x: Any) -> Any:
    return x.flatten(1)


@dataclass(frozen=True)
class Pooling:
    """A named pooling of spatial maps.

    Parameters
    ----------
    name : str
        Registry name, used in feature names.
    function : callable
        ``(N, C, H, W) -> (N, D)`` on torch tensors.
    width : callable
        ``(C, H, W) -> D``, the output width for one map shape.
    description : str
        One line for :func:`list_poolings`.
    on_vectors : bool
        Whether the pooling means anything on an already pooled ``(N, D)`` output.
        Where it does, a vector passes through unchanged.
    """

    name: str
    function: Callable[[Any], Any]
    width: Callable[[tuple[int, ...]], int]
    description: str
    on_vectors: bool


POOLINGS: dict[str, Pooling] = {
    p.name: p
    for p in (
        Pooling("avg", _avg, lambda s: s[0], "mean over positions", True),
        Pooling("max", _max, lambda s: s[0], "maximum over positions", True),
        Pooling("gem", _gem, lambda s: s[0], f"generalised mean, p={GEM_P:g}", False),
        Pooling("avgmax", _avgmax, lambda s: 2 * s[0], "avg and max concatenated", False),
        Pooling(
            "flatten",
            _flatten,
            lambda s: s[0] * s[1] * s[2],
            "every position kept, C*H*W values",
            True,
        ),
    )
}


def list_poolings() -> dict[str, str]:
    """List the named poolings, with what each computes.

    Any callable ``(N, C, H, W) -> (N, D)`` is accepted as well.

    Returns
    -------
    poolings : dict of str to str
        Name to a one-line description, in registry order.

    See Also
    --------
    list_layers : The layers whose outputs are pooled.
    PretrainedCNNFeaturizer : Applies the pooling named by ``pooling=``.

    Examples
    --------
    >>> from skfeat import list_poolings
    >>> list(list_poolings())
    ['avg', 'max', 'gem', 'avgmax', 'flatten']
    """
    return {name: pooling.description for name, pooling in POOLINGS.items()}


def pooled_width(pooling: str, shape: tuple[int, ...], layer: str) -> int:
    """Width of ``pooling`` applied to one output of ``shape`` (without the batch axis).

    Raises a ValueError saying why when the pooling does not apply to that output.
    """
    spec = POOLINGS[pooling]
    if len(shape) == 3:
        return spec.width(shape)
    if len(shape) == 1:
        if spec.on_vectors:
            return shape[0]
        raise ValueError(
            f"pooling={pooling!r} needs a spatial map, but layer {layer!r} gives vectors of "
            f"{shape[0]} values. Use pooling='avg' (vectors pass through unchanged) "
            "or pick a convolutional layer (see skfeat.list_layers)."
        )
    raise ValueError(
        f"Layer {layer!r} gives outputs of shape {shape}; skfeat pools maps (C, H, W) and "
        "vectors (D,). Pick another layer (see skfeat.list_layers)."
    )


def pool_vectors(pooling: str | Callable[[Any], Any], x: Any) -> Any:
    """Apply ``pooling`` to a map ``(N, C, H, W)`` or to vectors ``(N, D)``.

    Vectors pass through the poolings that mean the same on one position (``avg``,
    ``max``, ``flatten``); a callable receives them as ``(N, D, 1, 1)``. Whether a
    pooling applies is checked once, in fit, by :func:`pooled_width`.
    """
    if callable(pooling):
        return pooling(x if x.ndim == 4 else x[:, :, None, None])
    if x.ndim == 2:
        return x
    return POOLINGS[pooling].function(x)
