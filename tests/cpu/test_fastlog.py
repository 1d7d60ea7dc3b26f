"""The vectorizable float64 and float32 logs against np.log over the whole float range."""

import numpy as np
import pytest

from fastlogits.cpu.llvm.fastlog import log_array


def ulps(got, x):
    """|got - log(x)| in ulps of the result's dtype, against the float64 log
    (for float64 input: against np.log itself), where log(x) != 0."""
    want = np.log(x.astype(np.float64))
    nonzero = want != 0
    spacing = np.spacing(np.abs(want[nonzero]).astype(x.dtype)).astype(np.float64)
    return np.abs(got[nonzero].astype(np.float64) - want[nonzero]) / spacing


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_whole_range(rng, dtype):
    fi = np.finfo(dtype)
    lo, hi = np.log(float(fi.smallest_subnormal)), np.log(float(fi.max))
    x = np.concatenate([
        np.exp(rng.uniform(lo, hi, 300_000)),  # every binade, subnormals included
        rng.uniform(1.0, 1000.0, 200_000),  # the kernels' exp-sums: s in [1, C]
        rng.uniform(0.5, 2.0, 100_000),  # around the sqrt(2) split and log(1) = 0
    ]).astype(dtype)
    x = np.concatenate([
        x[(x > 0) & np.isfinite(x)],
        np.nextafter(dtype(np.sqrt(0.5)), [dtype(0), dtype(1)]),
        np.nextafter(dtype(np.sqrt(2.0)), [dtype(0), dtype(3)]),
        np.array([fi.tiny, fi.max, fi.smallest_subnormal, 1.0, 2.0, 0.5, np.e], dtype),
    ])
    if dtype == np.float32:  # every float32 in [0.5, 2), the reduction's range
        x = np.concatenate([x, np.arange(0x3F000000, 0x40000000, 3, np.int32).view(dtype)])
    got = np.empty_like(x)
    log_array(x, got)
    # float64: within 1 ulp of np.log; float32: within 1 ulp of the exact log
    assert ulps(got, x).max() <= 1
    assert got[x == 1.0][0] == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -1e-30], dtype)
    got = np.empty_like(x)
    log_array(x, got)
    assert got[0] == -np.inf and got[1] == -np.inf and got[2] == np.inf
    assert np.isnan(got[3:]).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log1p_keeps_relative_precision(rng, dtype):
    """flog1p (the kernels' log s from s - 1): within 3 ulp of log1p from
    the smallest subnormal up, 0 at 0, inf at inf, NaN at NaN."""
    from fastlogits.cpu.llvm.fastlog import log1p_array

    fi = np.finfo(dtype)
    x = np.concatenate([
        np.exp(rng.uniform(np.log(float(fi.smallest_subnormal)), np.log(float(fi.max)), 200_000)),
        rng.uniform(0.0, 2.0, 100_000),
        rng.uniform(0.0, 1e-6, 100_000),
    ]).astype(dtype)
    x = x[np.isfinite(x)]
    got = np.empty_like(x)
    log1p_array(x, got)
    want = np.log1p(x.astype(np.float64))
    nonzero = want != 0
    spacing = np.spacing(np.abs(want[nonzero]).astype(dtype)).astype(np.float64)
    assert (np.abs(got[nonzero].astype(np.float64) - want[nonzero]) / spacing).max() <= 3
    special = np.array([0.0, np.inf, np.nan, fi.max], dtype)
    got = np.empty_like(special)
    log1p_array(special, got)
    assert got[0] == 0 and got[1] == np.inf and np.isnan(got[2]) and np.isfinite(got[3])
