"""Whole rows copied between C-contiguous arrays: :func:`copy_rows`.

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


def _rows_ok(src, s, dst, d, n):
    """C-contiguous 2-d arrays of one dtype, integer row offsets and count."""
    return (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.ndim == dst.ndim == 2 and src.layout == dst.layout == "C"
            and src.dtype == dst.dtype
            and all(isinstance(a, types.Integer) for a in (s, d, n)))


@intrinsic
def copy_rows(typingctx, src, s, dst, d, n):
    """``dst[d:d + n] = src[s:s + n]`` for C-contiguous 2-d arrays of one
    dtype and row length (dst's row length is used). Nothing is
    bounds-checked; the rows must not overlap."""
    if not _rows_ok(src, s, dst, d, n):
        return None

    def codegen(context, builder, sig, args):
        sty, _, dty, _, _ = sig.args
        sval, s, dval, d, n = args
        sa = make_array(sty)(context, builder, sval)
        da = make_array(dty)(context, builder, dval)
        intp = context.get_value_type(types.intp)
        s, d, n = (context.cast(builder, v, t, types.intp)
                   for v, t in zip((s, d, n), (sig.args[1], sig.args[3], sig.args[4])))
        cols = builder.extract_value(da.shape, 1)
        size = context.get_abi_sizeof(context.get_data_type(dty.dtype))
        row_bytes = builder.mul(cols, intp(size))
        src_ptr = builder.gep(builder.bitcast(sa.data, cgutils.voidptr_t),
                              [builder.mul(s, row_bytes)])
        dst_ptr = builder.gep(builder.bitcast(da.data, cgutils.voidptr_t),
                              [builder.mul(d, row_bytes)])
        cgutils.raw_memcpy(builder, dst_ptr, src_ptr, builder.mul(n, row_bytes), 1)
        return context.get_dummy_value()

    return types.none(src, s, dst, d, n), codegen
