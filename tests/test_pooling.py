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
# A DINOv2-style block: class token, 4 registers, then a 2 x 3 grid of patch tokens.
TOKENS = LayerInfo("blocks.3", (11, 8), 3, "blocks.3", Layout("tokens", 5, class_token=True))
REGISTERS = LayerInfo("blocks.3", (10, 8), 3, "blocks.3", Layout("tokens", 4, class_token=False))
MAP_POOLINGS = ["avg", "max", "gem", "avgmax", "flatten"]


def test_widths_follow_the_layout():
    for layer in (MAP, MAP_LAST):
        widths = {name: pooled_width(name, layer) for name in MAP_POOLINGS}
        assert widths == {"avg": 8, "max": 8, "gem": 8, "avgmax": 16, "flatten": 120}
    widths = {name: pooled_width(name, TOKENS) for name in POOLINGS}
    assert widths == {
        "avg": 8,
        "max": 8,
        "gem": 8,
        "avgmax": 16,
        "cls": 8,
        "clsavg": 16,
        "flatten": 88,
    }
    assert pooled_width("avg", VECTOR) == pooled_width("flatten", VECTOR) == 8


@pytest.mark.parametrize(
    ("pooling", "layer", "message"),
    [
        (
            "gem",
            VECTOR,
            r"pooling='gem' needs a spatial map, but layer 'penultimate' gives vectors",
        ),
        ("avgmax", VECTOR, r"pooling='avgmax' needs a spatial map"),
        ("cls", VECTOR, r"pooling='cls' needs a class token, but layer 'penultimate' gives"),
        ("cls", MAP, r"pooling='cls' reads the class token of a token layer, but layer 'stage' is"),
        ("clsavg", MAP_LAST, r"'clsavg' reads the class token of a token layer.*map \(H, W, C\)"),
        ("cls", REGISTERS, r"'cls' reads the class token, but layer 'blocks.3' has none"),
        ("avg", UNKNOWN, r"layer 'odd' gives an output of shape \(4, 6\), so skfeat cannot"),
    ],
)
def test_a_pooling_that_does_not_apply_says_why(pooling, layer, message):
    with pytest.raises(InvalidParameterError, match=message):
        pooled_width(pooling, layer)


def test_token_poolings_read_the_right_tokens():
    x = torch.rand(2, 11, 8)
    patches = x[:, 5:]
    torch.testing.assert_close(pool("cls", x, TOKENS), x[:, 0])
    torch.testing.assert_close(pool("avg", x, TOKENS), patches.mean(1))
    torch.testing.assert_close(pool("max", x, TOKENS), patches.amax(1))
    gem = patches.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    torch.testing.assert_close(pool("gem", x, TOKENS), gem)
    torch.testing.assert_close(pool("clsavg", x, TOKENS), torch.cat([x[:, 0], patches.mean(1)], 1))
    flat = pool("flatten", x, TOKENS)  # prefix tokens first, then the patch tokens in order
    torch.testing.assert_close(flat.reshape(2, 11, 8)[:, 5:].mean(1), pool("avg", x, TOKENS))
    assert resolve_pooling("clsavg").components(TOKENS) == ("cls", "avg")


def test_what_the_cache_stores_per_layout():
    assert stored_components(TOKENS) == ("avg", "max", "gem", "cls")
    assert stored_components(REGISTERS) == ("avg", "max", "gem")  # no class token to store


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
    for name in MAP_POOLINGS:
        torch.testing.assert_close(pool(name, last, MAP_LAST), pool(name, x, MAP))


def test_a_vector_is_stored_once_whatever_the_pooling():
    names = {resolve_pooling(name).components(VECTOR) for name in ("avg", "max", "flatten")}
    assert len(names) == 1 and stored_components(VECTOR) in names
    assert stored_components(MAP) == ("avg", "max", "gem")  # cls: token layers only
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
