"""float16 logits read as they are by the CPU kernels (fastlogits.cpu.llvm.scores):
every op but the loss gradient, float16 outputs written as they are,
against the float32-chunk path (``cpu_half_direct`` off) and the
reference, in every kernel regime of both layouts."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference, tuning
from fastlogits.cpu.llvm import half
from fastlogits.cpu.plan import _cf_tile_pixels, _tile_pixels
from tests.helpers import assert_close, at_line_offset, logits, specials_array

pytestmark = pytest.mark.skipif(not half.HARDWARE,
                                reason="no F16C: float16 always goes through float32 chunks")

IGNORE = -100
# 3: channels-last tiles; 8, 19: row blocks / plane blocks; 150: row vectors
# (loss: row blocks) / plane blocks; 1000: row vectors / channels-first tiles.
CLASSES = [3, 8, 19, 150, 1000]
# (shape, axis); pixel counts that are no multiple of a block or a line.
LAYOUTS = {
    "hwc": lambda C: ((5, 37, C), -1),
    "chw": lambda C: ((C, 9, 37), 0),
    "nchw": lambda C: ((2, C, 5, 19), 1),
}
LOSS_OPTIONS = [dict(), dict(reduction="none"),
                dict(reduction="none", label_smoothing=0.2, weighted=True),
                dict(reduction="sum", label_smoothing=0.1)]


def both_ways(tune, monkeypatch, chunk_loads, fn):
    """``(direct, chunked)``: ``fn()`` with float16 read as it is, then
    through float32 chunks; checks which path each took."""
    tune(cpu_half_direct=True)
    direct = fn()
    assert chunk_loads == [], "the direct path loaded float32 chunks"
    tune(cpu_half_direct=False)
    chunked = fn()
    assert chunk_loads, "the chunked path loaded no chunk"
    chunk_loads.clear()
    return direct, chunked


def targets(rng, x, axis, C):
    shape = np.delete(x.shape, axis % x.ndim)
    t = rng.integers(0, C, size=shape)
    t[rng.random(shape) < 0.1] = IGNORE
    return t


def float16_logits(rng, shape, axis):
    """float16 logits with NaN, +-inf, all -inf pixels and ties, and some
    subnormal scores."""
    x = specials_array(rng, shape, axis, np.float16)
    x[rng.random(shape) < 0.02] = np.float16(3e-6)
    return x


def assert_same_floats(a, b, atol=1e-7):
    """The direct and chunked results: the same NaN pattern and
    infinities, finite values within a few float32 ulp (a pixel may take
    a register block on one path and the tile loop on the other, which
    round differently: the tiles start on lines of x, float16 or float32;
    ``atol`` for values near 0 from terms near 1, as a confident pixel's
    loss ``log s + m - x_t``)."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    fin = np.isfinite(a)
    np.testing.assert_array_equal(a[~fin & ~np.isnan(a)], b[~fin & ~np.isnan(a)])
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-6, atol=atol)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES)
def test_labels_and_confusion(tune, rng, monkeypatch, chunk_loads, layout, C):
    shape, axis = LAYOUTS[layout](C)
    x = float16_logits(rng, shape, axis)
    t = targets(rng, x, axis, C)
    want = reference.argmax(x, axis)
    labels = both_ways(tune, monkeypatch, chunk_loads, lambda: fl.argmax(x, axis))
    for got in labels:
        np.testing.assert_array_equal(got, want)
    (dl, dc), (cl, cc) = both_ways(tune, monkeypatch, chunk_loads, lambda: fl.classify(x, axis))
    want_l, want_c = reference.classify(x, axis)
    np.testing.assert_array_equal(dl, want_l)
    np.testing.assert_array_equal(cl, want_l)
    assert dc.dtype == np.float32
    assert_same_floats(dc, cc)
    assert_close(dc, want_c, np.float16)
    want_cm = reference.confusion_matrix(x, t, axis, ignore_index=IGNORE)
    for got in both_ways(tune, monkeypatch, chunk_loads,
                         lambda: fl.confusion_matrix(x, t, axis, ignore_index=IGNORE)):
        np.testing.assert_array_equal(got, want_cm)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES)
def test_cross_entropy(tune, rng, monkeypatch, chunk_loads, layout, C):
    shape, axis = LAYOUTS[layout](C)
    x = logits(rng, shape, np.float16)
    t = targets(rng, x, axis, C)
    for options in LOSS_OPTIONS:
        kw = dict(options, ignore_index=IGNORE)
        if kw.pop("weighted", False):
            kw["class_weight"] = rng.random(C) + 0.5
        direct, chunked = both_ways(tune, monkeypatch, chunk_loads,
                                    lambda: fl.cross_entropy(x, t, axis, **kw))
        want = reference.cross_entropy(x, t, axis, **kw)
        if kw.get("reduction") == "none":
            assert direct.dtype == np.float32
            assert_same_floats(direct, chunked, atol=1e-6)
            np.testing.assert_allclose(direct, want, rtol=4e-6, atol=4e-6 * np.abs(want).max())
        else:
            np.testing.assert_allclose(direct, chunked, rtol=1e-6)
            np.testing.assert_allclose(direct, want, rtol=2e-6)


def test_special_losses(tune, rng, monkeypatch, chunk_loads):
    """NaN where a pixel's max is not finite, 0 where ignored, both paths."""
    for shape, axis in [((40, 19), -1), ((19, 40), 0), ((40, 5), -1), ((40, 300), -1)]:
        C = shape[axis]
        x = float16_logits(rng, shape, axis)
        t = targets(rng, x, axis, C)
        direct, chunked = both_ways(tune, monkeypatch, chunk_loads, lambda: fl.cross_entropy(
            x, t, axis, ignore_index=IGNORE, reduction="none"))
        want = reference.cross_entropy(x, t, axis, ignore_index=IGNORE, reduction="none")
        assert_same_floats(direct, chunked, atol=1e-6)
        np.testing.assert_array_equal(np.isnan(direct), np.isnan(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(direct[fin], want[fin], rtol=4e-6, atol=1e-5)


def test_every_float16_value(tune, monkeypatch, chunk_loads):
    """Each of the 65 536 float16 bit patterns once, 16 classes a pixel in
    both layouts: NaN payloads, infinities, subnormals and both zeros
    compare as NumPy compares them in float32."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    x = np.random.default_rng(5).permutation(bits).view(np.float16).reshape(-1, 16)
    for arr, axis in ((x, -1), (np.ascontiguousarray(x.T), 0)):
        want = reference.argmax(arr, axis)
        for got in both_ways(tune, monkeypatch, chunk_loads, lambda: fl.argmax(arr, axis)):
            np.testing.assert_array_equal(got, want)
        got, _ = both_ways(tune, monkeypatch, chunk_loads, lambda: fl.classify(arr, axis))
        np.testing.assert_array_equal(got[0], want)


def test_strided_views(tune, rng, monkeypatch, chunk_loads):
    base = logits(rng, (12, 40, 19), np.float16)
    for x, axis in ((base[::2, ::3], -1), (np.moveaxis(base, -1, 0)[:, :, ::2], 0),
                    (base[:, :, ::2], -1)):
        C = x.shape[axis]
        t = targets(rng, x, axis, C)
        for got in both_ways(tune, monkeypatch, chunk_loads, lambda: fl.argmax(x, axis)):
            np.testing.assert_array_equal(got, reference.argmax(x, axis))
        for got in both_ways(tune, monkeypatch, chunk_loads,
                             lambda: fl.confusion_matrix(x, t, axis, ignore_index=IGNORE)):
            np.testing.assert_array_equal(
                got, reference.confusion_matrix(x, t, axis, ignore_index=IGNORE))
        direct, chunked = both_ways(tune, monkeypatch, chunk_loads, lambda: fl.cross_entropy(
            x, t, axis, ignore_index=IGNORE, reduction="none"))
        assert_same_floats(direct, chunked, atol=1e-6)


def test_labels_first_confusion(tune, rng, monkeypatch, chunk_loads):
    """Many classes and few pixels: the labels first (argmax), then binned
    into ``out=``."""
    x = logits(rng, (7, 1200), np.float16)
    t = targets(rng, x, -1, 1200)
    want = reference.confusion_matrix(x, t, -1, ignore_index=IGNORE)
    start = rng.integers(0, 3, size=(1200, 1200))
    for got in both_ways(tune, monkeypatch, chunk_loads, lambda: fl.confusion_matrix(
            x, t, ignore_index=IGNORE, out=start.copy())):
        np.testing.assert_array_equal(got, want + start)


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES + [3000])
def test_gradient(tune, rng, monkeypatch, chunk_loads, layout, C, streamed):
    """return_grad on float16: the gradient rounded once to float16, new,
    into ``grad_out`` and in place over x; with ``streamed`` by
    non-temporal stores (long rows too)."""
    if streamed:
        tune(cpu_stream_min_bytes=0)
        tune(cpu_stream_row_min_bytes=0)
    shape, axis = LAYOUTS[layout](C)
    x = float16_logits(rng, shape, axis)
    t = targets(rng, x, axis, C)
    for kw in (dict(), dict(reduction="sum", label_smoothing=0.1, class_weight=rng.random(C) + 0.5)):
        kw["ignore_index"] = IGNORE
        want_loss, want_grad = reference.cross_entropy(x, t, axis, return_grad=True, **kw)
        for where in ("new", "grad_out", "in place"):
            def call():
                xi = x.copy()
                out = {"new": None, "grad_out": np.full(shape, np.float16(5.0)), "in place": xi}
                return fl.cross_entropy(xi, t, axis, return_grad=True, grad_out=out[where], **kw)

            (dl, dg), (cl, cg) = both_ways(tune, monkeypatch, chunk_loads, call)
            assert_same_halves(dg, cg)
            np.testing.assert_allclose(dl, cl, rtol=1e-6)
            np.testing.assert_allclose(dl, want_loss, rtol=2e-6)
            fin = np.isfinite(want_grad)
            np.testing.assert_array_equal(np.isnan(dg), np.isnan(want_grad))
            np.testing.assert_allclose(dg[fin].astype(np.float64), want_grad[fin], atol=1e-3)


def assert_same_halves(a, b):
    """float16 results of the two paths: the same NaN pattern and
    infinities, finite values at most one float16 ulp apart, or 1e-6 (each
    path rounds its float32 result once; those may differ by a float32
    ulp of the terms, as where log_softmax's max class gets -log s of s
    near 1, a float16 subnormal)."""
    assert a.dtype == b.dtype == np.float16
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    inf = np.isinf(a64) | np.isinf(b64)
    np.testing.assert_array_equal(a64[inf], b64[inf])
    fin = np.isfinite(a64) & np.isfinite(b64)
    ulp = np.spacing(np.abs(b[fin])).astype(np.float64)
    assert np.all(np.abs(a64[fin] - b64[fin]) <= np.maximum(ulp, 1e-6))


EXPNORM = ("softmax", "log_softmax", "logsumexp")


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES + [64, 3000])
def test_expnorm(tune, rng, monkeypatch, chunk_loads, layout, C, streamed):
    """softmax, log_softmax and logsumexp, float16 in and out; with
    ``streamed`` every x-sized output by non-temporal stores (long rows
    too), as large outputs are."""
    if streamed:
        tune(cpu_stream_min_bytes=0)
        tune(cpu_stream_row_min_bytes=0)
    shape, axis = LAYOUTS[layout](C)
    x = float16_logits(rng, shape, axis)
    for name in EXPNORM:
        op = getattr(fl, name)
        direct, chunked = both_ways(tune, monkeypatch, chunk_loads, lambda: op(x, axis))
        assert_same_halves(direct, chunked)
        assert_close(direct, getattr(reference, name)(x, axis), np.float16)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_expnorm_in_place_and_into_out(tune, rng, monkeypatch, chunk_loads, name):
    op = getattr(fl, name)
    for C in (5, 19, 150, 1000):
        for shape, axis in (((7, 33, C), -1), ((2, C, 45), 1)):
            x = logits(rng, shape, np.float16)
            want = getattr(reference, name)(x, axis)

            def in_place():
                y = x.copy()
                assert op(y, axis, out=y) is y
                return y

            def into_out():
                out = np.full(shape, np.float16(7.0))
                assert op(x, axis, out=out) is out
                return out

            for fn in (in_place, into_out):
                direct, chunked = both_ways(tune, monkeypatch, chunk_loads, fn)
                assert_same_halves(direct, chunked)
                assert_close(direct, want, np.float16)


def test_tiles_hold_a_planes_first_pixels():
    """Channels-first tiles of float16 are whole lines of 32 scores, so an
    image's first pixels before its first line (up to 31) fit the tile's
    scratch."""
    for C in (1, 19, 150, 1000, 5000, 100000):
        for dtype, unit in ((np.float16, 32), (np.float32, 16), (np.float64, 16)):
            x = np.empty((1, C, 2), dtype)
            for tile in (_tile_pixels(C, itemsize=x.itemsize), _cf_tile_pixels(x, True),
                         _cf_tile_pixels(x, False)):
                assert tile >= unit and tile % unit == 0


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "argmax", "classify",
                                  "cross_entropy", "gradient", "confusion_matrix"])
def test_every_line_offset(tune, rng, monkeypatch, chunk_loads, name):
    """Channels-first planes whose first 64-byte line starts anywhere up to
    31 halves in, with the fewest pixels per tile (one line of 32 halves),
    in place where the op writes an x-sized output."""
    C, shape = 3000, (2, 3000, 45)
    tune(cpu_tile_pixels=1)
    tune(cpu_cf_tile_bytes=1)
    for reread in (True, False):
        assert _cf_tile_pixels(np.empty(shape, np.float16), reread) == 32
    t = targets(rng, np.empty(shape), 1, C)
    for offset in range(0, 64, 2):
        x = at_line_offset(shape, np.float16, offset)
        x[...] = logits(rng, shape, np.float16)
        if name in ("softmax", "log_softmax"):
            def call():
                y = at_line_offset(shape, np.float16, offset)
                y[...] = x
                return getattr(fl, name)(y, 1, out=y)
        elif name == "cross_entropy":
            def call():
                return fl.cross_entropy(x, t, 1, ignore_index=IGNORE, reduction="none")
        elif name == "gradient":
            def call():
                y = at_line_offset(shape, np.float16, offset)
                y[...] = x
                return fl.cross_entropy(y, t, 1, ignore_index=IGNORE, return_grad=True,
                                        grad_out=y)[1]
        elif name == "confusion_matrix":
            def call():
                return fl.confusion_matrix(x, t, 1, ignore_index=IGNORE)
        else:
            def call():
                return getattr(fl, name)(x, 1)
        direct, chunked = both_ways(tune, monkeypatch, chunk_loads, call)
        if name == "classify":
            np.testing.assert_array_equal(direct[0], chunked[0])
            assert_same_floats(direct[1], chunked[1])
        elif name in EXPNORM + ("gradient",):
            assert_same_halves(direct, chunked)
        elif name == "cross_entropy":
            assert_same_floats(direct, chunked, atol=1e-6)
        else:
            np.testing.assert_array_equal(direct, chunked)
