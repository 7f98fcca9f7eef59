"""Throughput of ``skfeat.dask`` on a LocalCluster of 1 and 2 workers, against ``transform``.

Every configuration featurizes the same images, side by side in each round, and the figures
are medians over the rounds, after one warm-up round (which loads the model in every process):

* ``local, 1 torch thread``: ``featurizer.transform(paths)`` in this process with
  ``torch.set_num_threads(1)``: the compute budget of one single-threaded Dask worker (Dask
  starts its workers with ``OMP_NUM_THREADS=1``).
* ``local, all torch threads``: the same with torch's default number of threads.
* ``dask, N workers``: ``skfeat.dask.featurize(series, featurizer).compute()`` on a
  ``LocalCluster(n_workers=N, threads_per_worker=1)``.

The per-image overhead of the Dask path is ``(dask 1 worker - local 1 thread) / n_images``:
scheduling, shipping the paths and results, and building the pandas partitions.

Usage, from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_dask.py --model resnet18 --rounds 5

The images are the 150 bundled flower photos (128 px JPEGs), repeated to ``--n-images``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from common import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights", default=None, help="default: random weights (same cost)")
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import dask.dataframe as dd
    import distributed
    import pandas as pd
    import torch

    from skfeat import PretrainedCNNFeaturizer, load_flowers_sample
    from skfeat.dask import featurize

    sample = load_flowers_sample().paths
    paths = [sample[i % len(sample)] for i in range(args.n_images)]
    series = dd.from_pandas(pd.Series(paths, name="path"), npartitions=args.partitions)
    featurizer = PretrainedCNNFeaturizer(args.model, weights=args.weights).fit(paths)
    default_threads = torch.get_num_threads()

    def local(threads: int) -> Callable[[], object]:
        def run() -> object:
            torch.set_num_threads(threads)
            try:
                return featurizer.transform(paths)
            finally:
                torch.set_num_threads(default_threads)

        return run

    clusters = {
        n: distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        for n in (1, 2)
    }
    clients = {
        n: distributed.Client(cluster, set_as_default=False) for n, cluster in clusters.items()
    }
    configs: dict[str, Callable[[], object]] = {
        "local, 1 torch thread": local(1),
        f"local, all torch threads ({default_threads})": local(default_threads),
    }
    for n, client in clients.items():
        configs[f"dask, {n} worker{'s' * (n > 1)}"] = lambda client=client: client.compute(
            featurize(series, featurizer)
        ).result()
    try:
        cold = {name: timed(run).seconds for name, run in configs.items()}  # loads the models
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, run in configs.items():
                times[name].append(timed(run).seconds)
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters.values():
            cluster.close()

    n = args.n_images
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{n} images ({args.model}, weights={args.weights}), {args.partitions} partitions, "
        f"median of {args.rounds} rounds after a warm-up round"
    )
    print(f"{'configuration':<32} {'images/s':>9} {'s (median)':>11} {'s (cold)':>9}")
    for name in configs:
        print(f"{name:<32} {n / median[name]:>9.1f} {median[name]:>11.2f} {cold[name]:>9.2f}")
    one, two = median["dask, 1 worker"], median["dask, 2 workers"]
    base = median["local, 1 torch thread"]
    print(f"speed-up, 2 workers over 1 worker: {one / two:.2f}x")
    print(f"dask 1 worker / local 1 thread: {one / base:.3f}")
    print(f"dask overhead per image: {(one - base) / n * 1e3:+.2f} ms")


if __name__ == "__main__":
    main()
