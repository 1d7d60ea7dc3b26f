"""Vector gathers for the channels-last transposes.

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
gathers through a table of offsets measured no faster (1.47 vs 1.42 G
elements/s per core on an L2-resident tile).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Elements per gather (one AVX-512 vector of float32).
GATHER = 16

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _floats(src, dst):
    return (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and isinstance(src.dtype, types.Float))


def _ints(*tys):
    return all(isinstance(t, types.Integer) for t in tys)


def _i64(builder, v):
    return builder.sext(v, _I64) if v.type.width < 64 else v


def _splat(builder, v):
    vec = ir.VectorType(_I64, GATHER)
    undef = ir.Constant(vec, ir.Undefined)
    one = builder.insert_element(undef, v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, GATHER),
                                                          [0] * GATHER))


def _gather_store(context, builder, sig, src, start, offsets, dst, dstart):
    """Gather ``src.flat[start + offsets[k]]`` (offsets: <16 x i64>) and
    store the vector at ``dst.flat[dstart]`` (``sig``: src, start, _, dst, dstart)."""
    asrc = context.make_array(sig.args[0])(context, builder, src)
    adst = context.make_array(sig.args[3])(context, builder, dst)
    elem = context.get_data_type(sig.args[0].dtype)
    size = context.get_abi_sizeof(elem)
    vec_ptr = ir.VectorType(ir.PointerType(), GATHER)
    vec_elem = ir.VectorType(elem, GATHER)
    base = builder.add(builder.ptrtoint(asrc.data, _I64),
                       builder.mul(_i64(builder, start), ir.Constant(_I64, size)))
    addr = builder.add(_splat(builder, base),
                       builder.mul(offsets, _splat(builder, ir.Constant(_I64, size))))
    ptrs = builder.inttoptr(addr, vec_ptr)
    mask = ir.Constant(ir.VectorType(ir.IntType(1), GATHER), [1] * GATHER)
    name = f"llvm.masked.gather.v{GATHER}{'f32' if size == 4 else 'f64'}.v{GATHER}p0"
    fnty = ir.FunctionType(vec_elem, [vec_ptr, _I32, mask.type, vec_elem])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    vals = builder.call(fn, [ptrs, ir.Constant(_I32, size), mask,
                             ir.Constant(vec_elem, ir.Undefined)])
    out = builder.gep(adst.data, [_i64(builder, dstart)])
    builder.store(vals, builder.bitcast(out, vec_elem.as_pointer()), align=size)
    return context.get_dummy_value()


@intrinsic
def gather16(typingctx, src, start, stride, dst, dstart):
    """``dst.flat[dstart + k] = src.flat[start + k * stride]`` for k < 16."""
    if not (_floats(src, dst) and _ints(start, stride, dstart)):
        return None

    def codegen(context, builder, sig, args):
        iota = ir.Constant(ir.VectorType(_I64, GATHER), list(range(GATHER)))
        offsets = builder.mul(iota, _splat(builder, _i64(builder, args[2])))
        return _gather_store(context, builder, sig, args[0], args[1], offsets, args[3],
                             args[4])

    return types.none(src, start, stride, dst, dstart), codegen

