"""Whole rows (:func:`copy_rows`) or runs of elements (:func:`copy_flat`)
copied between C-contiguous arrays.

A driver's few odd rows (a chunk's last rows % ROWS, made a whole block of
rows in a scratch: :func:`fastlogits.cpu.blocks.rowblock.padded_block`)
are copied by one ``llvm.memcpy`` per run of rows. The same copy written
as loops is vectorized, unrolled and given aliasing checks by LLVM in
every kernel that inlines it: 0.2 s of a first argmax (docs/perf/cpu-079).
"""

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array


def _same_dtype_c(src, dst, ndim, *ints):
    """C-contiguous arrays of one dtype (of ``ndim`` dimensions, any if
    None) and integer offsets and counts."""
    return (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.layout == dst.layout == "C" and src.dtype == dst.dtype
            and (ndim is None or src.ndim == dst.ndim == ndim)
            and all(isinstance(a, types.Integer) for a in ints))


def _memcpy(rows):
    """The codegen of ``f(src, s, dst, d, n)``: one ``llvm.memcpy`` of n
    units from unit s of src to unit d of dst; a unit is a row of dst
    (``rows``) or an element."""
    def codegen(context, builder, sig, args):
        sty, _, dty, _, _ = sig.args
        sval, s, dval, d, n = args
        sa = make_array(sty)(context, builder, sval)
        da = make_array(dty)(context, builder, dval)
        intp = context.get_value_type(types.intp)
        s, d, n = (context.cast(builder, v, t, types.intp)
                   for v, t in zip((s, d, n), (sig.args[1], sig.args[3], sig.args[4])))
        unit = intp(context.get_abi_sizeof(context.get_data_type(dty.dtype)))
        if rows:
            unit = builder.mul(builder.extract_value(da.shape, 1), unit)
        src_ptr = builder.gep(builder.bitcast(sa.data, cgutils.voidptr_t),
                              [builder.mul(s, unit)])
        dst_ptr = builder.gep(builder.bitcast(da.data, cgutils.voidptr_t),
                              [builder.mul(d, unit)])
        cgutils.raw_memcpy(builder, dst_ptr, src_ptr, builder.mul(n, unit), 1)
        return context.get_dummy_value()
    return codegen


@intrinsic
def copy_rows(typingctx, src, s, dst, d, n):
    """``dst[d:d + n] = src[s:s + n]`` for C-contiguous 2-d arrays of one
    dtype and row length (dst's row length is used). Nothing is
    bounds-checked; the rows must not overlap."""
    if not _same_dtype_c(src, dst, 2, s, d, n):
        return None
    return types.none(src, s, dst, d, n), _memcpy(True)


@intrinsic
def copy_flat(typingctx, src, s, dst, d, n):
    """``dst.flat[d:d + n] = src.flat[s:s + n]`` for C-contiguous arrays
    of one dtype, any shapes: a channels-first block's class segments
    (:func:`fastlogits.cpu.blocks.planeblock.padded_planes`). Nothing is
    bounds-checked; the segments must not overlap."""
    if not _same_dtype_c(src, dst, None, s, d, n):
        return None
    return types.none(src, s, dst, d, n), _memcpy(False)
