"""``fastlogits classify --max-memory`` holds, measured as peak RSS.

Each run is a ``python -m fastlogits classify`` child of a small wrapper
process, which reports its children's peak RSS (ru_maxrss of
RUSAGE_CHILDREN, so nothing else this test process started counts). The
baseline is the same command on a small input (above
``cpu_serial_below``) of the same dtype and layout
with the same kinds of outputs: it imports fastlogits and compiles (or
loads) the same kernels. Margin: 4 MiB above the budget, the fixed
allowance the option's help states (zlib's state, the kernels' scratch,
allocator slack).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastlogits import tuning

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 4 << 20
BUDGET = "16M"

_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _peak_rss(args, cwd):
    """Peak RSS in bytes of ``python -m fastlogits ARGS`` (exit status must be 0)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTLOGITS_DEBUG", None)
    r = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "fastlogits",
                        *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    rc, kib = r.stdout.split()[-2:]
    assert rc == "0", r.stderr
    return int(kib) * 1024


def _save_in_bands(path, shape, rng):
    """A ~48 MB float32 .npy written band by band (never whole in memory)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        n = int(np.prod(shape))
        for i in range(0, n, 1 << 20):
            f.write((rng.standard_normal(min(1 << 20, n - i), np.float32) * 4).tobytes())


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
@pytest.mark.parametrize("shape, axis, outs", [
    ((1, 19, 800, 800), 1, ("l.png", "c.npy")),  # channels-first: 19 planes per tile
    ((800, 800, 19), -1, ("l.npy", "c.png")),     # channels-last, a heat-map PNG
])
def test_max_memory_holds(shape, axis, outs, rng, tmp_path):
    _save_in_bands(tmp_path / "big.npy", shape, rng)
    # The baseline's input is above cpu_serial_below, so it runs the same
    # parallel drivers (and starts the same threading layer) as the big one.
    tiny = tuple(64 if n == 800 else n for n in shape)
    assert np.prod(tiny) >= tuning.current().cpu.serial_below
    np.save(tmp_path / "tiny.npy", (rng.standard_normal(tiny) * 4).astype(np.float32))
    lab, conf = outs
    common = ["--axis", axis, "--quiet"]
    base = _peak_rss(["classify", "tiny.npy", "--labels", "t" + lab, "--confidence", "t" + conf,
                      *common], tmp_path)
    peak = _peak_rss(["classify", "big.npy", "--labels", lab, "--confidence", conf,
                      "--max-memory", BUDGET, *common], tmp_path)
    budget = 16 << 20
    assert peak - base <= budget + MARGIN, (
        f"peak RSS {peak / 2**20:.1f} MiB is {(peak - base) / 2**20:.1f} MiB above the baseline "
        f"{base / 2**20:.1f} MiB: more than --max-memory {BUDGET} + {MARGIN >> 20} MiB")
