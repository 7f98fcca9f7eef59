"""The run plan: everything ``fit`` resolves that does not depend on the images.

A :class:`RunPlan` is immutable and holds names, shapes and the backend handle, no
weights, so it pickles small. It says which backbone to run, which layers to read
with which pooling, where each read goes in the output row, the feature names, and
which stages a cache miss stores for other grid candidates. The engine
(:mod:`skfeat._runtime`) runs a plan; the cache (:mod:`skfeat._cache`) derives plans
of its own from it, for the components it stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skfeat._backends._recipe import resolve_preprocessing
from skfeat._blocks import children, final_norm, token_blocks, token_layers, trunk_output
from skfeat._extract import PENULTIMATE, Architecture, LayerInfo, architecture, find_layer
from skfeat._layouts import MAP, MAP_LAST, TOKENS
from skfeat._pooling import POOLINGS, PoolingSpec, resolve_pooling
from skfeat._preprocess import DataConfig
from skfeat.exceptions import InvalidParameterError

__all__ = ["RunPlan", "Target", "build_plan", "cache_stages"]


@dataclass(frozen=True)
class Target:
    """One (layer, pooling) read, and the columns ``[start, stop)`` it fills."""

    layer: LayerInfo
    pooling: PoolingSpec
    start: int
    stop: int


@dataclass(frozen=True)
class RunPlan:
    """What to compute for each image, resolved once in ``fit``.

    Parameters
    ----------
    backend : Backend
        The backbone and its weights (names and paths only).
    data_config : DataConfig
        The preprocessing recipe of the weights.
    classifier : str or None
        The final linear classifier, whose input is ``"penultimate"``.
    targets : tuple of Target
        The reads, in output order; their columns tile ``[0, n_features)``.
    stages : tuple of LayerInfo
        The layers a cache miss stores for other candidates (empty without a cache).
    """

    backend: Any
    data_config: DataConfig
    classifier: str | None
    targets: tuple[Target, ...]
    stages: tuple[LayerInfo, ...] = ()

    @property
    def n_features(self) -> int:
        return self.targets[-1].stop if self.targets else 0

    @property
    def cacheable(self) -> bool:
        """Named poolings only: a callable has no stable identity to key entries by."""
        return all(target.pooling.cacheable for target in self.targets)

    @property
    def reads(self) -> list[tuple[LayerInfo, PoolingSpec]]:
        """The ``(layer, pooling)`` pairs the extraction computes, in output order."""
        return [(target.layer, target.pooling) for target in self.targets]

    def feature_names(self) -> list[str]:
        """``<layer>_<pooling>_<index>``, zero-padded to at least four digits.

        A block read through the model's final norm is named with it:
        ``blocks.9+norm_cls_0042``.
        """
        names = []
        for target in self.targets:
            width = target.stop - target.start
            digits = max(4, len(str(width - 1)))
            prefix = f"{target.layer.name}_{target.pooling.name}"
            names += [f"{prefix}_{i:0{digits}d}" for i in range(width)]
        return names

    def reading(self, reads: Sequence[tuple[LayerInfo, str]]) -> RunPlan:
        """The same backbone and recipe, reading named ``(layer, pooling)`` pairs instead."""
        specs = [(layer, resolve_pooling(pooling)) for layer, pooling in reads]
        return dataclasses.replace(self, targets=_tile(specs))


def _tile(
    reads: Sequence[tuple[LayerInfo, PoolingSpec]], token_layers: Sequence[str] | None = None
) -> tuple[Target, ...]:
    targets, start = [], 0
    for layer, pooling in reads:
        width = pooling.width(layer, token_layers)
        targets.append(Target(layer, pooling, start, start + width))
        start += width
    return tuple(targets)


def build_plan(
    backend: Any,
    layers: Sequence[str],
    poolings: Sequence[PoolingSpec],
    *,
    caching: bool,
    intermediate_norm: str = "final",
    preprocessing: Any = None,
) -> RunPlan:
    """Resolve layer names, their poolings and the norm policy against the traced backbone.

    ``poolings`` holds one spec for every layer, or one for all of them. Negative
    indices (``"blocks.-1"``) are resolved to the real names here, once. With
    ``intermediate_norm="final"`` every transformer block read (and stored for the
    cache) gets the model's final norm (:mod:`skfeat._blocks`).

    ``preprocessing`` (the estimator's parameter) replaces the source's recipe.

    Raises
    ------
    UnknownLayerError
        For a layer the backbone does not have, with close names.
    InvalidParameterError
        When a pooling does not apply to a layer, saying why; when two names are
        the same layer.
    """
    config = resolve_preprocessing(preprocessing, backend.data_config, "PretrainedCNNFeaturizer")
    traced = architecture(backend, config.crop_size)
    infos = [find_layer(traced, name, backend.label) for name in layers]
    _check_distinct(layers, infos)
    if len(poolings) == 1:
        poolings = list(poolings) * len(infos)
    blocks = set(token_blocks(traced))
    norm = None
    if intermediate_norm == "final" and (caching or any(i.name in blocks for i in infos)):
        norm = final_norm(backend, traced, config.crop_size)

    def read(info: LayerInfo) -> LayerInfo:
        if norm is None or info.name not in blocks:
            return info
        return dataclasses.replace(info, name=f"{info.name}+{norm.label}", norm=norm)

    reads = [(read(info), pooling) for info, pooling in zip(infos, poolings, strict=True)]
    for info, pooling in reads:
        _check_pooled_norm(info, pooling)
    advice = token_layers(traced, class_token=True)
    return RunPlan(
        backend=backend,
        data_config=config,
        classifier=traced.classifier,
        targets=_tile(reads, advice),
        # A model file's tensors have no module tree to find its stages in.
        stages=(
            tuple(read(info) for info in cache_stages(traced, backend.stage_names()))
            if caching and backend.source != "file"
            else ()
        ),
    )


def _check_distinct(names: Sequence[str], infos: Sequence[LayerInfo]) -> None:
    seen: dict[str, str] = {}
    for name, info in zip(names, infos, strict=True):
        if info.name in seen:
            raise InvalidParameterError(
                f"layer names {seen[info.name]!r} and {name!r} are the same layer, "
                f"{info.name!r}. Name each layer once."
            )
        seen[info.name] = name


def _check_pooled_norm(layer: LayerInfo, pooling: PoolingSpec) -> None:
    """A norm of pooled vectors (``fc_norm``) applies to named poolings of channels only."""
    norm = layer.norm
    if norm is None or norm.after_pooling is None:
        return
    if pooling.function is None and not POOLINGS[pooling.name].keeps_positions:
        return
    what = "a callable pooling" if pooling.function is not None else f"pooling={pooling.name!r}"
    raise InvalidParameterError(
        f"intermediate_norm='final' on layer {layer.layer_name!r} applies the model's "
        f"{norm.after_pooling!r}, which normalises pooled vectors of {layer.shape[-1]} "
        f"values, but {what} does not give such vectors. Use a named pooling ('avg', "
        "'cls', 'gem', ...), or intermediate_norm='none' to read the block as it is."
    )


def cache_stages(
    traced: Architecture, declared: Sequence[str] | None = None
) -> tuple[LayerInfo, ...]:
    """The usual stages of a backbone, which a cache miss stores for other candidates.

    First the stages the model declares (``declared``: timm's ``feature_info``, from
    :meth:`~skfeat._backends._base.Backend.stage_names`), wherever they are nested.
    Then, for every backbone, the stages found by their names and shapes, which also
    serve a source that declares none (torchvision, a user's module) and keep what a
    declaration leaves out (the EfficientNet blocks within a resolution, a ViT's final
    norm). For maps: the top-level modules giving feature maps (``layer1`` ...
    ``layer4`` of a ResNet), and the children of a top-level container whose children
    span several resolutions (``blocks.N`` of a timm EfficientNet, ``features.N`` of
    torchvision's MobileNet, EfficientNet, ConvNeXt and Swin). For tokens: the blocks
    of a vision transformer (numbered blocks of one module, with token outputs of one
    shape: timm ``blocks.N``, torchvision ``encoder.layers.encoder_layer_N``) and the
    last token output after them (timm ``norm``, torchvision ``encoder.ln``). And
    ``"penultimate"``.
    """
    layers = traced.layers
    maps = {n: info for n, info in layers.items() if info.layout.kind in (MAP, MAP_LAST)}
    tokens = {n: info for n, info in layers.items() if info.layout.kind == TOKENS}
    chosen = {name for name in declared or () if name in maps or name in tokens}
    chosen.update(name for name in maps if "." not in name)
    for parent in {name.partition(".")[0] for name in maps}:  # a ModuleList has no output
        stage = children(parent, list(maps))
        if len({_resolution(maps[name]) for name in stage}) >= 2:
            chosen.update(stage)
    blocks = token_blocks(traced)
    chosen.update(blocks)
    output = trunk_output(traced, blocks)
    if output is not None:  # the trunk's token output: its final norm
        chosen.add(output.name)
    if PENULTIMATE in layers:
        chosen.add(PENULTIMATE)
    return tuple(sorted((layers[name] for name in chosen), key=lambda info: info.order))


def _resolution(layer: LayerInfo) -> tuple[int, ...]:
    shape = layer.shape
    return shape[1:] if layer.layout.kind == MAP else shape[:2]
