"""What the benchmark scripts share: the timer, the corpus, the machine, common preparations.

Each script imports from here rather than from another script, so a script can change
its own helpers freely.

- :func:`timed`: wall and process CPU seconds of one call, and what it returned.
- :func:`corpus_paths`: the first ``n`` photos of a :mod:`make_corpus` corpus, made on
  first use; :func:`cpu_summary`: the machine, for the results' header.
- :func:`careful_pil`, :func:`skfeat_decoder`, :func:`one_pass`: one image from path to
  a cropped tensor, the careful-user way and skfeat's, and a pass over a corpus.
- :func:`torchvision_backbone`, :func:`make_model_only`: the forward pass alone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESIZE, CROP = 256, 224


# -- the timer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall and process CPU seconds of one call, and its result."""

    seconds: float
    cpu_seconds: float
    result: Any

    def rate(self, n: int) -> float:
        """``n`` items over the wall seconds: items per second."""
        return n / self.seconds


def timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Timing:
    """Call ``run(*args, **kwargs)`` once and time it (``time.perf_counter``)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = run(*args, **kwargs)
    return Timing(time.perf_counter() - start, time.process_time() - cpu, result)


# -- the corpus and the machine -------------------------------------------------------------


def corpus_paths(corpus: Path, n: int) -> list[str]:
    """The first ``n`` photos of the corpus in ``corpus``, made (seed 0) when missing."""
    if not (corpus / "manifest.csv").is_file() or len(list(corpus.glob("photo_*"))) < n:
        from make_corpus import make_corpus

        make_corpus(corpus, n=n, seed=0)
    return sorted(str(p) for p in corpus.glob("photo_*"))[:n]


def cpu_summary() -> str:
    """The CPU model, its cores, torch's CPU capability and whether bf16 is native."""
    import torch

    name = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return (
        f"{name}, {os.cpu_count()} cores, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16}"
    )


# -- one image, path to cropped tensor --------------------------------------------------------


def careful_pil(min_side: int) -> Callable[[str], Any]:
    """What a careful user writes: Pillow's draft, EXIF transpose, torchvision's resize."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps
    from torchvision.transforms.v2 import functional as F

    def prepare(path: str) -> Any:
        with Image.open(path) as image:
            image.draft("RGB", (min_side, min_side))
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
        tensor = F.resize(tensor, [RESIZE], antialias=True)
        return F.center_crop(tensor, [CROP, CROP])

    return prepare


def skfeat_decoder(decoder: str, min_side: int) -> Callable[[str], Any]:
    """skfeat's own path: the bounded read, ``decode`` with ``decoder``, resize and crop."""
    from skfeat._inputs import decode, read_file
    from skfeat._preprocess import DataConfig, resize_and_crop

    config = DataConfig(RESIZE, CROP)

    def prepare(path: str) -> Any:
        data = read_file(path)
        return resize_and_crop(
            decode(path, 0, min_side=min_side, data=data, decoder=decoder), config
        )

    return prepare


def one_pass(prepare: Callable[[str], Any], paths: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds and process CPU seconds to prepare every path once."""

    def run() -> None:
        if threads == 1:
            for path in paths:
                prepare(path)
        else:
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(prepare, paths):
                    pass

    timing = timed(run)
    return timing.seconds, timing.cpu_seconds


# -- the forward pass alone -------------------------------------------------------------------


def torchvision_backbone(name: str) -> Any:
    """A random-init torchvision classifier whose head is ``Identity`` (pooled features)."""
    import torch
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    if hasattr(model, "fc"):
        model.fc = torch.nn.Identity()
    else:
        model.classifier = torch.nn.Identity()
    return model


def make_model_only(name: str, setting: str) -> Callable[[list[str]], Any]:
    """The forward pass alone in ``setting`` (``"<mode> bs<batch size>"``), one row per path.

    Modes: ``nchw``, ``channels_last``, ``channels_last+fold`` (batch norm folded into
    the convolutions), ``jit_freeze``. Run interleaved with the approaches, so the limit
    sees the same machine load.
    """
    import numpy as np
    import torch

    from skfeat._runtime._fuse import fold_conv_bn

    mode, batch_text = setting.rsplit(" bs", 1)
    batch_size = int(batch_text)
    model = torchvision_backbone(name)
    x = torch.rand(batch_size, 3, 224, 224)
    if mode == "jit_freeze":
        with torch.no_grad():
            model = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
    elif mode != "nchw":
        if "fold" in mode:
            fold_conv_bn(model)
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run(paths: list[str]) -> Any:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                rows.append(model(x[: min(batch_size, len(paths) - start)]).numpy())
        return np.concatenate(rows)

    return run
