#!/usr/bin/env bash
# Every real-GPU check of fastlogits in one command (issue 36), < 8 minutes
# with the defaults:  bash bench/gpu_session.sh   (or, on a lent device,
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=540)).
# Run it first whenever a GPU is at hand: the launch of issue 36 has not run
# on one yet. Prints the figures of bench/results/h200-*.json (bench/RESULTS.md, "NVIDIA H200").
# Stages, each capped so one failure leaves time for the rest: the
# environment, the CUDA tests (tests/cuda, the PTX check, the benchmark's
# smoke test), the full benchmark kernel-only, end-to-end for two ops, the
# launch-setting sweep with LinearHead. Logs and JSON go to $OUT (or ./gpu_out).
# With AB_OLD="<dir> ..." (copies of other trees: fastlogits/ and bench/),
# the end-to-end stage is replaced by alternating sweeps of the default
# setting in each of them and in this tree (bench/cuda_sweep.py --settings
# default --ops $AB_OPS), two rounds: an A/B within one call.
# With PROFILE_OPS="op ...", those ops are also profiled (cuda_sweep.py
# --profile --host-profile): GPU time per kernel beside the wall time per
# call, and the host's cProfile.
# T_OVERHEAD (a cap, default 60 s; 0 skips) times each tree's host time per
# call on a tiny input (bench/cuda_overhead.py, which AB_OLD trees need a
# copy of), with cProfile of this tree's cross_entropy and classify.
# Caps are seconds (T_TESTS, T_BENCH, T_E2E, T_SWEEP, T_AB, T_PROFILE,
# T_OVERHEAD); 0 skips the stage. gpu_out/ is the output folder off the device tool (add it to
# .git/info/exclude). Used for every figure of bench/RESULTS.md "NVIDIA H200".
# .whl may hold a numba-cuda wheel for Python 3.12, installed only when the
# machine's numba-cuda is older than pyproject's floor.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
# Defaults fit the issue-36 budget of 8 minutes: tests 150 + overhead 60
# + kernel benchmark 150 + end-to-end 60 s (+ start-up); the sweep is opt-in.
T_TESTS=${T_TESTS:-150} T_BENCH=${T_BENCH:-150} T_E2E=${T_E2E:-60} T_SWEEP=${T_SWEEP:-0}
T_AB=${T_AB:-40} AB_OLD=${AB_OLD:-} T_PROFILE=${T_PROFILE:-60} PROFILE_OPS=${PROFILE_OPS:-} T_OVERHEAD=${T_OVERHEAD:-60} AB_OPS=${AB_OPS:-argmax classify softmax cross_entropy confusion_matrix} BENCH_ARGS=${BENCH_ARGS:-} SWEEP_ARGS=${SWEEP_ARGS:---head}
stage() { echo; echo "=== $1 ($(date +%T))"; }

stage environment
nvidia-smi -L; nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv
$PY - <<'PY'
from importlib import metadata
for n in ("numba", "numba-cuda", "llvmlite", "numpy", "torch", "cuda-bindings", "cuda-core",
          "pytest", "pytest-xdist", "pytest-benchmark", "hypothesis"):
    try:
        print(n, metadata.version(n))
    except metadata.PackageNotFoundError:
        print(n, "MISSING")
PY
if ! $PY -c "from importlib.metadata import version as v; import sys; sys.exit(tuple(map(int, v('numba-cuda').split('.')[:2])) < (0, 30))" \
   && ls .whl/numba_cuda-*.whl >/dev/null 2>&1; then
  echo "numba-cuda older than 0.30: installing the carried wheel"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/numba_cuda-*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
# numba-cuda 0.30.4 registers np.row_stack at import; NumPy 2.5 removed it.
if ! $PY -c "import numpy; numpy.row_stack" 2>/dev/null; then
  echo "NumPy without row_stack: aliasing it to vstack (sitecustomize) for numba-cuda"
  mkdir -p /tmp/shim && echo "import numpy; numpy.row_stack = numpy.vstack" > /tmp/shim/sitecustomize.py
  export PYTHONPATH=/tmp/shim:$PYTHONPATH
fi
timeout 60 $PY -m fastlogits info 2>&1 | tee "$OUT/info.txt"

if [ "$T_TESTS" != 0 ]; then
stage "tests (cap ${T_TESTS} s)"
timeout "$T_TESTS" $PY -m pytest tests/cuda tests/cuda_host/test_cuda_ptx.py bench/bench_cuda.py -q -n 12 \
  --dist load -p no:randomly -rfEs --durations=15 > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; tail -45 "$OUT/tests.log"
fi

if [ -n "$AB_OLD" ] && [ "$T_AB" != 0 ]; then
  stage "A/B: $AB_OLD vs this tree, default setting, alternating (cap ${T_AB} s each)"
  for round in 1 2; do
    for tree in $AB_OLD .; do
      tag=$([ "$tree" = . ] && echo new || basename "$tree")
      (cd "$tree" && PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} timeout "$T_AB" $PY bench/cuda_sweep.py \
        --settings default --ops $AB_OPS) 2>&1 | grep -E "default|copy|rror|Traceback|needs" \
        | sed "s/^/$tag$round /" | tee -a "$OUT/ab.log"
    done
  done
fi

if [ "$T_OVERHEAD" != 0 ]; then
stage "host time per call, tiny input (bench/cuda_overhead.py), in $AB_OLD . (cap ${T_OVERHEAD} s each)"
for tree in $AB_OLD .; do
  tag=$([ "$tree" = . ] && echo new || basename "$tree")
  extra=$([ "$tree" = . ] && echo "--profile cross_entropy classify --json $OUT/overhead.json")
  (cd "$tree" && PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} timeout "$T_OVERHEAD" $PY \
    bench/cuda_overhead.py $extra) > "$OUT/overhead_$tag.log" 2>&1
  echo "$tag rc=$?"; grep -E "^  [a-z_]+ +fastlogits|rror" "$OUT/overhead_$tag.log" | sed "s/^/$tag /"
done
fi

if [ "$T_BENCH" != 0 ]; then  # T_BENCH=0 skips the benchmark
stage "benchmark, kernel only (cap ${T_BENCH} s)"
FASTLOGITS_BENCH_FULL=1 timeout "$T_BENCH" $PY bench/bench_cuda.py --no-cpu --no-e2e $BENCH_ARGS \
  --json "$OUT/cuda.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; grep -v "^  " "$OUT/bench.log" | tail -60
fi

if [ -z "$AB_OLD" ] && [ "$T_E2E" != 0 ]; then  # T_E2E=0 skips it (timeout 0 would not)
stage "benchmark, end-to-end argmax and softmax (cap ${T_E2E} s)"
FASTLOGITS_BENCH_FULL=1 timeout "$T_E2E" $PY bench/bench_cuda.py --no-cpu --ops argmax softmax \
  --repeat 10 --json "$OUT/cuda_e2e.json" > "$OUT/e2e.log" 2>&1
echo "e2e rc=$?"; grep "e2e" "$OUT/e2e.log" | tail -20
fi

if [ -n "$PROFILE_OPS" ]; then
stage "profile: GPU time per kernel (CUPTI), host time per call (cProfile) (cap ${T_PROFILE} s)"
timeout "$T_PROFILE" $PY bench/cuda_sweep.py --no-sweep --profile --ops $PROFILE_OPS \
  --host-profile $PROFILE_OPS --json "$OUT/profile.json" > "$OUT/profile.log" 2>&1
echo "profile rc=$?"; grep -v "^ *[0-9]* *0.000" "$OUT/profile.log" | head -90
fi

if [ "$T_SWEEP" != 0 ]; then
stage "launch-setting sweep and LinearHead (cap ${T_SWEEP} s)"
timeout "$T_SWEEP" $PY bench/cuda_sweep.py $SWEEP_ARGS --json "$OUT/sweep.json" > "$OUT/sweep.log" 2>&1
echo "sweep rc=$?"; grep -E "head|profile|MISMATCH|copy|Error|error" "$OUT/sweep.log" | tail -40
fi
stage done
