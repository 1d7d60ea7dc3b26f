"""A vectorizable ``exp`` for float32 and float64.

Numba >= 0.62 ships no SVML, so ``math.exp`` inside a loop is a scalar libm
call (~0.4 G elem/s on this machine's cores), far below memory speed. These
functions are plain arithmetic plus one bit cast, so LLVM inlines them and
vectorizes the calling loop.

Method (Cody-Waite): ``exp(x) = 2**k * exp(r)`` with ``k = round(x / ln 2)``
and ``r = x - k ln 2`` (ln 2 split in a high and a low part so the product
is exact), ``exp(r)`` by a minimax-like Taylor polynomial on
``|r| <= ln(2)/2``, and ``2**k`` built directly in the exponent bits.
``k`` is split in two halves so results in the subnormal range and up to
the overflow threshold stay right without a branch.

Rounding uses ``np.floor`` (an LLVM intrinsic that vectorizes), not the
"add and subtract 1.5 * 2**23" trick: under the ``reassoc`` fast-math flag
LLVM may fold ``(t + M) - M`` to ``t`` and silently break the reduction.
The functions themselves are compiled without ``reassoc`` (see
``EXP_FASTMATH``), and their accuracy is tested inside a kernel compiled
with the full flag set.

Special values: ``exp(nan) = nan``, ``exp(+inf) = inf``, ``exp(-inf) = 0``,
overflow gives ``inf``, underflow gives ``0``; all through selects, so the
loop stays branch-free.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from fastlogits.config import FASTMATH

# No ``reassoc`` here (but everything else of FASTMATH): reassociation could
# evaluate ``p * s1 * s2`` as ``p * (s1 * s2)``, which overflows at the top
# of the range and loses subnormal results at the bottom. These functions
# are separate Numba functions, not Numba-inlined, so their instructions keep
# these flags when LLVM inlines them into a kernel compiled with FASTMATH.
EXP_FASTMATH = FASTMATH - {"reassoc"}


@intrinsic
def _int32_as_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (LLVM bitcast).

    Numba widens int32 arithmetic to int64, so any integer is accepted and
    truncated to its low 32 bits first.
    """
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _int64_as_float64(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (an LLVM bitcast)."""
    if bits not in (types.int64, types.uint64):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _float64_as_int64(typingctx, x):
    """Reinterpret the bits of a float64 as an int64 (an LLVM bitcast)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


_F32 = np.float32
_LOG2E_32 = _F32(1.4426950408889634)
_LN2_HI_32 = _F32(0.693145751953125)  # 12 significant bits: k * hi is exact
_LN2_LO_32 = _F32(1.4286068203094172e-06)
_MAX_32 = _F32(88.72283905206835)  # log(FLT_MAX)
_MIN_32 = _F32(-103.97207708)  # below: rounds to 0 even as a subnormal


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def exp32(x):
    """``exp`` of a float32, vectorizable, max error about 1 ulp."""
    xc = min(max(x, _MIN_32), _MAX_32)
    k = np.floor(xc * _LOG2E_32 + _F32(0.5))
    r = xc - k * _LN2_HI_32
    r = r - k * _LN2_LO_32
    # exp(r) on |r| <= 0.347: Taylor to degree 6 (truncation < 3e-8 rel).
    p = _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    p = p * r + _F32(1.0)
    p = p * r + _F32(1.0)
    # 2**k as two factors so k in [-150, 128] never leaves the exponent range.
    ki = np.int32(k)
    k1 = ki >> 1
    k2 = ki - k1
    s1 = _int32_as_float32((k1 + 127) << 23)
    s2 = _int32_as_float32((k2 + 127) << 23)
    y = p * s1 * s2
    y = np.float32(np.inf) if x > _MAX_32 else y
    y = np.float32(0.0) if x < _MIN_32 else y
    return x if x != x else y


_LOG2E_64 = 1.4426950408889634
_LN2_HI_64 = 0.6931471803691238  # 32 significant bits: k * hi is exact
_LN2_LO_64 = 1.9082149292705877e-10
_MAX_64 = 709.782712893384  # log(DBL_MAX)
_MIN_64 = -745.2  # below: rounds to 0 even as a subnormal


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def _exp_reduced64(r):
    """exp(r) on |r| <= ln(2)/2: Taylor to degree 13 (truncation < 1e-17 rel)."""
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def exp64(x):
    """``exp`` of a float64, vectorizable, max error about 1 ulp."""
    xc = min(max(x, _MIN_64), _MAX_64)
    k = np.floor(xc * _LOG2E_64 + 0.5)
    r = xc - k * _LN2_HI_64
    r = r - k * _LN2_LO_64
    p = _exp_reduced64(r)
    ki = np.int64(k)
    k1 = ki >> np.int64(1)
    k2 = ki - k1
    s1 = _int64_as_float64((k1 + np.int64(1023)) << np.int64(52))
    s2 = _int64_as_float64((k2 + np.int64(1023)) << np.int64(52))
    y = p * s1 * s2
    y = np.inf if x > _MAX_64 else y
    y = 0.0 if x < _MIN_64 else y
    return x if x != x else y


_SHIFT_MIN_32 = _F32(-87.33654)  # log(FLT_MIN): below, the result is subnormal
_SHIFT_MIN_64 = -708.3964185322641  # log(DBL_MIN)


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def exp_shifted32(t):
    """``exp(t)`` for the shifted scores ``t = (x - max) / T <= 0`` (float32).

    Cheaper than :func:`exp32` where the kernels call it: no overflow
    branch (t <= 0), one exponent factor, and a degree-5 polynomial fitted
    for relative error (max 1.7e-7, under 3 ulp). Results that would be
    subnormal (t < log(FLT_MIN) = -87.34, probabilities below 1.2e-38) are
    flushed to 0, exactly 0 for t = -inf. Garbage for t > 0 or NaN: the
    kernels mask the pixels (non-finite max) where that can happen.
    """
    tc = max(t, _SHIFT_MIN_32)
    k = np.floor(tc * _LOG2E_32 + _F32(0.5))
    r = tc - k * _LN2_HI_32
    r = r - k * _LN2_LO_32
    p = _F32(0.008290314642081987)
    p = p * r + _F32(0.04189793026080911)
    p = p * r + _F32(0.16667636201991326)
    p = p * r + _F32(0.49999149523356035)
    p = p * r + _F32(0.9999997071857687)
    p = p * r + _F32(1.0)
    y = p * _int32_as_float32((np.int32(k) + 127) << 23)
    return np.float32(0.0) if t < _SHIFT_MIN_32 else y


@njit(fastmath=EXP_FASTMATH, error_model="numpy", cache=True)
def exp_shifted64(t):
    """``exp(t)`` for shifted scores ``t <= 0`` (float64), as
    :func:`exp_shifted32`: one exponent factor, subnormal results flushed
    to 0 (t < log(DBL_MIN) = -708.4), the degree-13 polynomial of
    :func:`exp64`."""
    tc = max(t, _SHIFT_MIN_64)
    k = np.floor(tc * _LOG2E_64 + 0.5)
    r = tc - k * _LN2_HI_64
    r = r - k * _LN2_LO_64
    p = _exp_reduced64(r)
    y = p * _int64_as_float64((np.int64(k) + 1023) << 52)
    return 0.0 if t < _SHIFT_MIN_64 else y


def fexp_shifted(t):
    """``exp`` of a shifted score (t <= 0) in the precision of ``t``."""
    raise NotImplementedError("fexp_shifted is only callable from Numba code")


@overload(fexp_shifted, inline="always", fastmath=FASTMATH)
def _fexp_shifted_overload(t):
    if t == types.float32:
        return lambda t: exp_shifted32(t)
    if t == types.float64:
        return lambda t: exp_shifted64(t)
    return None


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def exp_shifted_array(x, out):
    """Apply :func:`fexp_shifted` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp_shifted(x[i])


def fexp(x):
    """``exp`` in the precision of ``x``: :func:`exp32` or :func:`exp64`."""
    raise NotImplementedError("fexp is only callable from Numba code")


@overload(fexp, inline="always", fastmath=FASTMATH)
def _fexp_overload(x):
    if x == types.float32:
        return lambda x: exp32(x)
    if x == types.float64:
        return lambda x: exp64(x)
    return None


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def exp_array(x, out):
    """Apply :func:`fexp` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp(x[i])
