"""Pretrained weights without network: fail fast, or load the cached copy."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from skfeat import PretrainedCNNFeaturizer
from skfeat._backends._download import unreachable
from skfeat.exceptions import WeightsUnavailableError

HINT = "Pass a local state_dict file with weights='/path/to/weights.pth'"


@contextlib.contextmanager
def silent_server():
    """A listening socket that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def refused_url() -> str:
    """A local port with nothing listening: every connection is refused."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def http_server(status: int):
    """A local HTTP server answering every request with ``status``."""
    refused = refused_url()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(status)
            if 300 <= status < 400:  # to a port that refuses: followed, it would fail
                self.send_header("Location", refused + "/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/weights.pth"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_connection_is_unreachable():
    assert "ConnectionRefusedError" in unreachable(refused_url() + "/weights.pth")


def test_a_host_that_never_answers_is_unreachable_after_the_timeout():
    with silent_server() as url:
        assert unreachable(url + "/weights.pth", timeout=0.3) is not None


@pytest.mark.parametrize("status", [200, 302, 401, 404])
def test_any_http_answer_is_reachable_and_redirects_are_not_followed(status):
    with http_server(status) as url:
        assert unreachable(url) is None


def test_a_proxy_gateway_error_is_unreachable():
    with http_server(503) as url:
        assert unreachable(url) == "HTTP 503"


def _fake_hub_cache(cache, repo_id, filename, state):
    """Write ``state`` where the Hugging Face cache keeps ``repo_id``'s ``filename``."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    path = repo / "snapshots" / commit / filename
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def _random_timm_state(name):
    import timm
    import torch

    torch.manual_seed(7)
    return timm.create_model(name, pretrained=False).state_dict()


# skfeat keeps each loaded model for the rest of the process, keyed by name and weights tag:
# each test that loads fake "DEFAULT" weights uses an architecture no other test loads so.


def test_hf_hub_offline_loads_timm_weights_from_the_hub_cache(tmp_path, monkeypatch, random_images):
    """conftest sets HF_HUB_OFFLINE: the cached copy loads, with no network call."""
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    path = _fake_hub_cache(
        tmp_path,
        "timm/test_resnet.r160_in1k",
        "model.safetensors",
        _random_timm_state("test_resnet"),
    )
    monkeypatch.setattr("skfeat._backends._timm.unreachable", pytest.fail)  # never probes
    cached = PretrainedCNNFeaturizer("timm:test_resnet", n_jobs=1).fit_transform(random_images)
    from_file = PretrainedCNNFeaturizer("timm:test_resnet", weights=str(path), n_jobs=1)
    np.testing.assert_allclose(cached, from_file.fit_transform(random_images), atol=1e-6)
    random_init = PretrainedCNNFeaturizer("timm:test_resnet", weights=None, n_jobs=1)
    assert not np.allclose(cached, random_init.fit_transform(random_images), atol=1e-3)


def test_hf_hub_offline_without_cached_weights_says_so(tmp_path, monkeypatch, random_images):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    featurizer = PretrainedCNNFeaturizer("timm:test_convnext", n_jobs=1)
    with pytest.raises(
        WeightsUnavailableError,
        match=r"timm model 'test_convnext': HF_HUB_OFFLINE is set, and they are not in the local "
        r"cache .*Unset HF_HUB_OFFLINE to download them\. Pass a local state_dict file",
    ):
        featurizer.fit_transform(random_images[:1])


def test_torchvision_weights_in_the_torch_hub_cache_load_without_probing(
    tmp_path, monkeypatch, random_images
):
    import torch
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(7)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / os.path.basename(MobileNet_V3_Small_Weights.IMAGENET1K_V1.url)
    torch.save(mobilenet_v3_small().state_dict(), path)
    monkeypatch.setattr("skfeat._backends._torchvision.unreachable", pytest.fail)
    cached = PretrainedCNNFeaturizer("mobilenet_v3_small", n_jobs=1).fit_transform(random_images)
    from_file = PretrainedCNNFeaturizer("mobilenet_v3_small", weights=str(path), n_jobs=1)
    np.testing.assert_allclose(cached, from_file.fit_transform(random_images), atol=1e-6)


# The real thing, in a fresh process: HF_HUB_OFFLINE unset, empty caches, no network.
OFFLINE_SCRIPT = """
import sys, time
import numpy as np
from skfeat import PretrainedCNNFeaturizer
for model in sys.argv[1:]:
    start = time.perf_counter()
    try:
        PretrainedCNNFeaturizer(model, n_jobs=1).fit_transform(np.zeros((1, 32, 32, 3), np.uint8))
    except Exception as err:
        print(f"{time.perf_counter() - start:.1f} {type(err).__name__}: {err}")
    else:
        print(f"{time.perf_counter() - start:.1f} loaded")
"""


def _run_offline(tmp_path, models, proxy=None, **extra_env):
    env = {key: value for key, value in os.environ.items() if "PROXY" not in key.upper()}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"), **extra_env)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if proxy is not None:  # every request goes through a proxy that does not work
        env.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, *models],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return (result.stdout + result.stderr).splitlines()


def _hubs_reachable() -> bool:
    return any(
        unreachable(url, timeout=3) is None
        for url in ("https://huggingface.co", "https://download.pytorch.org")
    )


@pytest.mark.slow
@pytest.mark.parametrize("network", ["this machine's", "refusing proxy", "silent proxy"])
def test_offline_download_fails_fast_with_one_clean_message(tmp_path, network):
    pytest.importorskip("timm")
    with contextlib.ExitStack() as stack:
        if network == "this machine's":
            if _hubs_reachable():
                pytest.skip("this machine can reach the model hubs")
            proxy = None
        elif network == "refusing proxy":
            proxy = refused_url()
        else:
            proxy = stack.enter_context(silent_server())
        lines = _run_offline(tmp_path, ["timm:resnet18", "resnet18"], proxy=proxy)
    assert len(lines) == 2, "\n".join(lines)  # no retries logged, no warnings
    for line, start in zip(
        lines,
        [
            "WeightsUnavailableError: Could not get the pretrained weights of timm model "
            "'resnet18': the machine seems offline (huggingface.co did not answer: ",
            "WeightsUnavailableError: Could not download the weights "
            "ResNet18_Weights.IMAGENET1K_V1 for torchvision model 'resnet18': the machine "
            "seems offline (download.pytorch.org did not answer: ",
        ],
        strict=True,
    ):
        seconds, message = line.split(" ", 1)
        assert float(seconds) < 20, line
        assert message.startswith(start), line
        assert "and they are not in the local cache" in message and HINT in message, line


@pytest.mark.slow
def test_offline_without_hf_hub_offline_loads_the_cached_timm_weights(tmp_path):
    pytest.importorskip("timm")
    state = _random_timm_state("test_resnet")
    cache = tmp_path / "hf" / "hub"
    _fake_hub_cache(cache, "timm/test_resnet.r160_in1k", "model.safetensors", state)
    with silent_server() as proxy:
        lines = _run_offline(tmp_path, ["timm:test_resnet"], proxy=proxy)
    assert len(lines) == 1 and lines[0].endswith(" loaded"), "\n".join(lines)
