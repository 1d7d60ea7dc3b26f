"""Compile time is user-visible: import time and first-call time, each in a
fresh process (the second run finds the on-disk kernel cache warm).

    python bench/bench_startup.py
"""

import json
import subprocess
import sys

IMPORT = "import time; t=time.perf_counter(); import fastlogits; print(time.perf_counter()-t)"
FIRST_CALL = (
    "import time, numpy as np; import fastlogits as fl; "
    "x = np.random.default_rng(0).standard_normal((64, 64, 19)).astype(np.float32); "
    "t = time.perf_counter(); fl.classify(x); fl.softmax(x); print(time.perf_counter() - t)"
)


def _seconds(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(runs=3):
    """Median seconds of ``import fastlogits`` and of the first classify +
    softmax call in a fresh process, after one run that fills the cache."""
    _seconds(FIRST_CALL)  # fill the on-disk cache
    imports = sorted(_seconds(IMPORT) for _ in range(runs))
    firsts = sorted(_seconds(FIRST_CALL) for _ in range(runs))
    return {"import_s": imports[runs // 2], "first_call_warm_cache_s": firsts[runs // 2]}


def test_startup_smoke():
    """Runs the measurement once; the figures go to bench/results/<machine>.md, not an assert."""
    result = measure(runs=1)
    assert result["import_s"] > 0 and result["first_call_warm_cache_s"] > 0


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
