"""cross_entropy: CPU backend against fastlogits.reference (and PyTorch when
installed), every option combination, special values, bad input."""

import itertools
import warnings

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference, tuning
from tests.helpers import at_line_offset, stream_every_row

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

IGNORE = -100
# (shape, axis): channels-last and channels-first; H, W not tile multiples.
LAYOUTS = {
    "hwc": lambda C: ((13, 29, C), -1),
    "nchw": lambda C: ((2, C, 7, 37), 1),
}
OPTIONS = [  # (class_weight?, label_smoothing)
    (False, 0.0), (True, 0.0), (False, 0.1), (True, 0.25),
]
REDUCTIONS = ("mean", "sum", "none")
# Every option with every reduction is covered by test_matches_torch; the
# many-shape tests below run this subset (each call launches a kernel).
COMBOS = [(False, 0.0, "mean"), (False, 0.0, "sum"), (False, 0.0, "none"),
          (True, 0.25, "mean"), (True, 0.25, "sum"), (True, 0.25, "none"),
          (True, 0.0, "mean"), (False, 0.1, "none")]


def make_logits(rng, shape, dtype=np.float32, std=3.0):
    return (rng.standard_normal(shape) * std).astype(dtype)


def make_target(rng, shape, C, ignore=IGNORE, frac=0.1, dtype=np.int64):
    t = rng.integers(0, C, size=shape)
    t[rng.random(shape) < frac] = ignore
    return t.astype(dtype)


def reduced(shape, axis):
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


def tolerances(dtype):
    """(rtol of reduced losses, atol of per-pixel losses relative to their
    size, atol of gradients)."""
    return {np.float16: (2e-6, 4e-6, 1e-3), np.float32: (2e-6, 4e-6, 2e-6),
            np.float64: (1e-12, 1e-12, 1e-12)}[np.dtype(dtype).type]


def assert_loss_close(got, want, dtype, reduction):
    rtol, atol, _ = tolerances(dtype)
    if reduction == "none":
        want_dtype = np.float64 if dtype == np.float64 else np.float32
        assert isinstance(got, np.ndarray) and got.dtype == want_dtype
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=atol, atol=atol, equal_nan=True)
    else:
        assert type(got) is np.float64
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True)


def assert_grad_close(got, want, x):
    assert got.dtype == x.dtype and got.shape == x.shape
    # Relative too: entries reach the largest class weight (3 here), and in
    # float32 the rounding of the log-sum-exp and of the C-term sum puts ~8 ulps
    # of relative error on p (1.9e-6 at 2-4 over 300 seeds; CI saw 2.4e-6 at 2.2,
    # over an absolute 2e-6). float16: one ulp of values above 1.
    atol = tolerances(x.dtype)[2]
    rtol = 0.0 if x.dtype == np.float64 else atol
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                               atol=atol, equal_nan=True)


def check_all_options(x, t, axis, rng, backend="cpu", ignore_index=IGNORE):
    C = x.shape[axis]
    weight = rng.uniform(0.2, 3.0, C)
    for weighted, eps, reduction in COMBOS:
        kw = dict(class_weight=weight if weighted else None, label_smoothing=eps,
                  reduction=reduction, ignore_index=ignore_index)
        loss, grad = fl.cross_entropy(x, t, axis, return_grad=True, backend=backend, **kw)
        want_loss, want_grad = reference.cross_entropy(x, t, axis, return_grad=True, **kw)
        assert_loss_close(loss, want_loss, x.dtype, reduction)
        assert_grad_close(grad, want_grad, x)
        if reduction != "sum":  # without the gradient: the same loss, alone
            alone = fl.cross_entropy(x, t, axis, backend=backend, **kw)
            assert_loss_close(alone, want_loss, x.dtype, reduction)


# --------------------------------------------------------------------------
# against the reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("C", [1, 2, 3, 19, 150])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_matches_reference(rng, layout, C, dtype):
    shape, axis = LAYOUTS[layout](C)
    x = make_logits(rng, shape, dtype)
    t = make_target(rng, reduced(shape, axis), C)
    check_all_options(x, t, axis, rng)


@pytest.mark.parametrize("axis", [-1, 1])
def test_many_classes(rng, axis):
    C = 1037  # lane-folded rows channels-last; few pixels per tile channels-first
    shape = (9, C) if axis == -1 else (2, C, 11)
    x = make_logits(rng, shape)
    t = make_target(rng, reduced(shape, axis), C)
    check_all_options(x, t, axis, rng)


@pytest.mark.parametrize("copy_tiles", [False, True])
def test_channels_first_tiles_by_bytes(tune, rng, monkeypatch, copy_tiles):
    """Channels-first loss tiles of ``cpu_cf_tile_bytes`` (here 32 pixels
    at 130 classes): several per image and a ragged last one, read in x
    or (``copy_tiles``: planes 4 KiB apart) copied first; the gradient in
    place too."""
    from fastlogits.cpu.plan import _cf_copies_tiles, _cf_tile_pixels

    C = 130
    tune(cpu_cf_tile_bytes=C * 4 * 32)
    tune(cpu_cf_copy_min_classes=1 if copy_tiles else 1 << 30)
    inner = 2048 if copy_tiles else 301
    for dtype in (np.float32, np.float16):
        x = make_logits(rng, (2, C, inner), dtype)
        t = make_target(rng, (2, inner), C)
        assert _cf_copies_tiles(x) == copy_tiles
        assert _cf_tile_pixels(x, True) == 32
        check_all_options(x, t, 1, rng)
        _, want = reference.cross_entropy(x, t, 1, return_grad=True, ignore_index=IGNORE)
        y = x.copy()
        _, grad = fl.cross_entropy(y, t, 1, return_grad=True, grad_out=y, ignore_index=IGNORE)
        assert_grad_close(grad, want, x)


def test_small_tiles_and_row_path(tune, rng, monkeypatch):
    """Tiny tiles (several per row of work, ragged tails) and the large-C
    row kernel forced at C = 19."""
    tune(cpu_tile_pixels=16)
    tune(cpu_loss_tile_pixels=16)  # the register-block paths
    for shape, axis in [((7, 45, 19), -1), ((3, 19, 45), 1)]:
        x = make_logits(rng, shape)
        check_all_options(x, make_target(rng, reduced(shape, axis), 19), axis, rng)
    tune(cpu_row_min_classes=2)
    x = make_logits(rng, (31, 19))
    check_all_options(x, make_target(rng, (31,), 19), -1, rng)


def check_rows_with_grad(x, target):
    """Channels-last rows: per-pixel losses and the gradient against the
    reference."""
    loss, grad = fl.cross_entropy(x, target, -1, reduction="none", return_grad=True)
    want_loss, want_grad = reference.cross_entropy(x, target, -1, reduction="none",
                                                   return_grad=True)
    assert_loss_close(loss, want_loss, x.dtype, "none")
    assert_grad_close(grad, want_grad, x)


@pytest.mark.parametrize("path", ["rows", "tiles", "blocks"])
def test_channels_last_paths(tune, rng, path, monkeypatch):
    """Contiguous channels-last rows through each regime forced, for C
    around the vector widths, with the special-value rows (61 rows: for
    the blocks, three blocks of 16 rows in one call, whose exponentials
    wait side by side for the gradient, and a remainder of rows)."""
    tune(cpu_row_min_classes=1 if path == "rows" else 10**9)
    tune(cpu_row_block_xent_max_classes=10**9 if path == "blocks" else 0)
    for C in (1, 2, 7, 8, 9, 16, 17, 19, 33, 96, 129, 3001):  # 3001: rows of several chunks
        x = make_logits(rng, (61, C))
        check_all_options(x, make_target(rng, (61,), C), -1, rng)
        if 3 <= C <= 129:
            rows, target = special_logits(C)
            rows, target = np.tile(rows, (5, 1)), np.tile(target, 5)  # into the blocks too
            for dtype in (np.float32, np.float64):
                xs = rows.astype(dtype)
                check_rows_with_grad(xs, target)
                # The loss alone, ignored pixels among them (float32: the
                # fused blocks, cpu.blocks.rowblock.rows_xent), every reduction.
                ts = target.copy()
                ts[::3] = IGNORE
                for reduction in REDUCTIONS:
                    assert_loss_close(fl.cross_entropy(xs, ts, -1, reduction=reduction),
                                      reference.cross_entropy(xs, ts, -1, reduction=reduction),
                                      xs.dtype, reduction)
                # Smoothed and weighted too.
                kw = dict(reduction="none", label_smoothing=0.1, class_weight=np.linspace(0.5, 2, C))
                assert_loss_close(fl.cross_entropy(xs, target, -1, **kw),
                                  reference.cross_entropy(xs, target, -1, **kw), xs.dtype, "none")


def test_channels_last_streamed_gradient_rows(tune, rng, monkeypatch):
    """The row kernels' gradient written by non-temporal stores (every row
    streamed here, ``cpu_stream_row_min_bytes`` 0): every option, into
    grad_outs at four line offsets, the special-value rows with ignored
    pixels among them; in place the gradient is not streamed."""
    from fastlogits.cpu.ops import losses as kernels

    streamed = stream_every_row(tune, monkeypatch, kernels, "ce_cl_rows", -2,
                                "cpu_row_block_xent_max_classes")
    for C in (1, 3, 19, 129, 3001):
        x = make_logits(rng, (61, C))
        t = make_target(rng, (61,), C)
        check_all_options(x, t, -1, rng)
        assert True in streamed
        kw = dict(reduction="mean", label_smoothing=0.1, class_weight=np.linspace(0.5, 2, C))
        want_loss, want_grad = reference.cross_entropy(x, t, -1, return_grad=True, **kw)
        for offset in (0, 16, 32, 48):
            g = at_line_offset(x.shape, x.dtype, offset)
            streamed.clear()
            loss, _ = fl.cross_entropy(x, t, -1, return_grad=True, grad_out=g, **kw)
            assert streamed == [True]
            assert_loss_close(loss, want_loss, x.dtype, "mean")
            assert_grad_close(g, want_grad, x)
        xi = x.copy()
        streamed.clear()
        loss, _ = fl.cross_entropy(xi, t, -1, return_grad=True, grad_out=xi, **kw)
        assert streamed == [False]
        assert_grad_close(xi, want_grad, x)
        if C >= 3:
            rows, target = special_logits(C)
            target[::4] = IGNORE
            for dtype in (np.float32, np.float64):
                xs = rows.astype(dtype)
                check_rows_with_grad(xs, target)


def test_float16_chunks(tune, rng, monkeypatch):
    """float16 goes through float32 chunks; sums add up across chunks and
    per-pixel outputs land in the right place (also when a chunk splits the
    inner axis)."""
    tune(cpu_half_chunk_elements=19 * 60)
    tune(cpu_half_direct=False)  # the chunks, not the direct kernels
    for shape, axis in [((5, 33, 19), -1), ((2, 19, 100), 1)]:
        x = make_logits(rng, shape, np.float16)
        check_all_options(x, make_target(rng, reduced(shape, axis), 19), axis, rng)


def test_numpy_backend_is_reference(rng):
    x = make_logits(rng, (6, 5, 4))
    t = make_target(rng, (6, 5), 4)
    loss, grad = fl.cross_entropy(x, t, return_grad=True, label_smoothing=0.2, backend="numpy")
    want_loss, want_grad = reference.cross_entropy(x, t, return_grad=True, label_smoothing=0.2)
    assert loss == want_loss and np.array_equal(grad, want_grad)


def test_non_contiguous_views(rng):
    base = make_logits(rng, (12, 40, 19))
    x = base[::2, ::3]  # strided pixels, channels-last
    t = make_target(rng, (12, 40, 3), 19)[::2, ::3, 1]
    check_all_options(x, t, -1, rng)
    xt = np.moveaxis(base, -1, 0)[:, :, ::2]  # classes first, strided
    check_all_options(xt, make_target(rng, (12, 20), 19), 0, rng)


def test_large_map_mean_accuracy(rng):
    """The float32 mean over a Cityscapes-sized map matches the float64
    reference to 1e-6 relative (float64 accumulation)."""
    H, W, C = 1024, 2048, 19
    x = rng.standard_normal((H, W, C), dtype=np.float32) * np.float32(3)
    t = make_target(rng, (H, W), C)
    got = fl.cross_entropy(x, t, backend="cpu")
    total, count = 0.0, 0
    for i in range(0, H, 128):  # the reference in blocks, bounded memory
        total += reference.cross_entropy(x[i:i + 128], t[i:i + 128], reduction="sum")
        count += int(np.sum(t[i:i + 128] != IGNORE))
    assert got == pytest.approx(total / count, rel=1e-6)


def test_one_pixel_and_scalar_target(rng):
    x = np.array([0.5, 0.34, 2.41], np.float32)
    loss = fl.cross_entropy(x, 2)
    assert loss == pytest.approx(-np.log(0.785), abs=1e-3)
    check_all_options(x, np.array(1), 0, rng)


def test_docstring_example():
    x = np.array([[0.5, 0.34, 2.41], [2.0, 0.0, -1.0]], np.float32)
    assert round(float(fl.cross_entropy(x, np.array([2, 0]))), 4) == 0.2061


# --------------------------------------------------------------------------
# targets: ignore_index, dtypes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 1])
def test_all_ignored(rng, axis):
    shape = (4, 19, 6) if axis == 1 else (4, 6, 19)
    x = make_logits(rng, shape)
    t = np.full((4, 6), IGNORE)
    for weighted, eps in OPTIONS:
        kw = dict(class_weight=np.ones(19) if weighted else None, label_smoothing=eps)
        for be in ("cpu", "numpy"):
            loss, grad = fl.cross_entropy(x, t, axis, return_grad=True, backend=be, **kw)
            assert np.isnan(loss)  # PyTorch: 0 / 0
            assert not grad.any()
            assert fl.cross_entropy(x, t, axis, reduction="sum", backend=be, **kw) == 0.0
            none = fl.cross_entropy(x, t, axis, reduction="none", backend=be, **kw)
            assert none.shape == (4, 6) and not none.any()


@pytest.mark.parametrize("axis", [-1, 1])
def test_mean_over_weights_summing_to_zero(rng, axis):
    """Kept pixels whose target weights sum to 0: the "mean" is the sum
    over 0 (+-inf here, NaN when every pixel is ignored), as PyTorch's and
    the reference's, with no NumPy warning."""
    x = make_logits(rng, (2, 3, 2) if axis == 1 else (2, 2, 3))
    t = np.array([[0, 1], [IGNORE, IGNORE]])
    w = np.array([1.0, -1.0, 2.0])
    want = reference.cross_entropy(x, t, axis, class_weight=w)
    assert np.isinf(want)  # two different losses, weights 1 and -1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fl.cross_entropy(x, t, axis, class_weight=w, backend="cpu") == want
        assert np.isnan(fl.cross_entropy(x, np.full((2, 2), IGNORE), axis, backend="cpu"))


def test_ignored_pixels_contribute_nothing(rng):
    """Ignored pixels may hold anything, NaN logits included."""
    x = make_logits(rng, (50, 19))
    t = make_target(rng, (50,), 19, frac=0.3)
    x[t == IGNORE, 3] = np.nan
    for reduction in REDUCTIONS:
        loss, grad = fl.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                      label_smoothing=0.1)
        assert not np.isnan(loss).any()
        assert not grad[t == IGNORE].any()
        keep = t != IGNORE
        sub = fl.cross_entropy(x[keep], t[keep], reduction=reduction, label_smoothing=0.1)
        np.testing.assert_allclose(loss[keep] if reduction == "none" else loss, sub, rtol=1e-6)


@pytest.mark.parametrize("ignore_index", [0, 255, -1])
def test_ignore_index_values(rng, ignore_index):
    x = make_logits(rng, (3, 19, 21))
    t = make_target(rng, (3, 21), 19, ignore=ignore_index, frac=0.2)
    check_all_options(x, t, 1, rng, ignore_index=ignore_index)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
def test_target_dtypes(rng, dtype):
    x = make_logits(rng, (5, 7, 19))
    t = make_target(rng, (5, 7), 19, ignore=100)
    want = fl.cross_entropy(x, t, ignore_index=100, reduction="none")
    got = fl.cross_entropy(x, t.astype(dtype), ignore_index=100, reduction="none")
    # uint8 runs its own compiled kernel: the same up to float32 rounding.
    np.testing.assert_allclose(got, want, rtol=4e-7)


# --------------------------------------------------------------------------
# special values
# --------------------------------------------------------------------------

def special_logits(C):
    """Rows: NaN, +inf, all -inf, one -inf among finite (target elsewhere
    and on it), ties, a large offset; targets for each."""
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
    target = np.array([0, 1, 0, 0, 2, C - 1, 1, 1])
    return rows, target


@pytest.mark.parametrize("C", [3, 19, 150])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(rng, C, axis, dtype):
    rows, target = special_logits(C)
    x = rows.astype(dtype)
    if axis == 0:
        x = np.ascontiguousarray(x.T)  # (C, 8): channels-first, inner = 8
    weight = rng.uniform(0.5, 2.0, C)
    weight[2] = 0.0  # 0 * -inf is NaN, as in PyTorch
    for w, eps, reduction in itertools.product([None, weight], [0.0, 0.3], REDUCTIONS):
        kw = dict(class_weight=w, label_smoothing=eps, reduction=reduction)
        loss, grad = fl.cross_entropy(x, target, axis, return_grad=True, **kw)
        want_loss, want_grad = reference.cross_entropy(x, target, axis, return_grad=True, **kw)
        assert_loss_close(loss, want_loss, x.dtype, reduction)
        assert_grad_close(grad, want_grad, x)
    per_pixel, grad = fl.cross_entropy(x, target, axis, reduction="none", return_grad=True)
    assert np.isnan(per_pixel[:3]).all() and np.isfinite(per_pixel[5:]).all()
    assert per_pixel[3] < np.inf and per_pixel[4] == np.inf
    g = grad if axis == -1 else grad.T
    assert np.isnan(g[:3]).all() and np.isfinite(g[3:]).all()
    assert np.isnan(fl.cross_entropy(x, target, axis))


@needs_torch
@pytest.mark.parametrize("C", [3, 150])
def test_special_values_torch(C):
    rows, target = special_logits(C)
    weight = np.linspace(0.5, 2.0, C)
    weight[2] = 0.0
    for w, eps in itertools.product([None, weight], [0.0, 0.3]):
        kw = dict(class_weight=w, label_smoothing=eps, reduction="none")
        loss, grad = fl.cross_entropy(rows, target, return_grad=True, **kw)
        want_loss, want_grad = torch_cross_entropy(rows, target, 1, **kw)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(grad, want_grad, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------

def torch_cross_entropy(x, target, axis, *, class_weight=None, ignore_index=IGNORE,
                        label_smoothing=0.0, reduction="mean"):
    """PyTorch's loss and d loss / d x (of the summed losses for "none"), float64."""
    xt = torch.tensor(np.moveaxis(np.asarray(x, np.float64), axis, 1) if x.ndim > 1
                      else np.asarray(x, np.float64), requires_grad=True)
    w = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float64)
    loss = F.cross_entropy(xt, torch.tensor(target, dtype=torch.int64), weight=w,
                           ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    (grad,) = torch.autograd.grad(loss.sum(), xt)
    grad = grad.numpy()
    return loss.detach().numpy(), (np.moveaxis(grad, 1, axis) if x.ndim > 1 else grad)


@needs_torch
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(rng, layout, dtype):
    C = 19
    shape, axis = LAYOUTS[layout](C)
    x = make_logits(rng, shape, dtype)
    t = make_target(rng, reduced(shape, axis), C)
    weight = rng.uniform(0.2, 3.0, C)
    for (weighted, eps), reduction in itertools.product(OPTIONS, REDUCTIONS):
        kw = dict(class_weight=weight if weighted else None, label_smoothing=eps,
                  reduction=reduction)
        loss, grad = fl.cross_entropy(x, t, axis, return_grad=True, **kw)
        want_loss, want_grad = torch_cross_entropy(x, t, axis, **kw)
        assert_loss_close(loss, want_loss, dtype, reduction)
        assert_grad_close(grad, want_grad, x)


@needs_torch
def test_all_ignored_matches_torch(rng):
    x = make_logits(rng, (5, 4))
    t = np.full(5, IGNORE)
    for eps in (0.0, 0.2):
        want, want_grad = torch_cross_entropy(x, t, -1, label_smoothing=eps)
        loss, grad = fl.cross_entropy(x, t, return_grad=True, label_smoothing=eps)
        assert np.isnan(want) and np.isnan(loss)
        np.testing.assert_array_equal(grad, want_grad)


# --------------------------------------------------------------------------
# empty input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_empty(backend):
    x = np.zeros((0, 5, 19), np.float32)
    t = np.zeros((0, 5), np.int64)
    loss, grad = fl.cross_entropy(x, t, return_grad=True, backend=backend)
    assert np.isnan(loss) and grad.shape == x.shape and grad.dtype == x.dtype
    assert fl.cross_entropy(x, t, reduction="sum", backend=backend) == 0.0
    none = fl.cross_entropy(x, t, reduction="none", backend=backend)
    assert none.shape == (0, 5) and none.dtype == np.float32


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("shape,axis,bad_at", [
    ((4, 6, 19), -1, (2, 3)),
    ((2, 19, 4, 5), 1, (1, 3, 0)),
    ((7, 150), -1, (5,)),
])
@pytest.mark.parametrize("bad", [19, -1, 1000])
def test_bad_target_value(rng, backend, shape, axis, bad_at, bad):
    C = shape[axis]
    bad = C if bad == 19 else bad
    x = make_logits(rng, shape)
    t = make_target(rng, reduced(shape, axis), C)
    t[bad_at] = bad
    later = tuple(n - 1 for n in t.shape)
    t[later] = C + 5  # a second bad value, later in C order: not the one named
    for kw in (dict(), dict(return_grad=True), dict(reduction="none", return_grad=True)):
        with pytest.raises(ValueError, match=rf"target holds {bad} at position "
                                             rf"\({', '.join(map(str, bad_at))},?\)"):
            fl.cross_entropy(x, t, axis, backend=backend, **kw)


def test_bad_target_value_uint(rng):
    x = make_logits(rng, (4, 19))
    t = np.array([1, 2, 19, 3], np.uint8)
    with pytest.raises(ValueError, match=r"target holds 19 at position \(2,\)"):
        fl.cross_entropy(x, t)
    t = np.array([1, 2, 2**63 + 5, 3], np.uint64)
    with pytest.raises(ValueError, match=rf"target holds {2**63 + 5} at position \(2,\)"):
        fl.cross_entropy(x, t)


def test_bad_input_messages(rng):
    x = make_logits(rng, (4, 6, 19))
    t = make_target(rng, (4, 6), 19)
    with pytest.raises(TypeError, match="target must hold integer class indices.*float32"):
        fl.cross_entropy(x, t.astype(np.float32))
    with pytest.raises(TypeError, match="target must hold integer"):
        fl.cross_entropy(x, t > 0)
    with pytest.raises(ValueError, match=r"target has shape \(6, 4\), expected \(4, 6\).*"
                                         r"\(4, 6, 19\)"):
        fl.cross_entropy(x, t.T)
    with pytest.raises(ValueError, match=r"target has shape \(4, 6\), expected \(4, 19\)"):
        fl.cross_entropy(x, t, axis=1)
    with pytest.raises(ValueError, match=r"class_weight has shape \(18,\), expected \(19,\)"):
        fl.cross_entropy(x, t, class_weight=np.ones(18))
    with pytest.raises(ValueError, match=r"class_weight has shape \(1, 19\)"):
        fl.cross_entropy(x, t, class_weight=np.ones((1, 19)))
    with pytest.raises(TypeError, match="class_weight must hold real numbers"):
        fl.cross_entropy(x, t, class_weight=np.ones(19, complex))
    for eps in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            fl.cross_entropy(x, t, label_smoothing=eps)
    with pytest.raises(TypeError, match="label_smoothing"):
        fl.cross_entropy(x, t, label_smoothing="0.1")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        fl.cross_entropy(x, t, reduction="avg")
    with pytest.raises(TypeError, match="return_grad"):
        fl.cross_entropy(x, t, return_grad="yes")
    with pytest.raises(TypeError, match="ignore_index"):
        fl.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(ValueError, match="ignore_index=.* does not fit in int64"):
        fl.cross_entropy(x, t, ignore_index=2**64)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fl.cross_entropy(x.astype(np.int32), t)
    with pytest.raises(ValueError, match="axis=3"):
        fl.cross_entropy(x, t, axis=3)
    with pytest.raises(ValueError, match="unknown backend"):
        fl.cross_entropy(x, t, backend="gpu")
    if "cuda" not in fl.backends():
        with pytest.raises(ValueError, match="backend='cuda' is not available"):
            fl.cross_entropy(x, t, backend="cuda")


def test_label_smoothing_one(rng):
    """eps = 1: only the smoothing term (PyTorch allows it)."""
    x = make_logits(rng, (20, 5))
    t = make_target(rng, (20,), 5)
    check = reference.cross_entropy(x, t, label_smoothing=1.0, return_grad=True)
    got = fl.cross_entropy(x, t, label_smoothing=1.0, return_grad=True)
    assert got[0] == pytest.approx(check[0], rel=1e-6)
    np.testing.assert_allclose(got[1], check[1], atol=2e-6)


# --------------------------------------------------------------------------
# grad_out: the gradient into preallocated memory, x itself included
# --------------------------------------------------------------------------

#: (shape, axis) reaching each CPU driver: channels-first tiles, the
#: channels-last blocks (with a row remainder), the transposed tiles (few
#: classes), the row kernels (many classes).
GRAD_OUT_CASES = [((3, 19, 37), 1), ((53, 19), -1), ((41, 5), -1), ((23, 150), -1)]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("shape,axis", GRAD_OUT_CASES)
def test_grad_out(rng, backend, shape, axis):
    x = make_logits(rng, shape)
    t = make_target(rng, reduced(shape, axis), shape[axis])
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.2):
            kw = dict(reduction=reduction, label_smoothing=eps, backend=backend)
            want_loss, want_grad = reference.cross_entropy(x, t, axis, return_grad=True,
                                                           reduction=reduction,
                                                           label_smoothing=eps)
            g = np.full_like(x, 7.0)
            loss, grad = fl.cross_entropy(x, t, axis, return_grad=True, grad_out=g, **kw)
            assert grad is g
            assert_loss_close(loss, want_loss, x.dtype, reduction)
            assert_grad_close(g, want_grad, x)
            # In place: x's memory becomes the gradient.
            xi = x.copy()
            loss, grad = fl.cross_entropy(xi, t, axis, return_grad=True, grad_out=xi, **kw)
            assert grad is xi
            assert_loss_close(loss, want_loss, x.dtype, reduction)
            assert_grad_close(xi, want_grad, x)


def test_grad_out_in_place_special_rows_and_half(rng):
    """In place over the special-value rows (through the blocks: five
    copies), NaN logits at ignored pixels, and float16 through its float32
    chunks; a strided grad_out goes through a temporary."""
    rows, target = special_logits(19)
    rows, target = np.tile(rows, (5, 1)), np.tile(target, 5)
    target[::7] = IGNORE
    rows[target == IGNORE, 3] = np.nan
    for dtype in (np.float32, np.float64, np.float16):
        x = rows.astype(dtype)
        want_loss, want_grad = reference.cross_entropy(x, target, reduction="none",
                                                       return_grad=True)
        xi = x.copy()
        loss, grad = fl.cross_entropy(xi, target, reduction="none", return_grad=True,
                                      grad_out=xi)
        assert_loss_close(loss, want_loss, x.dtype, "none")
        assert_grad_close(xi, want_grad, x)
        assert not xi[target == IGNORE].any()
    x = make_logits(rng, (2, 19, 30))
    t = make_target(rng, (2, 30), 19)
    big = np.zeros((2, 19, 60), np.float32)
    strided = big[:, :, ::2]
    fl.cross_entropy(x, t, 1, return_grad=True, grad_out=strided)
    assert_grad_close(strided, reference.cross_entropy(x, t, 1, return_grad=True)[1], x)
    assert not big[:, :, 1::2].any()


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_grad_out_bad(rng, backend):
    x = make_logits(rng, (6, 19))
    t = make_target(rng, (6,), 19)
    kw = dict(return_grad=True, backend=backend)
    with pytest.raises(ValueError, match="grad_out is given but return_grad is False"):
        fl.cross_entropy(x, t, grad_out=np.empty_like(x), backend=backend)
    with pytest.raises(ValueError, match=r"grad_out has shape \(19, 6\), expected \(6, 19\)"):
        fl.cross_entropy(x, t, grad_out=np.empty((19, 6), np.float32), **kw)
    with pytest.raises(TypeError, match="grad_out has dtype float64, expected float32"):
        fl.cross_entropy(x, t, grad_out=np.empty((6, 19)), **kw)
    with pytest.raises(TypeError, match="grad_out must be a NumPy array"):
        fl.cross_entropy(x, t, grad_out=[[0.0] * 19] * 6, **kw)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out is read-only"):
        fl.cross_entropy(x, t, grad_out=ro, **kw)
    wide = np.zeros((7, 19), np.float32)
    wide[:6] = x
    with pytest.raises(ValueError, match="grad_out overlaps x without being x"):
        fl.cross_entropy(wide[:6], t, grad_out=wide[1:], **kw)
    # A bad target is found before the gradient is written, for every reduction.
    t[2] = 19
    for reduction in REDUCTIONS:
        g = np.full_like(x, 7.0)
        with pytest.raises(ValueError, match=r"target holds 19 at position \(2,\)"):
            fl.cross_entropy(x, t, reduction=reduction, grad_out=g, **kw)
        assert (g == 7.0).all()
        xi = x.copy()
        with pytest.raises(ValueError, match=r"target holds 19"):
            fl.cross_entropy(xi, t, reduction=reduction, grad_out=xi, **kw)
        assert (xi == x).all()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "cached"])
@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "tiles"])
def test_channels_first_paths(tune, rng, blocks, stream, monkeypatch):
    """Channels-first maps through the register blocks of pixels
    (``cpu.blocks.planeblock``) or the tile loops, the gradient by ordinary or
    non-temporal stores (every gradient streamed here): straight from the
    blocks into a grad_out whose lines line up with x's (planes of whole
    lines, the same line offset, in place), through the scratch tile
    otherwise (planes of 37 pixels, another offset); every option, and the
    special-value pixels (NaN logits at ignored pixels too) in the blocks
    and in the rest."""
    tune(cpu_plane_block_max_classes=10**9 if blocks else 0)
    tune(cpu_stream_min_bytes=0 if stream else 10**18)
    for C in (1, 3, 8, 19, 40):
        for inner, grad_offset in ((48, 16), (48, 32), (37, 16)):
            x = at_line_offset((2, C, inner), np.float32, 16)
            x[...] = make_logits(rng, x.shape)
            t = make_target(rng, (2, inner), C)
            check_all_options(x, t, 1, rng)
            g = at_line_offset(x.shape, x.dtype, grad_offset)
            for reduction in REDUCTIONS:
                kw = dict(reduction=reduction, label_smoothing=0.1)
                want_loss, want_grad = reference.cross_entropy(x, t, 1, return_grad=True, **kw)
                loss, grad = fl.cross_entropy(x, t, 1, return_grad=True, grad_out=g, **kw)
                assert_loss_close(loss, want_loss, x.dtype, reduction)
                assert_grad_close(g, want_grad, x)
            xi = x.copy() if inner == 37 else x
            loss, grad = fl.cross_entropy(xi, t, 1, return_grad=True, grad_out=xi, **kw)
            assert_loss_close(loss, want_loss, x.dtype, reduction)
            assert_grad_close(xi, want_grad, x)
        if C >= 3:
            rows, target = special_logits(C)
            target[::4] = IGNORE
            rows[target == IGNORE, C // 2] = np.nan
            n = len(target)
            for dtype in (np.float32, np.float64):
                xs = at_line_offset((1, C, 8 * n), dtype, 16)
                xs[0] = np.tile(rows.T.astype(dtype), (1, 8))  # specials in blocks and rest
                ts = np.tile(target, 8)[None]
                want_loss, want_grad = reference.cross_entropy(xs, ts, 1, reduction="none",
                                                               return_grad=True)
                # The loss alone: float32 by the fused blocks (cpu.blocks.planeblock.planes_xent).
                for reduction in REDUCTIONS:
                    want = reference.cross_entropy(xs, ts, 1, reduction=reduction)
                    got = fl.cross_entropy(xs, ts, 1, reduction=reduction)
                    assert_loss_close(got, want, xs.dtype, reduction)
                loss, grad = fl.cross_entropy(xs, ts, 1, reduction="none", return_grad=True,
                                              grad_out=xs)
                assert_loss_close(loss, want_loss, xs.dtype, "none")
                assert_grad_close(xs, want_grad, want_grad.astype(dtype))


@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis", [((40, 4), -1), ((40, 19), -1), ((40, 100), -1),
                                        ((5, 3000), -1), ((3, 19, 40), 1), ((2, 100, 40), 1)])
def test_confident_pixels_keep_relative_precision(rng, shape, axis, dtype, return_grad):
    """A confident pixel's loss, log1p of its non-maximal terms, is near 0:
    it keeps its relative precision (SciPy's logsumexp rule) in every
    regime; the gradient still matches."""
    from tests.api.test_core import near0_logits, near0_rtol

    d = (3, 8) if dtype == np.float16 else (3, 12)
    x = near0_logits(rng, shape, axis, dtype, d)
    t = np.argmax(x, axis=axis)
    got = fl.cross_entropy(x, t, axis, reduction="none", return_grad=return_grad)
    want = reference.cross_entropy(x, t, axis, reduction="none", return_grad=return_grad)
    if return_grad:
        got, grad = got
        want, want_grad = want
        assert_grad_close(grad, want_grad, x)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                               rtol=near0_rtol(dtype, d[1] + 1), atol=0)
