"""The pooling registry: widths, components, what the cache stores, and who reads it."""

from __future__ import annotations

import re

import pytest
import torch

from skfeat import PretrainedCNNFeaturizer, list_poolings
from skfeat._extract import LayerInfo
from skfeat._layouts import Layout
from skfeat._pooling import (
    POOLINGS,
    pooled_width,
    pooling_synonyms,
    resolve_pooling,
    stored_components,
)
from skfeat.exceptions import InvalidParameterError

MAP = LayerInfo("stage", (8, 5, 3), 0, "stage", Layout("map"))
MAP_LAST = LayerInfo("stage", (5, 3, 8), 0, "stage", Layout("map_last"))
VECTOR = LayerInfo("penultimate", (8,), 1, "fc", Layout("vector"))
UNKNOWN = LayerInfo("odd", (4, 6), 2, "odd", Layout("unknown", reason="an output of shape (4, 6)"))


def test_widths_follow_the_layout():
    for layer in (MAP, MAP_LAST):
        widths = {name: pooled_width(name, layer) for name in POOLINGS}
        assert widths == {"avg": 8, "max": 8, "gem": 8, "avgmax": 16, "flatten": 120}
    assert pooled_width("avg", VECTOR) == pooled_width("flatten", VECTOR) == 8
    with pytest.raises(InvalidParameterError, match=r"pooling='gem' needs a spatial map"):
        pooled_width("gem", VECTOR)
    with pytest.raises(InvalidParameterError, match=r"Layer 'odd' gives an output of shape"):
        pooled_width("avg", UNKNOWN)


def pool(name, x, layer):
    return resolve_pooling(name).apply(x, layer)


def test_a_composite_is_its_components_concatenated():
    x = torch.rand(2, 8, 5, 3)
    both = pool("avgmax", x, MAP)
    torch.testing.assert_close(both, torch.cat([pool("avg", x, MAP), pool("max", x, MAP)], 1))
    assert resolve_pooling("avgmax").components(MAP) == ("avg", "max")
    assert resolve_pooling("gem").components(MAP) == ("gem",)


def test_channel_last_maps_pool_over_their_positions():
    x = torch.rand(2, 8, 5, 3)
    last = x.permute(0, 2, 3, 1)
    for name in POOLINGS:
        torch.testing.assert_close(pool(name, last, MAP_LAST), pool(name, x, MAP))


def test_a_vector_is_stored_once_whatever_the_pooling():
    names = {resolve_pooling(name).components(VECTOR) for name in ("avg", "max", "flatten")}
    assert len(names) == 1 and stored_components(VECTOR) in names
    assert stored_components(MAP) == tuple(p.name for p in POOLINGS.values() if p.stored)
    assert "flatten" not in stored_components(MAP)  # as wide as the map: only on demand


def test_synonyms_point_at_registered_names():
    synonyms = pooling_synonyms()
    assert synonyms["mean"] == "avg" and synonyms["average"] == "avg"
    assert set(synonyms.values()) <= set(POOLINGS)
    assert not set(synonyms) & set(POOLINGS)


def test_docs_and_errors_list_what_the_registry_holds():
    assert list(list_poolings()) == list(POOLINGS)
    doc = PretrainedCNNFeaturizer.__doc__
    (line,) = [line for line in doc.splitlines() if line.strip().startswith("pooling :")]
    choices = re.search(r"\{(.*)\}", line).group(1)
    assert re.findall(r'"(\w+)"', choices) == list(POOLINGS)


def test_a_name_or_a_callable_is_decided_once():
    def center(x):
        return x[:, :, 1, 1]

    spec = resolve_pooling(center)
    assert (spec.name, spec.cacheable, spec.width(MAP)) == ("center", False, 8)
    assert resolve_pooling(lambda x: x.mean((2, 3))).name == "custom"
    assert resolve_pooling("avg").cacheable
    with pytest.raises(InvalidParameterError, match=r"Did you mean 'avg'\?"):
        resolve_pooling("mean")
