"""LinearHead on the CUDA backend against its NumPy backend (float64
logits, then the reference op): every method, both feature layouts, every
kernel regime (W resident / chunked over classes / chunked over features,
channels-last features through a shared tile or read per thread), dtypes,
special values, GPU weights, out=, bad targets and empty inputs.

Under the simulator the conftest's SMALL launch configuration (64 threads,
2 blocks) gives several tiles per block (grid-stride) and partial tiles;
``cuda_head_shared_bytes`` is shrunk per case to force the chunked regimes.
"""

import sys

import numpy as np
import pytest
from conftest import SIM, kind_of, to_gpu, to_host

import fastlogits as fl
from fastlogits import _layout, tuning
from fastlogits._frontend import Features
from fastlogits._numpy_backend import head_logits
from fastlogits.cuda.host import head as kh

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

IGNORE = -100

#: name -> (features shape, axis, C, shared bytes, expected plan traits)
CASES = {
    # channels-first, W resident (staged once per block)
    "cf-resident": ((2, 6, 5, 7), 1, 19, None, dict(resident=True, tiled=False)),
    # channels-first, W in chunks of 16 classes
    "cf-class-chunks": ((2, 6, 5, 7), 1, 19, 512, dict(resident=False, tiled=False, NC=6)),
    # channels-last, rows read per thread, W in chunks of 8 classes x 3 features
    "cl-feature-chunks": ((5, 13, 6), -1, 19, 128, dict(resident=False, tiled=False, NC=3)),
    # channels-last through a shared feature tile, W resident
    "cl-tile": ((5, 15, 6), -1, 19, None, dict(resident=True, tiled=True)),
    # channels-last tile beside chunks of W (C = 70 does not fit; C * C
    # bins too many for the shared histogram)
    "cl-tile-chunks": ((2, 19, 6), -1, 70, 1152,
                       dict(resident=False, tiled=True, KC=8, threads=32)),
}

#: Cases launched as one block (grid-stride over 2+ tiles, the last partial).
ONE_BLOCK = {"cf-resident", "cl-tile"}

TOL = {  # dtype -> atol for logits / log values (rtol the same), probabilities
    np.float16: (4e-3, 2e-3),
    np.float32: (3e-5, 1e-5),
    np.float64: (1e-10, 1e-12),
}


def make_head(rng, C, N, dtype=np.float32, bias=True):
    W = (rng.normal(size=(C, N)) / np.sqrt(max(N, 1))).astype(dtype)
    b = (rng.normal(size=C) * 3).astype(dtype) if bias else None
    return fl.LinearHead(W, b)


def features(rng, shape, dtype):
    return (rng.normal(size=shape) * 3).astype(dtype)


@pytest.fixture(autouse=True, scope="module")
def fast_barriers():
    """Under the simulator every thread of a block is a Python thread, and a
    barrier wakes them one GIL hand-off at a time; with the default 5 ms
    switch interval a barrier of 64 threads can cost a third of a second
    (the chunked and tiled regimes hold several per tile). A short interval
    makes this file several times faster there; restored afterwards."""
    saved = sys.getswitchinterval()
    if SIM:
        sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(saved)


@pytest.fixture
def budget(tune, monkeypatch):
    """Set ``cuda_head_shared_bytes`` (None: the default); the cases in
    :data:`ONE_BLOCK` run on a single block, so it strides over the tiles."""
    def set_budget(nbytes, case=None):
        if case in ONE_BLOCK:
            tune(cuda_max_blocks=1)
        if nbytes is not None:
            tune(cuda_head_shared_bytes=nbytes)
    return set_budget


def assert_close(got, want, atol, err_msg=""):
    got = to_host(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype,
                                                                 want.shape, want.dtype)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=atol,
                               rtol=atol, equal_nan=True, err_msg=err_msg)


def assert_labels(got, want, z, axis, margin=1e-3):
    """Labels equal the reference wherever its top-2 margin exceeds ``margin``."""
    got = to_host(got)
    assert got.dtype == np.int64 and got.shape == want.shape
    zs = np.sort(np.moveaxis(z, axis, -1), axis=-1)
    clear = (zs[..., -1] - zs[..., -2] > margin) if zs.shape[-1] > 1 else np.ones(got.shape, bool)
    np.testing.assert_array_equal(got[clear], want[clear])


def check_ops(head, f, axis, fin, temperature=1.7, every=True):
    """Every method of the head on ``fin`` (f or a GPU copy) with backend
    "cuda" against the numpy backend on f. ``every=False``: logits, softmax
    and classify only (one of each kernel pass: write, fold + write, fold;
    log_softmax, logsumexp and argmax differ from them only in the mode)."""
    dtype = f.dtype.type
    atol_l, atol_p = TOL[dtype]
    z = head.logits(f, axis, backend="numpy")
    assert_close(head.logits(fin, axis, backend="cuda"), z, atol_l, "logits")
    expnorm = ("softmax", atol_p), ("log_softmax", atol_l), ("logsumexp", atol_l)
    for op, atol in expnorm if every else expnorm[:1]:
        want = getattr(head, op)(f, axis, temperature=temperature, backend="numpy")
        got = getattr(head, op)(fin, axis, temperature=temperature, backend="cuda")
        assert_close(got, want, atol, op)
    z64 = head_logits(head, Features(f, axis, head))
    if every:
        want_lab = head.argmax(f, axis, backend="numpy")
        assert_labels(head.argmax(fin, axis, backend="cuda"), want_lab, z64, axis)
    lab, conf = head.classify(fin, axis, temperature=temperature, backend="cuda")
    want_lab, want_conf = head.classify(f, axis, temperature=temperature, backend="numpy")
    assert_labels(lab, want_lab, z64, axis)
    assert_close(conf, want_conf, TOL[np.float32 if dtype == np.float16 else dtype][1], "conf")


# --------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_regimes(case, budget):
    shape, axis, C, nbytes, traits = CASES[case]
    budget(nbytes, case)
    shape3 = _layout.split_shape(shape, axis % len(shape))
    p = kh.plan(shape3, C, 4)
    for k, v in traits.items():
        assert getattr(p, k) == v, (case, p)
    assert p.shared_bytes <= kh.shared_budget()
    assert p.KC % kh.CB == 0 and p.threads % 32 == 0


def test_plan_budget_too_small(budget):
    budget(32)
    with pytest.raises(ValueError, match="head_shared_bytes"):
        kh.plan((10, 6, 1), 19, 4)


# --------------------------------------------------------------------------
# numerics
# --------------------------------------------------------------------------

def test_seed_example():
    head = fl.LinearHead([[1, -1, 0.5], [0.8, 0.5, -0.3], [-0.5, 1.2, 1]], [0.2, -0.1, 0.5])
    f = np.array([0.5, 0.8, 1.2])
    np.testing.assert_allclose(head.logits(f, backend="cuda"), [0.5, 0.34, 2.41], atol=1e-12)
    labels, conf = head.classify(f, backend="cuda")
    assert int(labels) == 2 and round(float(conf), 3) == 0.785


@pytest.mark.parametrize("case", sorted(CASES))
def test_ops_gpu_float32(rng, case, budget):
    shape, axis, C, nbytes, _ = CASES[case]
    budget(nbytes, case)
    head = make_head(rng, C, shape[axis])
    f = features(rng, shape, np.float32)
    check_ops(head, f, axis, to_gpu(f), every="chunks" not in case)


@pytest.mark.parametrize("case,dtype", [("cf-class-chunks", np.float64),
                                        ("cl-tile", np.float16)])
def test_ops_host_dtypes(rng, case, dtype, budget):
    shape, axis, C, nbytes, _ = CASES[case]
    budget(nbytes, case)
    head = make_head(rng, C, shape[axis], dtype)
    f = features(rng, shape, dtype)
    check_ops(head, f, axis, f, every=False)


@pytest.mark.parametrize("C,N", [(1, 4), (3, 1), (2, 0)])
def test_tiny_heads(rng, C, N):
    """C = 1 (every label 0, confidence 1), N = 1, N = 0 (logits = bias)."""
    head = make_head(rng, C, N)
    f = features(rng, (5, 7, N), np.float32)
    check_ops(head, f, -1, f, every=False)
    fcf = features(rng, (2, N, 3, 5), np.float32)
    check_ops(head, fcf, 1, to_gpu(fcf), every=False)


def test_no_bias_gpu_weights_and_cast(rng):
    """Weights on the GPU (float64 for float32 features: cast on the
    device), no bias; results come back as Numba device arrays."""
    W = rng.normal(size=(5, 9)) / 3
    b = rng.normal(size=5)
    f = features(rng, (2, 9, 4, 6), np.float32)
    fd = to_gpu(f)
    for bias in (None, b):
        host = fl.LinearHead(W, bias)
        dev = fl.LinearHead(to_gpu(W), None if bias is None else to_gpu(b.astype(np.float32)))
        if bias is not None:  # a transposed (Fortran-order) GPU weight: cast from a view
            dev = fl.LinearHead(to_gpu(np.ascontiguousarray(W.T)).T, to_gpu(b.astype(np.float32)))
        got = dev.softmax(fd, 1)
        assert kind_of(got) == "numba"
        assert_close(got, host.softmax(f, 1, backend="numpy"), 1e-5)
        lab = dev.argmax(fd, 1)
        z = head_logits(host, Features(f, 1, host))
        assert_labels(lab, host.argmax(f, 1, backend="numpy"), z, 1)


def test_special_values(rng):
    """NaN and inf features make NaN / inf logits: labels follow argmax's
    NaN rule, probabilities NaN, as the reference."""
    head = make_head(rng, 4, 3, np.float64)
    f = features(rng, (6, 3), np.float64)
    f[1, 0] = np.nan
    f[2, :] = np.inf
    f[3, 1] = -np.inf
    check_ops(head, f, -1, to_gpu(f))
    np.testing.assert_array_equal(to_host(head.argmax(to_gpu(f))), head.argmax(f, backend="numpy"))


def test_strided_features_and_out(rng):
    head = make_head(rng, 7, 5)
    base = features(rng, (4, 10, 5), np.float32)
    f = base[:, ::2]  # non-contiguous view
    want = head.log_softmax(f, backend="numpy")
    out = np.empty((4, 5, 7), np.float32)
    assert head.log_softmax(f, out=out, backend="cuda") is out  # host strided view
    assert_close(out, want, 3e-5)
    fd = to_gpu(base)[:, ::2]  # GPU strided view
    assert_close(head.softmax(fd), head.softmax(f, backend="numpy"), 1e-5)
    gout = to_gpu(np.zeros((4, 5, 7), np.float32))
    assert head.logits(to_gpu(np.ascontiguousarray(f)), out=gout) is gout
    assert_close(gout, head.logits(f, backend="numpy"), 3e-5)
    lab = to_gpu(np.zeros((4, 5), np.int16))
    conf = to_gpu(np.zeros((4, 5), np.float32))
    res = head.classify(to_gpu(np.ascontiguousarray(f)), out=(lab, conf))
    assert res[0] is lab and res[1] is conf
    with pytest.raises(ValueError, match=r"out has shape \(4, 5, 6\), expected \(4, 5, 7\)"):
        head.softmax(to_gpu(np.ascontiguousarray(f)), out=to_gpu(np.zeros((4, 5, 6), np.float32)))
    with pytest.raises(TypeError, match="out has dtype float64"):
        head.softmax(to_gpu(np.ascontiguousarray(f)), out=to_gpu(np.zeros((4, 5, 7))))


def test_empty(rng):
    head = make_head(rng, 3, 4)
    f = np.zeros((0, 4), np.float32)
    assert to_host(head.softmax(to_gpu(f))).shape == (0, 3)
    assert to_host(head.argmax(f, backend="cuda")).shape == (0,)
    assert np.isnan(head.cross_entropy(f, np.zeros(0, np.int64), backend="cuda"))
    cm = head.confusion_matrix(f, np.zeros(0, np.int64), backend="cuda")
    assert cm.shape == (3, 3) and not cm.any()


# --------------------------------------------------------------------------
# cross_entropy, confusion_matrix
# --------------------------------------------------------------------------

def targets(rng, shape, axis, C, frac=0.15):
    axis = axis % len(shape)
    t = rng.integers(0, C, size=shape[:axis] + shape[axis + 1:])
    t[rng.random(t.shape) < frac] = IGNORE
    return t


COMBOS = [(False, 0.0, "mean"), (True, 0.25, "sum"), (True, 0.0, "none")]


@pytest.mark.parametrize("case,combos", [("cf-resident", COMBOS),
                                         ("cl-feature-chunks", [(True, 0.25, "mean")]),
                                         ("cl-tile-chunks", [(False, 0.0, "none")])])
def test_cross_entropy(rng, case, combos, budget):
    shape, axis, C, nbytes, _ = CASES[case]
    budget(nbytes, case)
    head = make_head(rng, C, shape[axis])
    f = features(rng, shape, np.float32)
    t = targets(rng, shape, axis, C)
    fd, td = to_gpu(f), to_gpu(t.astype(np.int32))
    w = rng.uniform(0.3, 2.0, C)
    for weighted, eps, reduction in combos:
        kw = dict(class_weight=w if weighted else None, label_smoothing=eps,
                  reduction=reduction, ignore_index=IGNORE)
        loss, grad = head.cross_entropy(fd, td, axis, return_grad=True, **kw)
        want_loss, want_grad = head.cross_entropy(f, t, axis, return_grad=True, backend="numpy",
                                                  **kw)
        if reduction == "none":
            assert_close(loss, want_loss, 3e-5, "loss")
        else:
            assert type(loss) is np.float64
            np.testing.assert_allclose(loss, want_loss, rtol=3e-5)
        assert_close(grad, want_grad, 3e-5, "grad")
        if eps:  # the loss alone (second pass for the smoothing term only)
            alone = head.cross_entropy(fd, td, axis, **kw)
            np.testing.assert_allclose(alone, want_loss, rtol=3e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_cross_entropy_dtypes(rng, dtype):
    shape, axis, C = (2, 5, 3, 4), 1, 6
    head = make_head(rng, C, 5, dtype)
    f = features(rng, shape, dtype)
    t = targets(rng, shape, axis, C)
    loss, grad = head.cross_entropy(f, t, axis, return_grad=True, label_smoothing=0.1,
                                    backend="cuda")
    want_loss, want_grad = head.cross_entropy(f, t, axis, return_grad=True,
                                              label_smoothing=0.1, backend="numpy")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5 if dtype == np.float16 else 1e-12)
    assert grad.dtype == dtype
    assert_close(grad, want_grad, 1e-3 if dtype == np.float16 else 1e-12)


def test_cross_entropy_all_ignored(rng):
    head = make_head(rng, 4, 3)
    f = features(rng, (6, 3), np.float32)
    t = np.full(6, IGNORE)
    loss, grad = head.cross_entropy(to_gpu(f), to_gpu(t), return_grad=True)
    assert np.isnan(loss) and not to_host(grad).any()
    assert head.cross_entropy(to_gpu(f), to_gpu(t), reduction="sum") == 0.0


@pytest.mark.parametrize("case", ["cf-class-chunks", "cl-tile", "cl-tile-chunks"])
def test_confusion_matrix(rng, case, budget):
    """C = 19 counts in the shared histogram, C = 70 with global atomics."""
    shape, axis, C, nbytes, _ = CASES[case]
    budget(nbytes, case)
    head = make_head(rng, C, shape[axis])
    f = features(rng, shape, np.float32)
    t = targets(rng, shape, axis, C)
    want = head.confusion_matrix(f, t, axis, backend="numpy")
    fd, td = to_gpu(f), to_gpu(t.astype(np.int16))
    got = head.confusion_matrix(fd, td, axis)
    assert kind_of(got) == "numba"
    z = head_logits(head, Features(f, axis, head))
    zs = np.sort(np.moveaxis(z, axis, -1), axis=-1)
    if (zs[..., -1] - zs[..., -2] > 1e-3).all():  # no near-ties: counts equal exactly
        np.testing.assert_array_equal(to_host(got), want)
    assert to_host(got).sum() == want.sum() == (t != IGNORE).sum()
    out = to_gpu(np.ones((C, C), np.int64))
    assert head.confusion_matrix(fd, td, axis, out=out) is out
    np.testing.assert_array_equal(to_host(out), to_host(got) + 1)


@pytest.mark.parametrize("case", ["cf-resident", "cl-tile-chunks"])
def test_bad_target(rng, case, budget):
    shape, axis, C, nbytes, _ = CASES[case]
    budget(nbytes, case)
    head = make_head(rng, C, shape[axis])
    f = features(rng, shape, np.float32)
    t = targets(rng, shape, axis, C)
    pos = tuple(n // 2 for n in t.shape)
    t[pos] = C
    t[tuple(n - 1 for n in t.shape)] = -7  # a later bad value: not the one named
    msg = rf"target holds {C} at position \({', '.join(map(str, pos))},?\)"
    fd = to_gpu(f)
    for kw in (dict(), dict(return_grad=True)):
        with pytest.raises(ValueError, match=msg):
            head.cross_entropy(fd, to_gpu(t), axis, **kw)
    out = to_gpu(np.full((C, C), 7, np.int64))
    with pytest.raises(ValueError, match=msg):
        head.confusion_matrix(fd, t, axis, out=out)
    assert (to_host(out) == 7).all()  # left untouched
