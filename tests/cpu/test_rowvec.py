"""The one-pass max and exp-sum of a long channels-last row
(``cpu.rowvec.vrow_max_expsum``) against float64 NumPy: rows of one
chunk and of many, a max that grows in every chunk, leading chunks of
-inf, NaN and +inf."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.blocks.rowvec import CHUNK_BYTES, vrow_argmax, vrow_expsum, vrow_max_expsum
from tests.helpers import exp_rest


@njit
def _rows(x, inv_t):
    m = np.empty(x.shape[0], x.dtype)
    s = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        m[r], s[r] = vrow_max_expsum(x, r, inv_t)
    return m, s


@njit
def _row_max(x):
    m = np.empty(x.shape[0], x.dtype)
    for r in range(x.shape[0]):
        m[r], _ = vrow_argmax(x, r)
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_expsum_matches_float64(rng, dtype):
    chunk = CHUNK_BYTES // np.dtype(dtype).itemsize
    for C in (1, 5, 16, 17, 100, chunk - 1, chunk, chunk + 1, 3 * chunk + 7):
        x = (rng.standard_normal((9, C)) * 5).astype(dtype)
        x[1] = np.sort(x[1])  # the max grows in every chunk: a rescale each
        x[2] = -np.inf
        x[3, :C // 2] = -np.inf  # leading chunks of -inf only
        x[4, C // 3] = np.nan
        x[5, C - 1] = np.inf
        x[6] = np.sort(x[6])[::-1]
        x[7, ::2] = x[7].max()  # ties at the max
        m, s = _rows(x, dtype(0.7))
        np.testing.assert_array_equal(m, _row_max(x))  # vrow_argmax's max, NaN included
        x64 = x.astype(np.float64)
        want_m = np.max(x64, axis=1)
        fin = np.isfinite(want_m)
        with np.errstate(invalid="ignore"):
            want_s = exp_rest((x64 - want_m[:, None]) * 0.7)
        # float32: each term within 2**-24 (2 |t| + 4) of exp(t) relatively (the
        # exp2 form's bound, cpu.llvm.fastexp), and the rest s - 1 can be one term.
        np.testing.assert_allclose(s[fin], want_s[fin], rtol=2e-6 if dtype == np.float32 else 1e-14,
                                   atol=C * np.finfo(dtype).tiny)  # terms below it flushed
        assert np.isnan(m[4]) and m[5] == np.inf and m[2] == -np.inf


@njit
def _expsums(x, inv_t, out, write, exact):
    s = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        mx, _ = vrow_argmax(x, r)
        s[r] = vrow_expsum(x, r, mx, inv_t, out, r, write, exact)
    return s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_expsum_exact_rule_or_total(rng, dtype):
    """``vrow_expsum``: with ``exact`` the sum of the terms but the first
    max's with its own relative precision (a row whose other terms are
    1e-20 of the max's: the log ops' log1p), without it ``s - 1`` (1 + s
    the sum of every term: softmax, classify); with ``write`` the
    exponentials in out."""
    chunk = CHUNK_BYTES // np.dtype(dtype).itemsize
    for C in (3, 17, chunk + 5):
        x = (rng.standard_normal((5, C)) * 4).astype(dtype)
        x[1] = -50.0
        x[1, C // 2] = 0.0  # the other terms exp(-35) = 6e-16 each: lost in 1 + s
        x[2, ::2] = x[2].max()  # ties at the max
        x64 = x.astype(np.float64)
        t = (x64 - x64.max(axis=1, keepdims=True)) * np.float64(dtype(0.7))
        want = exp_rest(t)
        rtol = 2e-6 if dtype == np.float32 else 1e-14
        for write in (False, True):
            out = np.full_like(x, -3.0)
            exact = _expsums(x, dtype(0.7), out, write, True)
            np.testing.assert_allclose(exact, want, rtol=rtol)
            total = _expsums(x, dtype(0.7), out, write, False)
            np.testing.assert_allclose(1 + total, 1 + want, rtol=rtol)
            if write:
                # each term within 2**-24 (2 |t| + 4) of exp(t) (cpu.llvm.fastexp's
                # bound), and the product (x - m) * inv_t rounded in x's precision
                eps = np.finfo(dtype).eps / 2
                bound = eps * (3 * np.abs(t) + 4) + (0 if dtype == np.float32 else 1e-15)
                assert (np.abs(out - np.exp(t)) <= bound * np.exp(t)).all()
            else:
                assert (out == -3.0).all()
