"""The output pool (fastlogits.pool): blocks reused only once no array uses
them (views included), the cap and the size floor obeyed, alignment, thread
safety, and the public ops' results unchanged when their outputs come from
blocks full of stale NaN bits."""

import gc
import os
import signal

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import pool, tuning

from tests.helpers import assert_close, logits, run_in_threads, specials_array


@pytest.fixture
def pooled(tune, monkeypatch):
    """Every output through the pool (the size floor at 0), an empty pool
    before and after."""
    tune(cpu_output_pool_min_bytes=0)
    tune(cpu_output_pool_bytes=64 << 20)
    pool.release()
    yield
    pool.release()


def _poison(count):
    """Leave ``count`` free 2 MiB blocks full of NaN bits (0xFF bytes);
    returns their addresses. (The fixture puts every output in a 2 MiB
    block: the tests' arrays are smaller.)

    Callers run their ops once before (:func:`_warm`): a call that
    compiles its kernel can leave the outputs it was given in a reference
    cycle (the compiler's caught exceptions hold their frames) until the
    garbage collector runs, and so hold stale blocks past the call."""
    held = [pool.empty(1, np.uint8) for _ in range(count)]
    for a in held:
        a.base._raw[...] = 0xFF
    return {_block_of(a) for a in held}


def _block_of(a):
    return a.base._raw.ctypes.data


def _warm(run):
    """Call ``run`` once, its kernels compiled, and collect what it left."""
    run()
    gc.collect()


def test_array_properties(pooled):
    a = pool.empty((3, 5, 7), np.float32)
    assert a.shape == (3, 5, 7) and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable and not a.flags.owndata
    assert a.ctypes.data % 64 == 0
    like = np.empty(1000, np.uint8)[24:]
    b = pool.empty(11, np.int64, like=like)
    assert (b.ctypes.data - like.ctypes.data) % 64 == 0
    assert pool.empty((), np.float64).shape == ()
    assert pool.empty(0, np.float32).size == 0


def test_block_reused_after_last_user_goes(pooled):
    a = pool.empty((100, 100), np.float32)
    addr = a.ctypes.data
    view = a[10:20]
    del a
    assert pool.held_bytes() == 0  # the view still uses the block
    b = pool.empty((100, 100), np.float32)
    assert not np.shares_memory(b, view)
    view[...] = 1.0
    b[...] = 2.0
    assert np.all(view == 1.0)
    del view
    assert pool.held_bytes() > 0
    c = pool.empty((100, 100), np.float32)
    assert c.ctypes.data == addr
    assert not np.shares_memory(b, c)


def test_sizes_share_blocks_by_rounded_size(pooled):
    a = pool.empty(1000, np.float64)
    addr = a.ctypes.data
    del a
    b = pool.empty((7, 13), np.int16)  # another small size: the same 2 MiB block
    assert b.ctypes.data - addr in range(0, 64)
    del b
    c = pool.empty(3 << 20, np.uint8)  # a bigger block
    assert c.ctypes.data - addr not in range(0, 64)


def test_cap_and_release(tune, pooled, monkeypatch):
    tune(cpu_output_pool_bytes=5 << 20)  # two 2 MiB blocks
    arrays = [pool.empty(1000, np.float32) for _ in range(4)]
    del arrays
    assert pool.held_bytes() == 4 << 20
    tune(cpu_output_pool_bytes=2 << 20)
    assert pool.held_bytes() == 2 << 20  # the oldest dropped at the next call
    pool.release()
    assert pool.held_bytes() == 0
    big = pool.empty(3 << 20, np.uint8)  # a block over the cap: not pooled
    assert big.flags.owndata


def test_off_and_size_floor(tune, monkeypatch):
    pool.release()
    tune(cpu_output_pool_bytes=0)
    tune(cpu_output_pool_min_bytes=0)
    assert pool.empty(1000, np.float32).flags.owndata
    tune(cpu_output_pool_bytes=64 << 20)
    tune(cpu_output_pool_min_bytes=4001)
    assert pool.empty(1000, np.float32).flags.owndata
    assert not pool.empty(1001, np.float32).flags.owndata
    pool.release()


def test_returned_while_locked_does_not_wait(pooled):
    """A block whose last user goes while the pool is locked (a garbage
    collection inside ``empty``) waits for the next call."""
    a = pool.empty(1000, np.float32)
    with pool._lock:
        del a
        gc.collect()
    assert pool.held_bytes() == 2 << 20


def test_threads(pooled):
    errors = []

    def work(k):
        for i in range(200):
            a = pool.empty(1000 + i % 3, np.int64)
            a[...] = k
            b = a[::2]
            del a
            gc.collect() if i % 50 == 0 else None
            if not np.all(b == k):
                errors.append((k, i))

    errors += run_in_threads(work)
    assert errors == []
    assert pool.held_bytes() <= tuning.current().cpu.output_pool_bytes


SHAPES = [((37, 41, 19), -1), ((19, 37, 41), 0), ((3, 150, 67), 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=["hwc", "chw", "nchw"])
def test_ops_into_stale_blocks(rng, pooled, shape, axis, dtype):
    """Outputs from blocks full of NaN bits: every element written."""
    x = specials_array(rng, shape, axis, dtype)
    _warm(lambda: [getattr(fl, op)(x, axis=axis) for op in ("softmax", "log_softmax",
                                                             "logsumexp", "argmax", "classify")])
    poisoned = _poison(12)
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(fl, op)(x, axis=axis)
        assert _block_of(got) in poisoned
        assert_close(got, getattr(fl.reference, op)(x, axis), dtype)
    got = fl.argmax(x, axis=axis)
    assert _block_of(got) in poisoned
    np.testing.assert_array_equal(got, np.argmax(x, axis=axis))
    labels, conf = fl.classify(x, axis=axis)
    assert {_block_of(labels), _block_of(conf)} <= poisoned
    want_labels, want_conf = fl.reference.classify(x, axis)
    np.testing.assert_array_equal(labels, want_labels)
    assert_close(conf, want_conf, conf.dtype.type)


@pytest.mark.parametrize("shape,axis", SHAPES, ids=["hwc", "chw", "nchw"])
def test_gradient_into_stale_blocks(rng, pooled, shape, axis):
    """The gradient is written everywhere, ignored pixels (0) included."""
    x = logits(rng, shape)
    C = shape[axis]
    reduced = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, C, reduced)
    t[rng.random(reduced) < 0.3] = -100
    _warm(lambda: fl.cross_entropy(x, t, axis=axis, return_grad=True, label_smoothing=0.1))
    poisoned = _poison(2)
    loss, grad = fl.cross_entropy(x, t, axis=axis, return_grad=True, label_smoothing=0.1)
    want_loss, want_grad = fl.reference.cross_entropy(x, t, axis=axis, return_grad=True,
                                                      label_smoothing=0.1)
    assert _block_of(grad) in poisoned
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, atol=2e-6)
    assert np.all(np.moveaxis(grad, axis, -1)[t == -100] == 0)


def test_live_results_never_share(rng, pooled):
    x = logits(rng, (19, 33, 65))
    first = fl.softmax(x, axis=0)
    second = fl.softmax(x, axis=0)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, second)
    part = first[2:5]
    del first
    third = fl.log_softmax(x, axis=0)
    assert not np.shares_memory(part, third)
    np.testing.assert_array_equal(part, second[2:5])


def test_output_on_x_line_offset(rng, pooled):
    """x-sized outputs start where x's data do in their 64-byte line."""
    for off in (0, 16, 36):
        buf = np.empty(19 * 64 * 64 * 4 + 128, np.uint8)
        first = -buf.ctypes.data % 64 + off
        x = buf[first:first + 19 * 64 * 64 * 4].view(np.float32).reshape(19, 64, 64)
        x[...] = logits(rng, x.shape)
        p = fl.softmax(x, axis=0)
        assert (p.ctypes.data - x.ctypes.data) % 64 == 0
        _, g = fl.cross_entropy(x, rng.integers(0, 19, (64, 64)), axis=0, return_grad=True)
        assert (g.ctypes.data - x.ctypes.data) % 64 == 0


@pytest.mark.parametrize("layout", ["cl", "cf"])
def test_head_outputs_into_stale_blocks(tune, rng, pooled, monkeypatch, layout):
    """LinearHead's outputs from stale blocks equal those from fresh arrays
    (the same kernels: bit for bit)."""
    W = (rng.standard_normal((19, 24)) / 5).astype(np.float32)
    head = fl.LinearHead(W, rng.standard_normal(19).astype(np.float32))
    shape, axis = ((9, 11, 24), -1) if layout == "cl" else ((2, 24, 9, 11), 1)
    f = logits(rng, shape)
    t = rng.integers(0, 19, (9, 11) if layout == "cl" else (2, 9, 11))
    t.flat[::4] = -100

    def run():
        loss, grad = head.cross_entropy(f, t, axis=axis, return_grad=True)
        return [head.logits(f, axis=axis), head.softmax(f, axis=axis),
                head.argmax(f, axis=axis), *head.classify(f, axis=axis), grad,
                np.float64(loss)]

    _warm(run)
    poisoned = _poison(12)
    got = run()
    assert all(_block_of(a) in poisoned for a in got[:-1])
    tune(cpu_output_pool_bytes=0)
    for a, b in zip(got, run()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_fork_while_locked(pooled):
    """A child forked while the pool's lock is held still allocates."""
    with pool._lock:
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            code = 1
            try:
                signal.alarm(10)  # a deadlock ends the child, not the suite
                a = pool.empty(1000, np.float32)
                del a
                code = 0 if pool.held_bytes() == 2 << 20 else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
