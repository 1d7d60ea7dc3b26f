"""The channels-last transpose (vector gathers) against NumPy's."""

import numpy as np
import pytest

from fastlogits.cpu.tiles import load_transposed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("C,P,r0", [(19, 256, 0), (19, 37, 100), (3, 16, 5), (150, 33, 7),
                                    (1, 17, 0)])
def test_load_transposed(rng, dtype, contiguous, C, P, r0):
    rows = r0 + P + 3
    x2 = rng.standard_normal((rows, C)).astype(dtype)
    if not contiguous:  # every other class of a wider array: a strided view
        x2 = rng.standard_normal((rows, 2 * C)).astype(dtype)[:, ::2]
    tile = P + 5  # the scratch is wider than the P pixels copied
    buf = np.full((1, C, tile), np.nan, dtype)
    load_transposed(x2, r0, P, buf)
    np.testing.assert_array_equal(buf[0, :, :P], x2[r0:r0 + P].T)
    assert np.isnan(buf[0, :, P:]).all()
