"""End to end, side by side: skfeat's runtimes and decoders against torch and a careful loop.

Each row times ``transform`` over the same files of a generated corpus
(``make_corpus.py``) in two settings, interleaved pass by pass so that load from other
processes hits both alike, and gives the median images/s of ``--repeats`` passes after
a warm-up pass (the warm-up converts the OpenVINO graph and loads the weights). The
ratio is that of the medians.

Rows:

``resnet50 fp32``
    ``runtime="auto"`` (OpenVINO when installed) against ``runtime="torch"``.
``resnet50 bf16``
    The same with ``precision="bf16"`` (needs native bf16 to be fast).
``efficientnet_lite0, 2 layers gem``
    Real weights, ``layer=["blocks.5", "blocks.6"]``: OpenVINO against torch, with the
    smallest per-image cosine between the two.
``one conv, decode-bound``
    A one-convolution model, so that decoding is all the work: ``decoder="auto"``
    (simplejpeg when installed) and OpenVINO against a careful 2-thread loop (Pillow
    ``draft``, EXIF, RGB, torchvision resize and crop on uint8, in a thread pool of
    two, then the same model in batches of 8).
``resnet50 model-only``
    ``runtime="torch"`` end to end against the forward pass alone (channels-last,
    BatchNorm folded, batch 8), the engine's ceiling.

Usage, from the repository root, on a quiet machine (``uptime``)::

    PYTHONPATH=$PWD python benchmarks/bench_runtime.py --n 160 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import careful_pil, corpus_paths, cpu_summary, make_model_only, timed  # noqa: E402

Run = Callable[[list[str]], Any]


def featurizer(model: Any, **params: Any) -> Run:
    from skfeat import PretrainedCNNFeaturizer

    estimator = PretrainedCNNFeaturizer(model, **params).fit(["x"])
    return estimator.transform


def one_conv() -> Any:
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def careful_loop(model: Any) -> Run:
    """What a careful user writes: a 2-thread decode pool, then batches of 8."""
    import numpy as np
    import torch

    prepare = careful_pil(min_side=768)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def run(paths: list[str]) -> Any:
        rows = []
        with ThreadPoolExecutor(2) as pool, torch.inference_mode():
            images = list(pool.map(prepare, paths))
            for start in range(0, len(images), 8):
                batch = torch.stack(images[start : start + 8]).float() / 255.0
                rows.append(model((batch - mean) / std).numpy())
        return np.concatenate(rows)

    return run


def paired(first: Run, second: Run, paths: list[str], repeats: int) -> tuple[float, float, Any]:
    """Median images/s of each, interleaved; and the last outputs of both."""
    outputs = (first(paths), second(paths))  # warm-up
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, run in enumerate((first, second)):
            rates[index].append(timed(run, paths).rate(len(paths)))
    return statistics.median(rates[0]), statistics.median(rates[1]), outputs


def min_cosine(a: Any, b: Any) -> float:
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def rows(paths: list[str], repeats: int, only: set[str] | None) -> list[tuple[str, ...]]:

    table = []

    def add(label: str, names: tuple[str, str], first: Run, second: Run, cos: bool = False):
        if only and label.split(",")[0].split()[0] not in only:
            return
        a, b, (out_a, out_b) = paired(first, second, paths, repeats)
        cosine = f"{min_cosine(out_a, out_b):.7f}" if cos else ""
        table.append((label, *names, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x", cosine))
        print(" | ".join(table[-1]), flush=True)

    resnet = {"weights": None}
    add(
        "resnet50 fp32",
        ("auto", "torch"),
        featurizer("resnet50", runtime="auto", **resnet),
        featurizer("resnet50", runtime="torch", **resnet),
    )
    add(
        "resnet50 bf16",
        ("auto", "torch"),
        featurizer("resnet50", runtime="auto", precision="bf16", **resnet),
        featurizer("resnet50", runtime="torch", precision="bf16", **resnet),
    )
    lite = {"layer": ["blocks.5", "blocks.6"], "pooling": "gem"}
    add(
        "efficientnet_lite0, 2 layers gem",
        ("openvino", "torch"),
        featurizer("efficientnet_lite0", runtime="openvino", **lite),
        featurizer("efficientnet_lite0", runtime="torch", **lite),
        cos=True,
    )
    conv = one_conv().eval()
    add(
        "one conv, decode-bound",
        ("skfeat auto", "careful loop"),
        featurizer(conv, layer="2", n_jobs=2),
        careful_loop(conv),
    )
    add(
        "one conv, decoders",
        ("simplejpeg", "pil"),
        featurizer(conv, layer="2", n_jobs=2, decoder="simplejpeg"),
        featurizer(conv, layer="2", n_jobs=2, decoder="pil"),
    )
    add(
        "resnet50 model-only",
        ("torch e2e", "model-only"),
        featurizer("resnet50", runtime="torch", **resnet),
        make_model_only("resnet50", "channels_last+fold bs8"),
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(HERE / "_corpus"))
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma list of row prefixes")
    args = parser.parse_args(argv)

    paths = corpus_paths(Path(args.corpus), args.n)
    print(cpu_summary())
    only = set(args.only.split(",")) if args.only else None
    table = rows(paths, args.repeats, only)
    print("\n| row | first | second | first img/s | second img/s | ratio | min cosine |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
