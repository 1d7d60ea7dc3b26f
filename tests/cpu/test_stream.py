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


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 100])
def test_stream_bfloat16_bits(rng, n):
    """bfloat16 bits (int16 in the kernels, cpu.llvm.scores): written from
    float32 rounded once to nearest even (NaN kept NaN, quiet), read back
    exactly, at every line offset of the destination (32 two-byte scores
    a line)."""
    from fastlogits import _bfloat16

    src = (3 * rng.standard_normal(n + 7)).astype(np.float32)
    src[5::7] = np.nan
    src[6::11] = -np.inf
    src[3::13] = 1.0 + 2.0 ** -8  # a tie: rounds to even (1.0)
    shift, scale, offset = np.float32(1.25), np.float32(0.7), np.float32(-0.375)
    for off in range(32):
        dst = _line_aligned(n + 6, np.int16, off)
        dst[:] = -7
        _copy(src, 5, dst, 3, n)
        np.testing.assert_array_equal(dst[3:3 + n].view(np.uint16),
                                      _bfloat16.round_bits(src[5:5 + n]))
        assert (dst[:3] == -7).all() and (dst[3 + n:] == -7).all()
        back = _line_aligned(n + 6, np.float32, off % 16)
        _copy(dst, 3, back, 3, n)
        np.testing.assert_array_equal(back[3:3 + n], _bfloat16.widen(dst[3:3 + n].view(np.uint16)))
        _affine(src, 5, dst, 3, n, shift, scale, offset)
        want = (src[5:5 + n] - shift) * scale - offset
        got = _bfloat16.widen(dst[3:3 + n].view(np.uint16))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        fin = np.isfinite(want)
        # half a bfloat16 step (and float32 rounding: the kernel may fuse)
        np.testing.assert_allclose(got[fin], want[fin], rtol=2.0 ** -8 + 2.0 ** -22)
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
        assert (dst[:3] == -7).all() and (dst[3 + n:] == -7).all()
