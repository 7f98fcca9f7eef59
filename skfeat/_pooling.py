"""Pooling: how one layer's output ``(N, ...)`` becomes vectors ``(N, D)``.

The registry :data:`POOLINGS` is the one place a pooling is described: what it
computes on each layout, its width, the elementary poolings it concatenates
(``avgmax`` is ``avg`` then ``max``), the words people use for it, and whether the
activation cache stores it for other grid candidates. Widths are known before any
image is read; the parameter checks, :func:`list_poolings`, the cache and the
command line all read this registry. The functions use tensor methods only, so the
module imports without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from skfeat._layouts import MAP, MAP_LAST, UNKNOWN, VECTOR, Layout
from skfeat._validation import check_choice
from skfeat.exceptions import InvalidParameterError

__all__ = [
    "GEM_P",
    "POOLINGS",
    "VECTOR_COMPONENT",
    "Pooling",
    "PoolingSpec",
    "list_poolings",
    "pooled_width",
    "pooling_synonyms",
    "resolve_pooling",
    "stored_components",
]

GEM_P = 3.0
_GEM_EPS = 1e-6
# Every pass-through pooling of a vector gives the vector itself: it is stored once, so.
VECTOR_COMPONENT = "avg"


class LayerLike(Protocol):
    """What pooling needs to know of a layer."""

    name: str
    shape: tuple[int, ...]
    layout: Layout


def _avg(x: Any) -> Any:
    return x.mean(dim=(2, 3))


def _max(x: Any) -> Any:
    return x.amax(dim=(2, 3))


def _gem(x: Any) -> Any:
    # Generalised mean (Radenović et al. 2018); the clamp keeps the root real.
    return x.clamp(min=_GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


def _flatten(x: Any) -> Any:
    return x.flatten(1)


@dataclass(frozen=True)
class Pooling:
    """A named pooling.

    Parameters
    ----------
    name : str
        Registry name, used in feature names.
    description : str
        One line for :func:`list_poolings`.
    on_maps : callable or None
        ``(N, C, H, W) -> (N, D)`` on channel-first maps (channel-last maps are
        permuted first); None for a composite.
    on_vectors : bool
        Whether it means anything on an already pooled ``(N, D)`` output, where it
        passes the vector through unchanged.
    keeps_positions : bool
        Whether every position is kept (width ``C * H * W``) rather than one value
        per channel.
    components : tuple of str
        For a composite, the elementary poolings it concatenates, in order.
    stored : bool
        Whether a cache miss stores it, for the other candidates of a grid search.
    synonyms : tuple of str
        Other names people use for it, for did-you-mean hints.
    """

    name: str
    description: str
    on_maps: Callable[[Any], Any] | None = None
    on_vectors: bool = False
    keeps_positions: bool = False
    components: tuple[str, ...] = ()
    stored: bool = False
    synonyms: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        """The elementary poolings it is made of: itself, or its components."""
        return self.components or (self.name,)


POOLINGS: dict[str, Pooling] = {
    p.name: p
    for p in (
        Pooling(
            "avg",
            "mean over positions",
            _avg,
            on_vectors=True,
            stored=True,
            synonyms=("mean", "average", "avgpool", "avg_pool", "gap", "global_average"),
        ),
        Pooling(
            "max",
            "maximum over positions",
            _max,
            on_vectors=True,
            stored=True,
            synonyms=("maximum", "maxpool", "max_pool", "gmp", "global_max"),
        ),
        Pooling(
            "gem",
            f"generalised mean, p={GEM_P:g}",
            _gem,
            stored=True,
            synonyms=("generalized_mean", "generalised_mean", "gem_pool", "power_mean"),
        ),
        Pooling(
            "avgmax",
            "avg and max concatenated",
            components=("avg", "max"),
            synonyms=("avg_max", "avgmaxpool", "meanmax", "mean_max", "concat"),
        ),
        Pooling(
            "flatten",
            "every position kept, C*H*W values",
            _flatten,
            on_vectors=True,
            keeps_positions=True,
            synonyms=("none", "raw", "all", "identity", "flat"),
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


def pooling_synonyms() -> dict[str, str]:
    """Other words for the named poolings (``"mean"`` -> ``"avg"``), for hints."""
    return {word: p.name for p in POOLINGS.values() for word in p.synonyms}


def pooled_width(pooling: str, layer: LayerLike) -> int:
    """Width of the named ``pooling`` applied to ``layer``'s output for one image.

    Raises
    ------
    InvalidParameterError
        Saying why, when the pooling does not apply to that layer.
    """
    spec = POOLINGS[pooling]
    kind, shape = layer.layout.kind, layer.shape
    if kind == VECTOR:
        if spec.on_vectors:
            return shape[0]
        raise InvalidParameterError(
            f"pooling={pooling!r} needs a spatial map, but layer {layer.name!r} gives vectors "
            f"of {shape[0]} values. Use pooling='avg' (vectors pass through unchanged) "
            "or pick a convolutional layer (see skfeat.list_layers)."
        )
    if kind in (MAP, MAP_LAST):
        channels = layer.layout.channels(shape)
        return sum(
            _product(shape) if POOLINGS[part].keeps_positions else channels for part in spec.parts
        )
    reason = layer.layout.reason if kind == UNKNOWN else f"a layout {kind!r}"
    raise InvalidParameterError(
        f"Layer {layer.name!r} gives {reason}; skfeat pools maps (C, H, W) and vectors (D,). "
        "Pick another layer (see skfeat.list_layers), or pass a callable as pooling."
    )


def _product(shape: tuple[int, ...]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result


def stored_components(layer: LayerLike) -> tuple[str, ...]:
    """What a cache miss stores of a stage: every stored pooling that applies to it."""
    if layer.layout.kind == VECTOR:
        return (VECTOR_COMPONENT,)
    return tuple(p.name for p in POOLINGS.values() if p.stored)


@dataclass(frozen=True)
class PoolingSpec:
    """The ``pooling`` parameter, resolved: a registry entry or the user's callable.

    Whether a pooling is named or a callable is decided here, once; everything
    after asks the spec (its name in feature names, its width on a layer, how to
    apply it, whether the cache can key it and what it stores).

    Parameters
    ----------
    name : str
        The registry name, or the callable's own name (``"custom"`` for a lambda).
    function : callable or None, default=None
        The user's callable; None for a named pooling.
    """

    name: str
    function: Callable[[Any], Any] | None = None

    @property
    def cacheable(self) -> bool:
        """Named poolings only: a callable has no stable identity to key entries by."""
        return self.function is None

    def width(self, layer: LayerLike) -> int:
        """The number of features on ``layer`` (a callable runs once on zeros)."""
        if self.function is None:
            return pooled_width(self.name, layer)
        import torch

        result = self.apply(torch.zeros((1, *layer.shape)), layer)
        if not isinstance(result, torch.Tensor) or result.ndim != 2 or result.shape[0] != 1:
            raise InvalidParameterError(
                f"The pooling callable {self.name!r} must map (N, C, H, W) to "
                f"(N, D); on layer {layer.name!r} it returned "
                f"{getattr(result, 'shape', type(result).__name__)}."
            )
        return int(result.shape[1])

    def components(self, layer: LayerLike) -> tuple[str, ...]:
        """The elementary poolings whose results, concatenated, are this one on ``layer``."""
        if layer.layout.kind == VECTOR:
            return (VECTOR_COMPONENT,)
        return POOLINGS[self.name].parts

    def apply(self, x: Any, layer: LayerLike) -> Any:
        """Pool ``x``, the batch of ``layer``'s outputs, into ``(N, D)``.

        A callable receives maps as ``(N, C, H, W)`` and vectors as ``(N, D, 1, 1)``.
        Whether a named pooling applies was checked in fit, by :meth:`width`.
        """
        kind = layer.layout.kind
        if self.function is not None:
            return self.function(x if kind != VECTOR else x[:, :, None, None])
        if kind == VECTOR:
            return x
        if kind == MAP_LAST:
            x = x.permute(0, 3, 1, 2)
        parts = [_on_maps(part, x) for part in POOLINGS[self.name].parts]
        if len(parts) == 1:
            return parts[0]
        import torch

        return torch.cat(parts, dim=1)


def _on_maps(name: str, x: Any) -> Any:
    function = POOLINGS[name].on_maps
    assert function is not None, name  # elementary poolings all have one
    return function(x)


def resolve_pooling(pooling: Any, owner: str = "PretrainedCNNFeaturizer") -> PoolingSpec:
    """The spec of a ``pooling`` parameter; a near-miss name gets a did-you-mean.

    Examples
    --------
    >>> resolve_pooling("gem").name, resolve_pooling("gem").cacheable
    ('gem', True)
    >>> def center(x):
    ...     return x[:, :, 0, 0]
    >>> resolve_pooling(center).name, resolve_pooling(center).cacheable
    ('center', False)
    """
    if callable(pooling) and not isinstance(pooling, str):
        name = getattr(pooling, "__name__", type(pooling).__name__)
        return PoolingSpec("custom" if name == "<lambda>" else name, pooling)
    check_choice(
        pooling,
        POOLINGS,
        "pooling",
        owner,
        expected=f"a str among {sorted(POOLINGS)} or a callable",
        synonyms=pooling_synonyms(),
    )
    return PoolingSpec(pooling)
