"""The canonical (outer, C, inner) view every kernel works on.

H×W×C with axis=-1 is (H·W, C, 1): channels-last, a pixel's C scores
contiguous. N×C×H×W with axis=1 is (N, C, H·W): channels-first, a class
plane contiguous. Reduced outputs (labels, confidence, logsumexp, losses
with reduction="none") are seen as (outer, inner).
"""

import math

import numpy as np

from fastlogits import _interop


class _WritableAlias:
    """Holder of an ``__array_interface__`` for :func:`host_array`; keeps
    the aliased array (and so its memory) alive."""

    __slots__ = ("__array_interface__", "base")


def _writable_alias(a):
    """``a`` (read-only) seen through an array Numba types as writeable:
    the same memory, strides and dtype, no copy. The kernels never write
    their inputs, and Numba types a read-only array apart: every kernel
    would compile a second specialization for it, and those that pass x
    where an output goes on an unused branch do not compile at all."""
    holder = _WritableAlias()
    iface = dict(a.__array_interface__)
    iface["data"] = (iface["data"][0], False)
    holder.__array_interface__ = iface
    holder.base = a
    return np.asarray(holder)


def host_array(a):
    """An input as the CPU kernels read it: a NumPy array (another library's
    array read without a copy where it allows: :func:`_interop.to_numpy`;
    a PyTorch tensor that requires grad through ``.detach()``), in native byte order
    (a byte-swapped array is converted once: a copy), and typed writeable
    by Numba even where the memory is read-only (memory-mapped files,
    ``np.broadcast_to``, ``np.frombuffer``), without a copy."""
    if type(a) is not np.ndarray:
        a = _interop.to_numpy(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.writeable:
        a = _writable_alias(a)
    return a


def size_of(shape):
    """Elements of an array of ``shape`` (a Python int: ``np.prod`` costs
    microseconds per call on a tuple, paid on every public call)."""
    return math.prod(int(n) for n in shape)


def split_shape(shape, axis):
    """Return ``(outer, C, inner)`` for ``shape`` around the class ``axis``."""
    return size_of(shape[:axis]), shape[axis], size_of(shape[axis + 1:])


def reshape_view(a, shape):
    """Reshape ``a`` to ``shape`` without copying, or return None.

    ``np.reshape`` silently copies when the strides do not allow a view;
    for an output that would lose the results, so callers must know.
    """
    v = a.view()
    try:
        v.shape = shape
    except AttributeError:
        return None
    return v


def canonical(a, axis, shape3=None):
    """(outer, C, inner) view of ``a`` (copied only if strides forbid a
    view); ``shape3``: that shape, where the caller has it already."""
    if shape3 is None:
        shape3 = split_shape(a.shape, axis)
    v = reshape_view(a, shape3)
    return v if v is not None else np.ascontiguousarray(a).reshape(shape3)


def reduced_shape(shape, axis):
    """``shape`` without the class axis."""
    return tuple(shape[:axis]) + tuple(shape[axis + 1:])
