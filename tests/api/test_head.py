"""LinearHead against its reference: float64 logits (F.linear) then the
reference op, on fresh random data (features std 3, weights scaled so the
logits have std about 3).

Tolerances follow the documented accumulation bound of the CPU kernels,
``|z - z_ref| <= (N + 2) u (|b| + sum_n |W f|)`` per logit (u = 2**-24 for
float32 compute, 2**-53 for float64), propagated to each op; labels must
equal the reference wherever the float64 top-2 margin exceeds 1e-3.
"""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import tuning
from fastlogits import reference as ref

SEED_W = [[1, -1, 0.5], [0.8, 0.5, -0.3], [-0.5, 1.2, 1]]
SEED_B = [0.2, -0.1, 0.5]
SEED_F = [0.5, 0.8, 1.2]

DTYPES = [np.float16, np.float32, np.float64]
LAYOUTS = ["cl", "cf"]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def make_head(rng, C, N, dtype=np.float32, bias=True):
    W = (rng.normal(size=(C, N)) * (1.0 / np.sqrt(max(N, 1)))).astype(dtype)
    b = (rng.normal(size=C) * 3).astype(dtype) if bias else None
    return fl.LinearHead(W, b)


def make_features(rng, layout, N, dtype, pixels=(7, 9), batch=2):
    """Channels-last (H, W, N) with axis -1, or channels-first (B, N, H, W)
    with axis 1; std 3."""
    H, Wd = pixels
    if layout == "cl":
        f = rng.normal(size=(H, Wd, N)) * 3
        axis = -1
    else:
        f = rng.normal(size=(batch, N, H, Wd)) * 3
        axis = 1
    return f.astype(dtype), axis


def ref_logits(head, f, axis):
    """float64 logits with the class axis at ``axis`` (F.linear in float64)."""
    W = np.asarray(head.weight, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf features: NaN/inf logits
        z = np.moveaxis(np.asarray(f, np.float64), axis, -1) @ W.T
        if head.bias is not None:
            z = z + np.asarray(head.bias, np.float64)
    return np.moveaxis(z, -1, axis)


def logit_bound(head, f, axis):
    """Per-logit error bound of the CPU kernels (class axis at ``axis``)."""
    u = 2.0 ** -53 if np.asarray(f).dtype == np.float64 else 2.0 ** -24
    W = np.abs(np.asarray(head.weight, np.float64))
    N = W.shape[1]
    s = np.moveaxis(np.abs(np.asarray(f, np.float64)), axis, -1) @ W.T
    if head.bias is not None:
        s = s + np.abs(np.asarray(head.bias, np.float64))
    return np.moveaxis((N + 2) * u * s, -1, axis)


def kernel_eps(dtype):
    """Own rounding of the epilogue (and the float16 store) per dtype."""
    return {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}[np.dtype(dtype).type]


def top2_margin(z, axis):
    zs = np.sort(np.moveaxis(z, axis, -1), axis=-1)
    return zs[..., -1] - zs[..., -2] if zs.shape[-1] > 1 else np.full(zs.shape[:-1], np.inf)


# --------------------------------------------------------------------------
# the seed example
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seed_example(backend, dtype):
    head = fl.LinearHead(np.array(SEED_W, dtype), np.array(SEED_B, dtype))
    f = np.array(SEED_F, dtype)
    np.testing.assert_allclose(head.logits(f, backend=backend), [0.5, 0.34, 2.41], atol=1e-6)
    np.testing.assert_allclose(head.softmax(f, backend=backend), [0.116, 0.099, 0.785], atol=5e-4)
    labels, conf = head.classify(f, backend=backend)
    assert int(labels) == 2 and round(float(conf), 3) == 0.785
    assert int(head.argmax(f, backend=backend)) == 2
    assert np.asarray(conf).dtype == dtype


def test_seed_example_images():
    """The seed pixel everywhere in a channels-first and a channels-last map."""
    head = fl.LinearHead(SEED_W, SEED_B)
    f_cl = np.broadcast_to(np.array(SEED_F, np.float32), (5, 6, 3)).copy()
    f_cf = np.ascontiguousarray(np.moveaxis(f_cl, -1, 0))[None]
    for f, axis in ((f_cl, -1), (f_cf, 1)):
        labels, conf = head.classify(f, axis=axis)
        assert labels.shape == (5, 6) if axis == -1 else (1, 5, 6)
        assert (labels == 2).all()
        np.testing.assert_allclose(conf, 0.7847654, atol=1e-6)


def test_properties_and_repr():
    head = fl.LinearHead(SEED_W)
    assert head.num_classes == 3 and head.num_features == 3 and head.bias is None
    assert "num_classes=3" in repr(head)
    assert "LinearHead" in fl.__all__


# --------------------------------------------------------------------------
# every op against the reference
# --------------------------------------------------------------------------

CASES = [  # (C, N)
    (19, 32), (3, 5), (1, 4), (2, 1), (150, 24), (5, 2048), (6, 200), (7, 64), (4, 40),
]


@pytest.mark.parametrize("C,N", CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_match_reference(rng, C, N, layout, dtype):
    head = make_head(rng, C, N, dtype)
    pixels = (3, 5) if N >= 1024 else (7, 9)
    f, axis = make_features(rng, layout, N, dtype, pixels)
    z = ref_logits(head, f, axis)
    delta = logit_bound(head, f, axis)
    dpix = np.max(delta, axis=axis, keepdims=True)
    keps = kernel_eps(dtype)
    T = 1.7

    logits = head.logits(f, axis=axis)
    assert logits.dtype == dtype and logits.shape == z.shape
    tol16 = np.abs(z) * 2.0 ** -10 if dtype == np.float16 else 0.0
    assert np.all(np.abs(logits - z) <= delta + tol16 + 1e-300)

    p = head.softmax(f, axis=axis, temperature=T)
    pref = ref.softmax(z, axis, temperature=T)
    assert p.dtype == dtype and p.shape == z.shape
    assert np.all(np.abs(p - pref) <= pref * np.expm1(2 * dpix / T) + keps)

    lp = head.log_softmax(f, axis=axis, temperature=T)
    lpref = ref.log_softmax(z, axis, temperature=T)
    assert lp.dtype == dtype
    assert np.all(np.abs(lp - lpref) <= 2 * dpix / T + 2 * keps * (1 + np.abs(lpref)))

    lse = head.logsumexp(f, axis=axis, temperature=T)
    lseref = ref.logsumexp(z, axis, temperature=T)
    assert lse.dtype == dtype and lse.shape == lseref.shape
    d1 = np.squeeze(dpix, axis)
    assert np.all(np.abs(lse - lseref) <= d1 / T + 2 * keps * (1 + np.abs(lseref)))

    labels = head.argmax(f, axis=axis)
    lref = ref.argmax(z, axis)
    assert labels.dtype == np.int64 and labels.shape == lref.shape
    sure = top2_margin(z, axis) > max(1e-3, 0.0)
    np.testing.assert_array_equal(labels[sure], lref[sure])

    labels2, conf = head.classify(f, axis=axis, temperature=T)
    _, cref = ref.classify(z, axis, temperature=T)
    np.testing.assert_array_equal(labels2, labels)
    assert conf.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert np.all(np.abs(conf - cref) <= cref * np.expm1(2 * d1 / T) + kernel_eps(conf.dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_near_ties(rng, layout, backend):
    """Two classes with almost the same weights: margins from 1e-6 to 1;
    labels equal the float64 reference's wherever its top-2 margin > 1e-3."""
    C, N = 6, 256
    W = rng.normal(size=(C, N)) / np.sqrt(N)
    W[1] = W[0] + rng.normal(size=N) * 1e-4 / np.sqrt(N)
    W[3] = W[2] + rng.normal(size=N) * 3e-3 / np.sqrt(N)
    b = np.zeros(C)
    b[4:] = -10.0  # classes 4, 5 never win: the contest is 0 v 1 and 2 v 3
    head = fl.LinearHead(W.astype(np.float32), b.astype(np.float32))
    f, axis = make_features(rng, layout, N, np.float32, (16, 17))
    z = ref_logits(head, f, axis)
    labels = head.argmax(f, axis=axis, backend=backend)
    labels2, _ = head.classify(f, axis=axis, backend=backend)
    lref = ref.argmax(z, axis)
    sure = top2_margin(z, axis) > 1e-3
    assert sure.mean() > 0.3 and (~sure).sum() > 0
    np.testing.assert_array_equal(labels[sure], lref[sure])
    np.testing.assert_array_equal(labels2, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float64_is_tight(rng, layout):
    head = make_head(rng, 19, 40, np.float64)
    f, axis = make_features(rng, layout, 40, np.float64)
    z = ref_logits(head, f, axis)
    np.testing.assert_allclose(head.logits(f, axis=axis), z, rtol=0, atol=1e-12)
    np.testing.assert_allclose(head.softmax(f, axis=axis), ref.softmax(z, axis), atol=1e-13)
    np.testing.assert_array_equal(head.argmax(f, axis=axis), ref.argmax(z, axis))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_numpy_backend_is_the_reference(rng, layout):
    head = make_head(rng, 7, 9, np.float32)
    f, axis = make_features(rng, layout, 9, np.float32)
    z = ref_logits(head, f, axis)
    np.testing.assert_array_equal(head.logits(f, axis=axis, backend="numpy"), z.astype(np.float32))
    np.testing.assert_array_equal(head.softmax(f, axis=axis, backend="numpy"),
                                  ref.softmax(z, axis).astype(np.float32))
    lab, conf = head.classify(f, axis=axis, backend="numpy")
    assert conf.dtype == np.float32
    np.testing.assert_array_equal(lab, ref.argmax(z, axis))


# --------------------------------------------------------------------------
# tiles, chunks, strided views, out=
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_small_tiles_and_chunks(tune, rng, monkeypatch, layout, dtype):
    """Many tiles with tails, several chunks of the float16/strided path."""
    tune(cpu_tile_pixels=16)
    tune(cpu_tile_elements=16)
    tune(cpu_half_chunk_elements=300)
    head = make_head(rng, 5, 11, dtype)
    f, axis = make_features(rng, layout, 11, dtype, (13, 21), batch=3)
    z = ref_logits(head, f, axis)
    delta = logit_bound(head, f, axis)
    tol16 = np.abs(z) * 2.0 ** -10 if dtype == np.float16 else 0.0
    assert np.all(np.abs(head.logits(f, axis=axis) - z) <= delta + tol16)
    sure = top2_margin(z, axis) > 1e-3
    np.testing.assert_array_equal(head.argmax(f, axis=axis)[sure], ref.argmax(z, axis)[sure])
    p = head.softmax(f, axis=axis)
    np.testing.assert_allclose(p, ref.softmax(z, axis), atol=2e-3 if dtype == np.float16 else 1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_features_and_outputs(rng, layout):
    head = make_head(rng, 4, 6, np.float32)
    big, axis = make_features(rng, layout, 12, np.float32, (14, 10))
    # Every second feature, every second pixel along one spatial axis.
    f = big[..., ::2] if layout == "cl" else big[:, ::2, ::2]
    z = ref_logits(head, f, axis)
    sure = top2_margin(z, axis) > 1e-3
    np.testing.assert_array_equal(head.argmax(f, axis=axis)[sure], ref.argmax(z, axis)[sure])
    out_full = np.zeros(z.shape[:-1] + (2 * z.shape[-1],), np.float32)
    out = out_full[..., ::2]  # a strided out=
    res = head.softmax(f, axis=axis, out=out)
    assert res is out
    np.testing.assert_allclose(out, ref.softmax(z, axis), atol=1e-5)
    assert not out_full[..., 1::2].any()
    # A transposed (Fortran-ordered) features array.
    ft = np.asfortranarray(f)
    np.testing.assert_allclose(head.logits(ft, axis=axis), head.logits(f, axis=axis), atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_arguments(rng, layout):
    head = make_head(rng, 19, 8, np.float32)
    f, axis = make_features(rng, layout, 8, np.float32)
    z = ref_logits(head, f, axis)
    red = ref.argmax(z, axis).shape
    lab = np.empty(red, np.uint8)
    conf = np.empty(red, np.float32)
    rl, rc = head.classify(f, axis=axis, out=(lab, conf))
    assert rl is lab and rc is conf
    np.testing.assert_array_equal(lab, head.argmax(f, axis=axis))
    lab8 = np.empty(red, np.uint8)
    assert head.argmax(f, axis=axis, out=lab8) is lab8
    np.testing.assert_array_equal(lab8, lab)
    lse = np.empty(red, np.float32)
    assert head.logsumexp(f, axis=axis, out=lse) is lse
    zz = np.empty(z.shape, np.float32)
    assert head.logits(f, axis=axis, out=zz) is zz
    np.testing.assert_allclose(zz, z, atol=1e-4)


def test_in_place_when_shapes_allow(rng):
    """out=f is allowed for softmax when N == C (as out=x for the core op)."""
    head = make_head(rng, 6, 6, np.float32)
    f, axis = make_features(rng, "cf", 6, np.float32)
    expect = head.softmax(f, axis=axis)
    res = head.softmax(f, axis=axis, out=f)
    assert res is f
    np.testing.assert_allclose(f, expect, atol=1e-6)


# --------------------------------------------------------------------------
# special values and edge sizes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_special_values(rng, layout):
    head = make_head(rng, 5, 4, np.float32)
    f, axis = make_features(rng, layout, 4, np.float32, (3, 4))
    fm = np.moveaxis(f, axis, -1)  # a view: writes go to f
    fm[0, 0, 1] = np.nan
    fm[0, 1, 2] = np.inf
    fm[0, 2, :] = -np.inf
    fm[1, 0, 0] = 1e30  # huge but finite
    z = ref_logits(head, f, axis)
    np.testing.assert_array_equal(np.isnan(head.logits(f, axis=axis)), np.isnan(z))
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(head, op)(f, axis=axis)
        want = getattr(ref, op)(z.astype(np.float32), axis)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=op)
        fin = np.isfinite(want)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=op)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4, err_msg=op)
    np.testing.assert_array_equal(head.argmax(f, axis=axis), ref.argmax(z.astype(np.float32), axis))
    _, conf = head.classify(f, axis=axis)
    _, cref = ref.classify(z.astype(np.float32), axis)
    np.testing.assert_array_equal(np.isnan(conf), np.isnan(cref))


def test_minus_inf_bias():
    """A class with bias -inf never wins and has probability 0."""
    head = fl.LinearHead(np.ones((3, 2), np.float32), np.array([0.0, -np.inf, 1.0], np.float32))
    f = np.array([[0.5, 0.5], [-1.0, 2.0]], np.float32)
    p = head.softmax(f)
    assert (p[:, 1] == 0).all()
    assert np.isneginf(head.log_softmax(f)[:, 1]).all()
    np.testing.assert_array_equal(head.argmax(f), [2, 2])


def test_empty_and_zero_features(rng):
    head = make_head(rng, 4, 3, np.float32)
    f = np.zeros((0, 5, 3), np.float32)
    assert head.softmax(f).shape == (0, 5, 4)
    assert head.argmax(f).shape == (0, 5)
    lab, conf = head.classify(f)
    assert lab.shape == conf.shape == (0, 5)
    assert head.confusion_matrix(f, np.zeros((0, 5), np.int64)).sum() == 0
    # N = 0: the logits are the bias.
    b = np.array([0.5, -1.0], np.float32)
    h0 = fl.LinearHead(np.zeros((2, 0), np.float32), b)
    for layout, g, axis in (("cl", np.zeros((3, 0), np.float32), -1),
                            ("cf", np.zeros((2, 0, 5), np.float32), 1)):
        z = h0.logits(g, axis=axis)
        zl = np.moveaxis(z, axis, -1)
        np.testing.assert_array_equal(zl, np.broadcast_to(b, zl.shape))


# --------------------------------------------------------------------------
# cross_entropy and confusion_matrix
# --------------------------------------------------------------------------

def make_target(rng, shape, C, ignore=-100, frac=0.2):
    t = rng.integers(0, C, size=shape)
    t[rng.random(shape) < frac] = ignore
    return t


def ref_head_xent(head, f, t, axis, **kw):
    """float64 logits, then reference.cross_entropy; gradient W^T (dL/dz)."""
    z = ref_logits(head, f, axis)
    res = ref.cross_entropy(z, t, axis, **kw)
    if not kw.get("return_grad"):
        return res
    loss, gz = res
    gf = np.moveaxis(np.moveaxis(gz, axis, -1) @ np.asarray(head.weight, np.float64), -1, axis)
    return loss, gf


XENT_OPTIONS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.1),
    dict(class_weight="w", label_smoothing=0.2, reduction="mean"),
    dict(class_weight="w", reduction="none", ignore_index=2),
]


def _opts_id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items()) or "plain"


@pytest.mark.parametrize("opts", XENT_OPTIONS, ids=_opts_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_matches_reference(rng, opts, layout, dtype):
    C, N = 19, 24
    head = make_head(rng, C, N, dtype)
    f, axis = make_features(rng, layout, N, dtype)
    red_shape = np.delete(np.array(f.shape), axis % f.ndim)
    opts = dict(opts)
    if opts.get("class_weight") == "w":
        opts["class_weight"] = rng.uniform(0.5, 2.0, size=C)
    t = make_target(rng, tuple(red_shape), C, opts.get("ignore_index", -100))
    loss, grad = head.cross_entropy(f, t, axis=axis, return_grad=True, **opts)
    lref, gref = ref_head_xent(head, f, t, axis, return_grad=True, **opts)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert grad.dtype == dtype and grad.shape == f.shape
    if opts.get("reduction") == "none":
        assert loss.dtype == dtype and loss.shape == t.shape
        np.testing.assert_allclose(loss, lref, rtol=rtol, atol=rtol)
    else:
        assert isinstance(loss, np.float64)
        np.testing.assert_allclose(loss, lref, rtol=rtol)
    scale = np.abs(gref).max()
    np.testing.assert_allclose(grad, gref, rtol=0, atol=rtol * scale)
    ignored = t == opts.get("ignore_index", -100)
    assert not np.moveaxis(grad, axis, -1)[ignored].any()
    # Without the gradient: the same loss.
    loss2 = head.cross_entropy(f, t, axis=axis, **opts)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)


def test_cross_entropy_grad_is_wrt_features(rng):
    """Finite differences in float64: return_grad is d loss / d f."""
    C, N = 4, 3
    head = make_head(rng, C, N, np.float64)
    f = rng.normal(size=(2, 3, N)) * 3
    t = np.array([[0, 1, 3], [2, -100, 1]])
    loss, grad = head.cross_entropy(f, t, return_grad=True, label_smoothing=0.1)
    h = 1e-6
    num = np.zeros_like(f)
    for idx in np.ndindex(*f.shape):
        fp, fm = f.copy(), f.copy()
        fp[idx] += h
        fm[idx] -= h
        num[idx] = (head.cross_entropy(fp, t, label_smoothing=0.1)
                    - head.cross_entropy(fm, t, label_smoothing=0.1)) / (2 * h)
    np.testing.assert_allclose(grad, num, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cross_entropy_float16_and_small_tiles(tune, rng, monkeypatch, layout):
    tune(cpu_tile_pixels=16)
    tune(cpu_tile_elements=16)
    tune(cpu_half_chunk_elements=200)
    C, N = 5, 9
    head = make_head(rng, C, N, np.float16)
    f, axis = make_features(rng, layout, N, np.float16, (11, 13))
    t = make_target(rng, np.delete(np.array(f.shape), axis % f.ndim), C)
    loss, grad = head.cross_entropy(f, t, axis=axis, return_grad=True, reduction="sum")
    lref, gref = ref_head_xent(head, f, t, axis, return_grad=True, reduction="sum")
    assert grad.dtype == np.float16
    np.testing.assert_allclose(loss, lref, rtol=1e-4)
    np.testing.assert_allclose(grad, gref, atol=2e-3 * np.abs(gref).max())


@pytest.mark.parametrize("binning", ["histograms", "labels"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("C", [1, 3, 19, 150])
def test_confusion_matrix(rng, layout, C, binning, monkeypatch):
    """Both CPU paths, forced: the fused private histograms, and the
    labels binned serially (cpu.plan.private_histograms)."""
    from fastlogits.cpu import plan

    monkeypatch.setattr(plan, "private_histograms",
                        lambda C, pixels, nthreads: binning == "histograms")
    N = 16
    head = make_head(rng, C, N, np.float32)
    f, axis = make_features(rng, layout, N, np.float32, (9, 11))
    t = make_target(rng, np.delete(np.array(f.shape), axis % f.ndim), C, ignore=255)
    cm = head.confusion_matrix(f, t, axis=axis, ignore_index=255)
    z = ref_logits(head, f, axis)
    # The counts are exactly those of the head's own labels, which equal
    # the float64 reference's wherever its top-2 margin exceeds 1e-3.
    labels = head.argmax(f, axis=axis)
    sure = top2_margin(z, axis) > 1e-3
    np.testing.assert_array_equal(labels[sure], ref.argmax(z, axis)[sure])
    keep = t != 255
    expect = np.bincount(t[keep] * C + labels[keep], minlength=C * C).reshape(C, C)
    np.testing.assert_array_equal(cm, expect)
    assert cm.dtype == np.int64 and cm.sum() == (t != 255).sum()
    acc = np.ones((C, C), np.int64)
    assert head.confusion_matrix(f, t.astype(np.uint8), axis=axis, ignore_index=255, out=acc) is acc
    np.testing.assert_array_equal(acc, cm + 1)
    cm_np = head.confusion_matrix(f, t, axis=axis, ignore_index=255, backend="numpy")
    np.testing.assert_array_equal(cm_np, ref.confusion_matrix(z, t, axis, ignore_index=255))


def test_target_errors(rng):
    head = make_head(rng, 3, 4, np.float32)
    f = rng.normal(size=(5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"target has shape \(4,\), expected \(5,\).*\(5, 4\)"):
        head.cross_entropy(f, np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="integer"):
        head.cross_entropy(f, np.zeros(5))
    t = np.array([0, 1, 7, 2, 0])
    for fn in (head.cross_entropy, head.confusion_matrix):
        for be in ("cpu", "numpy"):
            with pytest.raises(ValueError, match="holds 7 at position"):
                fn(f, t, backend=be)
    acc = np.zeros((3, 3), np.int64)
    with pytest.raises(ValueError):
        head.confusion_matrix(f, t, out=acc)
    assert not acc.any()
    from fastlogits.cpu import plan

    with pytest.MonkeyPatch.context() as mp:  # the labels path too
        mp.setattr(plan, "private_histograms", lambda C, pixels, nthreads: False)
        with pytest.raises(ValueError, match="holds 7 at position"):
            head.confusion_matrix(f, t, out=acc)
    assert not acc.any()
    with pytest.raises(ValueError, match="class_weight"):
        head.cross_entropy(f, t % 3, class_weight=np.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        head.cross_entropy(f, t % 3, reduction="avg")


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

def test_bad_weight_and_bias():
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected 2-D"):
        fl.LinearHead(np.ones(3))
    with pytest.raises(ValueError, match="no classes"):
        fl.LinearHead(np.ones((0, 3)))
    with pytest.raises(TypeError, match="weight must hold float"):
        fl.LinearHead(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match="weight must hold float"):
        fl.LinearHead(np.ones((2, 3), np.complex64))
    with pytest.raises(ValueError,
                       match=r"bias has shape \(3,\), expected \(2,\) .*weight of shape \(2, 3\)"):
        fl.LinearHead(np.ones((2, 3)), np.ones(3))
    with pytest.raises(TypeError, match="bias must hold float"):
        fl.LinearHead(np.ones((2, 3)), np.ones(2, np.int32))


def test_bad_features_and_options(rng):
    head = make_head(rng, 3, 4, np.float32)
    f = rng.normal(size=(2, 5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"f has shape \(2, 5, 4\): 5 features along axis 1"
                                         r".*weight has shape \(3, 4\)"):
        head.softmax(f, axis=1)
    with pytest.raises(TypeError, match="f must hold float"):
        head.argmax(f.astype(np.int32))
    with pytest.raises(ValueError, match="out of range"):
        head.argmax(f, axis=3)
    with pytest.raises(ValueError, match="0-d"):
        head.argmax(np.float32(1.0))
    with pytest.raises(ValueError, match="temperature"):
        head.softmax(f, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        head.classify(f, temperature=-1.0)
    with pytest.raises(ValueError, match="unknown backend"):
        head.argmax(f, backend="tpu")
    with pytest.raises(ValueError, match=r"out has shape \(2, 5, 4\), expected \(2, 5, 3\)"):
        head.softmax(f, out=np.empty((2, 5, 4), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        head.softmax(f, out=np.empty((2, 5, 3), np.float64))
    ro = np.empty((2, 5, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        head.softmax(f, out=ro)
    with pytest.raises(TypeError, match="tuple"):
        head.classify(f, out=np.empty((2, 5), np.int64))
    with pytest.raises(ValueError, match="cannot hold label"):
        fl.LinearHead(np.ones((300, 4), np.float32)).argmax(f, out=np.empty((2, 5), np.uint8))


def test_cuda_without_gpu(rng):
    if "cuda" in fl.backends():
        pytest.skip("a CUDA backend is available")
    head = make_head(rng, 3, 4, np.float32)
    with pytest.raises(ValueError, match="cuda"):
        head.classify(np.ones((2, 4), np.float32), backend="cuda")


@pytest.mark.parametrize("ratio", [0, 10**9], ids=["dot", "transpose"])
@pytest.mark.parametrize("C,N", [(19, 32), (4, 130), (150, 6)])
def test_channels_last_regimes(tune, rng, monkeypatch, ratio, C, N):
    """Both channels-last product forms (dot products, transposed tile),
    with small tiles so tails are covered, including the gradient."""
    tune(cpu_head_dot_min_ratio=ratio)
    tune(cpu_tile_pixels=16)
    tune(cpu_tile_elements=64)
    head = make_head(rng, C, N, np.float32)
    f, axis = make_features(rng, "cl", N, np.float32, (5, 11))
    z = ref_logits(head, f, axis)
    assert np.all(np.abs(head.logits(f, axis=axis) - z) <= logit_bound(head, f, axis))
    sure = top2_margin(z, axis) > 1e-3
    np.testing.assert_array_equal(head.argmax(f, axis=axis)[sure], ref.argmax(z, axis)[sure])
    t = make_target(rng, f.shape[:-1], C)
    loss, grad = head.cross_entropy(f, t, return_grad=True)
    lref, gref = ref_head_xent(head, f, t, -1, return_grad=True)
    np.testing.assert_allclose(loss, lref, rtol=1e-4)
    np.testing.assert_allclose(grad, gref, atol=1e-4 * np.abs(gref).max())


def test_weights_updated_in_place(rng):
    """The head keeps the caller's arrays: in-place updates are seen."""
    W = np.ones((3, 4), np.float32)
    head = fl.LinearHead(W)
    f = rng.normal(size=(5, 4)) * 3
    for dtype in (np.float32, np.float64):
        W[...] = rng.normal(size=W.shape)
        np.testing.assert_allclose(head.logits(f.astype(dtype)), f @ W.T.astype(np.float64),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3, 7])
@pytest.mark.parametrize("N", [16, 48, 64])
def test_channels_last_dot_form_at_every_line_offset(tune, rng, monkeypatch, dtype, offset, N):
    """The dot form's aligned kernel (every feature row at the same offset
    in a 64-byte line, W copied to match: cpu.ops.head.dot_weights) and its
    unaligned one (float32 N = 48: rows at three offsets), on features
    placed ``offset`` elements past a line, with the gradient."""
    tune(cpu_head_dot_min_ratio=0)
    tune(cpu_tile_pixels=16)
    C = 5
    head = make_head(rng, C, N, dtype)
    size = np.dtype(dtype).itemsize
    n = 37 * N
    raw = np.empty(n + 64, dtype)
    s = (-raw.ctypes.data % 64) // size + offset
    f = raw[s:s + n].reshape(37, N)
    f[...] = rng.normal(size=f.shape) * 3
    assert f.ctypes.data % 64 == offset * size
    z = ref_logits(head, f, -1)
    assert np.all(np.abs(head.logits(f) - z) <= logit_bound(head, f, -1))
    sure = top2_margin(z, -1) > 1e-3
    np.testing.assert_array_equal(head.argmax(f)[sure], ref.argmax(z, -1)[sure])
    t = make_target(rng, f.shape[:-1], C)
    loss, grad = head.cross_entropy(f, t, return_grad=True)
    lref, gref = ref_head_xent(head, f, t, -1, return_grad=True)
    np.testing.assert_allclose(loss, lref, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(grad, gref, atol=1e-4 * np.abs(gref).max())


@pytest.mark.parametrize("C", [4, 19, 100])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_zero_logsumexp_and_loss(rng, C, layout, dtype):
    """Logits b (zero weights) whose log s is near 0: logsumexp, the max
    class's log_softmax and the loss keep their relative precision."""
    from tests.api.test_core import near0_rtol

    b = np.full(C, -1e4)
    b[0], b[1], b[2 % C] = 0.0, -10.0, (-11.0 if C > 2 else -10.0)
    head = fl.LinearHead(np.zeros((C, 6), dtype), b.astype(dtype))
    f, axis = make_features(rng, layout, 6, dtype)
    z = ref_logits(head, f, axis)
    want = ref.logsumexp(z, axis)
    rtol = near0_rtol(dtype, 11.0)
    np.testing.assert_allclose(head.logsumexp(f, axis=axis), want, rtol=rtol, atol=0)
    np.testing.assert_allclose(head.log_softmax(f, axis=axis).max(axis=axis), -want, rtol=rtol,
                               atol=0)
    t = np.zeros(want.shape, np.int64)
    np.testing.assert_allclose(head.cross_entropy(f, t, axis=axis, reduction="none"), want,
                               rtol=rtol, atol=0)
