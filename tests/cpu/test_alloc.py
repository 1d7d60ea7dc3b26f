"""Arrays allocated inside kernels (``fastlogits.cpu.llvm.alloc``, and
``scores.scratch`` on top of it): the arrays np.empty / np.zeros would
give, errors for bad sizes, and no leak."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.llvm.alloc import empty, zeros
from fastlogits.cpu.llvm.scores import scratch
from tests.helpers import run_python


@njit
def _empty_1d(n):
    return empty(n, np.int32)


@njit
def _zeros_3d(a, b, c):
    return zeros((a, b, c), np.float64)


@njit
def _scratch_of(n, x):
    return scratch(n, x)


@njit
def _scratch_2d(a, b, x):
    return scratch((a, b), x)


def test_empty_and_zeros_are_numpys_arrays():
    a = _empty_1d(7)
    assert a.shape == (7,) and a.dtype == np.int32 and a.flags.c_contiguous
    z = _zeros_3d(2, 3, 5)
    assert z.shape == (2, 3, 5) and z.dtype == np.float64 and z.strides == (120, 40, 8)
    assert not z.any()
    assert _zeros_3d(0, 3, 5).shape == (0, 3, 5)
    assert z.ctypes.data % np.dtype(np.float64).alignment == 0


@pytest.mark.parametrize("dtype, computed", [
    (np.float32, np.float32), (np.float64, np.float64),
    (np.uint16, np.float32), (np.int16, np.float32)])
def test_scratch_is_in_the_type_scores_are_computed_in(dtype, computed):
    """float16 bits (uint16) and bfloat16 bits (int16) are computed in
    float32: their scratch is float32; a float array's is its own dtype."""
    x = np.ones((2, 3), dtype)
    s = _scratch_of(11, x)
    assert s.shape == (11,) and s.dtype == computed and s.flags.c_contiguous
    s2 = _scratch_2d(4, 6, x)
    assert s2.shape == (4, 6) and s2.dtype == computed and s2.strides[1] == s2.itemsize


def test_scratch_refuses_what_is_not_scores():
    with pytest.raises(Exception, match="scratch"):
        _scratch_of(3, np.ones(3, np.int64))


@pytest.mark.parametrize("bad", [-1, 2 ** 62])
def test_bad_sizes_raise_as_numpy_does(bad):
    """A negative size, or one whose bytes overflow, raises ValueError
    (np.empty's error), never a small allocation."""
    with pytest.raises(ValueError, match="negative dimensions or array too big"):
        _empty_1d(bad)
    with pytest.raises(ValueError, match="negative dimensions or array too big"):
        _zeros_3d(2, bad, 3)
    with pytest.raises(ValueError, match="negative dimensions or array too big"):
        _scratch_of(bad, np.ones(3, np.float32))


_LEAK_CHECK = """
import numpy as np
from numba.core.runtime import rtsys
from tests.cpu.test_alloc import _empty_1d, _scratch_of, _zeros_3d

x = np.ones(4, np.float32)
_empty_1d(3), _zeros_3d(1, 2, 3), _scratch_of(3, x)  # compiled before counting
before = rtsys.get_allocation_stats()
for _ in range(20_000):
    _empty_1d(3)
    _zeros_3d(1, 2, 3)
    _scratch_of(3, x)
after = rtsys.get_allocation_stats()
allocated = after.alloc - before.alloc
assert allocated >= 60_000, allocated
assert after.free - before.free == allocated, (before, after)
assert after.mi_free - before.mi_free == after.mi_alloc - before.mi_alloc, (before, after)
print("ok")
"""


def test_no_leak():
    """The arrays are freed by reference count: as many frees as
    allocations over many calls (Numba counts them with NUMBA_NRT_STATS
    set before it starts: in a child process)."""
    out = run_python(_LEAK_CHECK, NUMBA_NRT_STATS="1")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
