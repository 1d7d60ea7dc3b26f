"""A vector gather for the channels-last transpose.

Channels-last tiles are transposed into (C, P) scratch before the
vectorized tile loops (:func:`fastlogits.cpu.tiles.load_transposed`). The
class-c scores of 16 consecutive pixels sit C elements apart; with C known
only at run time LLVM turns that read into 16 scalar loads and inserts
(measured ~2 G elements/s per core, the largest cost of the channels-last
argmax). One AVX-512 gather reads the 16 in a single instruction.

Numba has no vector types, so the intrinsic does the whole step: gather 16
elements of ``src`` and store them contiguously into ``dst`` (C-contiguous
arrays of one float dtype, indexed flat; nothing is bounds-checked).

Tried and not kept: the way back (softmax's ``store_transposed``) as
gathers through a table of offsets measured no faster (1.47 G, against
1.42 G elements/s with scalar loads, per core on an L2-resident tile).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Elements per gather (one AVX-512 vector of float32).
GATHER = 16


@intrinsic
def gather16(typingctx, src, start, stride, dst, dstart):
    """``dst.flat[dstart + k] = src.flat[start + k * stride]`` for k < 16."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and isinstance(src.dtype, types.Float)
            and all(isinstance(t, types.Integer) for t in (start, stride, dstart))):
        return None

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vec_i64 = ir.VectorType(i64, GATHER)
        asrc = context.make_array(sig.args[0])(context, builder, args[0])
        adst = context.make_array(sig.args[3])(context, builder, args[3])
        start, stride, dstart = (builder.sext(v, i64) if v.type.width < 64 else v
                                 for v in (args[1], args[2], args[4]))
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        vec_elem = ir.VectorType(elem, GATHER)
        vec_ptr = ir.VectorType(ir.PointerType(), GATHER)

        def splat(v):
            undef = ir.Constant(vec_i64, ir.Undefined)
            one = builder.insert_element(undef, v, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, undef,
                                          ir.Constant(ir.VectorType(i32, GATHER), [0] * GATHER))

        # Byte addresses: data + (start + k * stride) * size, k = 0..15.
        iota = ir.Constant(vec_i64, list(range(GATHER)))
        base = builder.add(builder.ptrtoint(asrc.data, i64),
                           builder.mul(start, ir.Constant(i64, size)))
        offsets = builder.mul(iota, splat(builder.mul(stride, ir.Constant(i64, size))))
        ptrs = builder.inttoptr(builder.add(splat(base), offsets), vec_ptr)
        mask = ir.Constant(ir.VectorType(ir.IntType(1), GATHER), [1] * GATHER)
        name = f"llvm.masked.gather.v{GATHER}{'f32' if size == 4 else 'f64'}.v{GATHER}p0"
        fnty = ir.FunctionType(vec_elem, [vec_ptr, i32, mask.type, vec_elem])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        vals = builder.call(fn, [ptrs, ir.Constant(i32, size), mask,
                                 ir.Constant(vec_elem, ir.Undefined)])
        out = builder.gep(adst.data, [dstart])
        builder.store(vals, builder.bitcast(out, vec_elem.as_pointer()), align=size)
        return context.get_dummy_value()

    return types.none(src, start, stride, dst, dstart), codegen
