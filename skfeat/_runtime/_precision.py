"""Which floating-point precision the backbone runs in.

``precision="auto"`` picks reduced precision only where it is both fast and faithful.
Fast: bf16 on CPUs that compute it natively (AVX512-BF16 or AMX; elsewhere it is
emulated and several times *slower* than fp32: resnet50 on an AVX2-only EPYC runs
about 2 img/s in bf16 against 14-17 in fp32); bf16 or fp16 autocast on CUDA. Faithful:
the backbone is listed in :data:`FAITHFUL_MODELS` for that precision, because its
features were measured against fp32 with real pretrained weights: cosine similarity
>= 0.99 for every image and a linear probe on flowers5 within 1 accuracy point
(figures in ``docs/benchmarks.md``). Anything else runs fp32; pass ``precision="bf16"``
or ``"fp16"`` to opt in.

Measured so far: in bf16 neither EfficientNet-Lite0 (worst image at cosine 0.988) nor
the torchvision MobileNetV2 backbone (worst 0.925, median 0.973) is faithful, so the
bf16 list is empty; in fp16 both are (worst 0.9999 and 0.996, probe within 1 point),
so ``"auto"`` runs them in fp16 autocast on CUDA. Activations are pooled in fp32 and
the output is always float32.
"""

from __future__ import annotations

from typing import Any

from skfeat._warnings import warn_at_caller
from skfeat.exceptions import DeviceWarning

__all__ = [
    "FAITHFUL_MODELS",
    "PRECISIONS",
    "autocast_dtype",
    "cpu_has_native_bf16",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Backbones (``Backend.label``) whose reduced-precision features were measured faithful
# to fp32 with real weights: cosine >= 0.99 for every image, linear probe within 1 point.
FAITHFUL_MODELS: dict[str, frozenset[str]] = {
    "bf16": frozenset(),
    "fp16": frozenset({"efficientnet_lite0", "torchvision:mobilenet_v2"}),
}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX tiles, so bf16 is faster than fp32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _cuda_supports_bf16(device: Any) -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: Any, model_label: str) -> str:
    """The precision to run: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        What was asked for.
    device : torch.device
        Where the model runs.
    model_label : str
        The backbone's label (``Backend.label``), checked against
        :data:`FAITHFUL_MODELS` under ``"auto"``.

    Warns
    -----
    DeviceWarning
        ``"bf16"`` on a CPU without native bf16 (it runs, slowly), and ``"fp16"`` on a
        CPU (it runs in fp32 instead), or on a device without fp16 support.
    """
    kind = device.type
    if precision == "auto":
        if (
            kind == "cuda"
            and _cuda_supports_bf16(device)
            and model_label in FAITHFUL_MODELS["bf16"]
        ):
            return "bf16"
        if kind == "cuda" and model_label in FAITHFUL_MODELS["fp16"]:
            return "fp16"
        if kind == "cpu" and cpu_has_native_bf16() and model_label in FAITHFUL_MODELS["bf16"]:
            return "bf16"
        return "fp32"
    if precision == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        warn_at_caller(
            "precision='bf16' was requested, but this CPU has no native bf16 (no "
            "AVX512-BF16 or AMX), so bf16 is emulated and several times slower than fp32. "
            "Use precision='auto' or 'fp32' for speed.",
            DeviceWarning,
        )
    if precision == "fp16" and kind not in ("cuda", "mps"):
        warn_at_caller(
            f"precision='fp16' has no fast path on device {str(device)!r}; running in fp32. "
            "Use precision='bf16' on CPUs with AVX512-BF16 or AMX, or a CUDA device for fp16.",
            DeviceWarning,
        )
        return "fp32"
    return precision


def autocast_dtype(precision: str) -> Any:
    """The torch dtype for autocast, or None for fp32 (no autocast)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
