"""Run tests/cuda under the CUDA simulator, in its own process.

``NUMBA_ENABLE_CUDASIM`` is read when numba.cuda is imported, so the
simulator cannot be switched on inside this process (which may already
hold a real or absent CUDA runtime). The subprocess runs the CUDA backend's
tests on small shapes with a small launch configuration (several blocks,
partial tiles, grid-stride loops; group reductions through the
shared-memory tree, since the simulator has no warp shuffles). On a machine
with a GPU, tests/cuda also runs directly in this process, for real.

The run is single-threaded Python of several minutes, so it starts as soon
as the suite is collected (:func:`start`, from tests/conftest.py) and runs
beside the rest. Under pytest-xdist every worker collects every test and
the test may be given to any of them, so the run is handed over through
files in ``$FASTLOGITS_SIM_DIR`` (one directory per pytest session, made
by the controller's conftest): the first process to create ``started``
launches it, its output goes to ``log``, and a wrapper writes the exit
status to ``rc`` when it ends (even if the process that launched it has
exited by then); the test waits for ``rc``.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1200
_LAUNCHED = []  # the Popen, held so it is not collected while it runs

# Runs the command in argv[2:] and writes its exit status to argv[1]
# atomically (through a temporary name), so a reader never sees half a file.
_WRAPPER = ("import os, subprocess, sys; r = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1] + '.tmp', 'w').write(str(r)); "
            "os.replace(sys.argv[1] + '.tmp', sys.argv[1])")


def _dir():
    return Path(os.environ["FASTLOGITS_SIM_DIR"])


def start():
    """Launch the simulator run unless this session already has (or this
    process is inside it)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return
    d = _dir()
    try:  # the first process to create the marker launches the run
        os.close(os.open(d / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-c", _WRAPPER, str(d / "rc"),
           sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-q", "-x",
           "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist"]
    (d / "t0").write_text(repr(time.time()))
    with open(d / "log", "w") as log:
        _LAUNCHED.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, text=True))


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="already inside the simulator run")
def test_cuda_backend_under_simulator():
    pytest.importorskip("numba.cuda")
    start()
    d = _dir()
    deadline = time.time() + TIMEOUT_S
    while not (d / "rc").exists():
        assert time.time() < deadline, f"the simulator run took over {TIMEOUT_S} s (log: {d / 'log'})"
        time.sleep(0.5)
    rc = int((d / "rc").read_text())
    took = time.time() - float((d / "t0").read_text())
    output = (d / "log").read_text()
    assert rc == 0, (
        f"tests/cuda failed under NUMBA_ENABLE_CUDASIM=1 (rc={rc}, {took:.0f} s):\n"
        f"{output[-20000:]}")
    assert " passed" in output, output[-5000:]
