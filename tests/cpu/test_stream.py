"""Non-temporal stores (fastlogits.cpu.llvm.stream) on their own: every line
offset of the destination, runs shorter than a line, longer than many,
both dtypes; nothing outside the run written."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.llvm.stream import stream_affine, stream_copy, stream_fence


@njit
def _copy(src, s0, dst, d0, n):
    stream_copy(src, s0, dst, d0, n)
    stream_fence()


@njit
def _affine(src, s0, dst, d0, n, shift, scale, offset):
    stream_affine(src, s0, dst, d0, n, shift, scale, offset)
    stream_fence()


def _line_aligned(n, dtype, offset):
    """n elements of ``dtype`` starting ``offset`` elements past a 64-byte line."""
    size = np.dtype(dtype).itemsize
    buf = np.empty(n + 64 // size + offset + 1, dtype)
    first = (-buf.ctypes.data % 64) // size
    return buf[first + offset:first + offset + n]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 5, 15, 16, 17, 31, 64, 100, 1000])
def test_stream_copy_at_every_line_offset(rng, dtype, n):
    per_line = 64 // np.dtype(dtype).itemsize
    src = rng.standard_normal(n + 7).astype(dtype)
    for offset in range(per_line):
        dst = _line_aligned(n + 6, dtype, offset)
        dst[:] = -7.0
        _copy(src, 5, dst, 3, n)
        np.testing.assert_array_equal(dst[3:3 + n], src[5:5 + n])
        assert (dst[:3] == -7).all() and (dst[3 + n:] == -7).all()


def test_stream_copy_types_only_contiguous_floats():
    a = np.ones(64, np.float32)
    with pytest.raises(Exception):
        _copy(a[::2], 0, a, 0, 4)
    with pytest.raises(Exception):
        _copy(np.ones(8, np.int32), 0, np.ones(8, np.int32), 0, 4)
    with pytest.raises(Exception):
        _copy(a, 0, np.ones(8), 0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 1000])
def test_stream_affine_at_every_line_offset(rng, dtype, n):
    """``(src - shift) * scale - offset`` as x's dtype computes it, NaN and
    infinities carried through; nothing outside the run written."""
    per_line = 64 // np.dtype(dtype).itemsize
    src = (3 * rng.standard_normal(n + 7)).astype(dtype)
    src[5::7] = np.nan
    src[6::11] = np.inf
    shift, scale, offset = dtype(1.25), dtype(0.7), dtype(-0.375)
    want = (src[5:5 + n] - shift) * scale - offset
    for off in range(per_line):
        dst = _line_aligned(n + 6, dtype, off)
        dst[:] = -7.0
        _affine(src, 5, dst, 3, n, shift, scale, offset)
        np.testing.assert_allclose(dst[3:3 + n], want, rtol=4 * np.finfo(dtype).eps)
        assert (dst[:3] == -7).all() and (dst[3 + n:] == -7).all()
