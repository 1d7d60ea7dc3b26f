"""Vector transposes for the channels-last tiles.

Channels-last tiles are transposed into (C, P) scratch before the
vectorized tile loops (:func:`fastlogits.cpu.blocks.tiles.load_transposed`). The
class-c scores of consecutive pixels sit C elements apart; with C known
only at run time LLVM turns that read into scalar loads and inserts
(measured ~2 G elements/s per core, the largest cost of the channels-last
argmax).

Numba has no vector types, so each intrinsic does a whole step on
C-contiguous arrays of one float dtype, indexed flat (nothing is
bounds-checked):

- :func:`transpose8` (from 8 classes on, both directions: ``store_transposed``
  too): 8 rows of 8 classes loaded as vectors and transposed in registers
  by shuffles: 2.9x faster than vector gathers on AMD Zen 3 (AVX2), and
  faster than the 16-lane gather on Intel Ice Lake (AVX-512) too
  (docs/perf/cpu-024, cpu-028).
- :func:`gather16` (fewer than 8 classes, where every 8 x 8 block would be
  partial): one vector gather of 16 elements, stored contiguously.

And one table lookup: :func:`lookup` (the cross-entropy's class weights
of a tile's targets), a vector gather per register of results.

Tried and not kept: the way back (softmax's ``store_transposed``) as
gathers through a table of offsets measured no faster (1.47 G, against
1.42 G elements/s with scalar loads, per core on an L2-resident tile).
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastlogits.cpu.blocks.microkernels import VECTOR_BYTES
from fastlogits.cpu.llvm.irutil import (I32, I64, const, i64, lane_mask, masked_gather, masked_load,
                                        masked_store, splat, vector_loop, vector_of, vptr)
from fastlogits.cpu.llvm.scores import ScoreIR, compute_type, is_scores

#: Elements per gather (one AVX-512 vector of float32).
GATHER = 16

#: The gather's element offsets.
IVEC = ir.VectorType(I64, GATHER)


@intrinsic
def gather16(typingctx, src, start, stride, dst, dstart):
    """``dst.flat[dstart + k] = src.flat[start + k * stride]`` for k < 16
    (src scores, :mod:`fastlogits.cpu.llvm.scores`; dst in their computed type): one vector
    gather (:meth:`fastlogits.cpu.llvm.scores.ScoreIR.masked_gather`, every lane on) and one
    contiguous store."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and is_scores(src.dtype) and dst.dtype == compute_type(src.dtype)
            and all(isinstance(t, types.Integer) for t in (start, stride, dstart))):
        return None

    def codegen(context, builder, sig, args):
        asrc = context.make_array(sig.args[0])(context, builder, args[0])
        adst = context.make_array(sig.args[3])(context, builder, args[3])
        start_, stride_, dstart_ = (i64(builder, args[i]) for i in (1, 2, 4))
        scores = ScoreIR(context, sig.args[0].dtype)
        vec = ir.VectorType(scores.elem, GATHER)
        # Element offsets start + k * stride, k = 0..15 (i64: x may hold
        # more than 2**31 scores).
        index = builder.add(splat(builder, IVEC, start_),
                            builder.mul(ir.Constant(IVEC, list(range(GATHER))),
                                        splat(builder, IVEC, stride_)))
        every = ir.Constant(ir.VectorType(ir.IntType(1), GATHER), [1] * GATHER)
        vals = scores.masked_gather(builder, asrc.data, index, every,
                                    ir.Constant(vec, ir.Undefined))
        builder.store(vals, vptr(builder, adst.data, dstart_, vec), align=scores.compute_size)
        return context.get_dummy_value()

    return types.none(src, start, stride, dst, dstart), codegen


@intrinsic
def lookup(typingctx, table, idx, out, n):
    """``out[p] = table[idx[p]]`` where ``idx[p] >= 0``, else 0, for p <
    n: ``table`` and ``out`` 1-D C-contiguous of one float dtype, ``idx``
    1-D C-contiguous int32 (an index >= 0 must be inside ``table``).

    A masked vector gather per register of results (``vgatherdps``:
    16 float32 with AVX-512), the last partial one under a lane mask. In
    a Numba loop the lookup stays scalar (LLVM will not gather there),
    and written as a select around a load it even stayed a branch: 2.0
    and up to 5 cycles per float32 result (docs/perf/cpu-054)."""
    ok = (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
              for a in (table, idx, out))
          and isinstance(table.dtype, types.Float) and out.dtype == table.dtype
          and idx.dtype == types.int32 and isinstance(n, types.Integer))
    if not ok:
        return None

    def codegen(context, builder, sig, args):
        b = builder
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        lanes = VECTOR_BYTES // size
        vec, ivec = ir.VectorType(elem, lanes), ir.VectorType(I32, lanes)
        tdata, idata, odata = (context.make_array(ty)(context, b, a).data
                               for ty, a in zip(sig.args[:3], args[:3]))
        n = i64(b, args[3])
        whole = b.sub(n, b.srem(n, const(lanes)))
        zero = vector_of(vec, 0.0)
        none = ir.Constant(ivec, [-1] * lanes)

        def block(k, valid):
            iv = (b.load(vptr(b, idata, k, ivec), align=4) if valid is None
                  else masked_load(b, idata, k, valid, none))
            found = b.icmp_signed(">=", iv, ir.Constant(ivec, [0] * lanes))
            return masked_gather(b, tdata, iv, found, zero)

        def body(k, carried):
            b.store(block(k, None), vptr(b, odata, k, vec), align=size)
            return carried

        vector_loop(b, [], whole, lanes, body, "lookup")
        with b.if_then(b.icmp_signed("<", whole, n)):
            valid = lane_mask(b, lanes, b.sub(n, whole))
            masked_store(b, block(whole, valid), odata, whole, valid)
        return context.get_dummy_value()

    return types.none(table, idx, out, n), codegen


#: Pixels and classes of one :func:`transpose8` block.
BLOCK8 = 8


def _halves_mask(mask, halves):
    """An 8-lane two-input shuffle ``mask`` applied to each 8-lane part of
    vectors of ``8 * halves`` lanes (part h of the result from part h of
    each input)."""
    n = 8 * halves
    return [(i if i < 8 else n + i - 8) + 8 * h for h in range(halves) for i in mask]


def _transpose_ir(builder, rows):
    """The 8 x 8 transpose of ``rows`` (8 vectors of 8 lanes) by three
    levels of two-input shuffles (LLVM lowers them to unpack, shufps and
    vperm2f128 on AVX2): row j of the result holds lane j of every input.

    Vectors of 16 lanes are two 8 x 8 blocks, one per half, transposed at
    once by the same shuffles on 64-byte registers (:mod:`.rowblock`)."""
    halves = rows[0].type.count // 8

    def shuf(a, b, mask):
        mask = _halves_mask(mask, halves)
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(mask)),
                                                        mask))

    lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for k in range(0, 8, 2):
        t += [shuf(rows[k], rows[k + 1], lo), shuf(rows[k], rows[k + 1], hi)]
    # t[0] = a0 b0 a1 b1 | a4 b4 a5 b5, t[1] = a2 b2 a3 b3 | a6 b6 a7 b7, ...
    lo2, hi2 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = []
    for k in (0, 4):
        for m in (0, 1):
            u += [shuf(t[k + m], t[k + m + 2], lo2), shuf(t[k + m], t[k + m + 2], hi2)]
    # u[0] = a0 b0 c0 d0 | a4 b4 c4 d4, u[1] = a1..d1 | a5..d5, u[2]: 2|6, u[3]: 3|7
    lo3, hi3 = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    out = [None] * 8
    for j in range(4):
        out[j] = shuf(u[j], u[j + 4], lo3)
        out[j + 4] = shuf(u[j], u[j + 4], hi3)
    return out


@intrinsic
def transpose8(typingctx, src, start, stride, nclasses, dst, dstart, dstride):
    """``dst.flat[dstart + j*dstride + i] = src.flat[start + i*stride + j]``
    for i < 8 (pixels: rows of src) and j < ``nclasses`` (<= 8): one 8 x 8
    block of the channels-last transpose, 8 row loads (masked when
    nclasses < 8: nothing past a row's end is read), a shuffle transpose
    in registers and ``nclasses`` contiguous stores. C-contiguous arrays
    of scores (floats or float16 bits, :mod:`fastlogits.cpu.llvm.scores`) computed in one
    type, indexed flat; nothing is bounds-checked."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and is_scores(src.dtype) and is_scores(dst.dtype)
            and compute_type(dst.dtype) == compute_type(src.dtype)
            and all(isinstance(t, types.Integer)
                    for t in (start, stride, nclasses, dstart, dstride))):
        return None

    def codegen(context, builder, sig, args):
        asrc = context.make_array(sig.args[0])(context, builder, args[0])
        adst = context.make_array(sig.args[4])(context, builder, args[4])
        start_, stride_, ncls, dstart_, dstride_ = (i64(builder, args[i]) for i in (1, 2, 3, 5, 6))
        scores, out = ScoreIR(context, sig.args[0].dtype), ScoreIR(context, sig.args[4].dtype)
        vec = ir.VectorType(scores.elem, BLOCK8)
        offsets = [builder.add(start_, builder.mul(stride_, const(i))) for i in range(BLOCK8)]
        full = builder.icmp_signed("==", ncls, const(BLOCK8))
        with builder.if_else(full) as (whole, part):
            with whole:
                a = [scores.load(builder, asrc.data, o, BLOCK8) for o in offsets]
                a_block = builder.block
            with part:
                mask = lane_mask(builder, BLOCK8, ncls)
                zero = vector_of(vec, 0.0)
                b = [scores.masked_load(builder, asrc.data, o, mask, zero) for o in offsets]
                b_block = builder.block
        rows = []
        for va, vb in zip(a, b):
            phi = builder.phi(vec)
            phi.add_incoming(va, a_block)
            phi.add_incoming(vb, b_block)
            rows.append(phi)
        cols = _transpose_ir(builder, rows)
        for j, col in enumerate(cols):
            def store(col=col, j=j):
                at = builder.add(dstart_, builder.mul(dstride_, const(j)))
                out.store(builder, col, adst.data, at)
            if j == 0:
                store()
            else:
                with builder.if_then(builder.icmp_signed("<", const(j), ncls)):
                    store()
        return context.get_dummy_value()

    return types.none(src, start, stride, nclasses, dst, dstart, dstride), codegen
