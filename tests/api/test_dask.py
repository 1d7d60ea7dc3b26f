"""dask arrays through the public API (issue 39, items 1-4).

Every public op and LinearHead method on dask arrays gives lazy dask
results equal to the reference (tests/api/test_registry.py's rules), on
odd chunkings of both layouts; reductions are exact for ANY chunking
(chunks wholly ignore_index included); classify and a loss with its
gradient read x once per chunk; a chunked class axis is rechunked with
one warning or refused; ``out=`` is a TypeError; each task's Numba
threads fit the scheduler; four threads at once give the single-threaded
results; ``import fastlogits`` imports no dask.
"""

import dataclasses
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")  # the test extra installs it
import dask  # noqa: E402
from dask.array.core import PerformanceWarning  # noqa: E402

import fastlogits as fl  # noqa: E402
from fastlogits import _dask  # noqa: E402
from fastlogits.registry import ENTRIES, make_inputs  # noqa: E402
from tests.api.test_registry import _check  # noqa: E402
from tests.helpers import assert_bfloat16_close, logits, run_in_threads  # noqa: E402

#: (shape, axis, chunks of the non-class axes): channels-last and
#: channels-first, chunks that divide nothing evenly.
CASES = [((5, 7, 19), -1, (2, 3)), ((2, 19, 3, 5), 1, (1, 2, 4))]


def _chunks(shape, axis, other):
    """Chunk sizes: ``other`` along the non-class axes, the class axis whole."""
    it = iter(other)
    ax = axis % len(shape)
    return tuple(shape[k] if k == ax else next(it) for k in range(len(shape)))


def _lazy_inputs(i, chunks):
    """The :class:`Inputs` with x, f and t as dask arrays (t chunked
    differently from x: the ops align it)."""
    ax = i.axis % i.x.ndim
    fchunks = tuple(i.f.shape[ax] if k == ax else c for k, c in enumerate(chunks))
    return dataclasses.replace(i, x=da.from_array(i.x, chunks=chunks),
                               f=da.from_array(i.f, chunks=fchunks),
                               t=da.from_array(i.t, chunks=1))


def _is_lazy(r):
    return all(isinstance(p, da.Array) for p in (r if isinstance(r, tuple) else (r,)))


@pytest.mark.parametrize("shape,axis,other", CASES)
@pytest.mark.parametrize("name", list(ENTRIES))
def test_entry_on_dask_matches_reference(rng, name, shape, axis, other):
    entry = ENTRIES[name]
    inputs = make_inputs(rng, shape, axis, np.float32)
    lazy = entry.call(_lazy_inputs(inputs, _chunks(shape, axis, other)), "cpu")
    assert _is_lazy(lazy), type(lazy)
    got = dask.compute(lazy, scheduler="threads")[0]
    _check(entry, got, entry.reference(inputs), inputs, np.float32)


def test_backend_is_the_one_asked_for(rng):
    """backend="numpy" chunks run the reference: its values exactly."""
    x = logits(rng, (6, 5, 7))
    dx = da.from_array(x, chunks=(4, 3, 7))
    for op in (fl.softmax, fl.logsumexp):
        np.testing.assert_array_equal(op(dx, backend="numpy").compute(),
                                      op(x, backend="numpy"))
    assert not np.array_equal(fl.softmax(dx).compute(), fl.softmax(x, backend="numpy"))


def test_results_are_lazy_with_dtypes_and_chunks(rng):
    x = logits(rng, (2, 5, 4, 6), np.float16)
    dx = da.from_array(x, chunks=(1, 5, 3, 4))
    t = rng.integers(0, 5, (2, 4, 6))
    sm = fl.softmax(dx, axis=1)
    assert sm.dtype == np.float16 and sm.chunks == dx.chunks
    labels, conf = fl.classify(dx, axis=1)
    assert labels.dtype == np.int64 and conf.dtype == np.float32
    assert labels.chunks == ((1, 1), (3, 1), (4, 2))
    loss = fl.cross_entropy(dx, t, axis=1)
    assert isinstance(loss, da.Array) and loss.shape == () and loss.dtype == np.float64
    value = loss.compute()
    assert isinstance(value, np.float64)
    np.testing.assert_allclose(value, fl.cross_entropy(x, t, axis=1), rtol=1e-6)
    cm = fl.confusion_matrix(dx, t, axis=1)
    assert cm.shape == (5, 5) and cm.dtype == np.int64
    iou = fl.iou(cm)
    assert isinstance(iou, da.Array) and iou.shape == (5,) and iou.dtype == np.float64


def test_bfloat16_chunks_give_the_in_memory_results(rng):
    """ml_dtypes bfloat16 dask arrays: each chunk read as its bits by the
    eager op, so pixel-wise results equal the in-memory ones exactly, in
    the same dtypes (softmax-like outputs bfloat16); the mean loss within
    float64 rounding, its gradient (the sum's, scaled per chunk) within one
    bfloat16 ulp."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = logits(rng, (6, 5, 7)).astype(ml_dtypes.bfloat16)
    t = rng.integers(0, 7, (6, 5))
    t[0] = -100  # cross_entropy's default ignore_index
    dx, dt = da.from_array(x, chunks=(4, 2, 7)), da.from_array(t, chunks=(3, 5))
    for op in (fl.softmax, fl.log_softmax, fl.logsumexp, fl.argmax):
        lazy = op(dx)
        got = lazy.compute()
        assert lazy.dtype == got.dtype == op(x).dtype
        np.testing.assert_array_equal(got.view(np.uint16) if got.itemsize == 2 else got,
                                      op(x).view(np.uint16) if got.itemsize == 2 else op(x))
    for lazy, eager in zip(fl.classify(dx), fl.classify(x)):
        np.testing.assert_array_equal(lazy.compute(), eager)
    np.testing.assert_array_equal(fl.cross_entropy(dx, dt, reduction="none").compute(),
                                  fl.cross_entropy(x, t, reduction="none"))
    np.testing.assert_array_equal(fl.confusion_matrix(dx, dt, ignore_index=-100).compute(),
                                  fl.confusion_matrix(x, t, ignore_index=-100))
    loss, grad = dask.compute(*fl.cross_entropy(dx, dt, return_grad=True))
    eloss, egrad = fl.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(loss, eloss, rtol=1e-12)
    assert grad.dtype == egrad.dtype == ml_dtypes.bfloat16
    assert_bfloat16_close(grad, egrad)


# --------------------------------------------------------------------------
# reductions: exact partials for any chunking
# --------------------------------------------------------------------------

#: Chunkings of an (8, 9, C) map: one chunk, single rows, odd sizes, and
#: (9, 2)-wide columns whose first chunk is wholly ignore_index.
CHUNKINGS = [(8, 9), (1, 9), (3, 4), (5, 2), (8, 1)]


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_reductions_equal_in_memory_for_any_chunking(rng, layout):
    C, ignore = 7, 255
    x = logits(rng, (8, 9, C), np.float64)
    t = rng.integers(0, C, (8, 9))
    t[rng.random((8, 9)) < 0.2] = ignore
    t[:, :2] = ignore  # whole chunks of nothing but ignore_index
    t[0] = ignore
    w = rng.uniform(0.5, 2.0, C)
    axis = -1
    if layout == "chw":  # (1, C, H, W)
        x, axis = np.ascontiguousarray(np.moveaxis(x, -1, 0)[None]), 1
        t = t[None]
    kw = dict(class_weight=w, ignore_index=ignore, label_smoothing=0.15)
    want = {red: fl.cross_entropy(x, t, axis, reduction=red, **kw) for red in ("mean", "sum")}
    grad = fl.cross_entropy(x, t, axis, return_grad=True, **kw)[1]
    cm = fl.confusion_matrix(x, t, axis, ignore_index=ignore)
    for hw in CHUNKINGS:
        chunks = hw + (C,) if layout == "hwc" else (1, C) + hw
        dx = da.from_array(x, chunks=chunks)
        dt = da.from_array(t, chunks=tuple(c for c in chunks if c != C))
        for red in ("mean", "sum"):
            got = fl.cross_entropy(dx, dt, axis, reduction=red, **kw).compute()
            np.testing.assert_allclose(got, want[red], rtol=1e-12, err_msg=f"{red} {hw}")
        g = fl.cross_entropy(dx, dt, axis, return_grad=True, **kw)[1].compute()
        np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-15, err_msg=str(hw))
        np.testing.assert_array_equal(
            fl.confusion_matrix(dx, dt, axis, ignore_index=ignore).compute(), cm)


def test_reductions_float32_and_unit_weights(rng):
    """float32 losses: the sums of per-chunk float64 partials."""
    x = logits(rng, (9, 11, 19))
    t = rng.integers(0, 19, (9, 11))
    dx = da.from_array(x, chunks=(2, 5, 19))
    for red in ("mean", "sum"):
        np.testing.assert_allclose(fl.cross_entropy(dx, t, reduction=red).compute(),
                                   fl.reference.cross_entropy(x, t, reduction=red), rtol=2e-6)


def test_everything_ignored(rng):
    x = logits(rng, (4, 6, 3))
    t = np.full((4, 6), -100)
    dx = da.from_array(x, chunks=(2, 4, 3))
    loss, grad = dask.compute(*fl.cross_entropy(dx, t, return_grad=True))
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    assert fl.cross_entropy(dx, t, reduction="sum").compute() == 0.0
    np.testing.assert_array_equal(fl.confusion_matrix(dx, t).compute(), np.zeros((3, 3)))


def test_special_values_per_chunk(rng):
    x = logits(rng, (4, 6, 5))
    x[0, 0, 1] = np.nan
    x[3, 5] = -np.inf
    x[2, 2, 0] = np.inf
    dx = da.from_array(x, chunks=(3, 4, 5))
    for op in (fl.softmax, fl.logsumexp, fl.argmax):
        np.testing.assert_array_equal(op(dx).compute(), op(x))
    t = rng.integers(0, 5, (4, 6))
    assert np.isnan(fl.cross_entropy(dx, t).compute())


# --------------------------------------------------------------------------
# one read of x per chunk
# --------------------------------------------------------------------------

def _counted(x, chunks):
    """A dask x whose every chunk read is counted (``calls``)."""
    calls = []
    lock = threading.Lock()

    def read(b):
        with lock:
            calls.append(b.shape)
        return b

    return da.from_array(x, chunks=chunks).map_blocks(read, meta=x[:0]), calls


@pytest.fixture
def op_tasks(monkeypatch):
    """The ops' chunk tasks run, by op name (each a call of a backend's kernel)."""
    ran = []
    call = _dask.Call.__call__

    def counted(self, *blocks):
        ran.append(self.label)
        return call(self, *blocks)

    monkeypatch.setattr(_dask.Call, "__call__", counted)
    return ran


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_classify_reads_x_once_per_chunk(rng, op_tasks, scheduler):
    x = logits(rng, (7, 5, 4))
    dx, calls = _counted(x, (3, 2, 4))
    labels, conf = fl.classify(dx)
    got_l, got_c = dask.compute(labels, conf, scheduler=scheduler)
    assert len(calls) == dx.npartitions == 9
    assert op_tasks == ["classify"] * 9
    want_l, want_c = fl.classify(x)
    np.testing.assert_array_equal(got_l, want_l)
    np.testing.assert_array_equal(got_c, want_c)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_and_grad_read_x_once_per_chunk(rng, op_tasks, reduction):
    x = logits(rng, (7, 5, 4))
    t = rng.integers(0, 4, (7, 5))
    dx, calls = _counted(x, (2, 3, 4))
    loss, grad = fl.cross_entropy(dx, t, reduction=reduction, return_grad=True)
    got = dask.compute(loss, grad, scheduler="threads")
    assert len(calls) == len(op_tasks) == dx.npartitions == 8
    want = fl.cross_entropy(x, t, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# a chunked class axis, out=, bad input
# --------------------------------------------------------------------------

def test_chunked_class_axis_is_rechunked_with_one_warning(rng):
    x = logits(rng, (6, 4, 9))
    t = rng.integers(0, 9, (6, 4))
    dx = da.from_array(x, chunks=(3, 4, 4))
    with pytest.warns(PerformanceWarning, match=r"class axis 2 split into 3 chunks.*432 B of x") as rec:
        loss, grad = fl.cross_entropy(dx, t, return_grad=True)
    assert len(rec) == 1 and rec[0].filename == __file__
    got = dask.compute(loss, grad)
    want = fl.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    with pytest.warns(PerformanceWarning) as rec:
        labels, conf = fl.classify(dx)
    assert len(rec) == 1
    np.testing.assert_array_equal(labels.compute(), fl.argmax(x))


def test_chunked_class_axis_refused_when_asked(rng, tune):
    tune(dask_rechunk_classes=False)
    dx = da.from_array(logits(rng, (6, 9)), chunks=(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"class axis 1 split into 3 chunks.*rechunk"):
            fl.softmax(dx)
        head = fl.LinearHead(logits(rng, (3, 9)))
        with pytest.raises(ValueError, match=r"f has its feature axis 1"):
            head.classify(dx)
        fl.softmax(dx.rechunk({1: -1}))  # one chunk: no warning, no error


def test_out_with_dask_is_a_type_error(rng):
    x = logits(rng, (4, 3))
    dx = da.from_array(x, chunks=2)
    t = np.zeros(4, np.int64)
    with pytest.raises(TypeError, match="out= cannot be given with a dask x"):
        fl.softmax(dx, out=np.empty_like(x))
    with pytest.raises(TypeError, match="out= cannot be given with a dask x"):
        fl.classify(dx, out=(np.empty(4, np.int64), np.empty(4, np.float32)))
    with pytest.raises(TypeError, match="out= cannot be given with a dask x"):
        fl.confusion_matrix(dx, t, out=np.zeros((3, 3), np.int64))
    with pytest.raises(TypeError, match="grad_out= cannot be given with a dask x"):
        fl.cross_entropy(dx, t, return_grad=True, grad_out=np.empty_like(x))
    with pytest.raises(TypeError, match="out= cannot be given with a dask x"):
        fl.LinearHead(logits(rng, (2, 3))).softmax(dx, out=np.empty((4, 2), np.float32))
    with pytest.raises(TypeError, match=r"out is a dask array.*in place"):
        fl.softmax(x, out=dx)
    with pytest.raises(TypeError, match=r"out\[1\] is a dask array"):
        fl.classify(x, out=(np.empty(4, np.int64), da.zeros(4, dtype=np.float32)))


def test_bad_input_names_the_argument(rng):
    dx = da.from_array(logits(rng, (4, 5, 3)), chunks=(2, 5, 3))
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        fl.softmax(dx, axis=3)
    with pytest.raises(TypeError, match="x must hold float16, bfloat16, float32 or float64"):
        fl.softmax(da.zeros((4, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        fl.classify(dx, temperature=0)
    with pytest.raises(ValueError, match=r"target has shape \(4, 4\), expected \(4, 5\)"):
        fl.cross_entropy(dx, da.zeros((4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        fl.confusion_matrix(dx, da.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown reduction"):
        fl.cross_entropy(dx, np.zeros((4, 5), np.int64), reduction="avg")
    with pytest.raises(ValueError, match="class_weight has shape"):
        fl.cross_entropy(dx, np.zeros((4, 5), np.int64), class_weight=np.ones(4))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fl.argmax(dx[dx[:, 0, 0] > -100])
    with pytest.raises(ValueError, match=r"square \(C, C\)"):
        fl.iou(da.zeros((3, 4), dtype=np.int64))
    head = fl.LinearHead(logits(rng, (2, 5)))
    with pytest.raises(ValueError, match="the shape .* of f without its feature axis"):
        head.cross_entropy(da.from_array(logits(rng, (4, 5))), da.zeros(3, dtype=np.int64))
    # target values are checked by each chunk's kernel: at compute time
    t = np.zeros((4, 5), np.int64)
    t[3, 4] = 7
    with pytest.raises(ValueError, match="target holds 7 at position"):
        fl.cross_entropy(dx, t).compute()
    with pytest.raises(ValueError, match="target holds 7 at position"):
        fl.confusion_matrix(dx, t).compute()


# --------------------------------------------------------------------------
# threads: dask's times Numba's fit the cores; concurrent calls
# --------------------------------------------------------------------------

def _numba_threads_in_tasks(scheduler, **kw):
    """The Numba thread count each task of a CPU op saw (a chunk op that
    reports it), and the count of the calling thread after."""
    import numba

    def report(x, axis, backend):
        return np.full(x.shape[:1], numba.get_num_threads())

    call = _dask.Call(report, (), (0, "cpu"), "cpu")
    dx = da.zeros((4, 3), chunks=(1, 3))
    r = _dask.blockwise(call, dx, 1, [_dask.Out("reduced", np.int64)])[0]
    return set(r.compute(scheduler=scheduler, **kw).tolist())


def test_task_threads_fit_the_scheduler(tune):
    import numba

    cores = numba.config.NUMBA_NUM_THREADS
    before = numba.get_num_threads()
    assert _numba_threads_in_tasks("sync") == {cores}
    assert _numba_threads_in_tasks("threads", num_workers=2) == {max(1, cores // 2)}
    from dask.system import CPU_COUNT

    assert _numba_threads_in_tasks("threads") == {max(1, cores // CPU_COUNT)}
    tune(dask_threads_per_task=1)
    assert _numba_threads_in_tasks("sync") == {1}
    assert numba.get_num_threads() == before


def test_four_threads_at_once_match_one(rng):
    """Every entry on dask arrays, four threads computing at once on the
    threaded scheduler, against the synchronous results."""
    shape, axis, other = CASES[1]
    inputs = _lazy_inputs(make_inputs(rng, shape, axis, np.float32),
                          _chunks(shape, axis, other))
    names = list(ENTRIES)
    want = {n: dask.compute(ENTRIES[n].call(inputs, "cpu"), scheduler="sync")[0] for n in names}
    results = {}
    barrier = threading.Barrier(4)

    def work(k):
        barrier.wait()
        for n in names[k:] + names[:k]:
            results[k, n] = dask.compute(ENTRIES[n].call(inputs, "cpu"), scheduler="threads")[0]

    errors = run_in_threads(work)
    assert not errors, errors
    for (k, n), got in results.items():
        got = got if isinstance(got, tuple) else (got,)
        ref = want[n] if isinstance(want[n], tuple) else (want[n],)
        for g, w in zip(got, ref):
            np.testing.assert_array_equal(g, w, err_msg=f"thread {k}, {n}")
    assert len(results) == 4 * len(names)


# --------------------------------------------------------------------------
# dask stays optional
# --------------------------------------------------------------------------

def test_import_and_numpy_call_do_not_import_dask():
    code = ("import sys, numpy as np, fastlogits as fl\n"
            "fl.softmax(np.ones((3, 4), np.float32))\n"
            "fl.classify(np.ones((3, 4), np.float32))\n"
            "print(sorted(m for m in sys.modules if m == 'dask' or m.startswith('dask.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_unwrap_tells_dask_apart():
    """A NumPy x leaves unwrap at its first type test; a dask x is LAZY."""
    from fastlogits import _interop

    x = np.ones((2, 3), np.float32)
    assert _interop.unwrap(x)[2] is None
    assert _interop.unwrap(da.ones((2, 3)))[2] is _interop.LAZY
    assert not _interop.is_dask(x) and _interop.is_dask(da.ones(2))
