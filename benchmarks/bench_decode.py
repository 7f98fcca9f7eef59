"""Decode-only speed: read, decode, resize and crop one image, for each way of doing it.

Each approach turns every file of a generated corpus (``make_corpus.py``) into the
``(3, 224, 224)`` uint8 tensor the network is fed (short side resized to 256, centre
crop), with no model. Timed on 1 thread (a loop) and on ``--threads`` threads
(``ThreadPoolExecutor.map``), interleaved within each pass so that load from other
processes hits every approach alike; the table gives the median over ``--repeats``
passes after a warm-up pass: images/s (wall) and core-ms per image (process CPU time,
all threads, per image).

Approaches:

``careful PIL``
    What a careful user writes: ``Image.open``, ``draft("RGB", (768, 768))`` (the same
    reduced DCT scale as skfeat), ``ImageOps.exif_transpose``, ``convert("RGB")``, then
    torchvision v2 ``resize`` (antialiased) and ``center_crop`` on a uint8 tensor.
``skfeat decoder="pil"``
    ``skfeat._inputs.read_file`` + ``decode(min_side=768)`` + ``resize_and_crop``:
    what the engine runs per image.
``skfeat decoder="simplejpeg"``
    The same with ``decoder="simplejpeg"`` (needs ``pip install "skfeat[jpeg]"``).
``PyTurboJPEG``
    ``TurboJPEG().decode(data, scaling_factor=(1, scale))`` for YCbCr and grey JPEGs
    (no EXIF orientation), Pillow for the others; only when PyTurboJPEG finds the system
    libturbojpeg, else skipped.

Usage, from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_decode.py --n 160 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import CROP, RESIZE, careful_pil, one_pass, skfeat_decoder  # noqa: E402


def pyturbojpeg(min_side: int) -> Callable[[str], Any] | None:
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        turbo = TurboJPEG()
    except Exception as err:  # ImportError, or the system libturbojpeg is absent
        print(f"PyTurboJPEG skipped: {str(err).splitlines()[0]}")
        return None
    from PIL import Image

    from skfeat._inputs import decode
    from skfeat._jpeg import draft_scale
    from skfeat._preprocess import DataConfig, resize_and_crop

    config = DataConfig(RESIZE, CROP)

    def prepare(path: str) -> Any:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            fast = image.format == "JPEG" and image.mode in ("RGB", "L")
            scale = draft_scale(image.width, image.height, min_side)
        if fast:
            rgb = turbo.decode(data, pixel_format=TJPF_RGB, scaling_factor=(1, scale))
        else:
            rgb = decode(path, 0, min_side=min_side, data=data)
        return resize_and_crop(rgb, config)

    return prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None, help="make_corpus folder (default: temp)")
    parser.add_argument("--n", type=int, default=160, help="corpus size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="the threaded runs' pool size")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads (resize)"
    )
    args = parser.parse_args(argv)

    import torch
    from make_corpus import make_corpus

    from skfeat._jpeg import available
    from skfeat._preprocess import DataConfig, draft_min_side

    torch.set_num_threads(args.torch_threads)
    min_side = draft_min_side(DataConfig(RESIZE, CROP))
    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="skfeat-corpus-"))
    paths = [str(path) for path in make_corpus(corpus, n=args.n, seed=args.seed)]
    approaches: dict[str, Callable[[str], Any]] = {
        "careful PIL": careful_pil(min_side),
        'skfeat decoder="pil"': skfeat_decoder("pil", min_side),
    }
    if available():
        approaches['skfeat decoder="simplejpeg"'] = skfeat_decoder("simplejpeg", min_side)
    else:
        print('skfeat decoder="simplejpeg" skipped: simplejpeg is not installed')
    turbo = pyturbojpeg(min_side)
    if turbo is not None:
        approaches["PyTurboJPEG"] = turbo

    thread_counts = sorted({1, args.threads})
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for repeat in range(args.repeats + 1):  # pass 0 warms up, and is not kept
        for threads in thread_counts:
            for name, prepare in approaches.items():
                timing = one_pass(prepare, paths, threads)
                if repeat:
                    times.setdefault((name, threads), []).append(timing)

    print(
        f"\n{len(paths)} files from make_corpus (seed {args.seed}), resize {RESIZE}, crop "
        f"{CROP}, draft/DCT scale down to short side >= {min_side}; median of "
        f"{args.repeats} passes after a warm-up; torch {args.torch_threads} intra-op "
        f"thread(s), {os.cpu_count()} CPUs"
    )
    print("\n| approach | threads | images/s | core-ms per image | vs careful PIL |")
    print("|---|---|---|---|---|")
    for threads in thread_counts:
        base = None
        for name in approaches:
            wall = statistics.median(t[0] for t in times[(name, threads)])
            cpu = statistics.median(t[1] for t in times[(name, threads)])
            speed = len(paths) / wall
            base = speed if base is None else base
            print(
                f"| {name} | {threads} | {speed:.1f} | {cpu / len(paths) * 1e3:.2f} | "
                f"{speed / base:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
