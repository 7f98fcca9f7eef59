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
from skfeat._extract import PENULTIMATE, Architecture, LayerInfo, architecture, find_layer
from skfeat._layouts import MAP, MAP_LAST, TOKENS
from skfeat._pooling import PoolingSpec, resolve_pooling
from skfeat._preprocess import DataConfig

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
        """``<layer>_<pooling>_<index>``, zero-padded to at least four digits."""
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


def _tile(reads: Sequence[tuple[LayerInfo, PoolingSpec]]) -> tuple[Target, ...]:
    targets, start = [], 0
    for layer, pooling in reads:
        width = pooling.width(layer)
        targets.append(Target(layer, pooling, start, start + width))
        start += width
    return tuple(targets)


def build_plan(
    backend: Any,
    layers: Sequence[str],
    pooling: PoolingSpec,
    *,
    caching: bool,
    preprocessing: Any = None,
) -> RunPlan:
    """Resolve layer names and the pooling against the traced backbone.

    ``preprocessing`` (the estimator's parameter) replaces the source's recipe.

    Raises
    ------
    UnknownLayerError
        For a layer the backbone does not have, with close names.
    InvalidParameterError
        When the pooling does not apply to a layer, saying why.
    """
    config = resolve_preprocessing(preprocessing, backend.data_config, "PretrainedCNNFeaturizer")
    traced = architecture(backend, config.crop_size)
    infos = [find_layer(traced, name, backend.label) for name in layers]
    return RunPlan(
        backend=backend,
        data_config=config,
        classifier=traced.classifier,
        targets=_tile([(info, pooling) for info in infos]),
        stages=cache_stages(traced) if caching else (),
    )


def cache_stages(traced: Architecture) -> tuple[LayerInfo, ...]:
    """The usual stages of a backbone, which a cache miss stores for other candidates.

    For maps: the top-level modules giving feature maps (``layer1`` ... ``layer4`` of a
    ResNet), and the children of a top-level container whose children span several
    resolutions (``blocks.N`` of a timm EfficientNet, ``features.N`` of torchvision's
    MobileNet, EfficientNet, ConvNeXt and Swin). For tokens: the blocks of a vision
    transformer (numbered blocks of one module, with token outputs of one shape:
    timm ``blocks.N``, torchvision ``encoder.layers.encoder_layer_N``) and the last
    token output after them (timm ``norm``, torchvision ``encoder.ln``). And
    ``"penultimate"``.
    """
    layers = traced.layers
    maps = {n: info for n, info in layers.items() if info.layout.kind in (MAP, MAP_LAST)}
    tokens = {n: info for n, info in layers.items() if info.layout.kind == TOKENS}
    chosen = {name for name in maps if "." not in name}
    for parent in {name.partition(".")[0] for name in maps}:  # a ModuleList has no output
        children = _children(parent, maps)
        if len({_resolution(maps[name]) for name in children}) >= 2:
            chosen.update(children)
    blocks: set[str] = set()
    for parent in {name.rpartition(".")[0] for name in tokens}:
        for run in _numbered_runs(_children(parent, tokens)):
            containers = all(any(n.startswith(name + ".") for n in layers) for name in run)
            if len(run) >= 2 and containers and len({tokens[name].shape for name in run}) == 1:
                blocks.update(run)
    if blocks:
        last_block = max(layers[name].order for name in blocks)
        after = [
            info
            for name, info in tokens.items()
            if info.order > last_block and not any(b.startswith(name + ".") for b in blocks)
        ]
        chosen |= blocks
        if after:  # the trunk's token output: its final norm
            chosen.add(max(after, key=lambda info: info.order).name)
    if PENULTIMATE in layers:
        chosen.add(PENULTIMATE)
    return tuple(sorted((layers[name] for name in chosen), key=lambda info: info.order))


def _children(parent: str, layers: dict[str, LayerInfo]) -> list[str]:
    prefix = parent + "." if parent else ""
    return [n for n in layers if n.startswith(prefix) and "." not in n[len(prefix) :]]


def _numbered_runs(names: list[str]) -> list[list[str]]:
    """Names numbered in sequence: ``blocks.0``, ``blocks.1`` or ``encoder_layer_1``.

    ``norm1`` and ``norm2`` are two parts of one block, not a sequence; the caller
    also keeps only runs of modules that contain others (blocks, not ``ln_1``).
    """
    runs: dict[str, list[str]] = {}
    for name in names:
        last = name.rpartition(".")[2]
        stem = last.rstrip("0123456789")
        if stem != last and (stem == "" or stem.endswith("_")):
            runs.setdefault(stem, []).append(name)
    return list(runs.values())


def _resolution(layer: LayerInfo) -> tuple[int, ...]:
    shape = layer.shape
    return shape[1:] if layer.layout.kind == MAP else shape[:2]
