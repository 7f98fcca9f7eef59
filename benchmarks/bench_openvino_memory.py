"""Resident memory over a 12-candidate grid with ``runtime="openvino"``: graphs per backbone.

Each candidate of a grid search over ``layer`` x ``pooling`` is a fresh featurizer
transforming the same images, as ``GridSearchCV`` does. The resident set size
(``VmRSS``) is printed after each candidate: with one graph per backbone it stays
flat within a layer and grows a little with each new layer (its graph replaces the
last); with ``--cache`` the first graph holds every stored stage, and it stays flat.
One graph per candidate, as before, grew with each.
A memory figure, not a timing: it is meaningful on a busy machine. Run from the
repository root::

    PYTHONPATH=$PWD python benchmarks/bench_openvino_memory.py
    PYTHONPATH=$PWD python benchmarks/bench_openvino_memory.py --runtime torch
    PYTHONPATH=$PWD python benchmarks/bench_openvino_memory.py --cache

Converted graphs are not read from the on-disk store (``SKFEAT_GRAPH_CACHE=0``), so
every graph is converted as in a first run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource

os.environ.setdefault("SKFEAT_GRAPH_CACHE", "0")

import numpy as np

from skfeat import ActivationCache, PretrainedCNNFeaturizer

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
POOLINGS = ["avg", "max", "gem"]


def rss_mb() -> float:
    """The current resident set size in MB (``/proc/self/status``, else the peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="openvino", choices=["openvino", "torch"])
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--cache", action="store_true", help="an in-memory ActivationCache")
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (args.n_images, 96, 96, 3), np.uint8)
    cache = ActivationCache() if args.cache else None
    print(f"start: {rss_mb():.0f} MB")
    for number, (layer, pooling) in enumerate(itertools.product(LAYERS, POOLINGS), 1):
        featurizer = PretrainedCNNFeaturizer(
            "resnet18",
            weights=None,
            layer=layer,
            pooling=pooling,
            runtime=args.runtime,
            cache=cache,
        )
        featurizer.fit_transform(images)
        print(f"candidate {number:2d} ({layer}, {pooling}): {rss_mb():.0f} MB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"end: {rss_mb():.0f} MB, peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
