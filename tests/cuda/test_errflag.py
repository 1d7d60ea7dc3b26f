"""The error-flag machinery (fastlogits.cuda.host.errflag and its device
side, fastlogits.cuda.kernels.errflag) with a tiny kernel: data-dependent
errors found on the GPU become a ValueError on the host,
naming the first offending index, however the threads interleave."""

import numpy as np
import pytest
from numba import cuda

from fastlogits.cuda import runtime
from fastlogits.cuda.host.errflag import ErrorFlag
from fastlogits.cuda.kernels.errflag import raise_flag

MESSAGES = {
    1: "values holds a negative number at index {index} (size {n})",
    2: "values holds a number >= {limit} at index {index}",
}


@cuda.jit
def _check_values(values, limit, flag):
    # Grid-stride over values; a bad item is flagged and skipped, never used.
    for i in range(cuda.grid(1), values.shape[0], cuda.gridsize(1)):
        v = values[i]
        if v < 0:
            raise_flag(flag, 1, i)
        elif v >= limit:
            raise_flag(flag, 2, i)


def _run(values, limit=100):
    stream = runtime.Caller(np.empty(0)).stream
    flag = ErrorFlag(stream)
    d = cuda.to_device(values, stream=stream)
    _check_values[2, 32, stream](d, limit, flag.array)
    return flag


def test_clean_data_passes():
    flag = _run(np.arange(150, dtype=np.int64) % 100)
    flag.check(MESSAGES, n=150, limit=100)
    assert flag.read() == (0, None)


def test_first_bad_index_is_reported():
    v = np.arange(150, dtype=np.int64) % 100
    v[[137, 71, 90]] = -5
    with pytest.raises(ValueError, match=r"negative number at index 71 \(size 150\)"):
        _run(v).check(MESSAGES, n=150, limit=100)


def test_first_item_and_its_own_code():
    v = np.zeros(100, dtype=np.int64)
    v[60] = -1
    v[10] = 500
    assert _run(v).read() == (2, 10)
    with pytest.raises(ValueError, match="number >= 100 at index 10"):
        _run(v).check(MESSAGES, limit=100)


def test_unknown_code_message():
    v = np.zeros(10, dtype=np.int64)
    v[3] = -1
    with pytest.raises(ValueError, match="error code 1"):
        _run(v).check({})
