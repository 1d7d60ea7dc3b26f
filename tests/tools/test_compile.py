"""``fastlogits compile`` and the cached-variant count of ``fastlogits info``.

One op, one dtype, one layout compiled into an empty ``NUMBA_CACHE_DIR``
in a subprocess (as a Docker build step runs it); a later process on that
cache compiles nothing for the call it covers. The argument errors run
in-process.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastlogits.tools import cli, precompile
from tests.tools.test_cli import _assert_one_line_error, run_main

ROOT = Path(__file__).resolve().parents[2]

#: A first argmax in a fresh process: prints the names of the functions
#: Numba compiled for it (not those it loaded from the cache). fastlogits
#: first: imported after Numba it leaves the target features as Numba's
#: (fastlogits._vector_width), and the cache keys differ on AVX-512 CPUs.
FIRST_ARGMAX = """
import json
import fastlogits as fl
import numpy as np
from numba.core import event

names = []

class Listener(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        names.append(ev.data["dispatcher"].py_func.__qualname__)

x = (np.random.default_rng(1).standard_normal((5, 7, 19)) * 3).astype(np.float32)
with event.install_listener("numba:compile", Listener()):
    labels = fl.argmax(x)
assert (labels == np.argmax(x, -1)).all()
print(json.dumps(names))
"""


def _run(args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTLOGITS_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=cache, env=env, capture_output=True,
                          text=True, timeout=600)


def _cached(info_stdout):
    return int(re.search(r"^cached\s+(\d+) kernel variants", info_stdout, re.M).group(1))


def test_compile_fills_the_cache_later_processes_use(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    info = _run(["-m", "fastlogits", "info"], cache)
    assert info.returncode == 0, info.stderr
    assert _cached(info.stdout) == 0
    r = _run(["-m", "fastlogits", "compile", "--ops", "argmax", "--layouts", "hwc",
              "--jobs", "1"], cache)
    assert r.returncode == 0, r.stderr
    # argmax's kernel (small calls run it whole), its packing and the
    # fan-out (large ones)
    assert "kernel variants for this CPU (+3)" in r.stdout, r.stdout
    info = _run(["-m", "fastlogits", "info"], cache)
    assert _cached(info.stdout) == 3, info.stdout
    first = _run(["-c", FIRST_ARGMAX], cache)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1]) == []
    # The same call on an empty cache compiles (the check above can fail).
    fresh = tmp_path / "empty-cache"
    fresh.mkdir()
    cold = _run(["-c", FIRST_ARGMAX], fresh)
    assert "argmax_cl_rows" in json.loads(cold.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv, message", [
    (["--ops", "argmaxx"], "unknown op 'argmaxx'"),
    (["--dtypes", "int32"], "unknown dtype 'int32'"),
    (["--layouts", "nhwc"], "unknown layout 'nhwc'"),
    (["--classes", "19,0"], "must be positive integers"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_compile_argument_errors(argv, message, capsys):
    rc, out, err = run_main(["compile", *argv], capsys)
    _assert_one_line_error(rc, err)
    assert message in err


def test_compile_tasks_cover_every_registry_op():
    """Every public op and LinearHead method is an --ops choice; "head"
    expands to the methods."""
    from fastlogits.registry import ENTRIES

    names = precompile.op_names()
    assert {"argmax", "classify", "softmax", "log_softmax", "logsumexp", "cross_entropy",
            "confusion_matrix", "head.argmax", "head.cross_entropy"} <= set(names)
    assert all(any(e == n or e.startswith(n + ".") for n in names) for e in ENTRIES)
    assert len(precompile.tasks(["argmax", "softmax"], ["float32", "float16"], ["hwc"], [19, 3])) == 8


def test_compile_bfloat16_tasks_leave_out_the_head():
    """bfloat16 compiles the logits ops only (LinearHead features are never
    bfloat16), and its logits come as ml_dtypes' dtype."""
    todo = precompile.tasks(["argmax", "head.argmax"], ["bfloat16", "float32"], ["hwc"], [19])
    assert [(t.op, t.dtype) for t in todo] == [("argmax", "bfloat16"), ("argmax", "float32"),
                                               ("head.argmax", "float32")]
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert precompile.bfloat16_dtype() == ml_dtypes.bfloat16


def test_compile_bfloat16_without_ml_dtypes_says_what_to_install(monkeypatch, capsys):
    def missing():
        raise RuntimeError("compiling the bfloat16 variants needs ml_dtypes (pip install ml_dtypes)")

    monkeypatch.setattr(precompile, "bfloat16_dtype", missing)
    rc, out, err = run_main(["compile", "--ops", "argmax", "--dtypes", "bfloat16"], capsys)
    _assert_one_line_error(rc, err)
    assert "pip install ml_dtypes" in err
