"""Reading layers: the traced architecture, one pass for every read, and list_layers."""

from __future__ import annotations

import pytest
import torch

from skfeat._backends import resolve_backend
from skfeat._extract import LOGITS, PENULTIMATE, architecture, extract, find_layer, list_layers
from skfeat._pooling import resolve_pooling
from skfeat.exceptions import UnknownLayerError

from conftest import make_tiny_backbone


@pytest.fixture(scope="module")
def model():
    return make_tiny_backbone()


@pytest.fixture(scope="module")
def traced(model):
    return architecture(resolve_backend(model, "DEFAULT"), 64)


def test_architecture_lists_every_module_with_shape_layout_and_order(traced):
    layers = traced.layers
    assert (layers["stem"].shape, layers["stage1"].shape, layers["stage2"].shape) == (
        (8, 32, 32),
        (16, 16, 16),
        (32, 8, 8),
    )
    assert layers["stage2"].layout.kind == "map"
    assert layers[PENULTIMATE].shape == (32,) and layers[PENULTIMATE].layout.kind == "vector"
    assert layers[PENULTIMATE].module == "fc" and layers[PENULTIMATE].reads_input
    assert layers[LOGITS].shape == (10,) and layers[LOGITS].module == ""
    orders = [layers[name].order for name in ("stem", "stage1", "stage2", "pool", PENULTIMATE)]
    assert orders == sorted(orders)
    assert traced.classifier == "fc"


def test_extract_gives_each_read_as_the_module_computes_it(model, traced):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reads = [
        (find_layer(traced, name, "tiny"), resolve_pooling(pooling))
        for name, pooling in [("stage1", "avg"), ("stage2", "max"), (PENULTIMATE, "avg")]
    ]
    reads.append((find_layer(traced, LOGITS, "tiny"), resolve_pooling("avg")))
    with torch.no_grad():
        stage1 = model.stage1(model.stem(x))
        stage2 = model.stage2(stage1)
        pooled = torch.flatten(model.pool(stage2), 1)
        expected = [stage1.mean((2, 3)), stage2.amax((2, 3)), pooled, model.fc(pooled)]
        got = extract(model, x, reads)
    assert [tuple(t.shape) for t in got] == [(3, 16), (3, 32), (3, 32), (3, 10)]
    for actual, wanted in zip(got, expected, strict=True):
        assert actual.dtype == torch.float32
        torch.testing.assert_close(actual, wanted, rtol=0, atol=1e-6)


def test_the_pass_stops_after_the_deepest_layer_read(model, traced):
    calls = []
    handle = model.fc.register_forward_pre_hook(lambda *_: calls.append("fc"))
    try:
        with torch.no_grad():
            extract(
                model, torch.rand(2, 3, 64, 64), [(traced.layers["stage1"], resolve_pooling("avg"))]
            )
    finally:
        handle.remove()
    assert calls == []


def test_find_layer_names_close_matches(traced):
    with pytest.raises(
        UnknownLayerError,
        match=r"^Layer 'stage3' not found in 'tiny'\. Did you mean 'stage2', 'stage1', "
        r"'stage2\.2'\? See skfeat\.list_layers\('tiny'\)",
    ):
        find_layer(traced, "stage3", "tiny")


def test_list_layers_gives_output_shapes_at_the_input_size(model):
    layers = list_layers(model)
    assert layers["stem"] == (8, 112, 112)  # the recipe's 224 px crop
    assert layers["stage2"] == (32, 28, 28)
    assert list(layers)[-3:] == [PENULTIMATE, "fc", LOGITS]
    assert layers[PENULTIMATE] == (32,) and layers[LOGITS] == (10,)
