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

from skfeat._extract import PENULTIMATE, Architecture, LayerInfo, architecture, find_layer
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
    backend: Any, layers: Sequence[str], pooling: PoolingSpec, *, caching: bool
) -> RunPlan:
    """Resolve layer names and the pooling against the traced backbone.

    Raises
    ------
    UnknownLayerError
        For a layer the backbone does not have, with close names.
    InvalidParameterError
        When the pooling does not apply to a layer, saying why.
    """
    config = backend.data_config()
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

    These are the top-level modules giving feature maps (``layer1`` ... ``layer4``
    of a ResNet), the children of a top-level container whose children span several
    resolutions (``blocks.N`` of a timm EfficientNet, ``features.N`` of torchvision's
    MobileNet, EfficientNet and VGG), and ``"penultimate"``.
    """
    layers = traced.layers
    maps = {name: info for name, info in layers.items() if len(info.shape) == 3}
    chosen = {name for name in maps if "." not in name}
    for parent in list(chosen):
        children = [
            name
            for name in maps
            if name.startswith(parent + ".") and "." not in name[len(parent) + 1 :]
        ]
        if len({maps[name].shape[1:] for name in children}) >= 2:
            chosen.update(children)
    if PENULTIMATE in layers:
        chosen.add(PENULTIMATE)
    return tuple(sorted((layers[name] for name in chosen), key=lambda info: info.order))
