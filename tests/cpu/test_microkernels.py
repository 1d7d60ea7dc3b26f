"""The LinearHead micro-kernels (fastlogits.cpu.blocks.microkernels) on their own:
partial class blocks, both initializations, K = 0 / N = 0, float32 and
float64, and the dot block's aligned form at every offset in a line."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.blocks.microkernels import (DOT_CLASSES, DOT_PIXELS, OUTER_CLASSES, OUTER_PIXELS,
                                                VECTOR_BYTES, address_of, dot_block, dot_block_aligned,
                                                outer_block)


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
def _dot(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs):
    if n0 >= 0:
        dot_block_aligned(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs)
    else:
        dot_block(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs)


def _at_line_offset(rng, n, dtype, lanes):
    """A random array of n elements whose element 0 sits ``lanes`` elements
    past a 64-byte boundary."""
    size = np.dtype(dtype).itemsize
    raw = np.empty(n + 2 * 64 // size, dtype)
    s = (-raw.ctypes.data % 64) // size + lanes
    a = raw[s:s + n]
    a[:] = rng.standard_normal(n)
    assert a.ctypes.data % 64 == lanes * size
    return a


def _check_dot(rng, dtype, N, ncls, n0):
    """One block at class c0 = 2 of 7, pixels from f0 = 3 rows in, against
    float64; with ``n0 >= 0`` W and f are placed so that element n0 of
    every row starts a 64-byte line (the aligned kernel)."""
    C, c0, zo, zs = 7, 2, 2, DOT_PIXELS + 7
    lanes = 64 // np.dtype(dtype).itemsize
    f0 = 3 * N if n0 >= 0 else 3
    w0 = 5 if n0 < 0 else 0
    off = (lanes - n0) % lanes if n0 >= 0 else 0
    W = _at_line_offset(rng, w0 + C * N, dtype, off)
    f = _at_line_offset(rng, f0 + DOT_PIXELS * N + 2, dtype, off)
    b = rng.standard_normal(C).astype(dtype)
    z = rng.standard_normal(DOT_CLASSES * zs + zo + 3).astype(dtype)
    z0 = z.copy()
    _dot(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs)

    want = z0.astype(np.float64)
    W64, f64 = W[w0:].astype(np.float64).reshape(C, N), f.astype(np.float64)
    for i in range(ncls):
        for p in range(DOT_PIXELS):
            want[zo + i * zs + p] = b[c0 + i] + W64[c0 + i] @ f64[f0 + p * N:f0 + (p + 1) * N]
    scale = (np.abs(W64).max() * np.abs(f64).max() * N if N else 0.0) + np.abs(b).max()
    # Entries past ncls and between the rows are left exactly as they were.
    np.testing.assert_allclose(z, want, rtol=0, atol=4 * (N + 2) * np.finfo(dtype).eps * scale)
    untouched = np.ones(z.shape, bool)
    for i in range(ncls):
        untouched[zo + i * zs:zo + i * zs + DOT_PIXELS] = False
    np.testing.assert_array_equal(z[untouched], z0[untouched])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [0, 1, 5, 8, 16, 17, 259])
@pytest.mark.parametrize("ncls", [1, 3, DOT_CLASSES])
def test_dot_block_matches_float64_product(rng, dtype, N, ncls):
    _check_dot(rng, dtype, N, ncls, -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("n0", [0, 1, 3, 7])
@pytest.mark.parametrize("ncls", [1, 3, DOT_CLASSES])
def test_dot_block_aligned_matches_float64_product(rng, dtype, rows, n0, ncls):
    """N = rows whole vectors, the rows' aligned element anywhere in a
    vector (64 bytes with AVX-512, 32 with AVX2)."""
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    _check_dot(rng, dtype, rows * lanes, ncls, n0 % lanes)


def test_address_of_is_the_data_pointer():
    a = np.arange(10.0)
    assert _address(a, 3) == a.ctypes.data + 3 * a.itemsize


@njit(cache=True)
def _address(a, i):
    return address_of(a, i)
