"""confusion_matrix and iou: CPU backend against the NumPy argmax + bincount
idiom (fastlogits.reference), accumulation into out=, bad input."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference, tuning
from fastlogits.cpu import plan
from fastlogits.cpu.plan import private_histograms

IGNORE = -100

LAYOUTS = {
    "hwc": lambda C: ((13, 29, C), -1),
    "nchw": lambda C: ((2, C, 7, 37), 1),
}


@pytest.fixture(autouse=True, params=["histograms", "labels"])
def binning(request, monkeypatch):
    """Every test both ways: the fused argmax into private histograms, and
    the labels first, binned serially (``cpu.plan.private_histograms``
    picks by size, and would pick the labels for most of these small
    maps; forced here)."""
    monkeypatch.setattr(plan, "private_histograms",
                        lambda C, pixels, nthreads: request.param == "histograms")
    return request.param


def make_logits(rng, shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 3).astype(dtype)


def make_target(rng, shape, C, ignore=IGNORE, frac=0.1, dtype=np.int64):
    t = rng.integers(0, C, size=shape)
    t[rng.random(shape) < frac] = ignore
    return t.astype(dtype)


def reduced(shape, axis):
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


def bincount_idiom(x, t, axis, ignore=IGNORE):
    """What torchmetrics/MMSegmentation do: argmax, mask, t * C + pred, bincount."""
    C = x.shape[axis]
    pred = np.argmax(x, axis=axis).ravel()
    t = t.ravel().astype(np.int64)
    keep = t != ignore
    return np.bincount(t[keep] * C + pred[keep], minlength=C * C).reshape(C, C)


def check(x, t, axis, **kw):
    cm = fl.confusion_matrix(x, t, axis, backend="cpu", **kw)
    want = bincount_idiom(x, t, axis, kw.get("ignore_index", IGNORE))
    assert cm.dtype == np.int64 and cm.shape == want.shape
    np.testing.assert_array_equal(cm, want)
    np.testing.assert_array_equal(reference.confusion_matrix(x, t, axis, **kw), want)
    return cm


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", [1, 2, 3, 19, 150])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_matches_bincount(rng, layout, C, dtype):
    shape, axis = LAYOUTS[layout](C)
    x = make_logits(rng, shape, dtype)
    cm = check(x, make_target(rng, reduced(shape, axis), C), axis)
    assert cm.sum() > 0


@pytest.mark.parametrize("axis", [-1, 1])
def test_many_classes(rng, axis):
    C = 1037
    shape = (40, C) if axis == -1 else (2, C, 23)
    x = make_logits(rng, shape)
    t = make_target(rng, reduced(shape, axis), C)
    # Make some predictions right, so the diagonal is not empty.
    lab = np.argmax(x, axis=axis)
    t[::3] = lab[::3]
    cm = check(x, t, axis)
    assert np.trace(cm) > 0


def test_small_tiles_row_path_and_one_histogram(tune, rng, monkeypatch):
    """Tiny tiles (ragged tails), the large-C row kernel at C = 19, and a
    histogram budget so small that one chunk does everything."""
    tune(cpu_tile_pixels=16)
    for shape, axis in [((7, 45, 19), -1), ((3, 19, 45), 1)]:
        x = make_logits(rng, shape)
        check(x, make_target(rng, reduced(shape, axis), 19), axis)
    tune(cpu_row_min_classes=2)
    check(make_logits(rng, (61, 19)), make_target(rng, (61,), 19), -1)
    tune(cpu_confusion_hist_bytes=1)
    for shape, axis in [((61, 19), -1), ((3, 19, 45), 1)]:
        check(make_logits(rng, shape), make_target(rng, reduced(shape, axis), 19), axis)


@pytest.mark.parametrize("path", ["rows", "tiles", "blocks"])
def test_channels_last_paths(tune, rng, path, monkeypatch):
    """Contiguous channels-last rows through each regime forced, for C
    around the vector widths, with NaN, +-inf and ties in the logits (57
    rows: blocks of 8 and a remainder for the row kernels)."""
    tune(cpu_row_argmax_min_classes=1 if path == "rows" else 10**9)
    tune(cpu_row_block_max_classes=10**9 if path == "blocks" else 0)
    for C in (1, 2, 7, 8, 9, 16, 17, 19, 33, 96, 129):
        x = make_logits(rng, (57, C))
        x[3, C // 2] = np.nan
        x[4, 0] = np.inf
        x[5] = -np.inf
        x[6] = 1.0
        x[7, -1] = x[7].max()
        check(x, make_target(rng, (57,), C), -1)


@pytest.mark.parametrize("path", ["tiles", "blocks"])
def test_channels_first_paths(tune, rng, path, monkeypatch):
    """Channels-first maps through the register blocks of pixels or the
    (prefetching, from 16 classes) tile loops, forced, with NaN, +-inf,
    all -inf pixels and ties, in the blocks and in each image's rest (37
    pixels an image, two images); the prefetch distance at every class
    count up to C (its rows past the last class are skipped)."""
    tune(cpu_plane_block_argmax_max_classes=10**9 if path == "blocks" else 0)
    for C in (1, 2, 3, 8, 9, 15, 16, 17, 19, 24, 33, 96):
        x = make_logits(rng, (2, C, 37))
        x[0, C // 2, 3] = np.nan
        x[1, 0, 20] = np.inf
        x[0, :, 35] = -np.inf
        x[1, :, 36] = 1.0
        x[1, -1, 5] = x[1, :, 5].max()
        check(x, make_target(rng, (2, 37), C), 1)


def test_float16_chunks(tune, rng, monkeypatch):
    tune(cpu_half_chunk_elements=19 * 40)
    tune(cpu_half_direct=False)  # the chunks, not the direct kernels
    for shape, axis in [((5, 33, 19), -1), ((3, 19, 100), 1)]:
        x = make_logits(rng, shape, np.float16)
        check(x, make_target(rng, reduced(shape, axis), 19), axis)


def test_ties_and_special_values(rng):
    """Ties go to the first maximum, a NaN wins (first NaN), as np.argmax."""
    for axis in (-1, 1):
        shape = (200, 5) if axis == -1 else (4, 5, 50)
        x = rng.integers(-1, 2, size=shape).astype(np.float32)  # many ties
        flat = x.reshape(-1)
        flat[rng.random(flat.size) < 0.05] = np.nan
        flat[rng.random(flat.size) < 0.05] = np.inf
        flat[rng.random(flat.size) < 0.05] = -np.inf
        check(x, make_target(rng, reduced(shape, axis), 5), axis)
    x = np.full((3, 4), -np.inf, np.float32)  # all -inf: class 0
    np.testing.assert_array_equal(fl.confusion_matrix(x, np.array([1, 1, 2]))[:, 0], [0, 2, 1, 0])


def test_non_contiguous_views(rng):
    base = make_logits(rng, (12, 40, 19))
    check(base[::2, ::3], make_target(rng, (12, 40, 3), 19)[::2, ::3, 1], -1)
    check(np.moveaxis(base, -1, 0)[:, :, ::2], make_target(rng, (12, 20), 19), 0)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
def test_target_dtypes(rng, dtype):
    x = make_logits(rng, (9, 11, 19))
    t = make_target(rng, (9, 11), 19, ignore=100)
    check(x, t.astype(dtype), -1, ignore_index=100)


@pytest.mark.parametrize("ignore_index", [0, 255, -1])
def test_ignore_index(rng, ignore_index):
    x = make_logits(rng, (3, 19, 21))
    t = make_target(rng, (3, 21), 19, ignore=ignore_index, frac=0.3)
    cm = check(x, t, 1, ignore_index=ignore_index)
    assert cm.sum() == np.sum(t != ignore_index)
    if ignore_index == 0:
        assert not cm[0].any()


def test_out_accumulates(rng):
    """A dataset's matrix builds up image by image; out is returned."""
    cm = np.zeros((19, 19), np.int64)
    images = [(make_logits(rng, (9, 13, 19)), make_target(rng, (9, 13), 19)) for _ in range(3)]
    for backend in ("cpu", "numpy"):
        cm[...] = 0
        for x, t in images:
            assert fl.confusion_matrix(x, t, out=cm, backend=backend) is cm
        want = sum(bincount_idiom(x, t, -1) for x, t in images)
        np.testing.assert_array_equal(cm, want)


def test_all_ignored_and_empty(rng):
    x = make_logits(rng, (4, 6, 19))
    assert not fl.confusion_matrix(x, np.full((4, 6), IGNORE)).any()
    for backend in ("cpu", "numpy"):
        cm = fl.confusion_matrix(np.zeros((0, 7, 19), np.float32), np.zeros((0, 7), np.int64),
                                 backend=backend)
        assert cm.shape == (19, 19) and cm.dtype == np.int64 and not cm.any()


def test_private_histograms_only_where_they_pay():
    """Private (C, C) histograms per thread only with more pixels than
    their cells, within the byte budget: not for a classifier's batch or
    a vocabulary (an 8 GB matrix per thread at 32000 classes)."""
    pick = private_histograms  # imported before the fixture replaces it
    assert pick(19, 1024 * 2048, 2) and pick(150, 512 * 512, 2)
    assert pick(19, 13 * 29, 2)  # tiny histograms: kept whatever the pixels
    assert not pick(150, 13 * 29, 2)
    assert not pick(1000, 256, 2) and not pick(32000, 512, 2)
    assert not pick(3000, 10 ** 8, 2)  # 72 MB each: over tuning.current().cpu.confusion_hist_bytes


def test_many_classes_take_the_labels(rng, monkeypatch):
    """Without the fixture's forcing: 64 rows of 5000 classes (a 200 MB
    matrix) never reach the histogram kernels, and the result is right,
    accumulated into out= too."""
    monkeypatch.undo()  # the real private_histograms

    def refuse(*args):
        raise AssertionError("private histograms for 64 pixels of 5000 classes")

    monkeypatch.setattr(plan, "run_confusion", refuse)
    C = 5000
    x = make_logits(rng, (64, C))
    t = make_target(rng, (64,), C)
    cm = fl.confusion_matrix(x, t)
    want = bincount_idiom(x, t, -1)
    np.testing.assert_array_equal(cm, want)
    fl.confusion_matrix(x, t, out=cm)
    np.testing.assert_array_equal(cm, 2 * want)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("shape,axis,bad_at", [
    ((4, 6, 19), -1, (2, 3)),
    ((2, 19, 4, 5), 1, (1, 3, 0)),
    ((7, 150), -1, (5,)),
])
def test_bad_target_value_leaves_out_untouched(rng, backend, shape, axis, bad_at):
    C = shape[axis]
    x = make_logits(rng, shape)
    t = make_target(rng, reduced(shape, axis), C)
    t[bad_at] = -7
    t[tuple(n - 1 for n in t.shape)] = C  # a later bad value: not the one named
    out = np.ones((C, C), np.int64)
    with pytest.raises(ValueError, match=rf"target holds -7 at position "
                                         rf"\({', '.join(map(str, bad_at))},?\)"):
        fl.confusion_matrix(x, t, axis, out=out, backend=backend)
    assert (out == 1).all()


def test_bad_input_messages(rng):
    x = make_logits(rng, (4, 6, 19))
    t = make_target(rng, (4, 6), 19)
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        fl.confusion_matrix(x, t.astype(np.float64))
    with pytest.raises(ValueError, match=r"target has shape \(4, 5\), expected \(4, 6\)"):
        fl.confusion_matrix(x, t[:, :5])
    with pytest.raises(TypeError, match=r"out has dtype int32, expected int64"):
        fl.confusion_matrix(x, t, out=np.zeros((19, 19), np.int32))
    with pytest.raises(ValueError, match=r"out has shape \(19, 18\), expected \(19, 19\)"):
        fl.confusion_matrix(x, t, out=np.zeros((19, 18), np.int64))
    ro = np.zeros((19, 19), np.int64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fl.confusion_matrix(x, t, out=ro)
    with pytest.raises(TypeError, match="ignore_index"):
        fl.confusion_matrix(x, t, ignore_index=None)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fl.confusion_matrix(x.astype(np.int64), t)
    with pytest.raises(ValueError, match="unknown backend"):
        fl.confusion_matrix(x, t, backend="tpu")


# --------------------------------------------------------------------------
# iou
# --------------------------------------------------------------------------

def test_iou_by_hand():
    cm = np.array([[3, 1, 0, 0],
                   [0, 2, 0, 0],
                   [0, 0, 0, 0],
                   [0, 1, 0, 0]])
    got = fl.iou(cm)
    assert got.dtype == np.float64
    # class 0: 3 / (4 + 3 - 3); class 1: 2 / (2 + 4 - 2); class 2 absent: NaN;
    # class 3: 0 / (1 + 0 - 0).
    np.testing.assert_array_equal(got, [0.75, 0.5, np.nan, 0.0])
    assert np.nanmean(fl.iou(cm)) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    np.testing.assert_array_equal(reference.iou(cm), got)


def test_iou_of_a_confusion_matrix(rng):
    x = make_logits(rng, (30, 40, 19))
    t = np.argmax(x, -1)
    t[::2] = rng.integers(0, 19, size=t[::2].shape)
    cm = fl.confusion_matrix(x, t)
    pred = np.argmax(x, -1)
    for c in range(19):
        inter = np.sum((pred == c) & (t == c))
        union = np.sum((pred == c) | (t == c))
        assert fl.iou(cm)[c] == pytest.approx(inter / union)
    assert fl.iou(np.eye(3, dtype=np.int64) * 5).tolist() == [1.0, 1.0, 1.0]
    assert fl.iou(cm.astype(np.float32)).dtype == np.float64


def test_iou_bad_input():
    with pytest.raises(ValueError, match=r"square \(C, C\) matrix, got shape \(3, 4\)"):
        fl.iou(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"got shape \(9,\)"):
        fl.iou(np.zeros(9))
    with pytest.raises(TypeError, match="real counts"):
        fl.iou(np.zeros((3, 3), complex))
