"""The outer-product micro-kernel (fastlogits.cpu.outer) on its own:
partial class blocks, both initializations, K = 0, float32 and float64."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.outer import OUTER_CLASSES, OUTER_PIXELS, outer_block


@njit(cache=True)
def _call(Wt, w0, wst, b0, B, bo, sbk, K, z, zo, zs, nc, init_bias):
    outer_block(Wt, w0, wst, b0, B, bo, sbk, K, z, zo, zs, nc, init_bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [0, 1, 7, 33])
@pytest.mark.parametrize("nc", [1, 3, OUTER_CLASSES])
@pytest.mark.parametrize("init_bias", [0, 1])
def test_outer_block_matches_float64_product(rng, dtype, K, nc, init_bias):
    Cp, c0, sbk, bo, zs, zo = 2 * OUTER_CLASSES, 3, OUTER_PIXELS + 5, 7, OUTER_PIXELS + 9, 4
    Wt = rng.standard_normal((K + 1) * Cp).astype(dtype)  # row K: the bias
    B = rng.standard_normal(max(K, 1) * sbk + bo + OUTER_PIXELS).astype(dtype)
    z0 = rng.standard_normal(OUTER_CLASSES * zs + zo + 8).astype(dtype)
    z = z0.copy()
    _call(Wt, c0, Cp, K * Cp + c0, B, bo, sbk, K, z, zo, zs, nc, init_bias)

    W = Wt[:K * Cp].reshape(K, Cp)[:, c0:c0 + nc].astype(np.float64)
    Bk = np.array([B[bo + k * sbk:bo + k * sbk + OUTER_PIXELS] for k in range(K)],
                  np.float64).reshape(K, OUTER_PIXELS)
    want = z0.astype(np.float64)
    for c in range(nc):
        rows = slice(zo + c * zs, zo + c * zs + OUTER_PIXELS)
        init = Wt[K * Cp + c0 + c] if init_bias else z0[rows]
        want[rows] = init + W[:, c] @ Bk
    # Rows past nc and the gaps between rows are left alone.
    scale = np.abs(W).sum(0).max() * np.abs(Bk).max() if K else 0.0
    tol = 8 * np.finfo(dtype).eps * (4 + scale)
    np.testing.assert_allclose(z, want, rtol=0, atol=tol)
    untouched = np.ones(z.shape, bool)
    for c in range(nc):
        untouched[zo + c * zs:zo + c * zs + OUTER_PIXELS] = False
    np.testing.assert_array_equal(z[untouched], z0[untouched])
