"""Vector kernels over one contiguous channels-last row (one pixel's C scores).

A channels-last pixel's scores are contiguous, so its max, argmax and
exp-sum are horizontal: the row is read as vectors of L lanes (16 float32,
8 float64; a masked load for the last C % L), reduced lane-wise, then
across the lanes by a shuffle tree, with no transpose into (C, P) scratch
(whose vector gather costs about one cycle per score). For few classes the
transposed tiles still win (idle lanes, one dependency chain per row):
``cpu_row_min_classes`` and ``cpu_row_argmax_min_classes`` pick the
regime (docs/perf/cpu-021).

Numba has no vector types, so these are intrinsics whose IR is written
here (helpers in :mod:`fastlogits.cpu.llvm.irutil`); the exponential is
:func:`fastlogits.cpu.llvm.fastexp.exp_shifted_ir`, the same IR the tile
kernels get through ``fexp_shifted``.

- :func:`vrow_argmax`: ``(max, index)`` with the library's rules (the first
  NaN wins and makes the max NaN; else the first maximum).
- :func:`vrow_expsum`: ``sum_c exp((row[c] - m) * inv_t) - 1`` in float64
  (the sum of the non-maximal terms, :func:`fastlogits.cpu.blocks.tiles.rest`),
  optionally storing the exponentials (softmax numerators, gradients).
- :func:`vrow_max_expsum`: the max and that sum in one pass over memory,
  for long rows whose exponentials are not stored.
x may hold float16 bits (:mod:`fastlogits.cpu.llvm.scores`): loaded as halves, widened in
registers and computed in float32.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastlogits.cpu.blocks.tiles import SUM_BLOCK
from fastlogits.cpu.llvm.fastexp import exp_shifted_ir
from fastlogits.cpu.llvm.irutil import (I1, I32, I64, const, i64, intrinsic_fn, lane_mask, loop,
                                        masked_store, non_one, rest_ir, splat, vector_of, vptr)
from fastlogits.cpu.llvm.scores import ScoreIR, compute_type, is_score_array


def _row_data(context, builder, aty, aval, r):
    """Pointer to row ``r`` of a C-contiguous (rows, C) array, and C."""
    arr = context.make_array(aty)(context, builder, aval)
    C = builder.extract_value(arr.shape, 1)
    return builder.gep(arr.data, [builder.mul(i64(builder, r), C)]), C


class _Row:
    """The IR view of row ``r`` of x: its data pointer, C, vector type, the
    full chunks ``[0, nfull)`` and the mask of the tail ``[nfull, C)``.
    (Rows are addressed as (array, index), not as 1-D views: a view made
    per row inside a ``prange`` loop kept its reference counting, which
    doubled the cost of a 19-class row.)"""

    def __init__(self, context, builder, aty, aval, r):
        self.builder = builder
        self.data, self.C = _row_data(context, builder, aty, aval, r)
        self.scores = ScoreIR(context, aty.dtype)
        self.size = self.scores.size  # bytes of one score in memory
        self.L = 64 // self.scores.compute_size  # one 512-bit vector computed
        self.elem = self.scores.elem
        self.vec = ir.VectorType(self.elem, self.L)
        self.nfull = builder.sub(self.C, builder.srem(self.C, const(self.L)))
        self.tmask = lane_mask(builder, self.L, builder.sub(self.C, self.nfull))

    def load(self, k):
        return self.scores.load(self.builder, self.data, k, self.L)

    def load_tail(self, passthru):
        return self.scores.masked_load(self.builder, self.data, self.nfull, self.tmask,
                                       vector_of(self.vec, passthru))


def _butterfly(builder, v, combine):
    """Every lane of the result holds ``combine`` over all lanes of ``v``."""
    L = v.type.count
    step = L // 2
    while step >= 1:
        perm = ir.Constant(ir.VectorType(I32, L), [i ^ step for i in range(L)])
        v = combine(v, builder.shuffle_vector(v, v, perm))
        step //= 2
    return v


def _hsum(builder, v):
    """Sum of the lanes of ``v`` (a scalar)."""
    total = _butterfly(builder, v, builder.fadd)
    return builder.extract_element(total, ir.Constant(I32, 0))


def _if_else(builder, cond, then, otherwise):
    """``then()`` or ``otherwise()`` (each builds IR and returns a value)
    by a branch on ``cond``; returns the phi of the two values."""
    with builder.if_else(cond) as (on_true, on_false):
        with on_true:
            a = then()
            a_block = builder.block
        with on_false:
            b = otherwise()
            b_block = builder.block
    result = builder.phi(a.type)
    result.add_incoming(a, a_block)
    result.add_incoming(b, b_block)
    return result


@intrinsic
def vrow_argmax(typingctx, x, r):
    """``(max, index)`` of row ``r`` of a C-contiguous (rows, C) float
    array (C >= 1): the first NaN if there is one (max NaN), else the
    first maximum."""
    if not (is_score_array(x, 2) and isinstance(r, types.Integer)):
        return None
    sig = types.Tuple((compute_type(x.dtype), types.int64))(x, r)

    def codegen(context, builder, signature, args):
        rw = _Row(context, builder, signature.args[0], args[0], args[1])
        L, vec = rw.L, rw.vec
        bvec = ir.VectorType(I1, L)
        ninf = vector_of(vec, float("-inf"))

        def greater(a, b):  # NaN in a keeps b: the max never becomes NaN
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)

        # Pass 1: lane-wise max (NaNs skipped) and which lanes saw a NaN.
        def scan(k, acc):
            v = rw.load(k)
            return [greater(v, acc[0]), builder.or_(acc[1], builder.fcmp_unordered("uno", v, v))]

        mx, nan = loop(builder, const(0), rw.nfull, L, [ninf, ir.Constant(bvec, [0] * L)], scan,
                       "max")
        v = rw.load_tail(float("-inf"))
        mx = greater(v, mx)
        nan = builder.or_(nan, builder.fcmp_unordered("uno", v, v))
        m = _butterfly(builder, mx, greater)
        anynan = builder.icmp_unsigned("!=", builder.bitcast(nan, ir.IntType(L)),
                                       ir.Constant(ir.IntType(L), 0))

        # Pass 2 (the row is in L1 now): the first lane equal to the max, or
        # the first NaN; the loop leaves at the first chunk with a hit.
        def hits(v):
            h = builder.select(anynan, builder.fcmp_unordered("uno", v, v),
                               builder.fcmp_ordered("==", v, m))
            return builder.bitcast(h, ir.IntType(L))

        zero = ir.Constant(ir.IntType(L), 0)
        start = builder.block
        body = builder.append_basic_block("first.loop")
        nxt = builder.append_basic_block("first.next")
        tail = builder.append_basic_block("first.tail")
        done = builder.append_basic_block("first.done")
        builder.cbranch(builder.icmp_signed(">", rw.nfull, const(0)), body, tail)
        builder.position_at_end(body)
        k = builder.phi(I64)
        k.add_incoming(const(0), start)
        bits = hits(rw.load(k))
        builder.cbranch(builder.icmp_unsigned("!=", bits, zero), done, nxt)
        builder.position_at_end(nxt)
        k1 = builder.add(k, const(L))
        k.add_incoming(k1, nxt)
        builder.cbranch(builder.icmp_signed("<", k1, rw.nfull), body, tail)
        builder.position_at_end(tail)
        tbits = builder.and_(hits(rw.load_tail(float("-inf"))),
                             builder.bitcast(rw.tmask, ir.IntType(L)))
        builder.branch(done)
        builder.position_at_end(done)
        found = builder.phi(ir.IntType(L))
        found.add_incoming(bits, body)
        found.add_incoming(tbits, tail)
        at = builder.phi(I64)
        at.add_incoming(k, body)
        at.add_incoming(rw.nfull, tail)
        cttz = intrinsic_fn(builder, f"llvm.cttz.i{L}", ir.IntType(L), [ir.IntType(L), I1])
        lane = builder.zext(builder.call(cttz, [found, ir.Constant(I1, 0)]), I64)
        index = builder.add(at, lane)
        best = builder.select(anynan, ir.Constant(rw.elem, float("nan")),
                              builder.extract_element(m, ir.Constant(I32, 0)))
        return context.make_tuple(builder, signature.return_type, [best, index])

    return sig, codegen


@intrinsic
def vrow_expsum(typingctx, x, r, m, inv_t, out, ro, write, exact):
    """``sum_c exp((x[r, c] - m) * inv_t) - 1`` (float64; with ``exact``
    the sum of the terms but the max's, from the sums of all terms and of
    those other than 1, :func:`fastlogits.cpu.blocks.tiles.rest`, for the
    log ops; without, ``s - 1``: softmax and classify need s only) of row ``r`` of a
    C-contiguous (rows, C) float array; with ``write`` true the
    exponentials also go to row ``ro`` of ``out`` (C-contiguous, C scores
    in the type x's are computed in, or x's dtype: may be x itself);
    without it ``out`` is not touched. (An ``out`` of float16 bits is
    never written, ``write`` or not.)

    float32 rows sum in float32 vectors over blocks of
    :data:`fastlogits.cpu.blocks.tiles.SUM_BLOCK` classes (as the tiles), then in
    float64. Garbage where ``m`` is not finite (callers
    mask those pixels, as for the tiles).
    """
    if not (is_score_array(x, 2) and is_score_array(out, 2)
            and out.dtype in (x.dtype, compute_type(x.dtype))
            and all(isinstance(a, types.Integer) for a in (r, ro))
            and isinstance(m, types.Float) and isinstance(inv_t, types.Float)
            and all(isinstance(a, (types.Boolean, types.Integer)) for a in (write, exact))):
        return None
    sig = types.float64(x, r, m, inv_t, out, ro, write, exact)

    def codegen(context, builder, signature, args):
        rw = _Row(context, builder, signature.args[0], args[0], args[1])
        L, vec, elem = rw.L, rw.vec, rw.elem
        odata, _ = _row_data(context, builder, signature.args[4], args[4], args[5])
        dtype = compute_type(signature.args[0].dtype)
        mv = splat(builder, vec, context.cast(builder, args[2], signature.args[2], dtype))
        tv = splat(builder, vec, context.cast(builder, args[3], signature.args[3], dtype))
        zero = vector_of(vec, 0.0)
        dbl = ir.DoubleType()
        f32 = elem == ir.FloatType()
        block = SUM_BLOCK if f32 else 1 << 62  # float64 rows: one block

        def exps(v):
            return exp_shifted_ir(builder, builder.fmul(builder.fsub(v, mv), tv))

        def run(store, exact):
            """The sum, storing the exponentials when ``store``, by the
            exact rule when ``exact``."""
            e = builder.select(rw.tmask, exps(rw.load_tail(0.0)), zero)
            if store:
                masked_store(builder, e, odata, rw.nfull, rw.tmask)

            def chunk(k, acc):
                ek = exps(rw.load(k))
                if store:
                    builder.store(ek, vptr(builder, odata, k, vec), align=rw.size)
                return [builder.fadd(acc[0], ek),
                        builder.fadd(acc[1], non_one(builder, ek)) if exact else acc[1]]

            def wide(v):
                h = _hsum(builder, v)
                return builder.fpext(h, dbl) if f32 else h

            # Blocks of SUM_BLOCK classes: a float32 vector sum each, its
            # total added in float64. The tail's exponentials seed the first.
            # Beside each sum, that of the terms other than 1 (tiles.rest).
            def blk(b, carried):
                total, total1, seed, seed1 = carried
                end = builder.add(b, const(block))
                end = builder.select(builder.icmp_signed("<", end, rw.nfull), end, rw.nfull)
                acc, acc1 = loop(builder, b, end, L, [seed, seed1], chunk, "sum")
                return [builder.fadd(total, wide(acc)),
                        builder.fadd(total1, wide(acc1)) if exact else total1, zero, zero]

            def less_one(total, total1):
                if exact:
                    return rest_ir(builder, total, total1)
                return builder.fsub(total, ir.Constant(dbl, 1.0))

            def tail_only():  # C < L: no full chunk
                return less_one(wide(e), wide(non_one(builder, e)) if exact else None)

            def chunks():
                z = ir.Constant(dbl, 0.0)
                total, total1, _, _ = loop(builder, const(0), rw.nfull, block,
                                           [z, z, e, non_one(builder, e) if exact else zero],
                                           blk, "blocks")
                return less_one(total, total1)

            return _if_else(builder, builder.icmp_signed("<=", rw.nfull, const(0)), tail_only,
                            chunks)

        exact_ = builder.icmp_unsigned("!=", args[7], ir.Constant(args[7].type, 0))

        def summed(store):
            return _if_else(builder, exact_, lambda: run(store, True), lambda: run(store, False))

        if signature.args[4].dtype != dtype:  # float16 bits: no stores
            return summed(False)
        write_ = builder.icmp_unsigned("!=", args[6], ir.Constant(args[6].type, 0))
        return _if_else(builder, write_, lambda: summed(True), lambda: summed(False))

    return sig, codegen


#: Bytes of a row that :func:`vrow_max_expsum` reads from memory before
#: summing them again from L1.
CHUNK_BYTES = 4096


@intrinsic
def vrow_max_expsum(typingctx, x, r, inv_t):
    """``(m, s)`` of row ``r`` of a C-contiguous (rows, C) float array in
    one pass over memory: m its max (NaN if it holds a NaN, as
    :func:`vrow_argmax`), s ``sum_c exp((x[r, c] - m) * inv_t) - 1`` in
    float64, as :func:`vrow_expsum`'s (garbage where m is not finite:
    callers mask those rows).

    The row goes in chunks of :data:`CHUNK_BYTES`: each chunk's max from
    memory, then its exp-sum from L1 against the running max; when the
    max grows, the sum so far is rescaled by ``exp((old - new) * inv_t)``
    in float64 (a scalar exp, at most once per chunk and once for the
    masked tail of C % L scores). :func:`vrow_argmax` then
    :func:`vrow_expsum` read a
    long row twice, the second time from L2 with memory idle; here the
    memory stream runs on under the arithmetic. float32 sums go in
    float32 blocks of :data:`fastlogits.cpu.blocks.tiles.SUM_BLOCK` classes, as
    :func:`vrow_expsum`'s.
    """
    if not (is_score_array(x, 2) and isinstance(r, types.Integer)
            and isinstance(inv_t, types.Float)):
        return None
    sig = types.Tuple((compute_type(x.dtype), types.float64))(x, r, inv_t)

    def codegen(context, builder, signature, args):
        b = builder
        rw = _Row(context, builder, signature.args[0], args[0], args[1])
        L, vec, elem = rw.L, rw.vec, rw.elem
        dtype = compute_type(signature.args[0].dtype)
        tv = splat(b, vec, context.cast(b, args[2], signature.args[2], dtype))
        dbl = ir.DoubleType()
        f32 = elem == ir.FloatType()
        block = SUM_BLOCK if f32 else 1 << 62
        chunk = CHUNK_BYTES // rw.size
        bvec = ir.VectorType(I1, L)
        ninf = vector_of(vec, float("-inf"))
        zero = vector_of(vec, 0.0)

        def greater(a, c):  # NaN in a keeps c
            return b.select(b.fcmp_ordered(">", a, c), a, c)

        def exps(v, mv):
            return exp_shifted_ir(b, b.fmul(b.fsub(v, mv), tv))

        def wide(v):  # the sum of v's lanes in float64
            h = _hsum(b, v)
            return b.fpext(h, dbl) if f32 else h

        def absorb(M, S, S1, mc, chunk_sum):
            """The running (M, S, S1) after a chunk of max ``mc`` whose
            exp-sums (all terms, those other than 1) against a max are
            ``chunk_sum(mv)``. Rescaled by a factor below 1, every term so
            far is one other than 1: S1 becomes S."""
            Mn = b.select(b.fcmp_ordered(">", mc, M), mc, M)
            grows = b.and_(b.fcmp_ordered(">", Mn, M),
                           b.fcmp_ordered(">", M, ir.Constant(elem, float("-inf"))))

            def factor():
                d = b.fmul(b.fsub(M, Mn), b.extract_element(tv, ir.Constant(I32, 0)))
                # The library's float64 exp, not libm's: a call would make
                # every vector register caller-saved.
                return exp_shifted_ir(b, b.fpext(d, dbl) if f32 else d)

            f = _if_else(b, grows, factor, lambda: ir.Constant(dbl, 1.0))
            S = b.fmul(S, f)
            S1 = b.select(b.fcmp_ordered("==", f, ir.Constant(dbl, 1.0)), S1, S)
            part, part1 = chunk_sum(splat(b, vec, Mn))
            # All -inf so far: every term exp(-inf - -inf) is NaN; none counts.
            empty = b.fcmp_ordered("==", Mn, ir.Constant(elem, float("-inf")))
            z = ir.Constant(dbl, 0.0)
            return (Mn, b.fadd(S, b.select(empty, z, part)),
                    b.fadd(S1, b.select(empty, z, part1)))

        def full_sum(c0, c1):
            def sum_of(mv):
                def add(k, a):
                    e = exps(rw.load(k), mv)
                    return [b.fadd(a[0], e), b.fadd(a[1], non_one(b, e))]

                def blk(k0, carried):
                    k1 = b.add(k0, const(block))
                    k1 = b.select(b.icmp_signed("<", k1, c1), k1, c1)
                    accs = loop(b, k0, k1, L, [zero, zero], add, "sum")
                    return [b.fadd(t, wide(a)) for t, a in zip(carried, accs)]

                z = ir.Constant(dbl, 0.0)
                return loop(b, c0, c1, block, [z, z], blk, "blocks")
            return sum_of

        def one_chunk(c0, carried):
            M, S, S1, nan = carried
            c1 = b.add(c0, const(chunk))
            c1 = b.select(b.icmp_signed("<", c1, rw.nfull), c1, rw.nfull)

            def scan(k, acc):
                v = rw.load(k)
                return [greater(v, acc[0]), b.or_(acc[1], b.fcmp_unordered("uno", v, v))]

            mx, nan = loop(b, c0, c1, L, [ninf, nan], scan, "max")
            mc = b.extract_element(_butterfly(b, mx, greater), ir.Constant(I32, 0))
            M, S, S1 = absorb(M, S, S1, mc, full_sum(c0, c1))
            return [M, S, S1, nan]

        init = [ir.Constant(elem, float("-inf")), ir.Constant(dbl, 0.0), ir.Constant(dbl, 0.0),
                ir.Constant(bvec, [0] * L)]
        M, S, S1, nan = loop(b, const(0), rw.nfull, chunk, init, one_chunk, "chunks")
        # The masked tail (C % L scores; none: all -inf, which changes nothing).
        v = rw.load_tail(float("-inf"))
        nan = b.or_(nan, b.fcmp_unordered("uno", v, v))
        mt = b.extract_element(_butterfly(b, greater(v, ninf), greater), ir.Constant(I32, 0))

        def tail_sum(mv):
            e = b.select(rw.tmask, exps(v, mv), zero)
            return wide(e), wide(non_one(b, e))

        M, S, S1 = absorb(M, S, S1, mt, tail_sum)
        anynan = b.icmp_unsigned("!=", b.bitcast(nan, ir.IntType(L)), ir.Constant(ir.IntType(L), 0))
        m = b.select(anynan, ir.Constant(elem, float("nan")), M)
        return context.make_tuple(b, signature.return_type, [m, rest_ir(b, S, S1)])

    return sig, codegen
