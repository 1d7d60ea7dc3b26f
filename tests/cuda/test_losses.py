"""cross_entropy and confusion_matrix on the CUDA backend against
fastlogits.reference: both kernel regimes (a thread per pixel, a group of
threads per row), every option, special values, bad targets through the
error flag, out= accumulation, empty and all-ignored inputs.

Small shapes and the conftest's SMALL launch configuration (several
blocks, grid-stride loops) keep this quick under the simulator.
"""

import numpy as np
import pytest
from conftest import kind_of, to_gpu, to_host

import fastlogits as fl
from fastlogits import reference
from fastlogits.cuda.host import losses
from fastlogits.cuda.kernels.losses import SHARED_BINS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

IGNORE = -100

#: (shape, axis) per kernel regime under the SMALL config.
CASES = {
    "pixels-cf": ((2, 5, 3, 7), 1),
    "pixels-cl": ((3, 11, 19), -1),
    "rows-warp": ((2, 5, 40), -1),
    "rows-block": ((3, 100), -1),
}

TOL = {np.float16: (2e-6, 4e-6, 1e-3), np.float32: (2e-6, 4e-6, 2e-6),
       np.float64: (1e-12, 1e-12, 1e-12)}


def reduced(shape, axis):
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


def make(rng, shape, axis, dtype=np.float32, frac=0.1):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, shape[axis], size=reduced(shape, axis))
    t[rng.random(t.shape) < frac] = IGNORE
    return x, t


def assert_loss(got, want, dtype, reduction):
    rtol, atol, _ = TOL[dtype]
    if reduction == "none":
        got = to_host(got)
        assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
        np.testing.assert_allclose(got, want, rtol=atol, atol=atol, equal_nan=True)
    else:
        assert type(got) is np.float64
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True)


def assert_grad(got, want, dtype):
    got = to_host(got)
    assert got.dtype == dtype and got.shape == want.shape
    atol = TOL[dtype][2]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                               rtol=atol if dtype == np.float16 else 0, atol=atol,
                               equal_nan=True)


COMBOS = [(False, 0.0, "mean"), (True, 0.0, "sum"), (False, 0.2, "none"), (True, 0.3, "mean")]


def check(x, t, axis, xin, tin, rng, combos=COMBOS):
    C = x.shape[axis]
    w = rng.uniform(0.2, 3.0, C)
    for weighted, eps, reduction in combos:
        kw = dict(class_weight=w if weighted else None, label_smoothing=eps,
                  reduction=reduction, ignore_index=IGNORE)
        loss, grad = fl.cross_entropy(xin, tin, axis, return_grad=True, backend="cuda", **kw)
        want_loss, want_grad = reference.cross_entropy(x, t, axis, return_grad=True, **kw)
        assert_loss(loss, want_loss, x.dtype.type, reduction)
        assert_grad(grad, want_grad, x.dtype.type)
        # Without the gradient (unsmoothed: the loss-only kernel): the same loss.
        alone = fl.cross_entropy(xin, tin, axis, backend="cuda", **kw)
        assert_loss(alone, want_loss, x.dtype.type, reduction)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cross_entropy_gpu(rng, case):
    shape, axis = CASES[case]
    x, t = make(rng, shape, axis)
    check(x, t, axis, to_gpu(x), to_gpu(t.astype(np.int32)), rng)


@pytest.mark.parametrize("case,dtype", [("pixels-cf", np.float64), ("rows-block", np.float64),
                                        ("pixels-cl", np.float16)])
def test_cross_entropy_dtypes_host(rng, case, dtype):
    shape, axis = CASES[case]
    x, t = make(rng, shape, axis, dtype)
    check(x, t, axis, x, t, rng, COMBOS[2:] if case == "pixels-cf" else COMBOS[:2])


def special_logits(C):
    rows = np.tile(np.linspace(-2.0, 3.0, C), (8, 1))
    rows[0, 1] = np.nan
    rows[1, 0] = np.inf
    rows[2] = -np.inf
    rows[3, 2] = -np.inf
    rows[4, 2] = -np.inf
    rows[5] = 1.0
    rows[6] += 1e4
    rows[7, :] = -np.inf
    rows[7, 1] = 0.0
    return rows, np.array([0, 1, 0, 0, 2, C - 1, 1, 1])


@pytest.mark.parametrize("C", [19, 150])
def test_special_values(rng, C):
    rows, t = special_logits(C)
    x = rows.astype(np.float32)
    w = rng.uniform(0.5, 2.0, C)
    w[2] = 0.0  # 0 * -inf is NaN, as in PyTorch
    xd, td = to_gpu(x), to_gpu(t)
    for weight, eps, reduction in [(None, 0.0, "none"), (w, 0.3, "none"), (w, 0.0, "mean")]:
        kw = dict(class_weight=weight, label_smoothing=eps, reduction=reduction)
        loss, grad = fl.cross_entropy(xd, td, return_grad=True, **kw)
        want_loss, want_grad = reference.cross_entropy(x, t, return_grad=True, **kw)
        assert_loss(loss, want_loss, np.float32, reduction)
        assert_grad(grad, want_grad, np.float32)
        assert_loss(fl.cross_entropy(xd, td, **kw), want_loss, np.float32, reduction)


def test_all_ignored_and_empty(rng):
    x, t = make(rng, (5, 19), -1)
    t[:] = IGNORE
    loss, grad = fl.cross_entropy(to_gpu(x), to_gpu(t), return_grad=True)
    assert np.isnan(loss) and not to_host(grad).any()
    assert fl.cross_entropy(to_gpu(x), to_gpu(t), reduction="sum") == 0.0
    e = np.zeros((0, 4), np.float32)
    assert np.isnan(fl.cross_entropy(e, np.zeros(0, np.int64), backend="cuda"))
    loss, grad = fl.cross_entropy(to_gpu(e), to_gpu(np.zeros(0, np.int64)), reduction="none",
                                  return_grad=True)
    assert to_host(loss).shape == (0,) and to_host(grad).shape == (0, 4)


@pytest.mark.parametrize("case,bad", [("pixels-cf", -1), ("rows-block", "C")])
def test_bad_target(rng, case, bad):
    shape, axis = CASES[case]
    x, t = make(rng, shape, axis)
    bad = shape[axis] if bad == "C" else bad
    pos = tuple(n // 2 for n in t.shape)
    t[pos] = bad
    t[tuple(n - 1 for n in t.shape)] = 10**6  # a later bad value: not the one named
    msg = rf"target holds {bad} at position \({', '.join(map(str, pos))},?\)"
    for tin, kws in ((to_gpu(t), (dict(), dict(return_grad=True))),
                     (t, (dict(reduction="none"),))):
        for kw in kws:
            with pytest.raises(ValueError, match=msg):
                fl.cross_entropy(to_gpu(x), tin, axis, **kw)
        out = to_gpu(np.full((shape[axis],) * 2, 7, np.int64))
        with pytest.raises(ValueError, match=msg):
            fl.confusion_matrix(to_gpu(x), tin, axis, out=out)
        assert (to_host(out) == 7).all()  # left untouched


@pytest.mark.parametrize("case", ["pixels-cf", "pixels-cl", "rows-block"])
def test_confusion_matrix(rng, case):
    """C = 5 and 19 count in a shared-memory histogram, C = 100 with
    global atomics (C * C > SHARED_BINS); out= accumulates."""
    shape, axis = CASES[case]
    assert (shape[axis] ** 2 > SHARED_BINS) == (case == "rows-block")
    x, t = make(rng, shape, axis)
    x[(0,) * x.ndim] = np.nan  # argmax rule: the first NaN
    C = shape[axis]
    want = reference.confusion_matrix(x, t, axis, ignore_index=IGNORE)
    xd, td = to_gpu(x), to_gpu(t.astype(np.int16))
    got = fl.confusion_matrix(xd, td, axis, ignore_index=IGNORE)
    assert kind_of(got) == "numba"
    np.testing.assert_array_equal(to_host(got), want)
    out = to_gpu(np.ones((C, C), np.int64))
    assert fl.confusion_matrix(xd, td, axis, ignore_index=IGNORE, out=out) is out
    fl.confusion_matrix(xd, td, axis, ignore_index=IGNORE, out=out)
    np.testing.assert_array_equal(to_host(out), 2 * want + 1)
    if case == "pixels-cl":  # host input: NumPy out, or a new NumPy matrix
        host_out = np.zeros((C, C), np.int64)
        assert fl.confusion_matrix(x, t, axis, ignore_index=IGNORE, out=host_out,
                                   backend="cuda") is host_out
        np.testing.assert_array_equal(host_out, want)
        np.testing.assert_array_equal(fl.confusion_matrix(x, t, axis, ignore_index=IGNORE,
                                                          backend="cuda"), want)


@pytest.mark.parametrize("patch", ["cl_thread_per_pixel", "global_atomics"])
def test_fused_count_paths(tune, rng, monkeypatch, patch):
    """The fused argmax + count kernel (a thread per pixel) channels-last
    (cuda_cl_pixel_max_c raised back to its default), and with global
    atomics instead of the shared histogram; the loss-only kernel
    channels-last too."""
    from fastlogits import tuning

    if patch == "cl_thread_per_pixel":
        tune(cuda_cl_pixel_max_c=32)
        shape, axis = CASES["pixels-cl"]
    else:
        monkeypatch.setattr(losses, "shared_histogram", lambda C: False)
        shape, axis = CASES["pixels-cf"]
    x, t = make(rng, shape, axis)
    x[(1,) * x.ndim] = np.nan
    x[(0,) * x.ndim] = np.inf
    want = reference.confusion_matrix(x, t, axis, ignore_index=IGNORE)
    got = fl.confusion_matrix(to_gpu(x), to_gpu(t), axis, ignore_index=IGNORE)
    np.testing.assert_array_equal(to_host(got), want)
    for reduction in ("mean", "none"):
        want_loss = reference.cross_entropy(x, t, axis, reduction=reduction)
        got_loss = fl.cross_entropy(to_gpu(x), to_gpu(t), axis, reduction=reduction)
        assert_loss(got_loss, want_loss, np.float32, reduction)


def test_confusion_out_errors(rng):
    x, t = make(rng, (4, 19), -1)
    with pytest.raises(TypeError, match="out has dtype int32, expected int64"):
        fl.confusion_matrix(to_gpu(x), to_gpu(t), out=to_gpu(np.zeros((19, 19), np.int32)))
    with pytest.raises(ValueError, match=r"out has shape \(19, 18\)"):
        fl.confusion_matrix(to_gpu(x), to_gpu(t), out=to_gpu(np.zeros((19, 18), np.int64)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_grad_out(rng, case):
    """grad_out on the GPU (x itself for in place) and, for a host x, a
    NumPy grad_out; a bad target leaves it untouched."""
    shape, axis = CASES[case]
    x, t = make(rng, shape, axis)
    for reduction, eps in (("mean", 0.0), ("none", 0.2)):
        kw = dict(reduction=reduction, label_smoothing=eps, return_grad=True, backend="cuda")
        want_loss, want_grad = reference.cross_entropy(x, t, axis, return_grad=True,
                                                       reduction=reduction, label_smoothing=eps)
        g = to_gpu(np.full_like(x, 7.0))
        loss, grad = fl.cross_entropy(to_gpu(x), to_gpu(t), axis, grad_out=g, **kw)
        assert grad is g
        assert_loss(loss, want_loss, np.float32, reduction)
        assert_grad(g, want_grad, np.float32)
        xd = to_gpu(x)
        loss, grad = fl.cross_entropy(xd, to_gpu(t), axis, grad_out=xd, **kw)
        assert grad is xd
        assert_loss(loss, want_loss, np.float32, reduction)
        assert_grad(xd, want_grad, np.float32)
        gh = np.full_like(x, 7.0)
        loss, grad = fl.cross_entropy(x, t, axis, grad_out=gh, **kw)
        assert grad is gh
        assert_grad(gh, want_grad, np.float32)
    bad = t.copy()
    bad[(0,) * bad.ndim] = shape[axis]
    for reduction in ("mean", "sum", "none"):
        g = to_gpu(np.full_like(x, 7.0))
        with pytest.raises(ValueError, match="target holds"):
            fl.cross_entropy(to_gpu(x), to_gpu(bad), axis, return_grad=True, grad_out=g,
                             reduction=reduction)
        assert (to_host(g) == 7.0).all()


def test_grad_out_errors(rng):
    x, t = make(rng, (6, 19), -1)
    xd, td = to_gpu(x), to_gpu(t)
    with pytest.raises(TypeError, match="grad_out must be a GPU array"):
        fl.cross_entropy(xd, td, return_grad=True, grad_out=np.empty_like(x))
    with pytest.raises(ValueError, match=r"grad_out has shape \(19, 6\)"):
        fl.cross_entropy(xd, td, return_grad=True, grad_out=to_gpu(np.empty((19, 6), np.float32)))
    with pytest.raises(ValueError, match="grad_out is given but return_grad is False"):
        fl.cross_entropy(xd, td, grad_out=to_gpu(np.empty_like(x)))
