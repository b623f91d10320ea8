#!/usr/bin/env bash
# One short run on a machine with a GPU (or TPU): the accelerator-path tests and the benchmarks at
# accelerator sizes, with the device named in every result. Meant for the `device` tool, e.g.
#
#   bash benchmarks/gpu_check.sh            # results under $OUT (or benchmarks/results/gpu/)
#
# Budget: under 8 minutes on one H100 or H200 (each step has its own timeout, so a hang cannot eat
# the lease). On the CPU it runs too, slowly; it is not part of CI (which runs the same suites on
# the CPU with TRANSRATE_JAX_BRANCHES=accelerator, tests/test_accelerator_branches.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"

step() {  # step NAME SECONDS COMMAND...: run, log, and keep going on failure
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
}

python -m pip install --quiet --no-deps -e . >> "$log" 2>&1 || python -m pip install --quiet -e . >> "$log" 2>&1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) >> "$log" 2>&1
python - <<'PY' | tee -a "$log"
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
PY

# On an accelerator, score_many runs its vmapped chunk path (one program per chunk) and the sharded
# score runs over every local device: these tests exercise both.
step tests 200 python -m pytest -q -p no:cacheprovider tests/test_sweep.py tests/test_sharding.py \
  tests/test_metric_contract.py tests/test_selection.py tests/test_float32.py \
  tests/test_regularizer.py tests/test_transrate_reference.py tests/test_differentiability.py \
  tests/test_precision_audit.py
# The stress worker (every entry point, repeated, each call under a watchdog), two processes.
step stress 150 bash -c 'python tests/_stress_worker.py loss 200 > "$0/stress_loss.jsonl" & p=$!;
  python tests/_stress_worker.py many 3 > "$0/stress_many.jsonl"; rc=$?; wait $p && exit $rc' "$out"
step bench_transrate 60 python benchmarks/bench_transrate.py --repeats 5
step bench_sweep_gpu 60 python benchmarks/bench_sweep.py --gpu-config --skip-naive --repeats 3
step bench_metrics 45 python benchmarks/bench_metrics.py --repeats 3 --only \
  "TransRate,LogME,H-score,Regularized H-score,LEEP,NCE,GBC,LFC,SFDA" --out "$out/bench_metrics.json"
step bench_regularizer 30 python benchmarks/bench_regularizer.py --repeats 11

# The benchmarks write benchmarks/results/*.json with the device in each; keep copies beside the log.
for f in bench_transrate bench_sweep bench_regularizer; do
  [ -f "benchmarks/results/$f.json" ] && cp "benchmarks/results/$f.json" "$out/$f.json"
done
echo "results in $out" | tee -a "$log"
