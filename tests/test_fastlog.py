"""The vectorizable float64 log against np.log over the whole float range."""

import numpy as np

from fastlogits.cpu.fastlog import log_array


def test_log_whole_range(rng):
    fi = np.finfo(np.float64)
    x = np.concatenate([
        np.exp(rng.uniform(-745.0, 709.7, 300_000)),  # every binade, subnormals included
        rng.uniform(1.0, 1000.0, 200_000),  # the kernels' exp-sums: s in [1, C]
        rng.uniform(0.5, 2.0, 100_000),  # around the sqrt(2) split and log(1) = 0
        np.nextafter(np.sqrt(2.0), [0.0, 3.0]),
        [fi.tiny, fi.max, fi.smallest_subnormal, 1.0, 2.0, 0.5, np.e],
    ])
    got = np.empty_like(x)
    log_array(x, got)
    want = np.log(x)
    nonzero = want != 0
    ulps = np.abs(got[nonzero] - want[nonzero]) / np.spacing(np.abs(want[nonzero]))
    assert ulps.max() <= 1
    assert got[x == 1.0][0] == 0.0


def test_log_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -1e-300])
    got = np.empty_like(x)
    log_array(x, got)
    assert got[0] == -np.inf and got[1] == -np.inf and got[2] == np.inf
    assert np.isnan(got[3:]).all()
