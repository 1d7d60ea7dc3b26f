"""Inputs users get from memory maps, broadcasting, other libraries and
other machines; outputs that alias; temperatures at the ends of the range.

Every op takes every read-only view, stride, byte order and layout with
no Numba error reaching the user; outputs that overlap each other or
themselves are refused; one temperature rule holds on every backend.
"""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference
from fastlogits.registry import OPS
from tests.helpers import assert_close, logits

DTYPES = [np.float16, np.float32, np.float64]


def _as_result_list(res):
    return list(res) if isinstance(res, tuple) else [res]


def _compare(op, x, axis, **kw):
    got = _as_result_list(OPS[op].public(x, axis, **kw))
    want = _as_result_list(OPS[op].reference(np.array(x), axis, **kw))
    for g, w in zip(got, want):
        if g.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w)
        else:
            assert_close(g, w, x.dtype.newbyteorder("="))


def _read_only_crop(rng, dtype, layout):
    """A read-only, non-contiguous crop: what np.load(mmap_mode='r')[..., :k]
    gives (the issue's case is the channels-first one)."""
    if layout == "chw":
        x = logits(rng, (2, 19, 8, 9), dtype)[:, :, 2:]
        axis = 1
    else:
        x = logits(rng, (7, 9, 23), dtype)[:, 1:, :19]
        axis = -1
    x.flags.writeable = False
    return x, axis


@pytest.mark.parametrize("layout", ["chw", "hwc"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_read_only_views(rng, op, dtype, layout):
    x, axis = _read_only_crop(rng, dtype, layout)
    _compare(op, x, axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(OPS))
def test_broadcast_inputs(rng, op, dtype):
    row = logits(rng, (19,), dtype)
    _compare(op, np.broadcast_to(row, (5, 7, 19)), -1)  # zero strides, read-only
    plane = logits(rng, (19, 1, 6), dtype)
    _compare(op, np.broadcast_to(plane, (2, 19, 5, 6)), 1)


def test_read_only_memory_map(tmp_path, rng):
    x = logits(rng, (3, 19, 5, 7), np.float32)
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")[..., :4]
    _compare("classify", m, 1)
    _compare("softmax", m, 1)


def test_from_buffer(rng):
    x = logits(rng, (6, 19), np.float64)
    view = np.frombuffer(x.tobytes(), np.float64).reshape(6, 19)[:, ::2]
    _compare("log_softmax", view, -1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_losses_and_head(rng, dtype):
    x, axis = _read_only_crop(rng, dtype, "chw")
    t = rng.integers(0, 19, (2, 6, 9))
    t.flags.writeable = False
    w = rng.uniform(0.5, 2, 19)
    w.flags.writeable = False
    got = fl.cross_entropy(x, t, axis, class_weight=w, return_grad=True)
    want = reference.cross_entropy(np.array(x), t, axis, class_weight=w, return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3 if dtype == np.float16 else 1e-5)
    assert_close(got[1], want[1], dtype)
    np.testing.assert_array_equal(fl.confusion_matrix(x, t, axis),
                                  reference.confusion_matrix(np.array(x), t, axis))
    W = logits(rng, (19, 19), dtype, scale=0.3)
    W.flags.writeable = False
    head = fl.LinearHead(W)
    got = head.classify(x, axis)
    want = fl.LinearHead(np.array(W)).classify(np.array(x), axis)
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(OPS))
def test_big_endian(rng, op, dtype):
    x = logits(rng, (5, 3, 19), dtype)
    big = x.astype(np.dtype(dtype).newbyteorder(">"))
    got = _as_result_list(OPS[op].public(big))
    want = _as_result_list(OPS[op].public(x))
    for g, w in zip(got, want):
        assert g.dtype.isnative
        np.testing.assert_array_equal(g, w)


def test_big_endian_loss_inputs(rng):
    x = logits(rng, (5, 19), np.float32)
    t = rng.integers(0, 19, 5)
    w = rng.uniform(0.5, 2, 19)
    got = fl.cross_entropy(x.astype(">f4"), t.astype(">i8"), class_weight=w.astype(">f8"))
    assert got == fl.cross_entropy(x, t, class_weight=w)


def test_torch_tensor_that_requires_grad(rng):
    torch = pytest.importorskip("torch")
    x = logits(rng, (4, 19), np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    np.testing.assert_array_equal(np.asarray(fl.argmax(xt)), fl.argmax(x))
    np.testing.assert_allclose(np.asarray(fl.softmax(xt)), fl.softmax(x))
    w = torch.nn.Linear(19, 3).weight  # a Parameter: requires grad
    head = fl.LinearHead(w)
    np.testing.assert_array_equal(np.asarray(head.argmax(xt)),
                                  fl.LinearHead(w.detach().numpy()).argmax(x))


# --------------------------------------------------------------------------
# outputs that alias
# --------------------------------------------------------------------------

def test_classify_outputs_sharing_memory(rng):
    x = logits(rng, (6, 7, 5), np.float32)
    b = np.zeros(42, np.int32)
    with pytest.raises(ValueError, match=r"out\[0\] \(labels\) and out\[1\] \(confidence\) overlap"):
        fl.classify(x, out=(b.reshape(6, 7), b.view(np.float32).reshape(6, 7)))
    with pytest.raises(ValueError, match="overlap"):
        fl.classify(x, out=(b.reshape(6, 7), b.view(np.float32).reshape(6, 7)),
                    backend="numpy")
    head = fl.LinearHead(logits(rng, (3, 5), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        head.classify(x, out=(b.reshape(6, 7), b.view(np.float32).reshape(6, 7)))
    # Interleaved but distinct elements are fine.
    b = np.zeros(84, np.int32)
    labels, conf = b[::2].reshape(6, 7), b[1::2].view(np.float32).reshape(6, 7)
    fl.classify(x, out=(labels, conf))
    want = reference.classify(x)
    np.testing.assert_array_equal(labels, want[0])
    assert_close(conf, want[1], np.float32)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_self_overlapping_output(rng, op):
    base = logits(rng, (40,), np.float32)
    a = np.lib.stride_tricks.as_strided(base, (6, 5), (4 * 4, 4))  # rows overlap
    with pytest.raises(ValueError, match="elements that share memory"):
        OPS[op].public(a, out=a)  # in place
    out = np.lib.stride_tricks.as_strided(np.zeros(40, np.float32), (6, 5), (4 * 4, 4))
    with pytest.raises(ValueError, match="elements that share memory"):
        OPS[op].public(np.array(a), out=out)
    # Reading a self-overlapping x is fine.
    _compare(op, a, -1)


def test_self_overlapping_labels():
    x = np.zeros((6, 5), np.float32)
    out = np.lib.stride_tricks.as_strided(np.zeros(6, np.int64), (6,), (0,))
    with pytest.raises(ValueError, match="share memory"):
        fl.argmax(x, out=out)


# --------------------------------------------------------------------------
# temperature: one rule (reference.temperature_scale) on every backend
# --------------------------------------------------------------------------

TEMPERATURES = [5e-324, 1e-308, 1e-45, 1e-40, 1e-30, 0.1, 1.0, 7.5, 1e30, 3.4e38, 1.7e308]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("op", [name for name, op in sorted(OPS.items()) if op.tempered])
def test_extreme_temperatures(rng, op, dtype, temperature):
    x = logits(rng, (5, 3, 19), dtype)
    x[0, 0, 3] = -np.inf  # a -inf among finite logits stays probability 0
    x[0, 1, :2] = x[0, 1].max()  # a tie at the max
    with np.errstate(all="raise"):
        got = _as_result_list(OPS[op].public(x, temperature=temperature))
    want = _as_result_list(OPS[op].reference(x, temperature=temperature))
    for g, w in zip(got, want):
        assert not np.isnan(g[np.isfinite(w)]).any()
        if g.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w)
        else:
            finite = np.isfinite(w)
            np.testing.assert_array_equal(np.isfinite(g), finite)
            np.testing.assert_array_equal(g[~finite], w[~finite])
            assert_close(g[finite], w[finite], dtype)


def test_temperature_scale_rule():
    s32 = reference.temperature_scale
    assert s32(1e-40, np.float32) == np.finfo(np.float32).max
    assert s32(5e-324, np.float64) == np.finfo(np.float64).max
    assert s32(1e-308, np.float64) == np.float64(1e308)
    assert s32(1.7e308, np.float32) == np.finfo(np.float32).tiny
    assert s32(1.7e308, np.float64) == np.finfo(np.float64).tiny
    assert s32(2.0, np.float16).dtype == np.float32
    assert s32(4.0, np.float32) == np.float32(0.25)


def test_tiny_temperature_limits():
    x = np.array([[1.0, 3.0, 2.0, 3.0 - 1e-6]], np.float32)
    p = fl.softmax(x, temperature=1e-40)
    np.testing.assert_array_equal(p, [[0, 1, 0, 0]])
    assert fl.logsumexp(x, temperature=1e-40)[0] == np.inf  # 3e40: out of float32's range
    np.testing.assert_array_equal(fl.softmax(x.astype(np.float64), temperature=1e-308),
                                  [[0, 1, 0, 0]])


# --------------------------------------------------------------------------
# logsumexp near 0 (SciPy's rule) in the reference
# --------------------------------------------------------------------------

def test_reference_logsumexp_near_zero():
    # SciPy's gh-18295: log(1 + exp(-40)) = 4.248354255291589e-18
    np.testing.assert_allclose(reference.logsumexp(np.array([0.0, -40.0])),
                               4.248354255291589e-18, rtol=1e-15)
    np.testing.assert_allclose(reference.logsumexp(np.array([-40.0, 0.0, -40.0])),
                               2 * 4.248354255291589e-18, rtol=1e-15)
    np.testing.assert_allclose(reference.logsumexp(np.array([0.0, -10.0], np.float32)),
                               np.log1p(np.exp(-10.0)), rtol=1e-7)
    # ties at the max: log(2 + e^-40)
    np.testing.assert_allclose(reference.logsumexp(np.array([0.0, 0.0, -40.0])),
                               np.log(2.0) + np.exp(-40.0) / 2, rtol=1e-15)
    lp = reference.log_softmax(np.array([0.0, -40.0]))
    np.testing.assert_allclose(lp[0], -4.248354255291589e-18, rtol=1e-15)


# --------------------------------------------------------------------------
# a confusion matrix too large for the machine
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_confusion_matrix_too_large(backend):
    x = np.zeros((2, 10**6), np.float32)
    with pytest.raises(ValueError, match=r"C=1000000 classes needs a \(1000000, 1000000\) int64"):
        fl.confusion_matrix(x, np.zeros(2, np.int64), backend=backend)
