"""Pooling: how one layer's output ``(N, ...)`` becomes vectors ``(N, D)``, by layout.

The registry :data:`POOLINGS` is the one place a pooling is described: what it
computes on each layout, its width, the elementary poolings it concatenates
(``avgmax`` is ``avg`` then ``max``), the words people use for it, and whether the
activation cache stores it for other grid candidates. The parameter checks,
:func:`list_poolings`, the cache, :func:`skfeat.list_layers` and the command line
all read it.

On maps, channel-first ``(C, H, W)`` or channel-last ``(H, W, C)``, the positions
are the ``H x W`` grid. On tokens ``(T, C)``, the positions are the patch tokens:
the prefix tokens (class, distillation, registers) are left out, as timm does, and
``cls`` reads the class token itself. Vectors pass through the poolings that mean
the same on one position. The functions use tensor methods only, so the module
imports without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skfeat._layouts import MAP, MAP_LAST, TOKENS, UNKNOWN, VECTOR, Layout
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
    """What pooling needs to know of a layer (read only: layers are frozen dataclasses)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def layout(self) -> Layout: ...


def _positions(x: Any, layout: Layout) -> tuple[Any, tuple[int, ...]]:
    """The values to pool over and their axes: a map's grid, or the patch tokens."""
    if layout.kind == TOKENS:
        return x[:, layout.prefix_tokens :], (1,)
    return x, (2, 3)


def _avg(x: Any, layout: Layout) -> Any:
    values, axes = _positions(x, layout)
    return values.mean(dim=axes)


def _max(x: Any, layout: Layout) -> Any:
    values, axes = _positions(x, layout)
    return values.amax(dim=axes)


def _gem(x: Any, layout: Layout) -> Any:
    # Generalised mean (Radenović et al. 2018); the clamp keeps the root real.
    values, axes = _positions(x, layout)
    return values.clamp(min=_GEM_EPS).pow(GEM_P).mean(dim=axes).pow(1.0 / GEM_P)


def _cls(x: Any, layout: Layout) -> Any:
    return x[:, 0]


def _flatten(x: Any, layout: Layout) -> Any:
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
    function : callable or None
        ``(x, layout) -> (N, D)``, where ``x`` is a batch of channel-first maps
        ``(N, C, H, W)`` (channel-last maps are permuted first) or of tokens
        ``(N, T, C)``; None for a composite.
    layouts : tuple of str
        The layouts it applies to (besides vectors, see ``on_vectors``).
    on_vectors : bool
        Whether it means anything on an already pooled ``(N, D)`` output, where it
        passes the vector through unchanged.
    keeps_positions : bool
        Whether every position is kept (width: every value of the output) rather
        than one value per channel.
    needs_class_token : bool
        Whether it reads the class token (token layers that have one).
    components : tuple of str
        For a composite, the elementary poolings it concatenates, in order.
    stored : bool
        Whether a cache miss stores it, for the other candidates of a grid search.
    synonyms : tuple of str
        Other names people use for it, for did-you-mean hints.
    """

    name: str
    description: str
    function: Callable[[Any, Layout], Any] | None = None
    layouts: tuple[str, ...] = (MAP, MAP_LAST, TOKENS)
    on_vectors: bool = False
    keeps_positions: bool = False
    needs_class_token: bool = False
    components: tuple[str, ...] = ()
    stored: bool = False
    synonyms: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[Pooling, ...]:
        """The elementary poolings it is made of: itself, or its components."""
        if not self.components:
            return (self,)
        return tuple(POOLINGS[name] for name in self.components)


POOLINGS: dict[str, Pooling] = {
    p.name: p
    for p in (
        Pooling(
            "avg",
            "mean over positions (the patch tokens of a token layer)",
            _avg,
            on_vectors=True,
            stored=True,
            synonyms=("mean", "average", "avgpool", "avg_pool", "gap", "global_average"),
        ),
        Pooling(
            "max",
            "maximum over positions (the patch tokens of a token layer)",
            _max,
            on_vectors=True,
            stored=True,
            synonyms=("maximum", "maxpool", "max_pool", "gmp", "global_max"),
        ),
        Pooling(
            "gem",
            f"generalised mean over positions, p={GEM_P:g}",
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
            "cls",
            "the class token of a token layer",
            _cls,
            layouts=(TOKENS,),
            needs_class_token=True,
            stored=True,
            synonyms=("cls_token", "class_token", "class", "token", "first_token"),
        ),
        Pooling(
            "clsavg",
            "class token then mean of the patch tokens (DINOv2's linear probe)",
            components=("cls", "avg"),
            synonyms=("cls_avg", "cls_mean", "clsmean", "dinov2"),
        ),
        Pooling(
            "flatten",
            "every value kept, in order (C*H*W, or T*C with the prefix tokens first)",
            _flatten,
            on_vectors=True,
            keeps_positions=True,
            synonyms=("none", "raw", "all", "identity", "flat"),
        ),
    )
}


def list_poolings() -> dict[str, str]:
    """List the named poolings, with what each computes.

    Any callable is accepted as well: it receives the layer's output batch in the
    layer's own layout (see :func:`list_layers`) and returns ``(N, D)``.

    Returns
    -------
    poolings : dict of str to str
        Name to a one-line description, in registry order.

    See Also
    --------
    list_layers : The layers whose outputs are pooled, with their layouts.
    PretrainedCNNFeaturizer : Applies the pooling named by ``pooling=``.

    Examples
    --------
    >>> from skfeat import list_poolings
    >>> list(list_poolings())
    ['avg', 'max', 'gem', 'avgmax', 'cls', 'clsavg', 'flatten']
    """
    return {name: pooling.description for name, pooling in POOLINGS.items()}


def pooling_synonyms() -> dict[str, str]:
    """Other words for the named poolings (``"mean"`` -> ``"avg"``), for hints."""
    return {word: p.name for p in POOLINGS.values() for word in p.synonyms}


def _product(shape: tuple[int, ...]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result


def _token_advice(token_layers: Sequence[str] | None) -> str:
    """Which layers to read instead, when the model's token layers are known."""
    if token_layers is None:
        return "pick a token layer of a vision transformer (see skfeat.list_layers)"
    if not token_layers:
        return "pick another model: this one has no token layer with a class token"
    named = [f"{name!r}" for name in token_layers]
    if len(named) > 4:
        named = [*named[:2], "...", *named[-2:]]
    return f"read a token layer with a class token: {', '.join(named)}"


def _refusal(
    pooling: Pooling, layer: LayerLike, token_layers: Sequence[str] | None = None
) -> str | None:
    """Why ``pooling`` does not apply to ``layer``, or None when it does.

    ``token_layers``, the model's token layers with a class token, are named in the
    advice when given.
    """
    layout, shape = layer.layout, layer.shape
    if layout.kind == UNKNOWN:
        return (
            f"layer {layer.name!r} gives {layout.reason}, so skfeat cannot tell its channels "
            "from its positions. Pick another layer (see skfeat.list_layers), or pass a "
            "callable as pooling: it receives the layer's output as it is."
        )
    needs_class_token = any(part.needs_class_token for part in pooling.parts)
    if layout.kind == VECTOR:
        if pooling.components or not pooling.on_vectors:
            if needs_class_token:
                instead = _token_advice(token_layers)
            else:
                instead = "pick a layer with a spatial map or tokens (see skfeat.list_layers)"
            need = "a class token" if needs_class_token else "a spatial map"
            return (
                f"pooling={pooling.name!r} needs {need}, but layer {layer.name!r} gives vectors "
                f"of {shape[0]} values. Use pooling='avg' (vectors pass through unchanged) or "
                f"{instead}."
            )
        return None
    for part in pooling.parts:
        if layout.kind not in part.layouts:
            if part.needs_class_token:
                what = "reads the class token of a token layer"
            else:
                what = "does not apply to this layout"
            return (
                f"pooling={pooling.name!r} {what}, but layer {layer.name!r} is a "
                f"{layout.describe()} of shape {shape}. Use pooling='avg' or 'gem', or "
                f"{_token_advice(token_layers)}."
            )
        if part.needs_class_token and not layout.class_token:
            prefix = layout.prefix_tokens
            return (
                f"pooling={pooling.name!r} reads the class token, but layer {layer.name!r} has "
                f"none (a {layout.describe()}). Use pooling='avg' (the mean of the patch "
                "tokens) or 'gem'"
                + (", or 'flatten' to keep the prefix tokens too." if prefix else ".")
            )
    return None


def pooled_width(pooling: str, layer: LayerLike, token_layers: Sequence[str] | None = None) -> int:
    """Width of the named ``pooling`` applied to ``layer``'s output for one image.

    Raises
    ------
    InvalidParameterError
        Saying why, when the pooling does not apply to that layer; naming
        ``token_layers`` (the model's token layers with a class token) when given.
    """
    spec = POOLINGS[pooling]
    refusal = _refusal(spec, layer, token_layers)
    if refusal is not None:
        raise InvalidParameterError(refusal)
    if layer.layout.kind == VECTOR:
        return layer.shape[0]
    channels = layer.layout.channels(layer.shape)
    return sum(_product(layer.shape) if part.keeps_positions else channels for part in spec.parts)


def stored_components(layer: LayerLike) -> tuple[str, ...]:
    """What a cache miss stores of a stage: every stored pooling that applies to it."""
    if layer.layout.kind == VECTOR:
        return (VECTOR_COMPONENT,)
    return tuple(p.name for p in POOLINGS.values() if p.stored and _refusal(p, layer) is None)


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

    def width(self, layer: LayerLike, token_layers: Sequence[str] | None = None) -> int:
        """The number of features on ``layer`` (a callable runs once on zeros).

        ``token_layers`` are named when a class-token pooling does not apply.
        """
        if self.function is None:
            return pooled_width(self.name, layer, token_layers)
        import torch

        result = self.apply(torch.zeros((1, *layer.shape)), layer)
        if not isinstance(result, torch.Tensor) or result.ndim != 2 or result.shape[0] != 1:
            raise InvalidParameterError(
                f"The pooling callable {self.name!r} must map a batch of layer outputs "
                f"(here {_batch_form(layer)}) to (N, D); on layer {layer.name!r} it returned "
                f"{getattr(result, 'shape', type(result).__name__)}."
            )
        return int(result.shape[1])

    def components(self, layer: LayerLike) -> tuple[str, ...]:
        """The elementary poolings whose results, concatenated, are this one on ``layer``."""
        if layer.layout.kind == VECTOR:
            return (VECTOR_COMPONENT,)
        return tuple(part.name for part in POOLINGS[self.name].parts)

    def apply(self, x: Any, layer: LayerLike, each: Callable[[Any], Any] | None = None) -> Any:
        """Pool ``x``, the batch of ``layer``'s outputs, into ``(N, D)``.

        A callable receives the batch in the layer's own layout (``(N, C, H, W)``,
        ``(N, H, W, C)``, ``(N, T, C)``), and vectors as ``(N, D, 1, 1)`` so that a
        map pooling works on them too. Whether a named pooling applies was checked
        in fit, by :meth:`width`. ``each``, when given, maps every elementary
        pooling's ``(N, C)`` result before they are concatenated: a model's norm of
        pooled vectors (timm's ``fc_norm``) applies to the class token and to the
        mean patch token of ``clsavg`` alike.
        """
        layout = layer.layout
        if self.function is not None:
            return self.function(x if layout.kind != VECTOR else x[:, :, None, None])
        if layout.kind == VECTOR:
            return x
        if layout.kind == MAP_LAST:
            x = x.permute(0, 3, 1, 2)
        parts = [_elementary(part, x, layout) for part in POOLINGS[self.name].parts]
        if each is not None:
            parts = [each(part) for part in parts]
        if len(parts) == 1:
            return parts[0]
        import torch

        return torch.cat(parts, dim=1)


def _elementary(pooling: Pooling, x: Any, layout: Layout) -> Any:
    assert pooling.function is not None, pooling.name  # every elementary pooling has one
    return pooling.function(x, layout)


def _batch_form(layer: LayerLike) -> str:
    forms = {MAP: "(N, C, H, W)", MAP_LAST: "(N, H, W, C)", TOKENS: "(N, T, C)"}
    return forms.get(layer.layout.kind, "(N, D, 1, 1)" if layer.layout.kind == VECTOR else "as is")


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
