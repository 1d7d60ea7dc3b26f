"""Vectorizable ``log`` for float64 and float32: the per-pixel log of the exp-sum.

logsumexp, log_softmax and the cross-entropy take one log per pixel.
``math.log`` is a scalar libm call (Numba ships no vector math library), and
measured ~7 ns per call here: at 2 M pixels that is more than the whole
exp-sum of a 19-class map. This one is plain arithmetic plus bit casts, so
the per-pixel loops that call it vectorize.

:func:`log64` (float64), method as fdlibm's ``log``: ``x = 2**k * m`` with ``m`` in
``[sqrt(1/2), sqrt(2))``, ``f = m - 1`` (exact), ``s = f / (2 + f)`` and
``log(1 + f) = f - f**2/2 + s * (f**2/2 + R(s**2))`` where ``R`` is the
atanh series ``2 z/3 + 2 z**2/5 + ...`` to degree 10 in ``z = s**2 <=
0.0295`` (truncation < 1e-17 relative); ``k ln 2`` is added with ln 2
split in two parts. Max error measured: 1 ulp.

Special values through selects (the loop stays branch-free): ``log(0) =
-inf``, ``log(inf) = inf``, NaN for NaN and negative input; subnormal input
is scaled by ``2**54`` first.

:func:`log32` (float32, :func:`log32_ir`) has no division and runs twice
the lanes; :func:`flog` picks one by the argument's type, and the kernels
take the log in x's precision.

Both are compiled without ``reassoc`` (``EXP_FASTMATH``): the fdlibm formula relies on
its evaluation order. ``error_model="numpy"``: the default Python model
checks the division for zero and that branch keeps the loop scalar.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.fastexp import (EXP_FASTMATH, _float64_as_int64, _int64_as_float64,
                                         by_precision)
from fastlogits.cpu.llvm.irutil import fmuladd, vector_of

_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * hi is exact
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
_TINY = 2.2250738585072014e-308  # DBL_MIN: below it, scale the subnormal up
_TWO54 = 18014398509481984.0
_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
_ONE_BITS = np.int64(0x3FF0000000000000)


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def log64(x):
    """``log`` of a float64, vectorizable, max error 1 ulp."""
    sub = x < _TINY
    xs = x * _TWO54 if sub else x
    bits = _float64_as_int64(xs)
    k = ((bits >> 52) & 0x7FF) - (1023 + 54 if sub else 1023)
    m = _int64_as_float64((bits & _MANTISSA) | _ONE_BITS)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = k + 1 if big else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = 2.0 / 21.0
    r = r * z + 2.0 / 19.0
    r = r * z + 2.0 / 17.0
    r = r * z + 2.0 / 15.0
    r = r * z + 2.0 / 13.0
    r = r * z + 2.0 / 11.0
    r = r * z + 2.0 / 9.0
    r = r * z + 2.0 / 7.0
    r = r * z + 2.0 / 5.0
    r = r * z + 2.0 / 3.0
    R = r * z
    hfsq = 0.5 * f * f
    dk = np.float64(k)
    y = dk * _LN2_HI - ((hfsq - (s * (hfsq + R) + dk * _LN2_LO)) - f)
    y = np.inf if x == np.inf else y
    y = -np.inf if x == 0.0 else y
    return y if x >= 0.0 else np.nan


_F32 = np.float32

#: ``log(1 + f) = f - f**2 / 2 + f**3 P(f)`` on ``f`` in ``[sqrt(1/2) - 1,
#: sqrt(2) - 1]``: P of degree 7, highest degree first, fitted here by
#: Lawson-weighted least squares on Chebyshev nodes for the relative error
#: of log(1 + f) (max 7e-9, an eighth of a float32 ulp).
_LOG1P32 = (-0.07859611510898515, 0.12881647494799084, -0.1312875480057776,
            0.14181191937843096, -0.16624554043651163, 0.200022862749543,
            -0.2500081040514606, 0.3333331672581692)
_SQRT_HALF_BITS32 = 0x3F3504F3  # float32 sqrt(1/2), rounded down
_LN2_HI32 = 0.693145751953125  # 12 significant bits: k * hi is exact
_LN2_LO32 = 1.428606765330187e-06
_TINY32 = float(np.finfo(np.float32).tiny)


def log32_ir(builder, x):
    """IR of ``log(x)`` for a float32 ``x``, scalar or vector: 16 lanes per
    AVX-512 register and no division, where :func:`log64` runs 8 lanes and
    one ``vdivpd``. Max error 1 ulp (tests/cpu/test_fastlog.py).

    Method: ``x = 2**k * m`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` taken
    from the bits in one step: subtracting the bits of sqrt(1/2) makes the
    exponent field (shifted arithmetically) ``k`` and puts the mantissa of
    ``m``, less sqrt(1/2)'s, in the low bits, to which sqrt(1/2)'s bits are
    added back. Then ``f = m - 1`` (exact) and :data:`_LOG1P32`, with ``k
    ln 2`` in two parts added last as fdlibm does. Subnormals are scaled by
    2**23 first; ``log(0) = -inf``, ``log(inf) = inf``, NaN for NaN and
    negative input, all through selects.

    Numba puts the calling function's fast-math flags on these
    instructions too, and ``reassoc`` reorders the last sums (measured: 2.2
    ulp), so it is called through :func:`log32`, compiled without it.
    """
    ty = x.type
    ity = ir.IntType(32)
    if isinstance(ty, ir.VectorType):
        ity = ir.VectorType(ity, ty.count)

    def c(v):
        return vector_of(ty, float(_F32(v)))

    def ci(v):
        return vector_of(ity, v) if isinstance(ity, ir.VectorType) else ir.Constant(ity, v)

    sub = builder.fcmp_ordered("<", x, c(_TINY32))
    xs = builder.select(sub, builder.fmul(x, c(2.0 ** 23)), x)
    ix = builder.sub(builder.bitcast(xs, ity), ci(_SQRT_HALF_BITS32))
    k = builder.sub(builder.ashr(ix, ci(23)), builder.select(sub, ci(23), ci(0)))
    m = builder.bitcast(builder.add(builder.and_(ix, ci(0x7FFFFF)), ci(_SQRT_HALF_BITS32)), ty)
    f = builder.fsub(m, c(1.0))
    z = builder.fmul(f, f)
    p = c(_LOG1P32[0])
    for coef in _LOG1P32[1:]:
        p = fmuladd(builder, p, f, c(coef))
    dk = builder.sitofp(k, ty)
    hfsq = builder.fmul(z, c(0.5))
    # k ln2_hi - ((hfsq - (f**3 P + k ln2_lo)) - f): the small terms first.
    t = fmuladd(builder, builder.fmul(f, z), p, builder.fmul(dk, c(_LN2_LO32)))
    y = builder.fsub(builder.fsub(hfsq, t), f)
    y = builder.fsub(builder.fmul(dk, c(_LN2_HI32)), y)
    y = builder.select(builder.fcmp_ordered("==", x, c(np.inf)), c(np.inf), y)
    y = builder.select(builder.fcmp_ordered("==", x, c(0.0)), c(-np.inf), y)
    # "uge": true for x >= 0 and for NaN (unordered), whose bits give garbage.
    return builder.select(builder.fcmp_unordered(">=", x, c(0.0)),
                          builder.select(builder.fcmp_unordered("!=", x, x), x, y), c(np.nan))


@intrinsic
def _log32(typingctx, x):
    """:func:`log32_ir` for a scalar float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return log32_ir(builder, args[0])

    return types.float32(x), codegen


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def log32(x):
    """``log`` of a float32, vectorizable, max error 1 ulp (:func:`log32_ir`)."""
    return _log32(x)


flog = by_precision("flog", log32, log64)


def log1p32_ir(builder, x):
    """IR of ``log1p(x)`` for a float32 ``x >= 0``, scalar or vector
    (:func:`log1p_ir`): the fused loss's ``log s`` from the sum of the
    non-maximal terms."""
    return log1p_ir(builder, x, lambda u: log32_ir(builder, u))


def log1p_ir(builder, x, log_ir):
    """IR of ``log1p(x)`` from a log (``log_ir(u)``) for ``x >= 0``, by the
    classic ``u = 1 + x``, ``log(u) * x / (u - 1)`` (``x`` where u == 1):
    the division corrects the rounding of ``1 + x``, so the result keeps
    ``x``'s relative precision (a few ulp, tests/cpu/test_fastlog.py) for the
    price of one division per pixel. ``+inf`` gives ``+inf``, NaN NaN.
    Must not be compiled with ``reassoc``, which folds ``(1 + x) - 1`` to
    ``x``."""
    ty = x.type
    one = vector_of(ty, 1.0)
    u = builder.fadd(x, one)
    d = builder.fsub(u, one)
    y = builder.fmul(log_ir(u), builder.fdiv(x, d))
    y = builder.select(builder.fcmp_ordered("==", x, vector_of(ty, np.inf)), x, y)
    return builder.select(builder.fcmp_ordered("==", u, one), x, y)


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def log1p64(x):
    """``log1p`` of a float64 ``x >= 0`` (:func:`log1p_ir`'s method), vectorizable."""
    u = x + 1.0
    y = log64(u) * (x / (u - 1.0))
    y = x if x == np.inf else y
    return x if u == 1.0 else y


@intrinsic
def _log1p32(typingctx, x):
    """:func:`log1p32_ir` for a scalar float32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return log1p32_ir(builder, args[0])

    return types.float32(x), codegen


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def log1p32(x):
    """``log1p`` of a float32 ``x >= 0`` (:func:`log1p32_ir`), vectorizable."""
    return _log1p32(x)


#: ``log s`` of the kernels' exp-sums from ``s - 1`` (the sum of the
#: non-maximal terms, :func:`fastlogits.cpu.blocks.tiles.rest`), in x's precision.
flog1p = by_precision("flog1p", log1p32, log1p64)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def log_array(x, out):
    """Apply :func:`flog` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = flog(x[i])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def log1p_array(x, out):
    """Apply :func:`flog1p` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = flog1p(x[i])
