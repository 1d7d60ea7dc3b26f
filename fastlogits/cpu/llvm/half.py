"""float16 and bfloat16 data to float32 and back at vector speed.

Two formats of two bytes, one design (:class:`Format`): a pair of
intrinsics (float32 -> bits rounded to nearest even, bits -> float32
exact) and the three converting kernels built on them (:func:`_convert`).
float16 (:data:`FLOAT16`) converts by LLVM's ``fptrunc``/``fpext`` (F16C
on x86, native on ARMv8); bfloat16 (:data:`BFLOAT16`), float32's upper
half, by integer operations any CPU vectorizes: a shift widens it, and
rounding adds ``0x7FFF`` plus the kept half's last bit before the shift
(NaN kept NaN, its quiet bit set). bfloat16 data are always their bits
(uint16, :mod:`fastlogits._bfloat16`; the kernels that read them as they
are take them as int16, :mod:`.scores`). The same IR
(:func:`bfloat16_widen_ir`, :func:`bfloat16_round_ir`) serves scalars and
the kernels' vectors.

float16 inputs are computed in float32 chunks (:func:`load`), and their
float16 outputs written back from float32 chunks (:func:`store`).
NumPy's float16 -> float32 cast runs on one thread at about 2 ns per
element, more than the kernels' own time on a chunk. Its float32 ->
float16 cast takes a slow path for every result below float16's
smallest normal number (6.1e-5): about 70 ns per element on the
development machine against 3.5 for larger ones, and softmax
probabilities of confident float16 logits, or a "mean" loss gradient
over a large map, are mostly such results (softmax of float16 logits of
std 3 took 10-25x as long as of float32 ones; docs/perf/cpu-049).
LLVM's ``fptrunc`` to half is an F16C ``vcvtps2ph`` per vector of
results: IEEE round-to-nearest-even, subnormals, infinities and NaN
included, the same bits as NumPy's cast (NaN payloads aside); ``fpext``
the other way a ``vcvtph2ps`` (exact). Without F16C LLVM would call
runtime routines that a Numba process may not have, so both functions
then leave the work to NumPy.

The loops vectorize only over arrays Numba knows to be contiguous: a
chunk that is one contiguous block goes as a flat run (channels-last
chunks), else row by row through the C-contiguous array it is a chunk of
(channels-first chunks: a span of pixels of every class plane); a chunk
of a strided array takes a scalar loop (0.6 ns per element in cache
against 0.1-0.2). A chunk below ``cpu_serial_below`` elements converts
on the calling thread (:class:`fastlogits.cpu.threads.launch_threads`,
as the kernels launch): waking the pool cost more than the work.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from fastlogits._vector_width import target_converts_half
from fastlogits.cpu.threads import launch_threads

#: Whether the CPU Numba compiles for converts between float32 and
#: float16 in hardware (x86's F16C, any ARMv8).
HARDWARE = target_converts_half()

#: Elements per step of the flat kernels' parallel loop.
RUN = 1 << 14


@intrinsic
def _half_bits(typingctx, v):
    """The float16 bits (as uint16) of the float32 ``v``, rounded to the
    nearest, ties to even."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(v), codegen


@intrinsic
def _from_half_bits(typingctx, h):
    """The float32 value of the float16 bits ``h`` (uint16): exact."""
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(h), codegen


def _i32(ty, value):
    """An i32 constant, or a vector of them of ``ty``'s lane count."""
    i32 = ir.IntType(32)
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ir.VectorType(i32, ty.count), [value] * ty.count)
    return ir.Constant(i32, value)


def _as(ty, element):
    """``element``, or a vector of it of ``ty``'s lane count."""
    return ir.VectorType(element, ty.count) if isinstance(ty, ir.VectorType) else element


def bfloat16_widen_ir(builder, bits):
    """IR: the float32 value(s) of the bfloat16 bits ``bits`` (i16 or a
    vector of i16; either signedness): exact, a shift into float32's upper
    half (a vector shift)."""
    i32 = _as(bits.type, ir.IntType(32))
    wide = builder.shl(builder.zext(bits, i32), _i32(bits.type, 16))
    return builder.bitcast(wide, _as(bits.type, ir.FloatType()))


def bfloat16_round_ir(builder, v):
    """IR: the bfloat16 bits (i16, or a vector of them) of the float32
    value(s) ``v``, rounded to the nearest, ties to even (``0x7FFF`` plus
    the kept half's last bit added before the shift); NaN stays NaN, its
    quiet bit set; infinities stay."""
    i = builder.bitcast(v, _as(v.type, ir.IntType(32)))
    lsb = builder.and_(builder.lshr(i, _i32(v.type, 16)), _i32(v.type, 1))
    rounded = builder.add(i, builder.add(lsb, _i32(v.type, 0x7FFF)))
    quiet = builder.or_(i, _i32(v.type, 0x00400000))
    nan = builder.icmp_unsigned(">", builder.and_(i, _i32(v.type, 0x7FFFFFFF)),
                                _i32(v.type, 0x7F800000))
    r = builder.lshr(builder.select(nan, quiet, rounded), _i32(v.type, 16))
    return builder.trunc(r, _as(v.type, ir.IntType(16)))


@intrinsic
def _bfloat16_bits(typingctx, v):
    """The bfloat16 bits (as uint16) of the float32 ``v``
    (:func:`bfloat16_round_ir`)."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return bfloat16_round_ir(builder, args[0])

    return types.uint16(v), codegen


@intrinsic
def _from_bfloat16_bits(typingctx, h):
    """The float32 value of the bfloat16 bits ``h`` (uint16, or int16 as
    the kernels take them: :mod:`.scores`): exact."""
    if h not in (types.uint16, types.int16):
        return None

    def codegen(context, builder, sig, args):
        return bfloat16_widen_ir(builder, args[0])

    return types.float32(h), codegen


def _convert(to_bits, from_bits, to_half):
    """The three kernels of one direction of the format whose intrinsics
    are ``to_bits`` and ``from_bits``: ``flat(dst, src)`` (1-D
    C-contiguous), ``chunk(big, o0, i0, small)`` (between the rows of the
    C-contiguous (outer, C, inner) ``big`` from (o0, :, i0) and the
    C-contiguous chunk ``small``: into ``big`` when converting to half,
    into ``small`` from it), ``rows(dst, src)`` (3-D, any strides)."""
    convert = to_bits if to_half else from_bits

    @njit(parallel=True, cache=True)
    def flat(dst, src):
        n = src.shape[0]
        for k in prange((n + RUN - 1) // RUN):
            lo = k * RUN
            d = dst[lo:min(n, lo + RUN)]
            s = src[lo:lo + d.shape[0]]
            for i in range(d.shape[0]):
                d[i] = convert(s[i])

    @njit(parallel=True, cache=True)
    def chunk(big, o0, i0, small):
        no, C, ni = small.shape
        for k in prange(no * C):
            o = k // C
            c = k - o * C
            b = big[o0 + o, c, i0:i0 + ni]
            s = small[o, c]
            if to_half:
                for i in range(ni):
                    b[i] = convert(s[i])
            else:
                for i in range(ni):
                    s[i] = convert(b[i])

    @njit(parallel=True, cache=True)
    def rows(dst, src):
        outer, C, inner = src.shape
        for k in prange(outer * C):
            o = k // C
            c = k - o * C
            for i in range(inner):
                dst[o, c, i] = convert(src[o, c, i])

    return flat, chunk, rows


class Format:
    """A two-byte format: its name, whether the LLVM conversions may run
    (``hardware``; else NumPy's casts, float16 only), and its kernels."""

    def __init__(self, name, to_bits, from_bits):
        self.name = name
        self.to_flat, self.to_chunk, self.to_rows = _convert(to_bits, from_bits, True)
        self.from_flat, self.from_chunk, self.from_rows = _convert(to_bits, from_bits, False)

    @property
    def hardware(self):
        # float16 reads the module's HARDWARE at each call (tests switch it);
        # bfloat16's integer conversions run on every CPU.
        return HARDWARE if self is FLOAT16 else True


FLOAT16 = Format("float16", _half_bits, _from_half_bits)
BFLOAT16 = Format("bfloat16", _bfloat16_bits, _from_bfloat16_bits)


def _as3(a):
    """A 2-D (outer, inner) array as (outer, 1, inner), 3-D as it is."""
    return a.reshape(a.shape[0], 1, a.shape[1]) if a.ndim == 2 else a


def _format(a, bfloat16):
    """The format of ``a``'s data: bfloat16 (bits) where ``bfloat16``, float16
    for a float16 array, else None (not two-byte floats)."""
    if bfloat16:
        return BFLOAT16 if a.dtype == np.uint16 else None
    return FLOAT16 if a.dtype == np.float16 else None


def load(x, o0, o1, i0, i1, out=None, bfloat16=False):
    """A C-contiguous float32 copy of the chunk ``x[o0:o1, :, i0:i1]`` of
    the float16 array ``x`` (outer, C, inner), or of bfloat16 bits (uint16)
    with ``bfloat16``, any strides: into ``out`` (C-contiguous float32 of
    the chunk's shape) when given, else new."""
    part = x[o0:o1, :, i0:i1]
    if out is None:
        out = np.empty(part.shape, np.float32)
    fmt = _format(x, bfloat16)
    if fmt is None or not fmt.hardware:
        out[...] = part
        return out
    with launch_threads(out.size):  # serial for a small chunk, as the kernels
        if part.flags.c_contiguous:
            fmt.from_flat(out.reshape(-1), part.view(np.uint16).reshape(-1))
        elif x.flags.c_contiguous:
            fmt.from_chunk(x.view(np.uint16), o0, i0, out)
        else:
            fmt.from_rows(out, part.view(np.uint16))
    return out


def store(out, o0, o1, i0, i1, src, bfloat16=False):
    """``out[o0:o1, ..., i0:i1] = src`` for a float16 ``out`` (or bfloat16
    bits with ``bfloat16``), (outer, inner) or (outer, C, inner), any
    strides, and a float32 ``src`` of the chunk's shape (others: NumPy's
    assignment)."""
    part = out[o0:o1, ..., i0:i1]
    fmt = _format(out, bfloat16)
    if fmt is None or not (fmt.hardware and src.dtype == np.float32
                           and part.shape == src.shape):
        part[...] = src
        return
    src3 = np.ascontiguousarray(_as3(src))
    with launch_threads(src3.size):
        if part.flags.c_contiguous:
            fmt.to_flat(part.view(np.uint16).reshape(-1), src3.reshape(-1))
        elif out.flags.c_contiguous:
            fmt.to_chunk(_as3(out).view(np.uint16), o0, i0, src3)
        else:
            fmt.to_rows(_as3(part).view(np.uint16), src3)
