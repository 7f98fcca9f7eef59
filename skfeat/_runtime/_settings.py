"""How one transform runs: device, precision, batch size, threads, resolved once per call.

The estimator's parameters say what the user asked for (``device="auto"``,
``batch_size="auto"``...); :func:`resolve_settings` turns them into what this call
does on this machine, once, so the engine, the cache key and any warning agree.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from skfeat._runtime._precision import resolve_precision
from skfeat.exceptions import SkfeatError

__all__ = [
    "CPU_AUTO_BATCH_SIZE",
    "RunSettings",
    "resolve_batch_size",
    "resolve_decoder",
    "resolve_device",
    "resolve_n_threads",
    "resolve_runtime",
    "resolve_settings",
]

# Measured end to end on a 2-core AVX2 CPU (docs/benchmarks.md), fp32 channels-last:
# batch 8 beat 32 by 21% on resnet50 and 15% on mobilenet_v3_large; larger batches
# spill the 1 MB L2 cache per core.
CPU_AUTO_BATCH_SIZE = 8
_CUDA_MAX_AUTO_BATCH = 256
# Marks the settings that decide the computed values: they key the activation cache.
_DECIDES_VALUES = {"signature": True}
# Rough activation memory per image, in multiples of the float32 input: conservative for
# ResNet-50-sized CNNs at inference; out-of-memory halving covers the rest.
_ACTIVATION_FACTOR = 64


@dataclass(frozen=True)
class RunSettings:
    """What one transform call runs with, every choice resolved.

    Parameters
    ----------
    device : torch.device
        Where the backbone runs.
    precision : {"fp32", "bf16", "fp16"}
        The arithmetic of the backbone (part of the cache key).
    batch_size : int
        Images per forward pass (halved on out-of-memory).
    n_threads : int
        Decode threads.
    on_error : {"raise", "nan", "zeros"}
        What an unreadable image does.
    progress : bool
        Whether to show a progress bar.
    runtime : {"torch", "openvino"}
        What runs the backbone (part of the cache key).
    decoder : {"pil", "simplejpeg"}
        What decodes YCbCr and grey JPEG pixels (part of the cache key).
    fallback : bool
        With ``runtime="openvino"``: whether a backbone that does not convert, or
        whose converted graph does not match PyTorch, runs with torch after one
        warning (``runtime="auto"``) rather than raising (``runtime="openvino"``).
    """

    device: Any
    precision: str = field(metadata=_DECIDES_VALUES)
    batch_size: int
    n_threads: int
    on_error: str = "raise"
    progress: bool = False
    runtime: str = field(default="torch", metadata=_DECIDES_VALUES)
    decoder: str = field(default="pil", metadata=_DECIDES_VALUES)
    fallback: bool = False

    def signature(self) -> dict[str, Any]:
        """The settings that decide the computed values, for the activation cache's key.

        Those are the fields marked so (precision, runtime, decoder), in field order. One
        at its field's default is left out, so that entries stored before it could be
        chosen keep their keys. A new such setting is one marked field.

        Examples
        --------
        >>> RunSettings("cpu", "fp32", 8, 1, runtime="openvino").signature()
        {'precision': 'fp32', 'runtime': 'openvino'}
        """
        return {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.metadata.get("signature")
            and (item.default is MISSING or getattr(self, item.name) != item.default)
        }


def resolve_settings(
    *,
    model_label: str,
    crop_size: int,
    device: str,
    precision: str,
    batch_size: int | str,
    n_jobs: int | None,
    on_error: str,
    progress: bool,
    runtime: str = "torch",
    decoder: str = "pil",
) -> RunSettings:
    """Resolve the estimator's run parameters for this call.

    Warns
    -----
    DeviceWarning
        Once, when the precision asked for has no fast path here.
    """
    torch_device = resolve_device(device, runtime)
    return RunSettings(
        device=torch_device,
        precision=resolve_precision(precision, torch_device, model_label),
        batch_size=resolve_batch_size(batch_size, torch_device, crop_size),
        n_threads=resolve_n_threads(n_jobs),
        on_error=on_error,
        progress=bool(progress),
        runtime=resolve_runtime(runtime, torch_device),
        decoder=resolve_decoder(decoder),
        fallback=runtime == "auto",
    )


def resolve_runtime(runtime: str, device: Any) -> str:
    """``"auto"`` is OpenVINO on a CPU where it is installed, torch otherwise.

    Raises
    ------
    MissingDependencyError
        For ``runtime="openvino"`` without the openvino package.
    """
    if runtime == "torch" or device.type != "cpu":
        return "torch"
    from skfeat._runtime import _openvino

    if runtime == "openvino":
        _openvino.load()
        return "openvino"
    return "openvino" if _openvino.available() else "torch"


def resolve_decoder(decoder: str) -> str:
    """``"auto"`` is simplejpeg where it is installed, Pillow otherwise.

    Raises
    ------
    MissingDependencyError
        For ``decoder="simplejpeg"`` without the simplejpeg package.
    """
    from skfeat import _jpeg

    if decoder == "simplejpeg":
        _jpeg.load()
        return decoder
    if decoder == "auto":
        return "simplejpeg" if _jpeg.available() else "pil"
    return "pil"


def resolve_device(device: str, runtime: str = "torch") -> Any:
    """``"auto"`` becomes cuda, then mps, then cpu; anything else is checked.

    With ``runtime="openvino"``, which runs on the CPU, ``"auto"`` is the CPU and any
    other device is an error.
    """
    import torch

    if runtime == "openvino":
        if device != "auto" and torch.device(device).type != "cpu":
            raise SkfeatError(
                f"runtime='openvino' runs on the CPU, but device={device!r} was requested. "
                "Use device='cpu' (or 'auto') with OpenVINO, or runtime='torch' on "
                f"{device!r}."
            )
        return torch.device("cpu")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SkfeatError(
            f"device={device!r} was requested but CUDA is not available here. "
            "Use device='auto' or device='cpu'."
        )
    return resolved


def resolve_n_threads(n_jobs: int | None) -> int:
    """Decode threads: None means all cores (at most 8), negative counts back from all."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return min(cores, 8)
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


def resolve_batch_size(batch_size: int | str, device: Any, crop_size: int) -> int:
    """Images per forward pass: an int is kept; ``"auto"`` depends on the device.

    CPU (and MPS): :data:`CPU_AUTO_BATCH_SIZE`. CUDA: the largest power of two, from 8
    to 256, whose estimated activations fill at most half of the free GPU memory.
    """
    if batch_size != "auto":
        return int(batch_size)
    if device.type != "cuda":
        return CPU_AUTO_BATCH_SIZE
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    per_image = 3 * crop_size * crop_size * 4 * _ACTIVATION_FACTOR
    fits = max(1, free // 2 // per_image)
    size = 8
    while size * 2 <= min(fits, _CUDA_MAX_AUTO_BATCH):
        size *= 2
    return size
