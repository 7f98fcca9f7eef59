"""What bad files cost: a transform over a folder with 10% broken files, against the good alone.

The folder is ``n_good`` realistic photos (``make_corpus.py``: JPEG, PNG, CMYK, EXIF-rotated,
a few large camera-size images) plus ``bad_fraction * n_good`` broken items of mixed kinds
(truncated copies, HTML error pages, empty files, random bytes, text, missing paths,
directories, a decompression bomb), scattered among them. Both runs use
``on_error="nan"``; the runs alternate (good, mixed, good, mixed...) so that the load of a
shared machine falls on both alike, and the medians are compared.

It checks that the mixed run returns one row per input, in order: NaN rows exactly at the
bad positions, and the good rows equal to the good-only run.

Usage, from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_bad_images.py --n-good 200 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed
from make_corpus import make_corpus

BAD_KINDS = (
    "truncated",
    "html",
    "empty",
    "random",
    "text",
    "missing",
    "directory",
    "bomb",
)


def _bomb_bytes(side: int = 30_000) -> bytes:
    """A PNG whose header declares ``side`` x ``side`` pixels; refused before any decoding."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey
    idat = zlib.compress(bytes(1 + side // 8) * 16)  # a few rows; never read
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def make_bad(folder: Path, n_bad: int, good: list[Path], seed: int) -> list[str]:
    """``n_bad`` broken items cycling through ``BAD_KINDS``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bad = []
    for i in range(n_bad):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        path = folder / f"bad_{i:03d}_{kind}.jpg"
        if kind == "truncated":
            data = good[int(rng.integers(len(good)))].read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "html":
            path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "random":
            path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        elif kind == "text":
            path.write_text("not an image\n")
        elif kind == "directory":
            path.mkdir(exist_ok=True)
        elif kind == "bomb":
            path = path.with_suffix(".png")
            path.write_bytes(_bomb_bytes())
        # "missing": the path is never written
        bad.append(str(path))
    return bad


def _timed_transform(featurizer, X) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mixed run warns once, by design
        timing = timed(featurizer.transform, X)
    return timing.seconds, timing.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-good", type=int, default=200)
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from skfeat import PretrainedCNNFeaturizer

    with tempfile.TemporaryDirectory(prefix="skfeat-bench-bad-") as root:
        good = make_corpus(Path(root) / "good", n=args.n_good, seed=args.seed)
        n_bad = round(args.bad_fraction * args.n_good)
        bad = make_bad(Path(root) / "bad", n_bad, good, args.seed)
        good_items = [str(path) for path in good]
        rng = np.random.default_rng(args.seed)
        is_bad = np.zeros(len(good_items) + n_bad, dtype=bool)
        is_bad[rng.choice(is_bad.size, n_bad, replace=False)] = True
        mixed = np.empty(is_bad.size, dtype=object)
        mixed[is_bad], mixed[~is_bad] = bad, good_items
        mixed_items = mixed.tolist()

        weights = None if args.model in ("resnet18", "resnet50", "mobilenet_v2") else "DEFAULT"
        featurizer = PretrainedCNNFeaturizer(
            args.model,
            weights=weights,
            batch_size=args.batch_size,
            n_jobs=args.n_jobs,
            on_error="nan",
            device="cpu",
        ).fit(good_items)
        featurizer.transform(good_items[: args.batch_size])  # load the weights once, untimed

        good_times, mixed_times = [], []
        for _ in range(args.repeats):
            seconds, good_features = _timed_transform(featurizer, good_items)
            good_times.append(seconds)
            seconds, mixed_features = _timed_transform(featurizer, mixed_items)
            mixed_times.append(seconds)

    failed = np.isnan(mixed_features).all(axis=1)
    assert mixed_features.shape[0] == len(mixed_items), "a row was lost"
    assert np.array_equal(failed, is_bad), "NaN rows are not exactly the bad inputs"
    np.testing.assert_allclose(mixed_features[~is_bad], good_features, atol=1e-4, rtol=0)

    good_median, mixed_median = statistics.median(good_times), statistics.median(mixed_times)
    print(
        f"model={args.model} batch_size={args.batch_size} n_jobs={args.n_jobs} "
        f"torch_threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"good only : {len(good_items)} images, median {good_median:.2f} s  {good_times}")
    print(
        f"with bad  : {len(mixed_items)} inputs ({n_bad} bad), median {mixed_median:.2f} s  "
        f"{mixed_times}"
    )
    print(f"rows: {len(mixed_items)} in order, NaN exactly at the {n_bad} bad inputs")
    print(f"time ratio (with bad / good only): {mixed_median / good_median:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
