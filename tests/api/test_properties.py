"""Property tests (hypothesis): invariants that hold for any logits."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastlogits as fl

finite32 = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)
anyfloat32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
shapes = st.tuples(st.integers(1, 40), st.integers(1, 70))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, shapes, elements=finite32), st.floats(-50, 50), st.sampled_from([-1, 0]))
def test_softmax_sums_to_one_and_is_shift_invariant(x, shift, axis):
    p = fl.softmax(x, axis)
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, atol=1e-5)
    shifted = (x.astype(np.float64) + shift).astype(np.float32)
    # The shift itself rounds in float32: compare with the reference on the same input.
    np.testing.assert_allclose(fl.softmax(shifted, axis), fl.reference.softmax(shifted, axis), atol=2e-6)
    np.testing.assert_allclose(fl.softmax(shifted, axis), p, atol=1e-4 * max(1.0, abs(shift)))


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, shapes, elements=anyfloat32), st.sampled_from([-1, 0]))
def test_argmax_agrees_with_numpy_on_anything(x, axis):
    np.testing.assert_array_equal(fl.argmax(x, axis), np.argmax(x, axis))
    labels, _ = fl.classify(x, axis)
    np.testing.assert_array_equal(labels, np.argmax(x, axis))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, shapes, elements=finite32), st.sampled_from([-1, 0]))
def test_log_softmax_is_x_minus_logsumexp_and_conf_is_max_prob(x, axis):
    lse = fl.logsumexp(x, axis)
    ls = fl.log_softmax(x, axis)
    np.testing.assert_allclose(ls, x - np.expand_dims(lse, axis), atol=2e-3, rtol=1e-5)
    _, conf = fl.classify(x, axis)
    np.testing.assert_allclose(conf, fl.softmax(x, axis).max(axis=axis), atol=2e-6)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, shapes, elements=finite32), st.sampled_from([-1, 0]), st.data())
def test_cross_entropy_gradient_rows_sum_to_zero(x, axis, data):
    """For any logits, targets (some ignored), class weights and label
    smoothing: each pixel's gradient sums to 0 over the classes (the
    softmax and the target distribution both have the target's total
    weight), ignored pixels have loss and gradient 0, losses are >= 0, and
    the "mean" is the "sum" over the kept pixels' target weights."""
    C = x.shape[axis]
    npix = x.shape[1 if axis == 0 else 0]
    t = data.draw(arrays(np.int64, npix, elements=st.integers(-1, C - 1)))
    t[t < 0] = -100
    w = data.draw(st.none() | arrays(np.float64, C, elements=st.floats(0.1, 5.0)))
    eps = data.draw(st.sampled_from([0.0, 0.1, 1.0]))
    kw = dict(class_weight=w, label_smoothing=eps)
    loss, grad = fl.cross_entropy(x, t, axis, reduction="none", return_grad=True, **kw)
    wmax = 1.0 if w is None else w.max()
    np.testing.assert_allclose(grad.sum(axis=axis), 0.0, atol=1e-5 * wmax * max(1.0, C / 8))
    ignored = t == -100
    assert (loss[ignored] == 0).all()
    assert (np.take(grad, np.flatnonzero(ignored), axis=1 - (axis % 2)) == 0).all()
    assert (loss >= 0).all()
    total = fl.cross_entropy(x, t, axis, reduction="sum", **kw)
    weights = (np.ones(C) if w is None else w)[t[~ignored]].sum()
    mean = fl.cross_entropy(x, t, axis, reduction="mean", **kw)
    if weights > 0:
        np.testing.assert_allclose(mean, total / weights, rtol=1e-6)
    else:
        assert np.isnan(mean)
