"""Software prefetch: ``prefetch(a, i)`` asks for the cache line holding
``a.flat[i]`` (a C-contiguous array) without waiting for it.

The LinearHead kernels compute for long enough on each block of features
that the hardware prefetchers, which stop at 4 KiB page boundaries, leave
every new block to start with cache misses: measured on one thread, the
channels-last product ran at 60 GFLOP/s on cached features and 30 GFLOP/s
streaming them from memory. Prefetching the block a few steps ahead
overlaps the memory traffic with the arithmetic, provided the prefetches
are spread over the block's work: the 64 lines of a 4-pixel block issued
in one burst filled the line-fill buffers and stalled the running loads
(one thread, 512x1024x256 -> 19: no prefetch 172 ms, one burst per block
155 ms, a share before each class block 112 ms).

``llvm.prefetch`` never faults, so an index past the end of the array is
harmless (the address is formed without ``inbounds``).

Measured, and not used, for the channels-first product: prefetching the
next tile's 256 feature rows (one 1 KiB segment per row, each in its own
page) made it slower (108 -> 127 ms for the 512x1024x256 -> 19 argmax).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, index):
    """Prefetch ``arr.flat[index]`` for reading into every cache level (L1 on)."""
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        idx = args[1]
        if idx.type.width < 64:
            idx = builder.sext(idx, ir.IntType(64))
        ptr = builder.gep(ary.data, [idx])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # rw = 0 (read), locality = 3 (keep in every level), cache = 1 (data)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen
