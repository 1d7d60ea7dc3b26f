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
  vector (15 shuffles, 15 blends and 15 adds for 16 sums, where 16
  separate horizontal sums take ~110), stored a class row at a time.
  :func:`dot_block_aligned` is the same block on rows whose loads can all
  be 64-byte aligned (one cache line each, where an unaligned one spans
  two): the loop, at 8 loads per 16 FMAs, is bound by its loads.

The blocks are sized for the vector registers of the target
(:func:`fastlogits._vector_width.target_has_avx512`): with AVX-512, 32
registers of 16 float32, 10 classes x 32 pixels (outer) and 4 x 4 (dot);
with AVX2, 16 registers of 8 float32, 6 classes x 16 pixels (12 sums) and
4 classes x 2 pixels (8 sums). The AVX-512 blocks on an AVX2 CPU (LLVM
splits each 512-bit vector in two) kept 40 and 32 sums live in 16
registers and spilled them on every step: the channels-last head ran
only 1.1x PyTorch on an AMD EPYC (Zen 3) VM (docs/perf/cpu-023).
Numba's cache is keyed by the CPU's features, so a kernel compiled for
one size is never loaded on the other.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastlogits._vector_width import target_has_avx512
from fastlogits.cpu.llvm.irutil import (I32, I64, const, element_ptr, fmuladd_fn, i64, lane_mask, loop,
                                        masked_load, splat as splat_vec, vector_loop, vptr)

_WIDE = target_has_avx512()

#: float32 lanes of one vector register (64 or 32 bytes); float64 has half.
_LANES = 16 if _WIDE else 8

#: Bytes of one vector register: what :func:`dot_block_aligned` aligns
#: its loads to (64 with AVX-512, 32 with AVX2).
VECTOR_BYTES = 4 * _LANES

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
    """Reduce vectors of L lanes to one total each, a few per vector:
    returns ``(totals, where)``, ``where[k] = (vector, lane)`` of the sum of
    the lanes of ``vecs[k]``.

    Each level halves the lane groups of a pair of vectors a, b (a group:
    the lanes that still hold one running sum). Per group, ``lo`` keeps
    a's first half and b's second half (a blend: any vector port) and
    ``hi`` brings in the other two halves (one two-source shuffle: the
    shuffle port, which AVX-512 shares with an FMA unit), and ``lo + hi``
    holds a's sum in the first half and b's in the second: 1 shuffle,
    1 blend and 1 add per pair, where two shuffles per add kept the
    shuffle port twice as busy.
    """
    L = vecs[0].type.count
    labels = [[k] * L for k in range(len(vecs))]
    group = L
    while group > 1 and len(vecs) > 1:
        if len(vecs) % 2:  # an odd one out is paired with zeros
            vecs = vecs + [ir.Constant(vecs[0].type, [0.0] * L)]
            labels = labels + [[None] * L]
        half = group // 2
        first = [j % group < half for j in range(L)]
        lo = [j if first[j] else L + j for j in range(L)]
        hi = [j + half if first[j] else L + j - half for j in range(L)]
        mask_lo = ir.Constant(ir.VectorType(I32, L), lo)
        mask_hi = ir.Constant(ir.VectorType(I32, L), hi)
        vecs = [builder.fadd(builder.shuffle_vector(a, b, mask_lo),
                             builder.shuffle_vector(a, b, mask_hi))
                for a, b in zip(vecs[0::2], vecs[1::2])]
        labels = [[la[j] if first[j] else lb[j] for j in range(L)]
                  for la, lb in zip(labels[0::2], labels[1::2])]
        group = half
    where = {}
    for v, lab in enumerate(labels):
        for lane in range(0, L, group):
            if lab[lane] is not None:
                where[lab[lane]] = (v, lane)
    return vecs, where


def _dot_block_intrinsic(aligned):
    """The dot-form micro-kernel, with unaligned loads and a masked tail, or
    (``aligned``) with loads aligned to 64 bytes: see :func:`dot_block` and
    :func:`dot_block_aligned`."""

    def typer(typingctx, W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs):
        if not (all(isinstance(a, types.Array) and isinstance(a.dtype, types.Float)
                    for a in (W, f, b, z))
                and W.dtype == f.dtype == b.dtype == z.dtype
                and all(isinstance(i, types.Integer) for i in (w0, c0, ncls, f0, N, n0, zo, zs))):
            return None
        return types.none(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs), codegen

    def codegen(context, builder, sig, args):
        aw, af, ab, az = (context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 4, 8, 9))
        w0_, c0_, nc_, f0_, N_, n0_, zo_, zs_ = (i64(builder, args[i])
                                                 for i in (1, 2, 3, 5, 6, 7, 10, 11))
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        L = _LANES * 4 // size  # one vector register
        vec = ir.VectorType(elem, L)
        fma = fmuladd_fn(builder, vec)
        last = builder.sub(nc_, const(1))
        cls = [builder.add(c0_, builder.select(builder.icmp_signed("<", const(i), nc_),
                                               const(i), last))
               for i in range(DOT_CLASSES)]
        rows = ([(af.data, builder.add(f0_, builder.mul(const(p), N_))) for p in range(DOT_PIXELS)]
                + [(aw.data, builder.add(w0_, builder.mul(c, N_))) for c in cls])
        zero = ir.Constant(vec, [0.0] * L)

        def fmas(vs, accs):
            xs, ws = vs[:DOT_PIXELS], vs[DOT_PIXELS:]
            return [builder.call(fma, [ws[i], xs[p], accs[i * DOT_PIXELS + p]])
                    for i in range(DOT_CLASSES) for p in range(DOT_PIXELS)]

        def step(n, accs):
            return fmas([builder.load(vptr(builder, d, builder.add(r, n), vec), align=size)
                         for d, r in rows], accs)

        init = [zero] * (DOT_CLASSES * DOT_PIXELS)
        if aligned:
            # Row element n0 starts a vector (VECTOR_BYTES); N % L == 0, so the
            # aligned vectors from n0 cover every element of the row
            # but the last L - n0 and the first n0, which together fill
            # the one vector ending the row's last line (lanes < L - n0)
            # and the one before its first (lanes >= L - n0): both lines'
            # other lanes are masked off, never read.
            sums = loop(builder, n0_, builder.add(n0_, builder.sub(N_, const(L))), L, init,
                        step, "dota")
            tail_lanes = lane_mask(builder, L, builder.sub(const(L), n0_))
            head_lanes = builder.not_(tail_lanes)
            end = builder.add(n0_, builder.sub(N_, const(L)))
            start = builder.sub(n0_, const(L))
            vs = [masked_load(builder, d, builder.add(r, end), tail_lanes,
                              masked_load(builder, d, builder.add(r, start), head_lanes, zero))
                  for d, r in rows]
        else:
            # Whole vectors up to the last, which is loaded under a mask of
            # its 1..L elements (none when N == 0).
            nfull = builder.mul(builder.sdiv(builder.sub(N_, const(1)), const(L)), const(L))
            sums = vector_loop(builder, init, nfull, L, step, "dot")
            lanes = lane_mask(builder, L, builder.sub(N_, nfull))
            vs = [masked_load(builder, d, builder.add(r, nfull), lanes, zero) for d, r in rows]
        sums = fmas(vs, sums)

        totals, where = _tree_sum(builder, sums)
        for i in range(DOT_CLASSES):
            # Class row i: its DOT_PIXELS totals gathered into one short
            # vector (from at most two totals vectors), plus the bias.
            src = sorted({where[i * DOT_PIXELS + p][0] for p in range(DOT_PIXELS)})
            assert len(src) <= 2
            a = totals[src[0]]
            bvec = totals[src[-1]]
            idx = [where[i * DOT_PIXELS + p][1] + (L if where[i * DOT_PIXELS + p][0] != src[0] else 0)
                   for p in range(DOT_PIXELS)]
            row = builder.shuffle_vector(a, bvec, ir.Constant(ir.VectorType(I32, DOT_PIXELS), idx))
            bias = splat_vec(builder, row.type, builder.load(builder.gep(ab.data, [cls[i]])))
            with builder.if_then(builder.icmp_signed("<", const(i), nc_)):
                zrow = builder.add(zo_, builder.mul(const(i), zs_))
                builder.store(builder.fadd(row, bias), vptr(builder, az.data, zrow, row.type),
                              align=size)
        return context.get_dummy_value()

    typer.__name__ = typer.__qualname__ = "dot_block_aligned" if aligned else "dot_block"
    return intrinsic(typer)


#: ``dot_block(W, w0, c0, ncls, f, f0, N, n0, b, z, zo, zs)``:
#: ``z[zo + i*zs + p] = b[c0 + i] + sum_{n<N} W[w0 + (c0 + i)*N + n] * f[f0 + p*N + n]``
#: for i < ncls (<= DOT_CLASSES), p < DOT_PIXELS (flat indices, nothing
#: bounds-checked; class rows past ncls repeat row c0 + ncls - 1 and are
#: not stored; ``n0`` is unused). One vector sum per (class, pixel) along
#: n, the last 1..L features through masked loads, then one transpose-add
#: tree (:func:`_tree_sum`) and one short vector store per class row.
dot_block = _dot_block_intrinsic(False)

#: ``dot_block_aligned(...)``: :func:`dot_block` for rows whose element
#: ``n0`` (0 <= n0 < L, L the lanes of one vector register) is aligned to
#: :data:`VECTOR_BYTES`, in W and in f alike, with N a multiple of L (>=
#: L): every load is within one cache line (an unaligned 64-byte load
#: spans two and costs two of the L1's loads; see
#: :func:`fastlogits.cpu.ops.head.dot_weights`).
dot_block_aligned = _dot_block_intrinsic(True)


@intrinsic
def address_of(typingctx, arr, index):
    """The address of ``arr.flat[index]`` (a C-contiguous array), as an int64."""
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(element_ptr(context, builder, sig.args[0], args[0], args[1]), I64)

    return types.int64(arr, index), codegen
