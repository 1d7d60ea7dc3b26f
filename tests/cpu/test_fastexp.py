"""The vectorizable exp against np.exp over the whole float range."""

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastlogits.cpu.llvm.fastexp import exp_array, exp_shifted_array, exp_shifted_ir
from fastlogits.cpu.llvm.irutil import vptr


def _ulps(got, want, dtype):
    fi = np.finfo(dtype)
    normal = np.isfinite(want) & (np.abs(want) >= fi.tiny)
    g = got[normal].astype(np.float64)
    w = want[normal].astype(np.float64)
    return np.abs(g - w) / np.spacing(want[normal]).astype(np.float64)


def _inputs(rng, dtype):
    lo, hi = (-110.0, 90.0) if dtype == np.float32 else (-750.0, 712.0)
    return np.concatenate([
        rng.uniform(lo, hi, 200_000), rng.uniform(-1, 1, 100_000),
        np.linspace(lo, hi, 100_001),
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72, 88.73, -87.33, -103.9, -104.0,
         709.78, 709.79, -745.1, -745.2, -746.0, 1e-30, -1e-30],
    ]).astype(dtype)


@pytest.mark.parametrize("dtype,max_ulp", [(np.float32, 3), (np.float64, 2)])
def test_exp_whole_range(rng, dtype, max_ulp):
    x = _inputs(rng, dtype)
    got = np.empty_like(x)
    exp_array(x, got)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    assert _ulps(got, want, dtype).max() <= max_ulp
    # Subnormal results (gradual underflow) within one or two subnormal steps.
    fi = np.finfo(dtype)
    sub = np.isfinite(want) & (want < fi.tiny)
    assert (np.abs(got[sub].astype(np.float64) - want[sub]) <= 2 * fi.smallest_subnormal).all()
    assert (got[x == -np.inf] == 0).all() and (got[np.isnan(x)] != got[np.isnan(x)]).all()


@pytest.mark.parametrize("dtype,max_ulp", [(np.float32, 3), (np.float64, 2)])
def test_exp_shifted(rng, dtype, max_ulp):
    """The kernels' exp for t = (x - max) / T <= 0: subnormals flush to 0."""
    lo = -110.0 if dtype == np.float32 else -750.0
    t = np.concatenate([rng.uniform(lo, 0, 300_000), np.linspace(lo, 0, 100_001),
                        [-np.inf, 0.0, -0.0]]).astype(dtype)
    got = np.empty_like(t)
    exp_shifted_array(t, got)
    want = np.exp(t.astype(np.float64)).astype(dtype)
    fi = np.finfo(dtype)
    normal = want >= fi.tiny
    assert _ulps(got[normal], want[normal], dtype).max() <= max_ulp
    assert (got[~normal] == 0).all()
    assert got[t == -np.inf][0] == 0 and got[t == 0][0] == 1


@intrinsic
def _exp_shifted16(typingctx, t, out, i):
    """``out[i:i + 16] = exp(t[i:i + 16])`` by :func:`exp_shifted_ir` on a
    16-lane float32 vector: the form the register blocks and row kernels
    use (the exp2 form on AVX-512 targets)."""
    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.FloatType(), 16)
        src = context.make_array(sig.args[0])(context, builder, args[0]).data
        dst = context.make_array(sig.args[1])(context, builder, args[1]).data
        v = builder.load(vptr(builder, src, args[2], vec), align=4)
        builder.store(exp_shifted_ir(builder, v), vptr(builder, dst, args[2], vec), align=4)
        return context.get_dummy_value()

    return types.none(t, out, i), codegen


@njit
def _exp_shifted_vectors(t, out):
    for i in range(0, t.size - t.size % 16, 16):
        _exp_shifted16(t, out, i)


def test_exp_shifted_vectors(rng):
    """The vector exp of the kernels' sums, float32: within 2**-24 (2 |t| +
    4) exp(t) of exp(t), relative (the exp2 form's bound on AVX-512, see
    fastexp._exp2_shifted_ir; the Cody-Waite form meets it too), so within
    2.4e-7 absolutely; subnormal results within the same bound and a
    subnormal step (or 0, flushed); -inf gives 0, 0 gives 1."""
    t = np.concatenate([rng.uniform(-110, 0, 300_000), np.linspace(-110, 0, 100_000),
                        rng.uniform(-1, 0, 100_000), [-np.inf, 0.0, -0.0, -87.33, -87.34, -103.9,
                                                      -104.0, -150.0, -1e-30, -1e-7]])
    t = np.concatenate([t, np.zeros(-len(t) % 16)]).astype(np.float32)
    got = np.empty_like(t)
    _exp_shifted_vectors(t, got)
    want = np.exp(t.astype(np.float64))
    fi = np.finfo(np.float32)
    normal = want >= fi.tiny
    fin = np.isfinite(t)
    bound = np.zeros_like(want)
    bound[fin] = 2.0**-24 * (2 * np.abs(t[fin].astype(np.float64)) + 4) * want[fin]
    assert (np.abs(got[normal] - want[normal]) <= bound[normal]).all()
    sub = ~normal
    assert ((np.abs(got[sub] - want[sub]) <= bound[sub] + fi.smallest_subnormal)
            | (got[sub] == 0)).all()
    assert got[t == -np.inf][0] == 0 and (got[t == 0] == 1).all()
