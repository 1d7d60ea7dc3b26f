"""How the kernels read x's scores: float32, float64, or the bits of a
two-byte float (float16, bfloat16).

Numba's CPU target has no float16 or bfloat16 type, so such logits reach
the kernels that read them directly as their bits, each format in an
integer dtype of its own so Numba compiles each apart: float16 as
``x.view(np.uint16)`` (:data:`HALF_BITS`), bfloat16 as
``x.view(np.int16)`` (:data:`BFLOAT16_BITS`; the rest of fastlogits holds
bfloat16 as uint16, :mod:`fastlogits._bfloat16`, and
:func:`fastlogits.cpu.host.run_cpu` views it as int16 for the kernels).
A uint16 or int16 x is never anything else in :mod:`fastlogits.cpu`.
Such x is computed in float32, as the chunked path of
:func:`fastlogits.cpu.host.run_cpu` computes it, so results are the same
bit for bit: every float16 and bfloat16 value is exact in float32. What
changes is the memory traffic: the kernels read two bytes per score from
memory, where the chunked path converted 1 M scores at a time into a
float32 copy and read that back (float16 took 1.4-2.1x float32's time:
docs/perf/cpu-049).

- Numba code reads a score as ``score(x[...])``, and makes its scratch
  for scores with :func:`scratch` (``compute_type(x.dtype)``).
- Intrinsics type x by :func:`is_scores` and :func:`compute_type` and
  load vectors through :class:`ScoreIR`: a load of ``lanes`` halves and
  an ``fpext`` to float32 (``vcvtph2ps`` with F16C; the callers take this
  path only where :data:`fastlogits.cpu.llvm.half.HARDWARE`), or of
  ``lanes`` bfloat16 bits widened by a shift into float32's upper half
  (:func:`fastlogits.cpu.llvm.half.bfloat16_widen_ir`: a vector shift).

Outputs of x's two-byte dtype (softmax's, log_softmax's, logsumexp's, the
loss gradient) reach the kernels as bits too. Their results are computed
in float32 and rounded once, as they are stored (:func:`store_score`,
:meth:`ScoreIR.narrow`: ``vcvtps2ph`` for float16, integer rounding for
bfloat16, both to nearest even as NumPy's and ml_dtypes' casts): never
stored as two bytes and read back to compute with, which would round
twice.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic, overload

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.alloc import empty_typed
from fastlogits.cpu.llvm.half import (_bfloat16_bits, _from_bfloat16_bits, _from_half_bits,
                                      _half_bits, bfloat16_round_ir, bfloat16_widen_ir)
from fastlogits.cpu.llvm.irutil import masked_gather, masked_load, masked_store, vptr

#: The Numba dtype of float16 scores' bits.
HALF_BITS = types.uint16
#: The Numba dtype of bfloat16 scores' bits.
BFLOAT16_BITS = types.int16
#: The Numba dtypes of two-byte floats' bits.
BITS = (HALF_BITS, BFLOAT16_BITS)
#: Their NumPy dtypes (:func:`holds_half_bits` from Python).
_NP_BITS = (np.dtype(np.uint16), np.dtype(np.int16))


def is_scores(dtype):
    """Whether an array of Numba dtype ``dtype`` holds scores: a float, or
    float16 or bfloat16 bits."""
    return isinstance(dtype, types.Float) or dtype in BITS


def is_score_array(a, ndim=None):
    """Whether the Numba type ``a`` is a C-contiguous array of scores (of
    ``ndim`` dimensions, if given)."""
    return (isinstance(a, types.Array) and a.layout == "C" and is_scores(a.dtype)
            and (ndim is None or a.ndim == ndim))


def compute_type(dtype):
    """The Numba type scores of ``dtype`` are computed in: float32 for
    float16 or bfloat16 bits, else the dtype itself."""
    return types.float32 if dtype in BITS else dtype


def holds_half_bits(a):
    """Whether the array ``a`` holds the bits of two-byte floats (float16
    or bfloat16): its results are rounded once, from float32 scratch,
    never from exponentials stored in it (rounded twice). Callable from
    Python (a NumPy array) and from Numba code (a constant there: the
    branches it rules out are not compiled)."""
    return a.dtype in _NP_BITS


@overload(holds_half_bits, inline="always", fastmath=FASTMATH)
def _holds_half_bits_overload(a):
    if not isinstance(a, types.Array):
        return None
    half = a.dtype in BITS
    return lambda a: half


def score(v):
    """The value of one score read from x: as it is for a float, the
    float32 value of float16 or bfloat16 bits (exact)."""
    raise NotImplementedError("score is only callable from Numba code")


@overload(score, inline="always", fastmath=FASTMATH)
def _score_overload(v):
    if v == HALF_BITS:
        return lambda v: _from_half_bits(v)
    if v == BFLOAT16_BITS:
        return lambda v: _from_bfloat16_bits(v)
    if isinstance(v, types.Float):
        return lambda v: v
    return None


def store_score(a, v):
    """``v`` (a computed score) as a value of the array ``a``'s dtype, to
    store into it: the float16 or bfloat16 bits of ``v`` for such bits
    (one rounding, to nearest even), else ``v``."""
    raise NotImplementedError("store_score is only callable from Numba code")


@overload(store_score, inline="always", fastmath=FASTMATH)
def _store_score_overload(a, v):
    if not (isinstance(a, types.Array) and isinstance(v, types.Float)):
        return None
    if a.dtype == HALF_BITS:
        return lambda a, v: _half_bits(np.float32(v))
    if a.dtype == BFLOAT16_BITS:  # the same 16 bits, as int16
        return lambda a, v: np.int16(_bfloat16_bits(np.float32(v)))
    if isinstance(a.dtype, types.Float):
        return lambda a, v: v
    return None


@intrinsic
def scratch(typingctx, shape, x):
    """A new array of ``shape`` (an integer or a tuple of integers) in the
    type x's scores are computed in, as :func:`fastlogits.cpu.llvm.alloc.empty`.
    An intrinsic, not an inlined overload: Numba compiles an overload's
    implementation on its own even where it inlines it, 0.05 s of a
    first call (docs/perf/cpu-081)."""
    if not (isinstance(x, types.Array) and is_scores(x.dtype)):
        return None
    typed = empty_typed(shape, compute_type(x.dtype))
    if typed is None:
        return None
    arrty, codegen = typed
    return arrty(shape, x), codegen


class ScoreIR:
    """Vector loads of x's scores in intrinsics: ``elem`` is the IR type
    they are computed in, ``size`` the bytes of one stored score (for
    addresses and alignment), ``compute_size`` those of one computed."""

    def __init__(self, context, dtype):
        #: Two-byte bits (float16's or bfloat16's), and which.
        self.half = dtype in BITS
        self.bfloat16 = dtype == BFLOAT16_BITS
        self.elem = context.get_data_type(compute_type(dtype))
        self.stored = (ir.IntType(16) if self.bfloat16 else ir.HalfType() if self.half
                       else self.elem)
        self.size = 2 if self.half else context.get_abi_sizeof(self.elem)
        self.compute_size = context.get_abi_sizeof(self.elem)

    def _data(self, builder, data):
        return builder.bitcast(data, self.stored.as_pointer()) if self.half else data

    def _widen(self, builder, v):
        if not self.half:
            return v
        if self.bfloat16:
            return bfloat16_widen_ir(builder, v)
        return builder.fpext(v, ir.VectorType(self.elem, v.type.count))

    def load(self, builder, data, index, lanes):
        """``lanes`` scores from ``data[index]`` (``data`` x's data pointer,
        ``index`` an i64 element offset), as a vector of ``elem``."""
        vec = ir.VectorType(self.stored, lanes)
        v = builder.load(vptr(builder, self._data(builder, data), index, vec), align=self.size)
        return self._widen(builder, v)

    def _masked(self, builder, read, mask, passthru):
        """``read(stored passthru)`` widened; lanes off ``mask`` are
        ``passthru`` (a vector of ``elem``)."""
        if not self.half:
            return read(passthru)
        zeros = ir.Constant(ir.VectorType(self.stored, passthru.type.count), None)
        return builder.select(mask, self._widen(builder, read(zeros)), passthru)

    def narrow(self, builder, v):
        """The vector ``v`` of ``elem`` as stored: rounded to halves
        (``fptrunc``) for float16 bits, to bfloat16 for its bits."""
        if not self.half:
            return v
        if self.bfloat16:
            return bfloat16_round_ir(builder, v)
        return builder.fptrunc(v, ir.VectorType(self.stored, v.type.count))

    def store(self, builder, v, data, index, align=None):
        """Store the vector ``v`` of ``elem`` at ``data[index]`` as stored
        (:meth:`narrow`); ``align`` in bytes, default one score's. Returns
        the store instruction."""
        v = self.narrow(builder, v)
        return builder.store(v, vptr(builder, self._data(builder, data), index, v.type),
                             align=self.size if align is None else align)

    def masked_store(self, builder, v, data, index, mask):
        """Store the lanes of ``mask`` of the vector ``v`` of ``elem`` at
        ``data[index]`` as stored (:meth:`narrow`)."""
        masked_store(builder, self.narrow(builder, v), self._data(builder, data), index, mask)

    def masked_load(self, builder, data, index, mask, passthru):
        """:func:`fastlogits.cpu.llvm.irutil.masked_load` of x's scores."""
        return self._masked(builder, lambda p: masked_load(
            builder, self._data(builder, data), index, mask, p), mask, passthru)

    def masked_gather(self, builder, data, index, mask, passthru):
        """:func:`fastlogits.cpu.llvm.irutil.masked_gather` of x's scores
        (``data`` a pointer into x)."""
        return self._masked(builder, lambda p: masked_gather(
            builder, self._data(builder, data), index, mask, p), mask, passthru)
