"""The outer-product micro-kernel (fastlogits.cpu.microkernels) on its own:
partial class blocks, both initializations, K = 0, float32 and float64."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.microkernels import (DOT_CLASSES, DOT_PIXELS, OUTER_CLASSES, OUTER_PIXELS,
                                         dot_block, outer_block)


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


@njit(cache=True)
def _dot(W, c0, ncls, f, f0, N, b, z, zo, zs):
    dot_block(W, c0, ncls, f, f0, N, b, z, zo, zs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [1, 5, 8, 16, 17, 259])
@pytest.mark.parametrize("ncls", [1, 3, DOT_CLASSES])
def test_dot_block_matches_float64_product(rng, dtype, N, ncls):
    C, c0, f0, zo, zs = 7, 2, 3, 2, DOT_PIXELS + 7
    W = rng.standard_normal(C * N).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    f = rng.standard_normal(f0 + DOT_PIXELS * N + 2).astype(dtype)
    z = rng.standard_normal(DOT_CLASSES * zs + zo + 3).astype(dtype)
    z0 = z.copy()
    _dot(W, c0, ncls, f, f0, N, b, z, zo, zs)

    want = z0.astype(np.float64)
    W64, f64 = W.astype(np.float64).reshape(C, N), f.astype(np.float64)
    for i in range(ncls):
        for p in range(DOT_PIXELS):
            want[zo + i * zs + p] = b[c0 + i] + W64[c0 + i] @ f64[f0 + p * N:f0 + (p + 1) * N]
    scale = np.abs(W64).max() * np.abs(f64).max() * N + np.abs(b).max()
    # Entries past ncls and between the rows are left exactly as they were.
    np.testing.assert_allclose(z, want, rtol=0, atol=4 * (N + 2) * np.finfo(dtype).eps * scale)
    untouched = np.ones(z.shape, bool)
    for i in range(ncls):
        untouched[zo + i * zs:zo + i * zs + DOT_PIXELS] = False
    np.testing.assert_array_equal(z[untouched], z0[untouched])
