"""float16 logits read as they are by the CPU kernels (fastlogits.cpu.scores):
argmax, classify, confusion_matrix and cross_entropy without gradient,
against the float32-chunk path (``config.CPU_HALF_DIRECT`` off) and the
reference, in every kernel regime of both layouts."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import config, reference
from fastlogits.cpu import half
from tests.helpers import assert_close, logits, specials_array

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


@pytest.fixture
def chunk_loads(monkeypatch):
    """The list to which every float32 chunk load of float16 x appends."""
    calls = []
    load = half.load

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return load(*args, **kwargs)

    monkeypatch.setattr(half, "load", spy)
    return calls


def both_ways(monkeypatch, chunk_loads, fn):
    """``(direct, chunked)``: ``fn()`` with float16 read as it is, then
    through float32 chunks; checks which path each took."""
    monkeypatch.setattr(config, "CPU_HALF_DIRECT", True)
    direct = fn()
    assert chunk_loads == [], "the direct path loaded float32 chunks"
    monkeypatch.setattr(config, "CPU_HALF_DIRECT", False)
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


def assert_same_floats(a, b):
    """The direct and chunked results: the same NaN pattern and
    infinities, finite values within a few float32 ulp (a pixel may take
    a register block on one path and the tile loop on the other: the
    tiles start on lines of x, float16 or float32)."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    fin = np.isfinite(a)
    np.testing.assert_array_equal(a[~fin & ~np.isnan(a)], b[~fin & ~np.isnan(a)])
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES)
def test_labels_and_confusion(rng, monkeypatch, chunk_loads, layout, C):
    shape, axis = LAYOUTS[layout](C)
    x = float16_logits(rng, shape, axis)
    t = targets(rng, x, axis, C)
    want = reference.argmax(x, axis)
    labels = both_ways(monkeypatch, chunk_loads, lambda: fl.argmax(x, axis))
    for got in labels:
        np.testing.assert_array_equal(got, want)
    (dl, dc), (cl, cc) = both_ways(monkeypatch, chunk_loads, lambda: fl.classify(x, axis))
    want_l, want_c = reference.classify(x, axis)
    np.testing.assert_array_equal(dl, want_l)
    np.testing.assert_array_equal(cl, want_l)
    assert dc.dtype == np.float32
    assert_same_floats(dc, cc)
    assert_close(dc, want_c, np.float16)
    want_cm = reference.confusion_matrix(x, t, axis, ignore_index=IGNORE)
    for got in both_ways(monkeypatch, chunk_loads,
                         lambda: fl.confusion_matrix(x, t, axis, ignore_index=IGNORE)):
        np.testing.assert_array_equal(got, want_cm)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", CLASSES)
def test_cross_entropy(rng, monkeypatch, chunk_loads, layout, C):
    shape, axis = LAYOUTS[layout](C)
    x = logits(rng, shape, np.float16)
    t = targets(rng, x, axis, C)
    for options in LOSS_OPTIONS:
        kw = dict(options, ignore_index=IGNORE)
        if kw.pop("weighted", False):
            kw["class_weight"] = rng.random(C) + 0.5
        direct, chunked = both_ways(monkeypatch, chunk_loads,
                                    lambda: fl.cross_entropy(x, t, axis, **kw))
        want = reference.cross_entropy(x, t, axis, **kw)
        if kw.get("reduction") == "none":
            assert direct.dtype == np.float32
            assert_same_floats(direct, chunked)
            np.testing.assert_allclose(direct, want, rtol=4e-6, atol=4e-6 * np.abs(want).max())
        else:
            np.testing.assert_allclose(direct, chunked, rtol=1e-6)
            np.testing.assert_allclose(direct, want, rtol=2e-6)


def test_special_losses(rng, monkeypatch, chunk_loads):
    """NaN where a pixel's max is not finite, 0 where ignored, both paths."""
    for shape, axis in [((40, 19), -1), ((19, 40), 0), ((40, 5), -1), ((40, 300), -1)]:
        C = shape[axis]
        x = float16_logits(rng, shape, axis)
        t = targets(rng, x, axis, C)
        direct, chunked = both_ways(monkeypatch, chunk_loads, lambda: fl.cross_entropy(
            x, t, axis, ignore_index=IGNORE, reduction="none"))
        want = reference.cross_entropy(x, t, axis, ignore_index=IGNORE, reduction="none")
        assert_same_floats(direct, chunked)
        np.testing.assert_array_equal(np.isnan(direct), np.isnan(want))
        fin = np.isfinite(want)
        np.testing.assert_allclose(direct[fin], want[fin], rtol=4e-6, atol=1e-5)


def test_every_float16_value(monkeypatch, chunk_loads):
    """Each of the 65 536 float16 bit patterns once, 16 classes a pixel in
    both layouts: NaN payloads, infinities, subnormals and both zeros
    compare as NumPy compares them in float32."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    x = np.random.default_rng(5).permutation(bits).view(np.float16).reshape(-1, 16)
    for arr, axis in ((x, -1), (np.ascontiguousarray(x.T), 0)):
        want = reference.argmax(arr, axis)
        for got in both_ways(monkeypatch, chunk_loads, lambda: fl.argmax(arr, axis)):
            np.testing.assert_array_equal(got, want)
        got, _ = both_ways(monkeypatch, chunk_loads, lambda: fl.classify(arr, axis))
        np.testing.assert_array_equal(got[0], want)


def test_strided_views(rng, monkeypatch, chunk_loads):
    base = logits(rng, (12, 40, 19), np.float16)
    for x, axis in ((base[::2, ::3], -1), (np.moveaxis(base, -1, 0)[:, :, ::2], 0),
                    (base[:, :, ::2], -1)):
        C = x.shape[axis]
        t = targets(rng, x, axis, C)
        for got in both_ways(monkeypatch, chunk_loads, lambda: fl.argmax(x, axis)):
            np.testing.assert_array_equal(got, reference.argmax(x, axis))
        for got in both_ways(monkeypatch, chunk_loads,
                             lambda: fl.confusion_matrix(x, t, axis, ignore_index=IGNORE)):
            np.testing.assert_array_equal(
                got, reference.confusion_matrix(x, t, axis, ignore_index=IGNORE))
        direct, chunked = both_ways(monkeypatch, chunk_loads, lambda: fl.cross_entropy(
            x, t, axis, ignore_index=IGNORE, reduction="none"))
        assert_same_floats(direct, chunked)


def test_labels_first_confusion(rng, monkeypatch, chunk_loads):
    """Many classes and few pixels: the labels first (argmax), then binned
    into ``out=``."""
    x = logits(rng, (7, 1200), np.float16)
    t = targets(rng, x, -1, 1200)
    want = reference.confusion_matrix(x, t, -1, ignore_index=IGNORE)
    start = rng.integers(0, 3, size=(1200, 1200))
    for got in both_ways(monkeypatch, chunk_loads, lambda: fl.confusion_matrix(
            x, t, ignore_index=IGNORE, out=start.copy())):
        np.testing.assert_array_equal(got, want + start)


def test_gradient_goes_through_chunks(rng, chunk_loads):
    """return_grad writes a float16 gradient: float32 chunks, still."""
    x = logits(rng, (6, 33, 19), np.float16)
    t = targets(rng, x, -1, 19)
    loss, grad = fl.cross_entropy(x, t, ignore_index=IGNORE, return_grad=True)
    assert chunk_loads
    want_loss, want_grad = reference.cross_entropy(x, t, ignore_index=IGNORE, return_grad=True)
    assert grad.dtype == np.float16
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6)
    np.testing.assert_allclose(grad.astype(np.float64), want_grad, atol=1e-3)
