"""The tiles' vector exponentials of a run of pixels (fastlogits.cpu.llvm.runexp)
against float64 NumPy: every run length around the vector widths, runs
starting anywhere, the store on and off, strided arrays by the fallback."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.llvm.runexp import tile_exp_add, vexp_add

#: Relative error bound per unit of ``2 |t| + 4`` (float32: the exp2
#: form's on AVX-512, tests/cpu/test_fastexp.py; the polynomial form meets it
#: too), and float64's few ulp.
UNIT = {np.float32: 2.0**-24, np.float64: 2.0**-52}


def assert_exp_close(got, want, t, dtype, plus=None):
    """|got - want| within the exp's bound (and, for a sum ``plus + e``,
    one rounding of the sum more)."""
    t = t.astype(np.float64)
    fin = np.isfinite(t)  # exp(-inf) must be 0 exactly
    bound = np.where(fin, UNIT[dtype] * (2 * np.abs(np.where(fin, t, 0)) + 4) * want, 0.0)
    if plus is not None:
        want = want + plus
        bound = bound + np.finfo(dtype).eps * want
    assert (np.abs(got - want) <= bound).all()


@njit
def _run(x, xo, m, inv_t, part, h, n, out, oo, store, exact=True):
    vexp_add(x, xo, m, inv_t, part, h, n, out, oo, store, exact)


@njit
def _tile(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
    tile_exp_add(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 33, 100])
def test_vexp_add_matches_numpy(rng, dtype, n):
    for xo, oo in ((0, 0), (3, 5), (13, 1)):
        x = (4 * rng.standard_normal(n + xo + 3)).astype(dtype)
        m = (x[xo:xo + n] + rng.uniform(0, 30, n)).astype(dtype)  # shifted scores <= 0
        m[::5] = x[xo:xo + n][::5]  # exactly 0: exp 1
        x[xo:xo + n][2::9] = -np.inf  # exp 0
        part0 = rng.uniform(0, 2, n).astype(dtype)
        # The shifted scores as the kernel forms them, in x's precision;
        # then the exponential exactly.
        t = (x[xo:xo + n] - m) * dtype(0.7)
        want = np.exp(t.astype(np.float64))
        for store, exact in ((False, True), (True, True), (False, False), (True, False)):
            part = np.concatenate([part0, [-3.0] * 2, part0]).astype(dtype)
            out = np.full(n + oo + 4, -7.0, dtype)
            _run(x, xo, m, dtype(0.7), part, n + 2, n, out, oo, store, exact)
            assert_exp_close(part[:n], want, t, dtype, plus=part0)
            if exact:  # the sum of the terms other than exactly 1 (the max's, t = 0)
                assert_exp_close(part[n + 2:], np.where(t == 0, 0.0, want), t, dtype,
                                 plus=part0)
            else:  # untouched (softmax, classify)
                assert (part[n + 2:] == part0).all()
            assert (part[n:n + 2] == -3).all()
            if store:
                assert_exp_close(out[oo:oo + n], want, t, dtype)
                assert (out[:oo] == -7).all() and (out[oo + n:] == -7).all()
            else:
                assert (out == -7).all()


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("exact", [True, False])
def test_tile_exp_add_both_layouts(rng, contiguous, exact):
    """C-contiguous tiles by the intrinsic, strided ones by the loop: the
    same results, into the right place of a (E, C, T) tile."""
    x = rng.standard_normal((2, 5, 40)).astype(np.float32)
    if not contiguous:
        x = np.repeat(x, 2, axis=2)[:, :, ::2]
        assert not x.flags.c_contiguous
    o, c, i0, P = 1, 3, 7, 29
    m = (x[o, c, i0:i0 + P] + 1).astype(np.float32)
    m[::4] = x[o, c, i0:i0 + P][::4]  # exp 1
    part = np.zeros(2 * P, np.float32)
    et = np.full((3, 5, 50), -7.0, np.float32)
    _tile(x, o, c, i0, m, np.float32(1.0), part, P, P, et, 2, 11, True, exact)
    t = x[o, c, i0:i0 + P] - m
    want = np.exp(t.astype(np.float64))
    assert_exp_close(part[:P], want, t, np.float32, plus=np.zeros(P))
    if exact:
        assert_exp_close(part[P:], np.where(t == 0, 0.0, want), t, np.float32, plus=np.zeros(P))
    else:
        assert (part[P:] == 0).all()
    assert_exp_close(et[2, 3, 11:11 + P], want, t, np.float32)
    et[2, 3, 11:11 + P] = -7.0
    assert (et == -7).all()


def test_vexp_add_types_only_contiguous_floats():
    a = np.ones(64, np.float32)
    with pytest.raises(Exception):
        _run(a[::2], 0, a, 1.0, a, 8, 4, a, 0, False)
    with pytest.raises(Exception):
        _run(a, 0, np.ones(64), 1.0, a, 8, 4, a, 0, False)  # mixed dtypes
