"""Grid search over layer x pooling, with and without the activation cache.

The search is ``GridSearchCV(Pipeline([featurizer, StandardScaler, LogisticRegression]))``
over 3 layers x 3 poolings with ``cv=3`` (28 fits: 9 candidates x 3 folds + refit), on the
same PNG files each time. Three variants run interleaved, ``--repeats`` times each:

* ``no cache``: every fit and score runs the backbone (about 28 passes per image);
* ``cache, cold``: a fresh in-memory ``ActivationCache`` (one pass per image, stored);
* ``cache, warm``: the same search again on the filled cache (no pass at all).

Medians are reported with the ratios, measured side by side in one run. Run from the
repository root::

    PYTHONPATH=$PWD python benchmarks/bench_cache.py --n-images 90 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
from common import timed
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skfeat import ActivationCache, PretrainedCNNFeaturizer

LAYERS = ["layer2", "layer3", "layer4"]
POOLINGS = ["avg", "max", "gem"]


def write_images(folder: Path, n_images: int, size: int) -> tuple[list[str], np.ndarray]:
    """Random textures in two classes (one has a darker top half), saved as PNG."""
    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % 2
    paths = []
    for index, label in enumerate(labels):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        if label:
            pixels[: size // 2] //= 2
        path = folder / f"image_{index:04d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths, labels


def search(model: str, cache: ActivationCache | None, n_jobs: int, batch_size: int) -> GridSearchCV:
    featurizer = PretrainedCNNFeaturizer(
        model, weights=None, cache=cache, batch_size=batch_size, n_jobs=1
    )
    pipe = Pipeline(
        [("features", featurizer), ("scale", StandardScaler()), ("clf", LogisticRegression())]
    )
    grid = {"features__layer": LAYERS, "features__pooling": POOLINGS}
    return GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs)


def timed_search(
    grid: GridSearchCV, paths: list[str], labels: np.ndarray
) -> tuple[float, np.ndarray]:
    seconds = timed(grid.fit, paths, labels).seconds
    return seconds, grid.cv_results_["mean_test_score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--n-images", type=int, default=90)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=1, help="GridSearchCV workers")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)

    with tempfile.TemporaryDirectory() as folder:
        paths, labels = write_images(Path(folder), args.n_images, args.image_size)
        times: dict[str, list[float]] = {"no cache": [], "cache, cold": [], "cache, warm": []}
        misses = []
        for _ in range(args.repeats):
            seconds, reference = timed_search(
                search(args.model, None, args.n_jobs, args.batch_size), paths, labels
            )
            times["no cache"].append(seconds)
            cache = ActivationCache()
            seconds, cold = timed_search(
                search(args.model, cache, args.n_jobs, args.batch_size), paths, labels
            )
            times["cache, cold"].append(seconds)
            misses.append(cache.stats()["misses"])
            seconds, warm = timed_search(
                search(args.model, cache, args.n_jobs, args.batch_size), paths, labels
            )
            times["cache, warm"].append(seconds)
            if not (np.array_equal(cold, reference) and np.array_equal(warm, reference)):
                raise AssertionError("the cached search scored differently from the uncached one")

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.model} (weights=None), {args.n_images} PNG images of {args.image_size} px, "
        f"{len(LAYERS)} layers x {len(POOLINGS)} poolings, cv=3, n_jobs={args.n_jobs}, "
        f"median of {args.repeats}"
    )
    for name, value in medians.items():
        print(f"  {name:<12} {value:8.2f} s   runs: {', '.join(f'{t:.2f}' for t in times[name])}")
    print(f"  images computed by the cold cached search: {misses} (of {args.n_images})")
    print(f"  speed-up, cold cache: {medians['no cache'] / medians['cache, cold']:.1f}x")
    print(f"  speed-up, warm cache: {medians['no cache'] / medians['cache, warm']:.1f}x")
    print("  identical CV scores in all three variants: yes")


if __name__ == "__main__":
    main()
