"""Are the engine's shortcuts faithful? Draft JPEG decode, the JPEG decoder, reduced precision.

Three measurements with real pretrained weights, each printed as a Markdown table:

``draft``
    EfficientNet-Lite0 (packaged ImageNet weights) features of JPEGs decoded in full
    against the same JPEGs decoded at reduced DCT scale (``PIL.Image.draft``) under the
    engine's rule (short side >= 3 x resize) and under the rules beside it (>= 1, 2
    and 4 x resize), on the bundled flower photos and on large photos generated from
    scikit-learn's sample images (1024-4000 px). Per-image cosine similarity, and
    decode time.

``decoder``
    EfficientNet-Lite0 features with ``decoder="pil"`` and ``decoder="simplejpeg"``
    (both at the engine's draft rule, short side >= 3 x resize), and with simplejpeg
    left to pick libjpeg-turbo's finest eighth (3/8, 5/8...) instead of Pillow's 1/2,
    1/4, 1/8, each against the canonical recipe (full decode with Pillow, Resize,
    CenterCrop), on ``flowers5-128-ccby`` (``--per-class`` images per class) and on a
    generated corpus (``make_corpus.py``, ``--corpus-n`` files, with 3000-4000 px JPEGs
    that are DCT-scaled). Per-image cosine similarity, and how many files were scaled.

``precision``
    Features in bf16 and fp16 autocast against fp32, for EfficientNet-Lite0 and the
    torchvision MobileNetV2 backbone, on ``flowers5-128-ccby`` (``--per-class`` images
    per class): per-image cosine similarity, and the accuracy of a linear probe
    (StandardScaler + LogisticRegression, stratified 5-fold). On a CPU without native
    bf16 this runs emulated: slow, but the numbers are the same.

Usage, from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_fidelity.py --part all \\
        --flowers ../shared/data/flowers5-128-ccby \\
        --mobilenet-v2 ../shared/weights/mobilenet_v2_features_imagenet_torchvision.pth

The ``decoder`` part needs simplejpeg (``pip install "skfeat[jpeg]"``)::

    PYTHONPATH=$PWD python benchmarks/bench_fidelity.py --part decoder --per-class 100
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timed


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def large_photos(n: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEG photos with long sides spread over 1024-4000 px, as bytes."""
    from make_corpus import ImagePlan, render_photo
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for index in range(n):
        image = render_photo(ImagePlan(index, "jpeg_rgb", "huge"), seed)
        long_side = int(np.exp(rng.uniform(np.log(1024), np.log(4000))))
        scale = long_side / max(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
        photos.append(buffer.getvalue())
    return photos


def features_with_draft(featurizer, items, factor: int | None) -> np.ndarray:
    """Features with the draft rule's factor swapped (None: always decode in full)."""
    import skfeat._runtime._engine as engine

    original = engine.draft_min_side
    engine.draft_min_side = lambda config: 0 if factor is None else factor * config.resize_size
    try:
        return featurizer.transform(items)
    finally:
        engine.draft_min_side = original


def decode_seconds(items, min_side: int | None) -> float:
    from skfeat._inputs import decode

    def run() -> None:
        for index, item in enumerate(items):
            decode(item, index, min_side=min_side)

    return timed(run).seconds / len(items)


def run_draft(args: argparse.Namespace) -> None:
    from skfeat import PretrainedCNNFeaturizer, load_flowers_sample
    from skfeat._inputs import decode

    featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=1).fit([b""])
    resize = featurizer.data_config_.resize_size
    sets = {
        "bundled flowers (150 photos)": list(load_flowers_sample().paths),
        f"generated large photos ({args.n_large}, 1024-4000 px)": large_photos(args.n_large),
    }
    print(
        "\n| images | rule | drafted | cosine >= 0.999 | min cosine | median cosine "
        "| decode ms/img (full -> draft) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, items in sets.items():
        full = features_with_draft(featurizer, items, None)
        full_ms = decode_seconds(items, None) * 1e3
        for factor in (4, 3, 2, 1):
            drafted = features_with_draft(featurizer, items, factor)
            cos = cosine_rows(full, drafted)
            ms = decode_seconds(items, factor * resize) * 1e3
            n_drafted = sum(
                decode(item, 0, min_side=factor * resize).shape != decode(item, 0).shape
                for item in items
            )
            label = f"short side >= {factor} x resize ({factor * resize} px)"
            print(
                f"| {name} | {label} | {n_drafted}/{len(items)} | "
                f"{int((cos >= 0.999).sum())}/{len(items)} | {cos.min():.5f} | "
                f"{np.median(cos):.5f} | {full_ms:.1f} -> {ms:.1f} |",
                flush=True,
            )


def decode_finest_eighth(decode, item, index, *, min_side=None, data=None, **options):
    """As ``decoder="simplejpeg"``, but at libjpeg-turbo's own smallest eighth >= min_side."""
    import simplejpeg
    from PIL import Image

    from skfeat._inputs._pixels import exif_orientation, to_upright

    data = data if data is not None else item if isinstance(item, bytes) else None
    if data is None:
        data = Path(item).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG" or image.mode not in ("RGB", "L") or not min_side:
            return decode(item, index, min_side=min_side, data=data, **options)
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=min_side, min_width=min_side, strict=True
        )
        return to_upright(pixels, exif_orientation(image))


def features_with_decode(featurizer, items, variant: str) -> np.ndarray:
    """Features with the engine's decode swapped for one of the compared variants."""
    import skfeat._runtime._engine as engine

    original = engine.decode

    def decode(item, index, **options):
        if variant == "canonical":
            options.update(min_side=None, decoder="pil")
        elif variant == "finest eighth":
            return decode_finest_eighth(original, item, index, **options)
        else:
            options["decoder"] = variant
        return original(item, index, **options)

    engine.decode = decode
    try:
        return featurizer.transform(items)
    finally:
        engine.decode = original


def run_decoder(args: argparse.Namespace) -> None:
    import tempfile

    from make_corpus import make_corpus

    from skfeat import PretrainedCNNFeaturizer
    from skfeat._inputs import decode
    from skfeat._preprocess import draft_min_side

    featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=1).fit([b""])
    min_side = draft_min_side(featurizer.data_config_)
    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="skfeat-corpus-"))
    generated = [str(path) for path in make_corpus(corpus, n=args.corpus_n, seed=0)]
    flowers, _ = flowers_subset(Path(args.flowers), args.per_class)
    sets = {
        f"flowers5-128-ccby ({len(flowers)} photos, 128 px)": flowers,
        f"generated corpus ({len(generated)} files, make_corpus seed 0)": generated,
    }
    print(
        f"\nEfficientNet-Lite0, draft rule: short side >= {min_side} px; cosine against the "
        "canonical recipe (full Pillow decode, Resize, CenterCrop)"
    )
    print(
        "\n| images | decode | DCT-scaled | cosine >= 0.999 | min cosine | median cosine | lowest |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, items in sets.items():
        canonical = features_with_decode(featurizer, items, "canonical")
        full_shapes = [decode(item, 0).shape for item in items]
        for variant in ("pil", "simplejpeg", "finest eighth"):
            if variant == "finest eighth":
                decode_one = functools.partial(decode_finest_eighth, decode, min_side=min_side)
            else:
                decode_one = functools.partial(decode, min_side=min_side, decoder=variant)
            scaled = sum(
                decode_one(item, 0).shape != shape
                for item, shape in zip(items, full_shapes, strict=True)
            )
            cos = cosine_rows(canonical, features_with_decode(featurizer, items, variant))
            label = (
                "simplejpeg, libjpeg-turbo's finest eighth"
                if variant == "finest eighth"
                else (f'decoder="{variant}"')
            )
            print(
                f"| {name} | {label} | {scaled}/{len(items)} | "
                f"{int((cos >= 0.999).sum())}/{len(items)} | {cos.min():.6f} | "
                f"{np.median(cos):.6f} | {Path(str(items[int(np.argmin(cos))])).name} |",
                flush=True,
            )


def flowers_subset(root: Path, per_class: int) -> tuple[list[str], np.ndarray]:
    paths, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(folder.glob("*.jpg"))[:per_class]
        paths += [str(f) for f in files]
        labels += [label] * len(files)
    return paths, np.asarray(labels)


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(probe, features, labels, cv=folds).mean())


def features_in(featurizer, paths, precision: str) -> tuple[np.ndarray, float]:
    """Features with ``precision`` forced (the CPU fp16 fallback is bypassed)."""
    import skfeat._runtime._settings as settings

    original = settings.resolve_precision
    settings.resolve_precision = lambda precision, device, label: precision
    try:
        featurizer.set_params(precision=precision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timing = timed(featurizer.transform, paths)
        return timing.result, timing.rate(len(paths))
    finally:
        settings.resolve_precision = original


def run_precision(args: argparse.Namespace) -> None:
    from skfeat import PretrainedCNNFeaturizer

    paths, labels = flowers_subset(Path(args.flowers), args.per_class)
    models = {"efficientnet_lite0": PretrainedCNNFeaturizer("efficientnet_lite0")}
    if args.mobilenet_v2:
        models["mobilenet_v2"] = PretrainedCNNFeaturizer("mobilenet_v2", weights=args.mobilenet_v2)
    models = {name: models[name] for name in args.models.split(",") if name in models}
    print(f"\n{len(paths)} images from {args.flowers}, linear probe: 5-fold stratified")
    print("\n| model | precision | min cosine | p1 cosine | median cosine | probe acc | img/s |")
    print("|---|---|---|---|---|---|---|")
    for name, featurizer in models.items():
        featurizer.set_params(batch_size=32).fit(paths)
        reference, speed = features_in(featurizer, paths, "fp32")
        base = probe_accuracy(reference, labels)
        print(f"| {name} | fp32 | 1 | 1 | 1 | {base:.3f} | {speed:.1f} |", flush=True)
        for precision in args.precisions.split(","):
            features, speed = features_in(featurizer, paths, precision)
            cos = cosine_rows(reference, features)
            acc = probe_accuracy(features, labels)
            print(
                f"| {name} | {precision} | {cos.min():.4f} | {np.percentile(cos, 1):.4f} | "
                f"{np.median(cos):.4f} | {acc:.3f} ({100 * (acc - base):+.1f} pt) | {speed:.1f} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("draft", "decoder", "precision", "all"), default="all")
    parser.add_argument("--n-large", type=int, default=24)
    parser.add_argument("--flowers", default="../shared/data/flowers5-128-ccby")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--corpus", default=None, help="folder for make_corpus (default: temp)")
    parser.add_argument("--corpus-n", type=int, default=160)
    parser.add_argument("--mobilenet-v2", default=None)
    parser.add_argument("--precisions", default="bf16,fp16", help="compared with fp32")
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    args = parser.parse_args(argv)
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    if args.part in ("draft", "all"):
        run_draft(args)
    if args.part in ("decoder", "all"):
        run_decoder(args)
    if args.part in ("precision", "all"):
        run_precision(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
