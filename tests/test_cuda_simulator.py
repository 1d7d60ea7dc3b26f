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
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The simulator run, started as soon as this test is collected (see
#: tests/conftest.py) so that it overlaps the rest of the suite: it is
#: single-threaded Python, and the suite leaves a core free most of the time.
_RUN = {}


def start():
    """Start the simulator subprocess once (output to a temporary file, so a
    full pipe can never block it)."""
    if _RUN or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-q", "-x",
           "-p", "no:cacheprovider", "-p", "no:randomly"]
    log = tempfile.TemporaryFile(mode="w+")
    _RUN["log"] = log
    _RUN["t0"] = time.perf_counter()
    _RUN["proc"] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    text=True)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="already inside the simulator run")
def test_cuda_backend_under_simulator():
    pytest.importorskip("numba.cuda")
    start()
    proc, log = _RUN["proc"], _RUN["log"]
    try:
        proc.wait(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    took = time.perf_counter() - _RUN["t0"]
    log.seek(0)
    output = log.read()
    assert proc.returncode == 0, (
        f"tests/cuda failed under NUMBA_ENABLE_CUDASIM=1 (rc={proc.returncode}, {took:.0f} s):\n"
        f"{output[-20000:]}")
    assert " passed" in output, output[-5000:]
