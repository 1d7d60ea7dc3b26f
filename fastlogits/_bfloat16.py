"""bfloat16 on the host, in NumPy alone: recognition, exact widening, rounding.

bfloat16 is float32's upper 16 bits (8 exponent bits, 7 of mantissa):
widening is exact (the bits shifted left by 16), rounding keeps the top
half of a float32 rounded to nearest, ties to even. NumPy has no bfloat16
dtype; its arrays come as ml_dtypes' ``bfloat16`` (JAX's dtype: recognized
by its name and size, ml_dtypes is never imported) or as torch tensors
(:mod:`fastlogits._interop` reads them as their bits). Inside fastlogits a
bfloat16 array travels as its bits, a uint16 array (:data:`BITS`), in a
:class:`Bits` wherever a plain uint16 array could be mistaken for it.
"""

import numpy as np

#: The dtype of bfloat16 bits inside fastlogits.
BITS = np.dtype(np.uint16)
NAME = "bfloat16"
_QUIET = np.uint32(0x00400000)  # float32's quiet-NaN bit


def is_bfloat16(dtype):
    """Whether the NumPy ``dtype`` is a bfloat16 (ml_dtypes'), by name and
    size (no import)."""
    return getattr(dtype, "itemsize", 0) == 2 and getattr(dtype, "name", "") == NAME


class Bits:
    """A bfloat16 array as its bits (``bits``: uint16, same shape and
    strides), and the array given (``like``: an ml_dtypes array, a torch
    tensor, or None) whose kind the results take."""

    __slots__ = ("bits", "like")

    def __init__(self, bits, like=None):
        self.bits, self.like = bits, like

    @property
    def shape(self):
        return self.bits.shape


def bits_of(a):
    """The uint16 bits view of an ml_dtypes bfloat16 NumPy array, or None
    for any other object."""
    if isinstance(a, np.ndarray) and is_bfloat16(a.dtype):
        return a.view(BITS)
    return None


def bits_interface(cai):
    """The ``__cuda_array_interface__`` ``cai`` of bfloat16 data (torch
    exports it as ``"<V2"``, an opaque two-byte type) as that of its bits."""
    return dict(cai, typestr=BITS.str)


def widen(bits, dtype=np.float32):
    """The values of the bfloat16 ``bits`` (uint16) as ``dtype`` (float32 or
    float64): exact."""
    f = (np.asarray(bits, BITS).astype(np.uint32) << np.uint32(16)).view(np.float32)
    return f if dtype == np.float32 else f.astype(dtype)


def _round_to_odd32(v):
    """float64 ``v`` as float32 rounded to odd (truncated toward zero, the
    last bit set if inexact): a float32 with more than 2 bits beyond
    bfloat16's, so rounding it to nearest once more rounds ``v`` as if
    directly (no double rounding)."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(np.float32)
        back = f.astype(np.float64)
        b = f.view(np.uint32).copy()
        finite = np.isfinite(v)
        away = finite & (np.abs(back) > np.abs(v))  # rounded up in magnitude
        b[away] -= np.uint32(1)
        inexact = finite & (back != v)
        b[inexact] |= np.uint32(1)
    return b


def round_bits(v):
    """The bfloat16 bits (uint16) of the float32 or float64 values ``v``,
    each rounded once to the nearest, ties to even; NaN stays NaN (quiet),
    infinities stay, finite values beyond bfloat16's largest round to inf
    as IEEE rounding does."""
    v = np.asarray(v)
    b = _round_to_odd32(v) if v.dtype == np.float64 else v.astype(np.float32).view(np.uint32)
    b = np.asarray(b, np.uint32)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    lsb = (b >> np.uint32(16)) & np.uint32(1)
    with np.errstate(over="ignore"):
        r = (b + np.uint32(0x7FFF) + lsb) >> np.uint32(16)
    r = np.where(nan, (b | _QUIET) >> np.uint32(16), r)
    return r.astype(BITS)


def as_like(bits, like):
    """Result bits (uint16) in the kind of ``like``: a view of the
    ml_dtypes dtype of an ml_dtypes array, a torch bfloat16 tensor (no
    copy) for a torch tensor, else the bits themselves."""
    if isinstance(like, np.ndarray):
        return bits.view(like.dtype)
    if type(like).__module__.startswith("torch"):
        import sys

        torch = sys.modules["torch"]
        return torch.from_numpy(np.ascontiguousarray(bits) if not bits.flags.writeable
                                else bits).view(torch.bfloat16)
    return bits
