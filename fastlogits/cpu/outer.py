"""The register-blocked micro-kernel of the outer-product head product.

``z[c, p] += sum_k Wt[k, c] B[k, p]`` for a block of OUTER_CLASSES classes
by OUTER_PIXELS pixels, the running sums held in vector registers for the
whole k loop: per k, 2 vector loads of B and OUTER_CLASSES broadcasts of
Wt feed 2 * OUTER_CLASSES FMAs, and z is read and written once per call.

Written as LLVM IR because Numba has no vector types: from scalar code
LLVM's loop vectorizer keeps such sums in memory (the z tile is loaded,
updated and stored every few k), which left the channels-first product at
~40 GFLOP/s per core on cached data against an FMA peak near 128.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Classes per block: 10 x 2 vector accumulators leave registers for the
#: loads; 19 classes (Cityscapes) take 2 blocks, 150 (ADE20K) 15.
OUTER_CLASSES = 10

#: Pixels per block: two vectors of 16.
OUTER_PIXELS = 32

_LANES = 16


@intrinsic
def outer_block(typingctx, Wt, w0, wst, b0, B, bo, sbk, K, z, zo, zs, nc, init_bias):
    """``z[zo + c*zs + p] = init + sum_{k<K} Wt[w0 + k*wst + c] * B[bo + k*sbk + p]``
    for c < nc (<= OUTER_CLASSES), p < OUTER_PIXELS (flat indices, nothing
    bounds-checked). ``init`` is ``Wt[b0 + c]`` when ``init_bias`` is
    nonzero, else the current z. Wt must hold OUTER_CLASSES readable
    columns from ``w0`` (and from ``b0``) even when nc is smaller.
    """
    arrays = (Wt, B, z)
    ints = (w0, wst, b0, bo, sbk, K, zo, zs, nc, init_bias)
    if not (all(isinstance(a, types.Array) and isinstance(a.dtype, types.Float) for a in arrays)
            and Wt.dtype == B.dtype == z.dtype
            and all(isinstance(i, types.Integer) for i in ints)):
        return None

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        a_wt, a_b, a_z = (context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 4, 8))
        w0_, wst_, b0_, bo_, sbk_, K_, zo_, zs_, nc_, initb_ = (
            builder.sext(v, i64) if v.type.width < 64 else v
            for v in (args[1], args[2], args[3], args[5], args[6], args[7], args[9], args[10],
                      args[11], args[12]))
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        vec = ir.VectorType(elem, _LANES)
        nvec = OUTER_PIXELS // _LANES
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]),
            f"llvm.fmuladd.v{_LANES}{'f32' if size == 4 else 'f64'}")
        zero_mask = ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES)

        def splat(v):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), v, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), zero_mask)

        def vload(data, index):
            ptr = builder.bitcast(builder.gep(data, [index]), vec.as_pointer())
            return builder.load(ptr, align=size)

        def vstore(value, data, index):
            ptr = builder.bitcast(builder.gep(data, [index]), vec.as_pointer())
            builder.store(value, ptr, align=size)

        def iconst(v):
            return ir.Constant(i64, v)

        # Initial sums: the bias, or z (rows past nc read row nc - 1: in
        # bounds, never stored).
        use_bias = builder.icmp_signed("!=", initb_, iconst(0))
        last = builder.sub(nc_, iconst(1))
        init = []
        for c in range(OUTER_CLASSES):
            row = builder.select(builder.icmp_signed("<", iconst(c), nc_), iconst(c), last)
            bias = splat(builder.load(builder.gep(a_wt.data, [builder.add(b0_, iconst(c))])))
            zrow = builder.add(zo_, builder.mul(row, zs_))
            for v in range(nvec):
                old = vload(a_z.data, builder.add(zrow, iconst(v * _LANES)))
                init.append(builder.select(use_bias, bias, old))

        entry = builder.block
        loop = builder.append_basic_block("outer.loop")
        done = builder.append_basic_block("outer.done")
        builder.cbranch(builder.icmp_signed(">", K_, iconst(0)), loop, done)

        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(iconst(0), entry)
        accs = []
        for a in init:
            phi = builder.phi(vec)
            phi.add_incoming(a, entry)
            accs.append(phi)
        brow = builder.add(bo_, builder.mul(k, sbk_))
        xs = [vload(a_b.data, builder.add(brow, iconst(v * _LANES))) for v in range(nvec)]
        wrow = builder.add(w0_, builder.mul(k, wst_))
        new = []
        for c in range(OUTER_CLASSES):
            w = splat(builder.load(builder.gep(a_wt.data, [builder.add(wrow, iconst(c))])))
            for v in range(nvec):
                new.append(builder.call(fma, [w, xs[v], accs[c * nvec + v]]))
        k1 = builder.add(k, iconst(1))
        body_end = builder.block
        k.add_incoming(k1, body_end)
        for phi, val in zip(accs, new):
            phi.add_incoming(val, body_end)
        builder.cbranch(builder.icmp_signed("<", k1, K_), loop, done)

        builder.position_at_end(done)
        # (all the phis lead the block; the stores follow)
        final = []
        for a, b in zip(init, new):
            phi = builder.phi(vec)
            phi.add_incoming(a, entry)
            phi.add_incoming(b, body_end)
            final.append(phi)
        for c in range(OUTER_CLASSES):
            with builder.if_then(builder.icmp_signed("<", iconst(c), nc_)):
                zrow = builder.add(zo_, builder.mul(iconst(c), zs_))
                for v in range(nvec):
                    vstore(final[c * nvec + v], a_z.data, builder.add(zrow, iconst(v * _LANES)))
        return context.get_dummy_value()

    return types.none(Wt, w0, wst, b0, B, bo, sbk, K, z, zo, zs, nc, init_bias), codegen
