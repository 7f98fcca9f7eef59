"""Cold start of the OpenVINO runtime: converting a backbone vs loading it from the graph store.

Each run is a fresh process (as a loky or Dask worker, or a CLI run, is) that builds a
featurizer with ``runtime="openvino"`` and transforms one image; inside it are timed
the first ``transform`` (where the graph is converted, or loaded from the on-disk
store, then run on the image) and the whole of ``fit`` + ``transform`` (``fit`` traces
the layers, whatever the runtime), and the process reports which happened. The first
run converts into an empty store, the next ones load; ``SKFEAT_GRAPH_CACHE=0`` runs
convert every time.
Run from the repository root on an otherwise idle machine::

    PYTHONPATH=$PWD python benchmarks/bench_graph_store.py --model resnet50 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_CHILD = """
import json, sys, time
import numpy as np
from skfeat import PretrainedCNNFeaturizer
from skfeat._runtime import _openvino

image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
featurizer = PretrainedCNNFeaturizer(sys.argv[1], weights=None, runtime="openvino", n_jobs=1)
start = time.perf_counter()
featurizer.fit([image])
fitted = time.perf_counter()
featurizer.transform([image])  # the graph: converted, or loaded from the store
done = time.perf_counter()
print(json.dumps({"seconds": done - start, "graph": done - fitted, **_openvino.EVENTS}))
"""


def one_run(model: str, store: str, enabled: bool) -> dict[str, float]:
    """One fresh process's first-row time and its graph events."""
    env = {**os.environ, "SKFEAT_CACHE_DIR": store, "SKFEAT_GRAPH_CACHE": "1" if enabled else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, model], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        first = one_run(args.model, store, enabled=True)
        loaded = [one_run(args.model, store, enabled=True) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory() as store:
        converted = [one_run(args.model, store, enabled=False) for _ in range(args.repeats)]

    def line(label: str, runs: list[dict[str, float]]) -> str:
        graph = statistics.median(r["graph"] for r in runs)
        total = statistics.median(r["seconds"] for r in runs)
        return f"  {label:<24} first transform {graph:5.2f} s, fit + transform {total:5.2f} s"

    print(f"{args.model}, fresh processes, medians of {args.repeats}:")
    print(line("converted (store off)", converted))
    print(line("first run, empty store", [first]))
    print(line("loaded from the store", loaded))
    assert all(r.get("loaded") == 1 and not r.get("converted") for r in loaded), loaded


if __name__ == "__main__":
    main()
