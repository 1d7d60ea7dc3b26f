"""The last rows of the channels-last register-block kernels
(docs/perf/cpu-079). Softmax's kernel makes chunks of whole blocks and
takes the last chunk's rows % ROWS as the end of a block that overlaps the
one before, its results through a scratch block; the loss's kernel takes a
chunk's last rows as a padded block through the same call, their targets
read and checked first. Every count of last rows, launched in parallel
(several chunks) and whole, in place, with special values, against the
reference."""

import numpy as np
import pytest
from numba import njit

import fastlogits as fl
from fastlogits import reference
from fastlogits.cpu.blocks.rowblock import ROWS, padded_block
from fastlogits.cpu.llvm.rowcopy import copy_rows
from tests.helpers import assert_close, specials_array

LAST_ROWS = sorted({0, 1, 2, ROWS // 2, ROWS - 1})


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("C", [8, 19, 63])
@pytest.mark.parametrize("last", LAST_ROWS)
def test_exp_ops_last_rows(rng, launch, op, C, last):
    from fastlogits.cpu.ops import softmax as kernels

    for blocks in (1, 9):  # one chunk of blocks, and several
        x = specials_array(rng, (blocks * ROWS + last, C), -1, np.float32)
        want = getattr(reference, op)(x)
        assert_close(getattr(fl, op)(x), want, np.float32)
        if op != "logsumexp":
            y = x.copy()
            assert getattr(fl, op)(y, out=y) is y  # in place: the overlap reads results
            assert_close(y, want, np.float32)
    assert kernels.expnorm_cl_blocks.signatures


@pytest.mark.parametrize("op", ["softmax", "logsumexp"])
def test_exp_ops_fewer_rows_than_a_block(rng, op):
    """Under ROWS rows there is no block to overlap: another kernel."""
    for rows in (1, ROWS - 1):
        x = specials_array(rng, (rows, 19), -1, np.float32)
        assert_close(getattr(fl, op)(x), getattr(reference, op)(x), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("last", LAST_ROWS)
def test_loss_last_rows(rng, launch, dtype, last):
    from fastlogits.cpu.ops import losses as kernels

    C = 19
    rows = 5 * ROWS + last
    x = specials_array(rng, (rows, C), -1, dtype)
    x[...] = np.where(np.isfinite(x), x, dtype(2.0))  # (NaN losses: test_losses)
    t = rng.integers(0, C, rows).astype(np.uint8)
    t[rng.random(rows) < 0.2] = 255
    t[-1] = 255  # an ignored pixel among the last rows
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-6)
    for kw in ({}, {"label_smoothing": 0.1, "class_weight": np.linspace(0.5, 2, C)}):
        got, grad = fl.cross_entropy(x, t, ignore_index=255, reduction="none",
                                     return_grad=True, **kw)
        want, want_grad = reference.cross_entropy(x, t, ignore_index=255, reduction="none",
                                                  return_grad=True, **kw)
        np.testing.assert_allclose(got, want, **tol)
        np.testing.assert_allclose(np.asarray(grad, np.float64), want_grad, **tol)
        total = fl.cross_entropy(x, t, ignore_index=255, **kw)
        assert total == pytest.approx(float(reference.cross_entropy(
            x, t, ignore_index=255, **kw)), rel=tol["rtol"] * 10)
    assert kernels.ce_cl_blocks.signatures


@pytest.mark.parametrize("tdtype, ignore", [(np.uint8, -100), (np.int8, 255), (np.int64, -100)])
@pytest.mark.parametrize("at", [0, -1])
def test_loss_bad_target_in_last_rows(rng, launch, tdtype, ignore, at):
    """A bad target among a chunk's last rows (read before the padded
    block, whose ignored value is t's -1, whatever ``ignore_index`` is)
    raises as anywhere else; targets equal to ``ignore_index`` there are
    ignored."""
    C = 19
    rows = 3 * ROWS + 3
    x = (3 * rng.standard_normal((rows, C))).astype(np.float32)
    t = rng.integers(0, C, rows).astype(tdtype)
    ok = t.copy()
    if np.can_cast(np.min_scalar_type(ignore), tdtype):
        ok[-2] = ignore
    np.testing.assert_allclose(fl.cross_entropy(x, ok, ignore_index=ignore, reduction="none"),
                               reference.cross_entropy(x, ok, ignore_index=ignore,
                                                       reduction="none"), rtol=1e-5)
    bad = ok.copy()
    bad[at] = C + 1
    with pytest.raises(ValueError, match="target"):
        fl.cross_entropy(x, bad, ignore_index=ignore)
    if np.issubdtype(tdtype, np.signedinteger):  # t's -1 itself is a bad target
        bad[at] = -1
        with pytest.raises(ValueError, match="target"):
            fl.cross_entropy(x, bad, ignore_index=ignore)


@njit
def _pad(x, r, n, pad):
    return padded_block(x, r, n, pad).copy()


@njit
def _copy(src, s, dst, d, n):
    copy_rows(src, s, dst, d, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_padded_block_and_copy_rows(rng, dtype):
    x = (100 * rng.random((11, 19))).astype(dtype)
    for r, n in ((0, 1), (3, 5), (11 - ROWS // 2, ROWS // 2)):  # (ROWS: 8 or 16)
        pad = np.zeros((ROWS, 19), dtype)
        got = _pad(x, r, n, pad)
        np.testing.assert_array_equal(got[:n], x[r:r + n])
        np.testing.assert_array_equal(got[n:], np.repeat(x[r + n - 1][None], ROWS - n, 0))
        out = np.zeros_like(x)
        _copy(got, 0, out, r, n)  # the way back
        np.testing.assert_array_equal(out[r:r + n], x[r:r + n])
        assert not out[:r].any() and not out[r + n:].any()
    dst = np.zeros((4, 19), dtype)
    _copy(x, 7, dst, 1, 2)
    np.testing.assert_array_equal(dst[1:3], x[7:9])
    assert not dst[0].any() and not dst[3].any()
