"""The run plan: layers and poolings resolved once, columns, feature names, stored stages."""

from __future__ import annotations

import pickle

import pytest

from skfeat._backends import resolve_backend
from skfeat._extract import architecture
from skfeat._plan import build_plan, cache_stages
from skfeat._pooling import resolve_pooling
from skfeat.exceptions import InvalidParameterError, UnknownLayerError

from conftest import make_tiny_backbone


@pytest.fixture(scope="module")
def backend():
    return resolve_backend(make_tiny_backbone(), "DEFAULT")


def _plan(backend, layers, pooling="avg", caching=False):
    return build_plan(backend, layers, [resolve_pooling(pooling)], caching=caching)


def test_targets_tile_the_row_in_the_order_asked(backend):
    plan = _plan(backend, ["penultimate", "stage1"])
    spans = [(t.layer.name, t.pooling.name, t.start, t.stop) for t in plan.targets]
    assert spans == [("penultimate", "avg", 0, 32), ("stage1", "avg", 32, 48)]
    assert plan.n_features == 48
    assert plan.reads == [(t.layer, t.pooling) for t in plan.targets]
    assert plan.classifier == "fc"
    assert plan.data_config == backend.data_config()


def test_feature_names_say_layer_pooling_and_channel(backend):
    names = _plan(backend, ["stage1", "penultimate"]).feature_names()
    assert names[:2] == ["stage1_avg_0000", "stage1_avg_0001"]
    assert names[15:17] == ["stage1_avg_0015", "penultimate_avg_0000"]
    assert names[-1] == "penultimate_avg_0031"
    assert len(set(names)) == len(names) == 48
    avgmax = _plan(backend, ["stage2"], "avgmax").feature_names()
    assert len(avgmax) == 64 and avgmax[-1] == "stage2_avgmax_0063"


def test_stages_are_resolved_only_for_a_cache(backend):
    assert _plan(backend, ["stage1"]).stages == ()
    stages = _plan(backend, ["stage1"], caching=True).stages
    assert [info.name for info in stages] == ["stem", "stage1", "stage2", "pool", "penultimate"]
    traced = architecture(backend, backend.data_config().crop_size)
    assert cache_stages(traced) == stages


def test_reading_keeps_the_backbone_and_recipe_and_retiles(backend):
    plan = _plan(backend, ["stage1", "penultimate"], caching=True)
    layer = plan.targets[0].layer
    other = plan.reading([(layer, "max"), (layer, "gem")])
    assert [(t.pooling.name, t.start, t.stop) for t in other.targets] == [
        ("max", 0, 16),
        ("gem", 16, 32),
    ]
    assert (other.backend, other.data_config, other.stages) == (
        plan.backend,
        plan.data_config,
        plan.stages,
    )
    assert plan.n_features == 48  # the plan itself is immutable


def test_only_named_poolings_are_cacheable(backend):
    assert _plan(backend, ["stage1"]).cacheable
    custom = _plan(backend, ["stage1"], lambda x: x.mean((2, 3)))
    assert not custom.cacheable


def test_plan_pickles_small_without_weights(backend):
    plan = _plan(backend, ["stage1"], caching=True)
    restored = pickle.loads(pickle.dumps(plan))
    assert restored.feature_names() == plan.feature_names()


def test_unknown_layer_and_pooling_that_does_not_apply_are_refused(backend):
    with pytest.raises(
        UnknownLayerError, match=r"Layer 'stage3' not found .* Did you mean 'stage2'"
    ):
        _plan(backend, ["stage3"])
    with pytest.raises(
        InvalidParameterError,
        match=r"pooling='avgmax' needs a spatial map, but layer 'penultimate' gives vectors of "
        r"32 values\. Use pooling='avg'",
    ):
        _plan(backend, ["penultimate"], "avgmax")
