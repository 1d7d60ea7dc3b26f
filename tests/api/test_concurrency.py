"""Threads and processes: every op from 4 threads at once, and from
children forked after the parent ran parallel kernels, each result equal
to the single-threaded one (fastlogits._threading)."""

import multiprocessing
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _threading, tuning
from tests.helpers import run_python

# Above the serial threshold, so every call really launches Numba's threads.
SHAPE = (tuning.current().cpu.serial_below // 19 + 37, 19)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    xcf = np.ascontiguousarray(x.T)[None]  # (1, 19, pixels): channels-first
    t = rng.integers(0, 19, SHAPE[0])
    head = fl.LinearHead(rng.standard_normal((19, 8)).astype(np.float32))
    f = rng.standard_normal((SHAPE[0], 8)).astype(np.float32)
    return x, xcf, t, head, f


def _every_op(x, xcf, t, head, f):
    """Each op's result, as a flat list of arrays (both layouts)."""
    out = [fl.softmax(x), fl.log_softmax(x), fl.logsumexp(x), fl.argmax(x),
           *fl.classify(x), fl.softmax(xcf, axis=1), fl.argmax(xcf, axis=1),
           *fl.classify(xcf, axis=1, temperature=2.0),
           np.asarray(fl.cross_entropy(x, t)), *fl.cross_entropy(x, t, return_grad=True),
           fl.cross_entropy(x, t, reduction="none", label_smoothing=0.1),
           fl.confusion_matrix(x, t), *head.classify(f)]
    return [np.asarray(a) for a in out]


def _single_threaded(args):
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return _every_op(*args)
    finally:
        numba.set_num_threads(n)


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        # Sums split over threads may round differently: a few ulp.
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)


def test_layer_is_fork_and_thread_safe():
    # A call above cpu_serial_below starts the threads (a small one runs
    # on the calling thread and leaves the layer unstarted).
    fl.argmax(np.ones((1 << 17, 5), np.float32))
    layer = _threading.active()
    if platform.machine() in ("x86_64", "AMD64"):
        assert layer == "tbb", "the tbb dependency should give Numba its TBB layer"
    else:
        assert layer in ("tbb", "workqueue")


def test_four_threads_at_once():
    args = _inputs()
    want = _single_threaded(args)
    start = threading.Barrier(4)

    def work(_):
        start.wait()
        return [_every_op(*args) for _ in range(2)]

    with ThreadPoolExecutor(4) as pool:
        for results in pool.map(work, range(4)):
            for got in results:
                _assert_same(got, want)


def _child(conn):
    try:
        conn.send(("ok", _every_op(*_inputs())))
    except BaseException as exc:  # report, don't hang the parent
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_forked_children_after_a_parallel_call():
    want = _every_op(*_inputs())  # the parent runs parallel kernels first
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):
        here, there = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child, args=(there,))
        child.start()
        there.close()
        status, got = here.recv() if here.poll(240) else ("timeout", None)
        child.join(60)
        assert child.exitcode == 0, f"forked child exited with {child.exitcode} ({status})"
        assert status == "ok", got
        _assert_same(got, want)


_GUARDED = """
import threading, numpy as np, fastlogits as fl
from fastlogits import _threading
from tests.api.test_concurrency import _assert_same, _every_op, _inputs, _single_threaded
args = _inputs()
want = _single_threaded(args)
assert _threading.active() == "workqueue", _threading.active()
assert _threading.launch_guard() is not None
errors = []
def work():
    try:
        _assert_same(_every_op(*args), want)
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
print("guarded ok")
"""


def test_workqueue_layer_is_guarded():
    """A user who picks the workqueue layer (fork-safe, not thread-safe)
    gets serialized launches instead of Numba's abort."""
    res = run_python(_GUARDED, NUMBA_THREADING_LAYER="workqueue")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "guarded ok" in res.stdout
