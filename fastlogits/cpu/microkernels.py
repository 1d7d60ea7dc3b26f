"""Register-blocked micro-kernels of the LinearHead product, in LLVM IR.

Numba has no vector types: from scalar code LLVM's loop vectorizer keeps
running sums in memory or reduces each one on its own. These intrinsics
write the vector code directly.

- :func:`outer_block` (outer-product form): ``z[c, p] += sum_k Wt[k, c]
  B[k, p]`` for OUTER_CLASSES classes x OUTER_PIXELS pixels, the sums in
  vector registers for the whole k loop: per k, 2 vector loads of B and
  OUTER_CLASSES broadcasts of Wt feed 2 * OUTER_CLASSES FMAs, and z is read
  and written once per call. (From scalar code the z tile was loaded,
  updated and stored every 4 k: ~40 GFLOP/s per core on cached data.)
- :func:`dot_block` (dot form): ``z[c, p] = b[c] + sum_n W[c, n] f[p, n]``
  for DOT_CLASSES x DOT_PIXELS (4 x 4 with AVX-512), one vector sum each
  along n, then ONE transpose-add tree that leaves the totals in one
  vector (~45 shuffles and adds for 16 sums, where 16 separate horizontal
  sums take ~110).

The blocks are sized for the vector registers of the target
(:func:`fastlogits._vector_width.target_has_avx512`): with AVX-512, 32
registers of 16 float32, 10 classes x 32 pixels (outer) and 4 x 4 (dot);
with AVX2, 16 registers of 8 float32, 6 classes x 16 pixels (12 sums) and
4 classes x 2 pixels (8 sums). The AVX-512 blocks on an AVX2 CPU (LLVM
splits each 512-bit vector in two) kept 40 and 32 sums live in 16
registers and spilled them on every step: the channels-last head ran
only 1.1x PyTorch on an AMD EPYC (Zen 3) VM (bench/RESULTS.md, log 23).
Numba's cache is keyed by the CPU's features, so a kernel compiled for
one size is never loaded on the other.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastlogits._vector_width import target_has_avx512
from fastlogits.cpu.irutil import (I32, const, fmuladd_fn, i64, lane_mask, masked_load,
                                   splat as splat_vec, vector_loop, vptr)

_WIDE = target_has_avx512()

#: float32 lanes of one vector register (64 or 32 bytes); float64 has half.
_LANES = 16 if _WIDE else 8

#: Classes per block: OUTER_CLASSES x 2 vector accumulators leave
#: registers for the loads (AVX-512: 20 of 32; AVX2: 12 of 16); 19
#: classes (Cityscapes) take 2 or 4 blocks.
OUTER_CLASSES = 10 if _WIDE else 6

#: Pixels per block: two float32 vectors.
OUTER_PIXELS = 2 * _LANES

#: Classes and pixels of one :func:`dot_block`: 16 vector sums with
#: AVX-512, 8 with AVX2 (plus the loads of W and f rows: 8 or 6).
DOT_CLASSES = 4
DOT_PIXELS = 4 if _WIDE else 2

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
        a_wt, a_b, a_z = (context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 4, 8))
        w0_, wst_, b0_, bo_, sbk_, K_, zo_, zs_, nc_, initb_ = (
            i64(builder, args[i]) for i in (1, 2, 3, 5, 6, 7, 9, 10, 11, 12))
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        vec = ir.VectorType(elem, _LANES)
        nvec = OUTER_PIXELS // _LANES
        fma = fmuladd_fn(builder, vec)

        def splat(v):
            return splat_vec(builder, vec, v)

        def vload(data, index):
            return builder.load(vptr(builder, data, index, vec), align=size)

        def vstore(value, data, index):
            builder.store(value, vptr(builder, data, index, vec), align=size)

        # Initial sums: the bias, or z (rows past nc read row nc - 1: in
        # bounds, never stored).
        use_bias = builder.icmp_signed("!=", initb_, const(0))
        last = builder.sub(nc_, const(1))
        init = []
        for c in range(OUTER_CLASSES):
            row = builder.select(builder.icmp_signed("<", const(c), nc_), const(c), last)
            bias = splat(builder.load(builder.gep(a_wt.data, [builder.add(b0_, const(c))])))
            zrow = builder.add(zo_, builder.mul(row, zs_))
            for v in range(nvec):
                old = vload(a_z.data, builder.add(zrow, const(v * _LANES)))
                init.append(builder.select(use_bias, bias, old))

        def step(k, accs):
            brow = builder.add(bo_, builder.mul(k, sbk_))
            xs = [vload(a_b.data, builder.add(brow, const(v * _LANES))) for v in range(nvec)]
            wrow = builder.add(w0_, builder.mul(k, wst_))
            new = []
            for c in range(OUTER_CLASSES):
                w = splat(builder.load(builder.gep(a_wt.data, [builder.add(wrow, const(c))])))
                for v in range(nvec):
                    new.append(builder.call(fma, [w, xs[v], accs[c * nvec + v]]))
            return new

        final = vector_loop(builder, init, K_, 1, step, "outer")
        for c in range(OUTER_CLASSES):
            with builder.if_then(builder.icmp_signed("<", const(c), nc_)):
                zrow = builder.add(zo_, builder.mul(const(c), zs_))
                for v in range(nvec):
                    vstore(final[c * nvec + v], a_z.data, builder.add(zrow, const(v * _LANES)))
        return context.get_dummy_value()

    return types.none(Wt, w0, wst, b0, B, bo, sbk, K, z, zo, zs, nc, init_bias), codegen


def _tree_sum(builder, vecs):
    """Reduce 16 vectors of L lanes to 16 totals: vector k // L, lane
    k % L holds the sum of the lanes of ``vecs[k]``. Each level adds the
    two halves of every lane group of a pair of vectors (2 shuffles and 1
    add per pair), halving the groups and the number of vectors."""
    L = vecs[0].type.count
    group = L
    while group > 1 and len(vecs) > 1:
        half = group // 2
        lo, hi = [], []
        for off in (0, L):  # lanes of the first vector, then of the second
            for g in range(0, L, group):
                lo += [off + g + i for i in range(half)]
                hi += [off + g + half + i for i in range(half)]
        mask_lo = ir.Constant(ir.VectorType(I32, L), lo)
        mask_hi = ir.Constant(ir.VectorType(I32, L), hi)
        vecs = [builder.fadd(builder.shuffle_vector(a, b, mask_lo),
                             builder.shuffle_vector(a, b, mask_hi))
                for a, b in zip(vecs[0::2], vecs[1::2])]
        group = half
    return vecs


@intrinsic
def dot_block(typingctx, W, c0, ncls, f, f0, N, b, z, zo, zs):
    """``z[zo + i*zs + p] = b[c0 + i] + sum_{n<N} W[(c0 + i)*N + n] * f[f0 + p*N + n]``
    for i < ncls (<= DOT_CLASSES), p < DOT_PIXELS (flat indices, nothing
    bounds-checked; class rows past ncls repeat row c0 + ncls - 1 and are
    not stored). The last N % L features go through masked loads.
    """
    if not (all(isinstance(a, types.Array) and isinstance(a.dtype, types.Float)
                for a in (W, f, b, z))
            and W.dtype == f.dtype == b.dtype == z.dtype
            and all(isinstance(i, types.Integer) for i in (c0, ncls, f0, N, zo, zs))):
        return None

    def codegen(context, builder, sig, args):
        aw, af, ab, az = (context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 3, 6, 7))
        c0_, nc_, f0_, N_, zo_, zs_ = (i64(builder, args[i]) for i in (1, 2, 4, 5, 8, 9))
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        L = _LANES * 4 // size  # one vector register
        vec = ir.VectorType(elem, L)
        fma = fmuladd_fn(builder, vec)
        last = builder.sub(nc_, const(1))
        cls = [builder.add(c0_, builder.select(builder.icmp_signed("<", const(i), nc_),
                                               const(i), last))
               for i in range(DOT_CLASSES)]
        wrow = [builder.mul(c, N_) for c in cls]
        frow = [builder.add(f0_, builder.mul(const(p), N_)) for p in range(DOT_PIXELS)]
        nfull = builder.sub(N_, builder.srem(N_, const(L)))

        zero = ir.Constant(vec, [0.0] * L)

        def step(n, accs):
            xs = [builder.load(vptr(builder, af.data, builder.add(r, n), vec), align=size)
                  for r in frow]
            ws = [builder.load(vptr(builder, aw.data, builder.add(r, n), vec), align=size)
                  for r in wrow]
            return [builder.call(fma, [ws[i], xs[p], accs[i * DOT_PIXELS + p]])
                    for i in range(DOT_CLASSES) for p in range(DOT_PIXELS)]

        sums = vector_loop(builder, [zero] * (DOT_CLASSES * DOT_PIXELS), nfull, L, step, "dot")

        # The last N % L features: masked loads (a false lane reads nothing).
        mask = lane_mask(builder, L, builder.sub(N_, nfull))

        def tail(row):
            return masked_load(builder, row[0], builder.add(row[1], nfull), mask, zero)

        xs = [tail((af.data, r)) for r in frow]
        ws = [tail((aw.data, r)) for r in wrow]
        sums = [builder.call(fma, [ws[i], xs[p], sums[i * DOT_PIXELS + p]])
                for i in range(DOT_CLASSES) for p in range(DOT_PIXELS)]

        totals = _tree_sum(builder, sums)
        for i in range(DOT_CLASSES):
            bias = builder.load(builder.gep(ab.data, [cls[i]]))
            with builder.if_then(builder.icmp_signed("<", const(i), nc_)):
                zrow = builder.add(zo_, builder.mul(const(i), zs_))
                for p in range(DOT_PIXELS):
                    k = i * DOT_PIXELS + p
                    t = builder.extract_element(totals[k // L], ir.Constant(I32, k % L))
                    builder.store(builder.fadd(t, bias),
                                  builder.gep(az.data, [builder.add(zrow, const(p))]))
        return context.get_dummy_value()

    return types.none(W, c0, ncls, f, f0, N, b, z, zo, zs), codegen
