"""Side-by-side speed of skfeat, the usual hand-written loops and the peer packages.

Every approach turns the same folder of photos (``make_corpus.py``) into pooled
penultimate features, on the same backbone with random weights (speed does not depend
on the weights). Approaches run interleaved inside each repeat, in the same process
and order, and the table reports the median images/s over the repeats, so load from
other processes hits all of them alike. Timing starts once the model is built.

Approaches:

``skfeat``
    ``PretrainedCNNFeaturizer(model, weights=None).transform(paths)``, all defaults:
    ``runtime="auto"`` and ``decoder="auto"`` pick OpenVINO and simplejpeg when they
    are installed (``pip install "skfeat[openvino,jpeg]"``; the run records which).
``skfeat_torch``
    The same with ``runtime="torch"``: the runtime column.
``skfeat_torch_pil``
    ``runtime="torch", decoder="pil"``: the decoder column, and what a bare install
    runs.
``tutorial``
    The loop of most tutorials: per image, ``PIL.Image.open(...).convert("RGB")``,
    torchvision v1 ``Resize(256)/CenterCrop(224)/ToTensor/Normalize``, then
    ``model(x[None])`` in fp32 under ``no_grad``, classifier replaced by ``Identity``.
``manual_batch``
    The same transforms, stacked into batches of 32, under ``inference_mode``.
``fx_dataloader``
    torchvision ``create_feature_extractor`` + ``DataLoader(num_workers=2, batch_size=32)``.
``img2vec``
    ``img2vec_pytorch.Img2Vec(...).get_vec`` on lists of 32 PIL images (the whole list at
    once needs ~14 MB per image). ResNets only. Offline patch: its torchvision
    constructors are replaced by random-init ones.
``embetter``
    ``make_pipeline(ImageLoader(convert="RGB"), TimmEncoder(name))``. Offline patch:
    ``timm.create_model`` always gets ``pretrained=False``.
``model_only``
    The limit: the forward pass alone on a ready 224 x 224 float batch, in the best
    setting found on this CPU among NCHW / channels-last / channels-last with folded
    BatchNorm / ``torch.jit.freeze`` + ``optimize_for_inference``, batch 8 and 32.
``model_only_openvino``
    The same forward pass as an OpenVINO graph (``openvino.convert_model``, fp32, as
    many threads as torch, batch 8), when OpenVINO is installed.

The pipeline ceiling per model and runtime/decoder pair: with ``d`` the core-ms to
read, decode, resize and crop one file (skfeat's own path, one thread, process CPU
time) and ``m`` the core-ms of the model-only forward pass per image (process CPU time
over the timed passes), no pipeline on ``c`` cores beats ``1000 c / (d + m)`` images/s.

``--memory`` adds peak RSS: each run is a fresh subprocess reading ``ru_maxrss``;
skfeat on 500 and 5,000 small generated JPEGs shows whether memory grows with N.

Usage, from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_speed.py --n 300 --repeats 3 --memory \\
        --json docs/benchmarks_speed.json --plot docs/benchmarks_speed.png
    PYTHONPATH=$PWD python benchmarks/bench_speed.py --quick
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    corpus_paths,
    cpu_summary,
    make_model_only,
    one_pass,
    skfeat_decoder,
    timed,
    torchvision_backbone,
)

MODELS = ("resnet50", "resnet18", "mobilenet_v3_large")
TIMM_NAMES = {
    "resnet50": "resnet50",
    "resnet18": "resnet18",
    "mobilenet_v3_large": "mobilenetv3_large_100",
}
SKFEAT_VARIANTS = {
    "skfeat": {},  # the defaults, extras or not
    "skfeat_torch": {"runtime": "torch"},
    "skfeat_torch_pil": {"runtime": "torch", "decoder": "pil"},
}
APPROACHES = (
    *SKFEAT_VARIANTS,
    "tutorial",
    "manual_batch",
    "fx_dataloader",
    "img2vec",
    "embetter",
)
PEERS = ("img2vec", "embetter", "fx_dataloader")


# -- models -----------------------------------------------------------------------------------


def v1_transform() -> Any:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


# -- approaches: each returns a function paths -> (n, d) features ---------------------------


def tiny_cnn() -> Any:
    """A small CNN: memory runs measure the engine, not a big model's activations."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=4, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 64, 3, stride=4, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def make_skfeat(name: str, **params: Any) -> Callable[[list[str]], Any]:
    from skfeat import PretrainedCNNFeaturizer

    if name == "tiny":
        featurizer = PretrainedCNNFeaturizer(tiny_cnn(), **params)
    else:
        featurizer = PretrainedCNNFeaturizer(name, weights=None, **params)

    def run(paths: list[str]) -> Any:
        return featurizer.transform(paths)

    featurizer.fit(["x"])
    return run


def make_tutorial(name: str) -> Callable[[list[str]], Any]:
    import numpy as np
    import torch
    from PIL import Image

    model, transform = torchvision_backbone(name), v1_transform()

    def run(paths: list[str]) -> Any:
        rows = []
        with torch.no_grad():
            for path in paths:
                image = Image.open(path).convert("RGB")
                rows.append(model(transform(image).unsqueeze(0))[0].numpy())
        return np.stack(rows)

    return run


def make_manual_batch(name: str, batch_size: int = 32) -> Callable[[list[str]], Any]:
    import numpy as np
    import torch
    from PIL import Image

    model, transform = torchvision_backbone(name), v1_transform()

    def run(paths: list[str]) -> Any:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                batch = torch.stack(
                    [
                        transform(Image.open(p).convert("RGB"))
                        for p in paths[start : start + batch_size]
                    ]
                )
                rows.append(model(batch).numpy())
        return np.concatenate(rows)

    return run


class _PathDataset:
    def __init__(self, paths: list[str]) -> None:
        self.paths, self.transform = paths, v1_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        from PIL import Image

        return self.transform(Image.open(self.paths[index]).convert("RGB"))


def make_fx_dataloader(name: str) -> Callable[[list[str]], Any]:
    import numpy as np
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.models.feature_extraction import create_feature_extractor

    model = torchvision.models.get_model(name, weights=None).eval()
    extractor = create_feature_extractor(model, {"flatten": "features"})

    def run(paths: list[str]) -> Any:
        loader = DataLoader(_PathDataset(paths), batch_size=32, num_workers=2)
        with torch.inference_mode():
            return np.concatenate([extractor(batch)["features"].numpy() for batch in loader])

    return run


def make_img2vec(name: str) -> Callable[[list[str]], Any] | None:
    if not name.startswith("resnet"):
        return None  # img2vec_pytorch has no MobileNetV3
    try:
        import img2vec_pytorch.img_to_vec as img_to_vec
    except ImportError:
        return None
    import numpy as np
    import torchvision
    from PIL import Image

    setattr(img_to_vec, name, lambda weights=None, **kw: torchvision.models.get_model(name))
    encoder = img_to_vec.Img2Vec(
        cuda=False, model=name, layer_output_size=2048 if name == "resnet50" else 512
    )

    def run(paths: list[str]) -> Any:
        rows = []
        for start in range(0, len(paths), 32):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + 32]]
            rows.append(encoder.get_vec(images))
        return np.concatenate(rows)

    return run


def make_embetter(name: str) -> Callable[[list[str]], Any] | None:
    try:
        import timm
        from embetter.vision import ImageLoader, TimmEncoder
    except ImportError:
        return None
    from sklearn.pipeline import make_pipeline

    create = timm.create_model
    timm.create_model = lambda *args, **kwargs: create(*args, **{**kwargs, "pretrained": False})
    try:
        pipeline = make_pipeline(ImageLoader(convert="RGB"), TimmEncoder(TIMM_NAMES[name]))
    finally:
        timm.create_model = create

    def run(paths: list[str]) -> Any:
        return pipeline.fit_transform(paths)

    return run


MAKERS: dict[str, Callable[[str], Callable[[list[str]], Any] | None]] = {
    **{
        variant: functools.partial(make_skfeat, **params)
        for variant, params in SKFEAT_VARIANTS.items()
    },
    "tutorial": make_tutorial,
    "manual_batch": make_manual_batch,
    "fx_dataloader": make_fx_dataloader,
    "img2vec": make_img2vec,
    "embetter": make_embetter,
}


# -- model-only limit -------------------------------------------------------------------------


def model_only(name: str, min_seconds: float) -> dict[str, float]:
    """Forward-only images/s per setting (median of iterations after warm-up)."""
    import torch

    from skfeat._runtime._fuse import fold_conv_bn

    eager = torchvision_backbone(name)
    folded = copy.deepcopy(eager)
    fold_conv_bn(folded)
    cl = torch.channels_last
    settings: dict[str, tuple[Any, bool]] = {
        "nchw": (eager, False),
        "channels_last": (copy.deepcopy(eager).to(memory_format=cl), True),
        "channels_last+fold": (folded.to(memory_format=cl), True),
    }
    results = {}
    for batch_size in (8, 32):
        frozen = None
        for setting, (model, channels_last) in [*settings.items(), ("jit_freeze", (None, False))]:
            x = torch.rand(batch_size, 3, 224, 224)
            if setting == "jit_freeze":
                with torch.no_grad():
                    frozen = torch.jit.optimize_for_inference(
                        torch.jit.freeze(torch.jit.trace(eager, x))
                    )
                model = frozen
            if channels_last:
                x = x.contiguous(memory_format=cl)
            with torch.inference_mode():
                model(x)
                model(x)
                times, start = [], time.perf_counter()
                while time.perf_counter() - start < min_seconds or len(times) < 3:
                    times.append(timed(model, x).seconds)
            results[f"{setting} bs{batch_size}"] = batch_size / statistics.median(times)
    return results


def make_model_only_openvino(name: str) -> Callable[[list[str]], Any] | None:
    """The forward pass alone as a compiled OpenVINO fp32 graph, batch 8; None without it."""
    from skfeat._runtime import _openvino

    if not _openvino.available():
        return None
    import numpy as np
    import openvino as ov
    import torch

    batch_size = 8
    x = torch.rand(batch_size, 3, 224, 224)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(
            torchvision_backbone(name),
            example_input=x,
            input=[((-1, 3, 224, 224), ov.Type.f32)],
        )
    compiled = ov.Core().compile_model(
        converted,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request, pixels = compiled.create_infer_request(), x.numpy()

    def run(paths: list[str]) -> Any:
        rows = []
        for start in range(0, len(paths), batch_size):
            request.infer({0: pixels[: min(batch_size, len(paths) - start)]})
            rows.append(np.array(request.get_output_tensor(0).data))
        return np.concatenate(rows)

    return run


# -- pipeline ceiling -----------------------------------------------------------------------


def decode_core_ms(paths: list[str], repeats: int) -> dict[str, float]:
    """Core-ms per file to read, decode, resize and crop, per decoder: one thread."""

    from skfeat import _jpeg
    from skfeat._preprocess import DataConfig, draft_min_side

    min_side = draft_min_side(DataConfig(256, 224))
    decoders = ["pil", "simplejpeg"] if _jpeg.available() else ["pil"]
    result = {}
    for decoder in decoders:
        prepare = skfeat_decoder(decoder, min_side)
        one_pass(prepare, paths, 1)  # warm-up
        cpu = [one_pass(prepare, paths, 1)[1] for _ in range(repeats)]
        result[decoder] = statistics.median(cpu) / len(paths) * 1e3
    return result


def ceilings(data: dict[str, Any], decode_ms: dict[str, float]) -> dict[str, float]:
    """Images/s no pipeline beats, per ``runtime+decoder``: cores / (decode + model)."""
    model_ms = {"torch": data["core_ms"]["model_only"]}
    if "model_only_openvino" in data["core_ms"]:
        model_ms["openvino"] = data["core_ms"]["model_only_openvino"]
    return {
        f"{runtime}+{decoder}": 1e3 * (os.cpu_count() or 1) / (model + decode)
        for runtime, model in model_ms.items()
        for decoder, decode in decode_ms.items()
    }


# -- memory ---------------------------------------------------------------------------------


def peak_rss_run(args: argparse.Namespace) -> None:
    """Child process: build the model, run one approach, print peak RSS in MB as JSON."""
    paths = sorted(str(p) for p in Path(args.rss_corpus).glob("photo_*"))[: args.rss_n]
    run = MAKERS[args.rss_approach](args.rss_model)
    after_setup = _rss_now_mb()
    run(paths[:4])
    run(paths)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"after_setup_mb": after_setup, "peak_mb": peak, "n": len(paths)}))


def _rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure_rss(approach: str, model: str, corpus: Path, n: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--rss-child",
        "--rss-approach",
        approach,
        "--rss-model",
        model,
        "--rss-corpus",
        str(corpus),
        "--rss-n",
        str(n),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def small_jpegs(folder: Path, n: int) -> Path:
    """``n`` small (160-320 px) JPEGs of noise-free gradients, made once."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("photo_*.jpg"))) >= n:
        return folder
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for i in range(n):
        side = int(rng.integers(160, 320))
        image = Image.fromarray(np.roll(base, i, axis=1)).resize((side, side * 3 // 4))
        image.save(folder / f"photo_{i:05d}.jpg", quality=85)
    return folder


# -- main -------------------------------------------------------------------------------------


def extras_summary() -> dict[str, str | None]:
    """The installed versions of the extras ``runtime``/``decoder="auto"`` pick."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("openvino", "simplejpeg"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(HERE / "_corpus"))
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--quick", action="store_true", help="n=60, 2 repeats, no memory")
    parser.add_argument("--memory", action="store_true", help="peak RSS in subprocesses")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--plot", default=None, help="write a PNG bar chart here")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-approach", help=argparse.SUPPRESS)
    parser.add_argument("--rss-model", help=argparse.SUPPRESS)
    parser.add_argument("--rss-corpus", help=argparse.SUPPRESS)
    parser.add_argument("--rss-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--from-json", default=None, help="only redraw table and plot")
    parser.add_argument("--memory-only", action="store_true", help="only the peak RSS runs")
    parser.add_argument("--rss-scaling-model", default="mobilenet_v3_large", help="or 'tiny'")
    parser.add_argument("--rss-corpus-model", default="resnet50")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print(markdown(results))
        if args.plot:
            plot(results, args.plot)
        return 0
    if args.rss_child:
        peak_rss_run(args)
        return 0
    if args.quick:
        args.n, args.repeats, args.memory = 60, 2, False
    if args.memory_only:
        paths = corpus_paths(Path(args.corpus), args.n)
        memory = memory_table(args, Path(args.corpus), len(paths))
        if args.json:
            Path(args.json).write_text(json.dumps(memory, indent=1))
        return 0

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    paths = corpus_paths(Path(args.corpus), args.n)
    print(f"{started}; {cpu_summary()}; load average before {load_before}", flush=True)
    results: dict[str, Any] = {
        "date": started,
        "cpu": cpu_summary(),
        "command": " ".join(sys.argv),
        "n_images": len(paths),
        "repeats": args.repeats,
        "load_before": load_before,
        "extras": extras_summary(),
        "decode_core_ms": decode_core_ms(paths, args.repeats),
        "models": {},
    }
    print(f"extras {results['extras']}; decode core-ms {results['decode_core_ms']}", flush=True)
    for model in args.models.split(","):
        limits = model_only(model, min_seconds=1.5 if args.quick else 3.0)
        best = max(limits, key=limits.get)
        print(f"{model}: model-only {limits}", flush=True)
        runners = {"model_only": make_model_only(model, best)}
        openvino_only = make_model_only_openvino(model)
        if openvino_only is not None:
            runners["model_only_openvino"] = openvino_only
        for approach in args.approaches.split(","):
            runner = MAKERS[approach](model)
            if runner is not None:
                runners[approach] = runner
        for runner in runners.values():
            runner(paths[:4])  # warm-up: first-call costs (weights, graphs, workers) excluded
        timings: dict[str, list[float]] = {name: [] for name in runners}
        cpu_ms: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            for approach, runner in runners.items():
                timing = timed(runner, paths)
                features = timing.result
                timings[approach].append(timing.rate(len(paths)))
                cpu_ms[approach].append(timing.cpu_seconds / len(paths) * 1e3)
                assert len(features) == len(paths), approach
                print(
                    f"{model} repeat {repeat} {approach}: {timings[approach][-1]:.1f} img/s",
                    flush=True,
                )
        row = {name: statistics.median(values) for name, values in timings.items()}
        data = {
            "img_per_s": row,
            "runs": timings,
            "core_ms": {name: statistics.median(values) for name, values in cpu_ms.items()},
            "model_only": limits,
            "model_only_best": [best, row["model_only"]],
        }
        data["ceiling"] = ceilings(data, results["decode_core_ms"])
        results["models"][model] = data
        del runners
        if args.json:  # partial results survive an interrupted run
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.memory:
        results["memory"] = memory_table(args, Path(args.corpus), len(paths))
    results["load_after"] = os.getloadavg()
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    return 0


def memory_table(args: argparse.Namespace, corpus: Path, n: int) -> dict[str, Any]:
    table: dict[str, Any] = {"corpus": {}, "scaling": {}}
    small = small_jpegs(corpus.parent / "_small_jpegs", 5000)
    for count in (500, 5000):
        table["scaling"][count] = measure_rss("skfeat", args.rss_scaling_model, small, count)
        print(f"skfeat {args.rss_scaling_model} N={count}: {table['scaling'][count]}", flush=True)
    for approach in args.approaches.split(","):
        try:
            table["corpus"][approach] = measure_rss(approach, args.rss_corpus_model, corpus, n)
        except subprocess.CalledProcessError as error:
            table["corpus"][approach] = {"error": error.stderr[-300:]}
        print(f"peak RSS {approach}: {table['corpus'][approach]}", flush=True)
    return table


def markdown(results: dict[str, Any]) -> str:
    """The speed table, the ratios, and (for runs that measured it) the pipeline ceiling."""
    limits = ["model_only", "model_only_openvino"]
    lines = [
        "| model | " + " | ".join(APPROACHES) + " | model-only (best setting) | "
        "model-only OpenVINO |",
        "|---|" + "---|" * (len(APPROACHES) + 2),
    ]
    for model, data in results["models"].items():
        speeds = data["img_per_s"]
        cells = [f"{speeds[a]:.1f}" if a in speeds else "n/a" for a in (*APPROACHES, *limits)]
        cells[-2] += f" ({data['model_only_best'][0]})"
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | skfeat / model-only | skfeat / tutorial | skfeat / best peer | "
        "skfeat / skfeat_torch | skfeat_torch / skfeat_torch_pil |",
        "|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for model, data in results["models"].items():
        speeds = data["img_per_s"]
        peers = [speeds[a] for a in PEERS if a in speeds]
        skfeat = speeds.get("skfeat", nan)
        torch_default = speeds.get("skfeat_torch", nan)
        lines.append(
            f"| {model} | {skfeat / data['model_only_best'][1]:.0%} | "
            f"{skfeat / speeds.get('tutorial', nan):.2f}x | "
            f"{skfeat / max(peers) if peers else nan:.2f}x | "
            f"{skfeat / torch_default:.2f}x | "
            f"{torch_default / speeds.get('skfeat_torch_pil', nan):.2f}x |"
        )
    if "decode_core_ms" in results:
        lines += ["", *ceiling_markdown(results)]
    return "\n".join(lines)


def ceiling_markdown(results: dict[str, Any]) -> list[str]:
    """Per model: decode and model core-ms per image, each ceiling, skfeat against its own."""
    extras = results.get("extras", {})
    default = (
        f"{'openvino' if extras.get('openvino') else 'torch'}"
        f"+{'simplejpeg' if extras.get('simplejpeg') else 'pil'}"
    )
    decode = results["decode_core_ms"]
    pairs = list(next(iter(results["models"].values()))["ceiling"])
    lines = [
        "decode core-ms per file (one thread): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in decode.items()),
        "",
        "| model | model core-ms torch | model core-ms OpenVINO | "
        + " | ".join(f"ceiling {pair}" for pair in pairs)
        + f" | skfeat / ceiling {default} |",
        "|---|---|---|" + "---|" * (len(pairs) + 1),
    ]
    for model, data in results["models"].items():
        core = data["core_ms"]
        openvino = core.get("model_only_openvino")
        ceiling = data["ceiling"]
        lines.append(
            f"| {model} | {core['model_only']:.1f} | "
            + (f"{openvino:.1f}" if openvino is not None else "n/a")
            + " | "
            + " | ".join(f"{ceiling[pair]:.1f}" for pair in pairs)
            + f" | {data['img_per_s']['skfeat'] / ceiling[default]:.0%} |"
        )
    return lines


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2))
    for axis, model in zip(np.atleast_1d(axes), models, strict=True):
        data = results["models"][model]
        names = [a for a in APPROACHES if a in data["img_per_s"]]
        values = [data["img_per_s"][a] for a in names]
        colors = ["tab:blue" if a.startswith("skfeat") else "tab:gray" for a in names]
        axis.bar(names, values, color=colors)
        best, limit = data["model_only_best"]
        axis.axhline(limit, color="tab:red", linestyle="--", label=f"model only ({best})")
        axis.set_title(model)
        axis.set_ylabel("images / s (median)")
        axis.tick_params(axis="x", rotation=45)
        axis.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{results['n_images']} photos, {results['cpu']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
