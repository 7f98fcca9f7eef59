"""Run settings: each run parameter of a transform call resolved for this machine."""

from __future__ import annotations

import pytest
import torch

import skfeat._runtime._settings as run_settings
from skfeat import _jpeg
from skfeat._runtime import _openvino
from skfeat._runtime._settings import (
    CPU_AUTO_BATCH_SIZE,
    RunSettings,
    resolve_batch_size,
    resolve_decoder,
    resolve_device,
    resolve_n_threads,
    resolve_runtime,
    resolve_settings,
)
from skfeat.exceptions import SkfeatError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_resolve_settings_gathers_every_choice():
    settings = resolve_settings(
        model_label="resnet18",
        crop_size=224,
        device="cpu",
        precision="fp32",
        batch_size="auto",
        n_jobs=2,
        on_error="nan",
        progress=1,
        runtime="auto",
        decoder="auto",
    )
    assert settings == RunSettings(
        device=CPU,
        precision="fp32",
        batch_size=CPU_AUTO_BATCH_SIZE,
        n_threads=2,
        on_error="nan",
        progress=True,
        runtime="torch",  # OpenVINO is not available under the suite's bare install
        decoder="pil",
        fallback=True,  # "auto" may fall back to torch; an explicit runtime may not
    )
    explicit = resolve_settings(
        model_label="resnet18",
        crop_size=224,
        device="cpu",
        precision="fp32",
        batch_size=5,
        n_jobs=1,
        on_error="raise",
        progress=False,
    )
    assert (explicit.batch_size, explicit.runtime, explicit.decoder) == (5, "torch", "pil")
    assert explicit.fallback is False


def test_runtime_auto_takes_openvino_only_on_a_cpu_where_it_is_installed(monkeypatch):
    assert resolve_runtime("auto", CPU) == "torch"
    assert resolve_runtime("torch", CPU) == "torch"
    monkeypatch.setattr(_openvino, "available", lambda: True)
    assert resolve_runtime("auto", CPU) == "openvino"
    assert resolve_runtime("auto", CUDA) == "torch"
    assert resolve_runtime("openvino", CUDA) == "torch"  # the device check refuses it first


def test_decoder_auto_takes_simplejpeg_only_where_it_is_installed(monkeypatch):
    assert resolve_decoder("auto") == "pil"
    assert resolve_decoder("pil") == "pil"
    monkeypatch.setattr(_jpeg, "available", lambda: True)
    assert resolve_decoder("auto") == "simplejpeg"
    assert resolve_decoder("pil") == "pil"


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("auto", runtime="openvino") == CPU


def test_device_errors_say_what_to_use_instead(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        SkfeatError,
        match=r"^device='cuda' was requested but CUDA is not available here\. "
        r"Use device='auto' or device='cpu'\.$",
    ):
        resolve_device("cuda")
    with pytest.raises(
        SkfeatError,
        match=r"^runtime='openvino' runs on the CPU, but device='cuda:0' was requested\. "
        r"Use device='cpu' \(or 'auto'\) with OpenVINO, or runtime='torch' on 'cuda:0'\.$",
    ):
        resolve_device("cuda:0", runtime="openvino")


def test_n_threads_none_is_all_cores_at_most_8_and_negatives_count_back(monkeypatch):
    monkeypatch.setattr(run_settings.os, "cpu_count", lambda: 16)
    assert [resolve_n_threads(n) for n in (None, 1, 3, -1, -2, -16, -40)] == [
        8,
        1,
        3,
        16,
        15,
        1,
        1,
    ]
    monkeypatch.setattr(run_settings.os, "cpu_count", lambda: 4)
    assert resolve_n_threads(None) == 4
    monkeypatch.setattr(run_settings.os, "cpu_count", lambda: None)  # unknown: one core
    assert resolve_n_threads(None) == 1


def test_batch_size_auto_is_fixed_on_cpu_and_fills_half_the_free_gpu_memory(monkeypatch):
    assert resolve_batch_size(12, CUDA, 224) == 12
    assert resolve_batch_size("auto", CPU, 224) == CPU_AUTO_BATCH_SIZE == 8
    assert resolve_batch_size("auto", torch.device("mps"), 224) == 8
    per_image = 3 * 224 * 224 * 4 * 64  # float32 input times the activation factor
    for free, expected in [(2 * 64 * per_image, 64), (2 * 63 * per_image, 32), (10, 8)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, f=free: (f, 2 * f))
        assert resolve_batch_size("auto", CUDA, 224) == expected, free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 50, 1 << 50))
    assert resolve_batch_size("auto", CUDA, 224) == 256  # the cap
    assert resolve_batch_size("auto", CUDA, 448) == 256
