"""New arrays inside kernels, lowered in place: :func:`empty` and :func:`zeros`.

A kernel's scratch (a tile's per-pixel values, a chunk's sums) comes from
these instead of ``np.empty`` / ``np.zeros``. Numba's overloads of those
are generic (any shape, any ``dtype=`` spelling, ``order=``): each
(shape, dtype) a kernel asks for is typed and compiled as a function of
its own, optimized and emitted to machine code before the kernel links
it, about 0.05 s apiece, 0.5 s of a first cross_entropy call
(docs/perf/cpu-078). An intrinsic emits the allocation into its caller:
the NRT call np.empty ends in (``NRT_MemInfo_alloc_safe_aligned``, at
NumPy's alignment for the dtype), plus a memset for :func:`zeros`. The
arrays are the same NRT arrays, C-contiguous, freed by reference count
as np.empty's; a negative or overflowing size raises ValueError, as
np.empty's does.
"""

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_new_ref
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


def _array_type(shape, dtype):
    """The C-contiguous array type of ``shape`` (an integer, or a tuple of
    integers) and ``dtype`` (a NumPy scalar type such as ``np.int32``, or
    an array's ``.dtype``), or None if they are not such."""
    if isinstance(shape, types.Integer):
        ndim = 1
    elif isinstance(shape, types.UniTuple) and isinstance(shape.dtype, types.Integer):
        ndim = shape.count
    else:
        return None
    if not isinstance(dtype, (types.NumberClass, types.DType)):
        return None
    return types.Array(dtype.dtype, ndim, "C")


def _allocate(zeroed):
    def codegen(context, builder, sig, args):
        arrty = sig.return_type
        shape = args[0]
        if isinstance(sig.args[0], types.Integer):
            dims = [context.cast(builder, shape, sig.args[0], types.intp)]
        else:
            dims = [context.cast(builder, builder.extract_value(shape, i), sig.args[0].dtype,
                                 types.intp) for i in range(arrty.ndim)]
        zero = context.get_constant(types.intp, 0)
        datatype = context.get_data_type(arrty.dtype)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(datatype))
        # Bytes, and whether they overflow (np.empty's checks: a negative or
        # huge size must not wrap around to a small allocation).
        nbytes, bad = itemsize, cgutils.false_bit
        for d in dims:
            bad = builder.or_(bad, builder.icmp_signed("<", d, zero))
            prod = builder.smul_with_overflow(nbytes, d)
            nbytes = builder.extract_value(prod, 0)
            bad = builder.or_(bad, builder.extract_value(prod, 1))
        with cgutils.if_unlikely(builder, bad):
            context.call_conv.return_user_exc(
                builder, ValueError, ("negative dimensions or array too big",))
        # C-order strides, from the last axis
        strides = [itemsize]
        for d in reversed(dims[1:]):
            strides.append(builder.mul(strides[-1], d))
        strides.reverse()
        align = context.get_preferred_array_alignment(arrty.dtype)
        meminfo = context.nrt.meminfo_alloc_aligned(
            builder, size=nbytes, align=context.get_constant(types.uint32, align))
        data = builder.bitcast(context.nrt.meminfo_data(builder, meminfo),
                               datatype.as_pointer())
        if zeroed:
            cgutils.memset(builder, data, nbytes, 0)
        ary = make_array(arrty)(context, builder)
        intp = context.get_value_type(types.intp)
        populate_array(ary, data=data, shape=cgutils.pack_array(builder, dims, ty=intp),
                       strides=cgutils.pack_array(builder, strides, ty=intp),
                       itemsize=itemsize, meminfo=meminfo)
        return impl_ret_new_ref(context, builder, arrty, ary._getvalue())
    return codegen


def empty_typed(shape, dtype):
    """For an intrinsic that allocates as :func:`empty` an array whose
    dtype it decides while typing: ``(array type, codegen)`` for ``shape``
    (the Numba type of its first argument, an integer or a tuple of
    integers) and ``dtype`` (a Numba scalar type), or None. The codegen
    reads the shape from the intrinsic's first argument."""
    arrty = _array_type(shape, types.NumberClass(dtype))
    return None if arrty is None else (arrty, _allocate(False))


@intrinsic
def empty(typingctx, shape, dtype):
    """``np.empty(shape, dtype)``, C order, for ``shape`` an integer or a
    tuple of integers and ``dtype`` a NumPy scalar type or an array's
    ``.dtype``."""
    arrty = _array_type(shape, dtype)
    if arrty is None:
        return None
    return arrty(shape, dtype), _allocate(False)


@intrinsic
def zeros(typingctx, shape, dtype):
    """``np.zeros(shape, dtype)``, as :func:`empty`."""
    arrty = _array_type(shape, dtype)
    if arrty is None:
        return None
    return arrty(shape, dtype), _allocate(True)
