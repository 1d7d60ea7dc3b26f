"""The 8-row register blocks (fastlogits.cpu.rowblock) on their own: every
remainder C % 8, both dtypes, NaN / +-inf / ties / all -inf rows, blocks
that start anywhere in x and in the outputs, nothing else written."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.rowblock import rows8_argmax, rows8_expsum, rows8_wsum

CLASSES = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 24, 33, 64, 95, 96, 128]


@njit(cache=True)
def _argmax(x, r, m, idx, p):
    rows8_argmax(x, r, m, idx, p)


@njit(cache=True)
def _expsum(x, r, m, p, inv_t, s):
    rows8_expsum(x, r, m, p, inv_t, s)


@njit(cache=True)
def _wsum(x, r, m, p, w, s):
    rows8_wsum(x, r, m, p, w, s)


def _rows(rng, C, dtype):
    """11 rows: 0..2 before the block, the block of 8 at row 3 with NaN,
    +-inf, ties and an all -inf row, so the block starts mid-array."""
    x = rng.standard_normal((11, C)).astype(dtype) * 3
    x[3, C // 2] = np.nan              # NaN beats everything, wherever it is
    x[3, 0] = np.inf
    x[4, [1, C - 1]] = np.inf          # tie of +inf: the first wins
    x[5] = -np.inf                     # all -inf: index 0, max -inf
    x[6, [C - 2, C - 1]] = x[6].max() + 1  # a tie in the overlapping tail block
    x[7, C - 1] = 50.0                 # the max in the very last class
    x[8, :] = 2.0                      # every class tied
    x[9, [0, C - 1]] = np.nan          # first NaN at 0
    return x


def _ref_argmax(x):
    """NumPy's argmax (first NaN wins) and the max by the same rule."""
    idx = np.argmax(x, axis=1)
    return x[np.arange(len(x)), idx], idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_rows8_argmax_matches_numpy(rng, C, dtype):
    x = _rows(rng, C, dtype)
    m = np.full(13, 7.0, dtype)
    idx = np.full(13, -5, np.int32)
    _argmax(x, 3, m, idx, 2)
    want_m, want_i = _ref_argmax(x[3:11])
    np.testing.assert_array_equal(idx[2:10], want_i)
    np.testing.assert_array_equal(m[2:10], want_m)  # NaN == NaN here
    assert (m[:2] == 7).all() and (m[10:] == 7).all()
    assert (idx[:2] == -5).all() and (idx[10:] == -5).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_rows8_argmax_merges_chains_like_numpy(rng, C, dtype):
    """Many blocks of small integers (ties everywhere) with NaN and +-inf
    scattered: the independent (max, index) chains (class j % 2 of a class
    block in chain j % 2, ``rowblock.ARGMAX_CHAINS``) must merge to
    NumPy's first maximum, first NaN."""
    rows = 8 * 40
    x = rng.integers(-2, 3, (rows, C)).astype(dtype)
    u = rng.random((rows, C))
    x[u < 0.02] = np.nan
    x[(u >= 0.02) & (u < 0.08)] = -np.inf
    x[u > 0.97] = np.inf
    x[:8] = -np.inf                     # a block of all -inf rows: index 0
    x[8:16, 1::2] = 3.0                 # the max only in odd classes (chain 1)...
    x[8:16, 2::4] = 3.0                 # ...tied from class 2 on (chain 0)
    x[16:24, 1::2] = np.nan             # a NaN in the odd chain only, first at 1
    x[16:24, 0] = 5.0
    m = np.empty(rows, dtype)
    idx = np.empty(rows, np.int32)
    for r in range(0, rows, 8):
        _argmax(x, r, m, idx, r)
    want_m, want_i = _ref_argmax(x)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(m, want_m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_rows8_sums_match_float64(rng, C, dtype):
    x = rng.standard_normal((11, C)).astype(dtype) * 4
    x[5, 1] = -np.inf                          # exp(-inf) = 0, w * inf skipped below
    x[6] = np.linspace(-200, 0, C).astype(dtype)  # terms that underflow
    m = np.full(13, 99.0, dtype)
    idx = np.zeros(13, np.int32)
    _argmax(x, 2, m, idx, 4)
    inv_t = dtype(1 / 0.7)
    s = np.full(13, -1.0)
    _expsum(x, 2, m, 4, inv_t, s)
    xb = x[2:10].astype(np.float64)
    mb = m[4:12].astype(np.float64)[:, None]
    want = np.exp((xb - mb) * np.float64(inv_t)).sum(axis=1)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(s[4:12], want, rtol=rtol)
    assert (s[:4] == -1).all() and (s[12:] == -1).all()

    w = rng.uniform(0.1, 2, C).astype(dtype)
    x[5, 1] = 0.0  # the smoothing sum of a -inf logit is inf; keep it finite here
    _argmax(x, 2, m, idx, 4)
    s[:] = -1.0
    _wsum(x, 2, m, 4, w, s)
    xb = x[2:10].astype(np.float64)
    mb = m[4:12].astype(np.float64)[:, None]
    want = (w.astype(np.float64) * (mb - xb)).sum(axis=1)
    atol = 1e-5 * np.abs(want).max() if dtype == np.float32 else 1e-12 * np.abs(want).max()
    np.testing.assert_allclose(s[4:12], want, rtol=0, atol=atol)
    assert (s[:4] == -1).all() and (s[12:] == -1).all()


def test_rows8_rejects_what_it_cannot_read():
    """Typing fails (no silent fallback) for non-contiguous, integer or
    mismatched arrays."""
    x = np.ones((8, 16), np.float32)
    with pytest.raises(Exception):
        _argmax(x[:, ::2], 0, np.empty(8, np.float32), np.empty(8, np.int32), 0)
    with pytest.raises(Exception):
        _argmax(np.ones((8, 16), np.int32), 0, np.empty(8, np.int32), np.empty(8, np.int32), 0)
    with pytest.raises(Exception):
        _expsum(x, 0, np.empty(8, np.float64), 0, np.float32(1), np.empty(8))
