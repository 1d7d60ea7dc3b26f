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

Rounding uses ``floor`` (an LLVM intrinsic that vectorizes), not the
"add and subtract 1.5 * 2**23" trick: under the ``reassoc`` fast-math flag
LLVM may fold ``(t + M) - M`` to ``t`` and silently break the reduction.
The full-range :func:`exp32` / :func:`exp64` are compiled without
``reassoc`` (see ``EXP_FASTMATH``); the kernels' exp of shifted scores,
:func:`fexp_shifted`, is IR written by :func:`exp_shifted_ir` (one
generator for scalars in Numba loops and for the vectors of
:mod:`fastlogits.cpu.blocks.rowvec`) whose instructions carry no fast-math flags at all. Their
accuracy is tested inside a kernel compiled with the full flag set. On
AVX-512 targets the float32 vectors of the register blocks and row
kernels take an exp2 form instead (:func:`_exp2_shifted_ir`: fewer
operations, an error bound of its own).

Special values: ``exp(nan) = nan``, ``exp(+inf) = inf``, ``exp(-inf) = 0``,
overflow gives ``inf``, underflow gives ``0``; all through selects, so the
loop stays branch-free.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from fastlogits._vector_width import target_has, target_has_avx512
from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.irutil import I32, fmuladd, intrinsic_fn, vector_of

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


#: exp(r) on |r| <= ln(2)/2 for float64: Taylor to degree 13 (truncation
#: < 1e-17 rel), highest degree first.
_TAYLOR64 = (1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
             1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
             1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0)


def _horner_ir(builder, r, coeffs):
    """IR of the polynomial ``coeffs`` (highest degree first) at ``r``, by
    Horner's rule with ``llvm.fmuladd`` (scalar or vector ``r``)."""
    p = vector_of(r.type, coeffs[0])
    for c in coeffs[1:]:
        p = fmuladd(builder, p, r, vector_of(r.type, c))
    return p


@intrinsic
def _exp_reduced64(typingctx, r):
    """exp(r) on |r| <= ln(2)/2 (float64): :data:`_TAYLOR64`."""
    if r != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return _horner_ir(builder, args[0], _TAYLOR64)

    return types.float64(r), codegen


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


#: 2**f on 0 <= f < 1 for float32 as ``1 + f * q(f)``, q of degree 4
#: (coefficients of f**5 .. f**1), fitted for relative error (iterated
#: weighted least squares): max 8.2e-8 in exact arithmetic, 1.6e-7 (2.7
#: ulp) evaluated by Horner's rule in float32 without FMA; exactly 1 at
#: f = 0.
_EXP2_32 = (0.0018671182336582857, 0.009017055311397229, 0.055799895393838714,
            0.24016445491564387, 0.6931513114302645, 1.0)

#: Whether float32 vectors of whole 64-byte registers take the exp2 form
#: (:func:`_exp2_shifted_ir`): on AVX-512 targets with the DQ extension
#: (every AVX-512 CPU but Xeon Phi), whose ``vreduceps`` gives the
#: fraction and ``vscalef`` the product with 2**floor(y), one instruction
#: each.
_EXP2_FORM = target_has_avx512() and target_has("avx512dq")

_SHIFT_MIN_32 = _F32(-87.33654)  # log(FLT_MIN): below, the result is subnormal
_SHIFT_MIN_64 = -708.3964185322641  # log(DBL_MIN)


#: Degree-5 polynomial of exp_shifted for float32, fitted for relative
#: error on |r| <= ln(2)/2 (max 1.7e-7, under 3 ulp), highest degree first.
_SHIFTED32 = (0.008290314642081987, 0.04189793026080911, 0.16667636201991326,
              0.49999149523356035, 0.9999997071857687, 1.0)


def _avx512_ps(builder, name, extra, *vectors):
    """The AVX-512 intrinsic ``llvm.x86.avx512.mask.<name>.ps.512`` on
    float32 vectors of 16 lanes or a multiple (split into 512-bit parts and
    joined again), all lanes, rounding operand 4 (the current direction).
    ``extra``: the i32 immediates between the vectors and the pass-through."""
    ty = vectors[0].type
    vec = ir.VectorType(ty.element, 16)
    mask = ir.IntType(16)
    fn = intrinsic_fn(builder, f"llvm.x86.avx512.mask.{name}.ps.512", vec,
                      [vec] * len(vectors) + [I32] * len(extra) + [vec, mask, I32])
    parts = []
    for j in range(0, ty.count, 16):
        lanes = ir.Constant(ir.VectorType(I32, 16), list(range(j, j + 16)))
        vs = [v if ty.count == 16 else builder.shuffle_vector(v, v, lanes) for v in vectors]
        parts.append(builder.call(fn, vs + [ir.Constant(I32, e) for e in extra]
                                  + [ir.Constant(vec, ir.Undefined), ir.Constant(mask, -1),
                                     ir.Constant(I32, 4)]))
    while len(parts) > 1:
        n = parts[0].type.count
        both = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
        parts = [builder.shuffle_vector(parts[i], parts[i + 1], both)
                 for i in range(0, len(parts), 2)]
    return parts[0]


#: ``vreduceps``' immediate: no fraction bits kept (bits 7:4), precision
#: exception suppressed (bit 3), rounding from bits 1:0 (bit 2 clear),
#: down (01): ``y - floor(y)``.
_REDUCE_FLOOR = 0x09


def _exp2_shifted_ir(builder, t):
    """:func:`exp_shifted_ir` for float32 vectors of whole 64-byte
    registers on AVX-512 targets: ``exp(t) = 2**y``, ``y = t log2(e)``,
    ``2**(y - floor(y))`` by :data:`_EXP2_32` on [0, 1), the fraction from
    one ``vreduceps``, and the product with ``2**floor(y)`` by ``vscalef``,
    which floors its exponent operand itself: eight vector operations per
    16 scores (a multiply, the reduction, five FMAs, the scaling), where
    the form with ``k = rint(y)`` took ten (a clamp, the rounding and a
    subtraction for the reduction's one) and the Cody-Waite form 13
    (docs/perf/cpu-040, cpu-051).

    The price is the rounding of y: the float32 log2(e) and the product
    each add up to 2**-24 |y| to y, a relative error of up to 2**-23 |t|
    in the result (87 ulp at t = -87), on top of the polynomial's 3 ulp
    and the reduction's rounding (for -2**-25 < y < 0 the fraction 1 + y
    rounds, 2**-24 relative at most). For the kernels' sums, where the
    max term is exactly 1, every term is then within
    2**-24 (2 |t| + 4) exp(t) <= 2.4e-7 of exp(t) absolutely, whatever t:
    below the 2e-6 tolerance of the probabilities and 1 ulp of the
    log-sum-exp. Results below the smallest normal are subnormals (not
    flushed); t = -inf gives exactly 0 (the reduction of an infinity is
    0, and ``vscalef`` by -inf gives 0), t = 0 exactly 1, t = NaN NaN."""
    ty = t.type
    y = builder.fmul(t, vector_of(ty, float(_F32(_LOG2E_32))))
    # Not reassociable: with the kernel's ``reassoc`` LLVM folded the
    # score's ``(x - m) * inv_t`` into ``(x - m) * (inv_t * log2(e))``,
    # inf for inv_t near float32's max, and 0 * inf = NaN at the max.
    y.flags.extend(sorted(EXP_FASTMATH))
    f = _avx512_ps(builder, "reduce", [_REDUCE_FLOOR], y)
    p = _horner_ir(builder, f, [float(_F32(v)) for v in _EXP2_32])
    return _avx512_ps(builder, "scalef", [], p, y)


def exp_shifted_ir(builder, t):
    """IR of ``exp(t)`` for shifted scores ``t = (x - max) / T <= 0``: a
    float32 or float64 value, scalar or vector (the vector row kernels of
    :mod:`fastlogits.cpu.blocks.rowvec` call it directly; Numba code calls :func:`fexp_shifted`).
    float32 vectors of whole 64-byte registers on AVX-512 targets (the
    register blocks and row kernels) take the exp2 form instead
    (:func:`_exp2_shifted_ir`), with its error bound.

    Cheaper than :func:`exp32` / :func:`exp64`: no overflow branch (t <= 0),
    one exponent factor, and k = round(t / ln 2) by the "magic number" add:
    ``y = t log2(e) + M`` with ``M = 1.5 * 2**mant + bias`` leaves ``k +
    bias`` in the low bits of y, so ``y - M`` is k as a float and ``y``'s
    bits shifted left by the mantissa width are 2**k: three operations where
    floor, a conversion, an add and a shift were five, with one constant
    fewer (it matters on AVX2, whose 16 vector registers cannot hold all
    the constants of the loop). float32 uses :data:`_SHIFTED32`, float64
    :data:`_TAYLOR64`. Results that would be subnormal (t below log of the
    smallest normal: -87.34 in float32, -708.4 in float64) are flushed to 0,
    exactly 0 for t = -inf; the intermediate values of such t are garbage
    and only the final select discards them. Garbage for t > 0 or NaN: the
    kernels mask the pixels (non-finite max) where that can happen.

    The instructions carry no fast-math flags, whatever the calling
    kernel's, so the range reduction (``(y - M)`` after ``+ M``) cannot be
    reassociated away.
    """
    ty = t.type
    if (_EXP2_FORM and isinstance(ty, ir.VectorType) and ty.element == ir.FloatType()
            and ty.count % 16 == 0):
        return _exp2_shifted_ir(builder, t)
    f32 = (ty.element if isinstance(ty, ir.VectorType) else ty) == ir.FloatType()
    if f32:
        lo, log2e, hi, lo_part, coeffs = (_SHIFT_MIN_32, _LOG2E_32, _LN2_HI_32, _LN2_LO_32,
                                          _SHIFTED32)
        ity, bias, mant = ir.IntType(32), 127, 23
    else:
        lo, log2e, hi, lo_part, coeffs = (_SHIFT_MIN_64, _LOG2E_64, _LN2_HI_64, _LN2_LO_64,
                                          _TAYLOR64)
        ity, bias, mant = ir.IntType(64), 1023, 52
    if isinstance(ty, ir.VectorType):
        ity = ir.VectorType(ity, ty.count)

    def c(v):  # float32 constants rounded as the Numba versions did (_F32)
        return vector_of(ty, float(_F32(v)) if f32 else float(v))

    # 1.5 * 2**mant + bias: exact in the format; |t log2(e)| < 2**(mant - 1).
    magic = c(1.5 * 2.0 ** mant + bias)
    y = fmuladd(builder, t, c(log2e), magic)
    k = builder.fsub(y, magic)
    r = fmuladd(builder, k, c(-hi), t)  # k * hi is exact: hi has few bits
    r = fmuladd(builder, k, c(-lo_part), r)
    p = _horner_ir(builder, r, [float(_F32(v)) if f32 else v for v in coeffs])
    # The low bits of y hold k + bias (in [1, 2 bias] for t >= lo): shifted
    # into the exponent field they are 2**k; the higher bits fall off.
    scale = builder.bitcast(builder.shl(builder.bitcast(y, ity), vector_of(ity, mant)), ty)
    return builder.select(builder.fcmp_ordered("<", t, c(lo)), c(0.0), builder.fmul(p, scale))


@intrinsic
def _exp_shifted(typingctx, t):
    """:func:`exp_shifted_ir` for a scalar float32 or float64."""
    if t not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, args):
        return exp_shifted_ir(builder, args[0])

    return t(t), codegen


def fexp_shifted(t):
    """``exp`` of a shifted score (t <= 0) in the precision of ``t``."""
    raise NotImplementedError("fexp_shifted is only callable from Numba code")


@overload(fexp_shifted, inline="always", fastmath=FASTMATH)
def _fexp_shifted_overload(t):
    if t in (types.float32, types.float64):
        return lambda t: _exp_shifted(t)
    return None


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def exp_shifted_array(x, out):
    """Apply :func:`fexp_shifted` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp_shifted(x[i])


def by_precision(name, f32, f64):
    """A Numba-callable ``name(x)`` that runs ``f32(x)`` for a float32 and
    ``f64(x)`` for a float64 ``x`` (an inlined overload; not callable from
    Python)."""
    def stub(x):
        raise NotImplementedError(f"{name} is only callable from Numba code")

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = f"``{name}`` in the precision of ``x``: :func:`{f32.__name__}` or " \
                   f":func:`{f64.__name__}`."

    @overload(stub, inline="always", fastmath=FASTMATH)
    def _overload(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return stub


fexp = by_precision("fexp", exp32, exp64)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def exp_array(x, out):
    """Apply :func:`fexp` to a 1-D array (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp(x[i])
