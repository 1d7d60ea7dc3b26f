"""The channels-last transposes (vector gathers in, scatters out) against
NumPy's."""

import numpy as np
import pytest

from fastlogits.cpu.tiles import load_transposed, store_transposed


CASES = [(19, 256, 0), (19, 37, 100), (3, 16, 5), (150, 33, 7), (1, 17, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("C,P,r0", CASES)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("C,P,r0", CASES)
def test_store_transposed(rng, dtype, contiguous, C, P, r0):
    rows = r0 + P + 3
    tile = P + 5
    buf = rng.standard_normal((1, C, tile)).astype(dtype)
    if contiguous:
        base = np.full((rows, C), np.nan, dtype)
        out2 = base
    else:  # every other class of a wider array: a strided view
        base = np.full((rows, 2 * C), np.nan, dtype)
        out2 = base[:, ::2]
    store_transposed(buf, P, out2, r0)
    np.testing.assert_array_equal(out2[r0:r0 + P], buf[0, :, :P].T)
    # Nothing else written: rows outside the tile, and the gaps of a view.
    written = np.zeros(base.shape, bool)
    written[r0:r0 + P, ::(1 if contiguous else 2)] = True
    assert np.isnan(base[~written]).all()
