#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA device: the tests marked gpu, then the
# end-to-end benchmark on CUDA against the host's decode limit. One summary at the end.
# Runs in about 5 minutes on a recent GPU; results go to $OUT (default benchmarks/_results).
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/_results}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
start=$SECONDS

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nproc
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$out/gpu-machine.txt"

echo "== pytest -m gpu"
timeout 300 "$python" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
    tests/test_gpu.py tests/test_runtime.py 2>&1 | tee "$out/gpu-tests.txt"
tests=${PIPESTATUS[0]}

echo "== end to end on CUDA"
timeout 240 "$python" benchmarks/bench_gpu.py --n 600 --repeats 3 \
    --json "$out/gpu-bench.json" 2>&1 | tee "$out/gpu-bench.txt"
bench=${PIPESTATUS[0]}

echo "== summary"
echo "tests: exit $tests ($(tail -n 1 "$out/gpu-tests.txt"))"
echo "benchmark: exit $bench"
grep -E "img/s" "$out/gpu-bench.txt" || true
echo "done in $((SECONDS - start)) s"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
