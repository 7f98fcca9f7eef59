"""End-to-end speed on a CUDA GPU, against what the host's cores can decode.

On a GPU the network is rarely the limit: the host must decode and resize every
photo, so the ceiling of an end-to-end transform is the decode rate of the host's
cores. This script measures, on the same photos (``make_corpus.py``), side by side:

``decode``
    Decode and resize alone, in skfeat's thread pool with all cores (the host limit):
    ``skfeat.check_images``-like work, through the engine's own preparation step.
``skfeat``
    ``PretrainedCNNFeaturizer(model, device="cuda")`` with its defaults (batch size
    from free GPU memory, ``precision="auto"``: fp16 where measured faithful).
``model_only``
    The forward pass alone on ready batches on the GPU, in the precision skfeat chose.

Each figure is the median of ``--repeats`` runs, in images per second.

Usage, from the repository root on a machine with a GPU::

    PYTHONPATH=$PWD python benchmarks/bench_gpu.py --n 600 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import timed  # noqa: E402

MODELS = ("resnet50", "efficientnet_lite0")


def _weights(model: str) -> Any:
    # The packaged Lite0 weights need no network; other models run with random weights
    # (speed does not depend on the weights).
    return "DEFAULT" if model == "efficientnet_lite0" else None


def decode_rate(paths: list[str], featurizer: Any, threads: int) -> float:
    from skfeat._preprocess import draft_min_side
    from skfeat._runtime._engine import _prepare_one

    config = featurizer.data_config_
    side = draft_min_side(config)

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: _prepare_one(p, 0, config, True, side), paths))

    return timed(run).rate(len(paths))


def skfeat_rate(paths: list[str], featurizer: Any) -> float:
    import torch

    def run() -> None:
        featurizer.transform(paths)
        torch.cuda.synchronize()

    return timed(run).rate(len(paths))


def model_only_rate(featurizer: Any, n: int) -> tuple[float, int, str]:
    """The engine's own forward pass on ready uint8 batches already on the GPU."""
    import torch

    from skfeat._runtime._engine import _BATCH_LIMITS, _Run
    from skfeat._runtime._precision import autocast_dtype
    from skfeat._runtime._registry import get_model
    from skfeat._runtime._settings import resolve_settings

    plan = featurizer._plan
    settings = resolve_settings(
        model_label=plan.backend.label,
        crop_size=plan.data_config.crop_size,
        device="cuda",
        precision="auto",
        batch_size="auto",
        n_jobs=None,
        on_error="raise",
        progress=False,
    )
    prepared = get_model(plan.backend, settings.device, plan.classifier)
    key = (plan.backend.key, str(settings.device), settings.precision, plan.data_config.crop_size)
    size = min(settings.batch_size, _BATCH_LIMITS.get(key, settings.batch_size))
    run = _Run(prepared, plan.data_config, plan, autocast_dtype(settings.precision), key)
    crop = plan.data_config.crop_size
    images = [torch.zeros(3, crop, crop, dtype=torch.uint8) for _ in range(size)]
    run._forward(images)  # warm up
    torch.cuda.synchronize()
    rounds = -(-n // size)  # at least n images

    def forward() -> None:
        for _ in range(rounds):
            run._forward(images)
        torch.cuda.synchronize()

    return timed(forward).rate(rounds * size), size, settings.precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(HERE / "_corpus"))
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch
    from make_corpus import make_corpus

    from skfeat import PretrainedCNNFeaturizer

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here", file=sys.stderr)
        return 2
    paths = [str(p) for p in make_corpus(args.corpus, n=args.n)]
    threads = os.cpu_count() or 1
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "host_cores": threads,
        "n_images": len(paths),
        "torch": torch.__version__,
        "models": {},
    }
    for model in args.models.split(","):
        featurizer = PretrainedCNNFeaturizer(model, weights=_weights(model), device="cuda")
        featurizer.fit(paths)
        featurizer.transform(paths[:64])  # load the weights, warm the GPU
        rates: dict[str, list[float]] = {"decode": [], "skfeat": [], "model_only": []}
        for _ in range(args.repeats):
            rates["decode"].append(decode_rate(paths, featurizer, threads))
            rates["skfeat"].append(skfeat_rate(paths, featurizer))
            rate, batch, precision = model_only_rate(featurizer, 4 * len(paths))
            rates["model_only"].append(rate)
        medians = {name: statistics.median(values) for name, values in rates.items()}
        medians["skfeat_over_decode"] = medians["skfeat"] / medians["decode"]
        results["models"][model] = {
            "batch_size": batch,
            "precision": precision,
            "median_images_per_s": medians,
            "runs": rates,
        }
        print(
            f"{model:20} decode {medians['decode']:8.1f}  skfeat {medians['skfeat']:8.1f}  "
            f"model only {medians['model_only']:8.1f} img/s  (batch {batch}, {precision}; "
            f"skfeat = {medians['skfeat_over_decode']:.0%} of the decode limit)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
