"""Eight channels-last pixels at a time, transposed in registers.

A channels-last pixel's C scores are one row of a C-contiguous (rows, C)
array. For the per-pixel reductions of argmax, classify, cross-entropy and
the confusion matrix, these intrinsics take 8 consecutive rows, load them
8 classes at a time as vectors, transpose each 8 x 8 block in registers
(:func:`fastlogits.cpu.gather._transpose_ir`) and reduce the 8 columns
across the class blocks, the 8 pixels' running max, index and exp-sum
living in vector registers. Nothing goes through a scratch tile, and there
is no horizontal reduction per row (what the row kernels of
:mod:`.rowvec` pay for every pixel: at 19 classes most of their time).

Class blocks: the full blocks ``[0, C - C % 8)``, then, when C % 8 != 0,
one last block that overlaps the one before, ``[C - 8, C)``, so every load
is a whole vector inside its row (no masked loads), of which only the
columns not seen yet are used.

C >= 8, and rows ``r .. r + 7`` must exist: callers take fewer classes and
the last ``rows % 8`` pixels another way. x must be C-contiguous; nothing
is bounds-checked.
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastlogits.cpu.fastexp import exp_shifted_ir
from fastlogits.cpu.gather import BLOCK8, _transpose_ir
from fastlogits.cpu.irutil import I32, const, i64, loop, splat, vector_of, vptr

_NINF = float("-inf")


@njit(cache=True)
def blocks_end(r0, r1, on):
    """Where the whole blocks of 8 rows of ``[r0, r1)`` end (``r0`` when
    ``on`` is false): the drivers take ``[r0, end)`` by blocks, the rest
    a row at a time."""
    return r0 + (r1 - r0) // BLOCK8 * BLOCK8 if on else r0


def _is_rows(a):
    return (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
            and isinstance(a.dtype, types.Float))


def _is_vec(a, dtype=None):
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and (dtype is None or a.dtype == dtype))


class _Rows8:
    """IR view of rows ``r .. r + 7`` of x: :meth:`columns` of a class block."""

    def __init__(self, context, builder, aty, aval, r):
        self.builder = builder
        arr = context.make_array(aty)(context, builder, aval)
        self.data = arr.data
        self.C = builder.extract_value(arr.shape, 1)
        self.elem = context.get_data_type(aty.dtype)
        self.size = context.get_abi_sizeof(self.elem)
        self.vec = ir.VectorType(self.elem, BLOCK8)
        base = builder.mul(i64(builder, r), self.C)
        self.starts = [builder.add(base, builder.mul(self.C, const(i))) for i in range(BLOCK8)]
        self.C8 = builder.sub(self.C, builder.srem(self.C, const(BLOCK8)))
        self.ninf = vector_of(self.vec, _NINF)

    def columns(self, c0):
        """The 8 columns (class c0 + j of the 8 pixels) of the block at c0."""
        b = self.builder
        rows = [b.load(vptr(b, self.data, b.add(s, c0), self.vec), align=self.size)
                for s in self.starts]
        return _transpose_ir(b, rows)

    def reduce(self, init, step):
        """Fold ``step(carried, c0, cols)`` over every class block, ``cols``
        a list of ``(j, column)``: the scores of class ``c0 + j``. The full
        blocks give all 8 columns; the last block, overlapping the one
        before, only those not seen yet (one code path per ``C % 8``, so
        no work is spent on the repeated ones)."""
        b = self.builder
        acc = loop(b, const(0), self.C8, BLOCK8, init,
                   lambda c0, carried: step(carried, c0, list(enumerate(self.columns(c0)))),
                   "blocks")
        c0 = b.sub(self.C, const(BLOCK8))
        entry = b.block
        done = b.append_basic_block("tail.done")
        sw = b.switch(b.sub(self.C, self.C8), done)
        incoming = [(entry, acc)]
        for k in range(1, BLOCK8):
            case = b.append_basic_block(f"tail{k}")
            sw.add_case(const(k), case)
            b.position_at_end(case)
            cols = self.columns(c0)
            out = step(acc, c0, [(j, cols[j]) for j in range(BLOCK8 - k, BLOCK8)])
            incoming.append((b.block, out))
            b.branch(done)
        b.position_at_end(done)
        result = []
        for i, v in enumerate(acc):
            phi = b.phi(v.type)
            for block, values in incoming:
                phi.add_incoming(values[i], block)
            result.append(phi)
        return result


#: Independent running (max, index) pairs per block in :func:`rows8_argmax`
#: (column j of a class block goes to pair j % ARGMAX_CHAINS, merged at the
#: end): each class's compare and select waits on the one before, and with
#: one chain a block's max took long enough that the exp-sum after it could
#: not overlap with the next block. Two chains, 40 M float32 scores, two
#: threads (bench/RESULTS.md, log 29): argmax 10.6 -> 8.6-9.3 ms at C = 19,
#: 11.6 -> 9.3 at C = 8; four chains measured no better than two.
ARGMAX_CHAINS = 2


def _merge_argmax(builder, a, b):
    """The (max, first index) of two chains' ``(m, idx)`` vector pairs: the
    larger max, the smaller index on a tie; a NaN wins over any number,
    and between two NaNs the smaller index (the first NaN, NumPy's rule)."""
    (ma, ia), (mb, ib) = a, b
    lt = builder.icmp_signed("<", ib, ia)
    a_nan = builder.fcmp_unordered("uno", ma, ma)
    b_nan = builder.fcmp_unordered("uno", mb, mb)
    take = builder.or_(builder.fcmp_ordered(">", mb, ma),
                       builder.and_(builder.fcmp_ordered("==", mb, ma), lt))
    take = builder.or_(take, builder.and_(b_nan, builder.or_(builder.not_(a_nan), lt)))
    return builder.select(take, mb, ma), builder.select(take, ib, ia)


@intrinsic
def rows8_argmax(typingctx, x, r, m, idx, p):
    """Max of rows ``r .. r + 7`` of the C-contiguous (rows, C) float array
    ``x`` into ``m[p:p + 8]`` (x's dtype) and the index of its first
    occurrence into ``idx[p:p + 8]`` (int32); the first NaN wins over any
    number (NumPy's rule, as :func:`fastlogits.cpu.tiles.tile_argmax`)."""
    if not (_is_rows(x) and _is_vec(m, x.dtype) and _is_vec(idx, types.int32)
            and isinstance(r, types.Integer) and isinstance(p, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        rw = _Rows8(context, builder, sig.args[0], args[0], args[1])
        ivec = ir.VectorType(I32, BLOCK8)

        def step(carried, c0, cols):
            carried = list(carried)
            c0 = builder.trunc(c0, I32)
            for j, v in cols:
                k = 2 * (j % ARGMAX_CHAINS)
                mx, ix = carried[k], carried[k + 1]
                # v > mx, or v the first NaN: "unordered or greater" while
                # mx is still a number (a NaN mx never changes again).
                take = builder.and_(builder.fcmp_unordered(">", v, mx),
                                    builder.fcmp_ordered("ord", mx, mx))
                carried[k] = builder.select(take, v, mx)
                cls = splat(builder, ivec, builder.add(c0, ir.Constant(I32, j)))
                carried[k + 1] = builder.select(take, cls, ix)
            return carried

        res = rw.reduce([rw.ninf, ir.Constant(ivec, [0] * BLOCK8)] * ARGMAX_CHAINS, step)
        chains = [(res[k], res[k + 1]) for k in range(0, len(res), 2)]
        while len(chains) > 1:
            chains = [_merge_argmax(builder, *chains[i:i + 2]) if i + 1 < len(chains)
                      else chains[i] for i in range(0, len(chains), 2)]
        mx, ix = chains[0]
        pm = context.make_array(sig.args[2])(context, builder, args[2])
        pi = context.make_array(sig.args[3])(context, builder, args[3])
        at = i64(builder, args[4])
        builder.store(mx, vptr(builder, pm.data, at, rw.vec), align=rw.size)
        builder.store(ix, vptr(builder, pi.data, at, ivec), align=4)
        return context.get_dummy_value()

    return types.none(x, r, m, idx, p), codegen


def _sum_codegen(context, builder, sig, args, term):
    """Shared body of the sums: ``args`` are (x, r, m, p, ..., s) with
    ``s`` last; ``s[p:p + 8]`` (float64) gets the sum over the classes of
    ``term(column, m_vector, class_index)``, in x's precision (two
    interleaved accumulators, so the adds do not wait on each other)."""
    rw = _Rows8(context, builder, sig.args[0], args[0], args[1])
    pm = context.make_array(sig.args[2])(context, builder, args[2])
    at = i64(builder, args[3])
    mv = builder.load(vptr(builder, pm.data, at, rw.vec), align=rw.size)

    def step(carried, c0, cols):
        acc = list(carried)
        for j, v in cols:
            acc[j % 2] = builder.fadd(acc[j % 2], term(v, mv, builder.add(c0, const(j))))
        return acc

    zero = vector_of(rw.vec, 0.0)
    a0, a1 = rw.reduce([zero, zero], step)
    total = builder.fadd(a0, a1)
    dvec = ir.VectorType(ir.DoubleType(), BLOCK8)
    if rw.elem != ir.DoubleType():
        total = builder.fpext(total, dvec)
    ps = context.make_array(sig.args[-1])(context, builder, args[-1])
    builder.store(total, vptr(builder, ps.data, at, dvec), align=8)
    return context.get_dummy_value()


@intrinsic
def rows8_expsum(typingctx, x, r, m, p, inv_t, s):
    """``s[p + i] = sum_c exp((x[r + i, c] - m[p + i]) * inv_t)`` for i < 8
    (``s`` float64, the sum in x's precision: for C up to
    :data:`fastlogits.cpu.tiles.SUM_BLOCK`). Garbage where ``m`` is not
    finite (callers mask those pixels, as for the tiles)."""
    if not (_is_rows(x) and _is_vec(m, x.dtype) and _is_vec(s, types.float64)
            and isinstance(r, types.Integer) and isinstance(p, types.Integer)
            and isinstance(inv_t, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(context.get_data_type(sig.args[0].dtype), BLOCK8)
        tv = splat(builder, vec, context.cast(builder, args[4], sig.args[4], sig.args[0].dtype))

        def term(v, mv, c):
            return exp_shifted_ir(builder, builder.fmul(builder.fsub(v, mv), tv))

        return _sum_codegen(context, builder, sig, args, term)

    return types.none(x, r, m, p, inv_t, s), codegen


@intrinsic
def rows8_wsum(typingctx, x, r, m, p, w, s):
    """``s[p + i] = sum_c w[c] * (m[p + i] - x[r + i, c])`` for i < 8 (the
    label-smoothing sum of :mod:`fastlogits.cpu.losses`; ``w`` (C,) in x's
    dtype, ``s`` float64, the sum in x's precision as for
    :func:`rows8_expsum`)."""
    if not (_is_rows(x) and _is_vec(m, x.dtype) and _is_vec(w, x.dtype)
            and _is_vec(s, types.float64)
            and isinstance(r, types.Integer) and isinstance(p, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(context.get_data_type(sig.args[0].dtype), BLOCK8)
        wdata = context.make_array(sig.args[4])(context, builder, args[4]).data

        def term(v, mv, c):
            wc = splat(builder, vec, builder.load(builder.gep(wdata, [c])))
            return builder.fmul(wc, builder.fsub(mv, v))

        return _sum_codegen(context, builder, sig, args, term)

    return types.none(x, r, m, p, w, s), codegen
