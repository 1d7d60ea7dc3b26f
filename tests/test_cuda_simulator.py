"""Run tests/cuda under the CUDA simulator, in its own process.

``NUMBA_ENABLE_CUDASIM`` is read when numba.cuda is imported, so the
simulator cannot be switched on inside this process (which may already
hold a real or absent CUDA runtime). The subprocess runs the CUDA backend's
tests on small shapes with a small launch configuration (several blocks,
partial tiles, grid-stride loops; group reductions through the
shared-memory tree, since the simulator has no warp shuffles). On a machine
with a GPU, tests/cuda also runs directly in this process, for real.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="already inside the simulator run")
def test_cuda_backend_under_simulator():
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-q", "-x",
           "-p", "no:cacheprovider", "-p", "no:randomly"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"tests/cuda failed under NUMBA_ENABLE_CUDASIM=1 (rc={proc.returncode}, {took:.0f} s):\n"
        f"{output[-20000:]}")
    assert " passed" in output, output[-5000:]
