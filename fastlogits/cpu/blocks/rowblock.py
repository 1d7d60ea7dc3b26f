"""Blocks of channels-last pixels, transposed in registers.

A channels-last pixel's C scores are one row of a C-contiguous (rows, C)
array. For the per-pixel reductions of argmax, classify, cross-entropy and
the confusion matrix, these intrinsics take :data:`ROWS` consecutive rows,
load them 8 classes at a time as vectors, transpose each 8 x 8 block in
registers (:func:`fastlogits.cpu.blocks.gather._transpose_ir`) and reduce the
columns across the class blocks, the pixels' running max, index and
exp-sum living in vector registers. Nothing goes through a scratch tile,
and there is no horizontal reduction per row (what the row kernels of
:mod:`.rowvec` pay for every pixel: at 19 classes most of their time).

Width: a column of 8 float32 pixels fills only half a 64-byte AVX-512
register. With 64-byte vectors a block is 16 rows, and for float32 each
register holds row i in its low half and row i + 8 in its high half: the
same shuffles (which act on each half alike) then transpose both 8 x 8
blocks at once, and every compare, select and exp works on 16 pixels.
float64 columns of 8 already fill the register; their 16-row block is two
8-row halves one after the other. With 32-byte vectors (AVX2) a block is
8 rows.

The way back, for softmax and log_softmax: the pass that finds the max
keeps each transposed column in an L1 scratch (its exponential, for
softmax), and :func:`block_intrinsics`' stores scale the columns,
transpose them back by the same shuffles and store whole rows.

Class blocks: the full blocks ``[0, C - C % 8)``, then, when C % 8 != 0,
one last block that overlaps the one before, ``[C - 8, C)``, so every load
is a whole vector inside its row (no masked loads), of which only the
columns not seen yet are used.

C >= 8, and rows ``r .. r + ROWS - 1`` must exist: callers take fewer classes
another way, and the last ``rows % ROWS`` pixels a row at a time (argmax,
confusion: :func:`blocks_end`), as the end of a block that overlaps the one
before (softmax), or as a padded block (the loss: :func:`padded_block`). x must be C-contiguous; nothing
is bounds-checked.

x may hold float16 bits (:mod:`fastlogits.cpu.llvm.scores`, the reading intrinsics): its
loads are halves widened in registers, and "x's dtype" below (of m,
cols, w, ...) then means float32. The stores and the gradient take
float x only.
"""

from types import SimpleNamespace

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastlogits._vector_width import target_has_avx512
from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.gather import BLOCK8, _transpose_ir
from fastlogits.cpu.llvm.fastexp import EXP_FASTMATH, exp_shifted_ir
from fastlogits.cpu.llvm.fastlog import log1p32_ir
from fastlogits.cpu.llvm.irutil import (I32, const, flag_block_from, i64, intrinsic_fn, loop, non_one,
                                        rest_ir, splat, type_suffix, vector_of, vptr)
from fastlogits.cpu.llvm.rowcopy import copy_rows
from fastlogits.cpu.llvm.scores import ScoreIR, compute_type, is_score_array

_NINF = float("-inf")

#: Rows of one block (the drivers step by it): 16 with 64-byte vectors
#: (AVX-512), else 8. Measured on Intel Ice Lake (docs/perf/cpu-031).
ROWS = 16 if target_has_avx512() else 8


@njit(cache=True)
def blocks_end(r0, r1, on):
    """Where the whole blocks of :data:`ROWS` rows of ``[r0, r1)`` end
    (``r0`` when ``on`` is false): the drivers take ``[r0, end)`` by
    blocks, the rest a row at a time."""
    return r0 + (r1 - r0) // ROWS * ROWS if on else r0


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def padded_block(x, r, n, pad):
    """Rows ``r .. r + n - 1`` of x (rows, C), ``0 < n <= ROWS``, as a
    whole block: copied into the first n rows of ``pad`` (ROWS, C, x's
    dtype), the rest copies of the last of them (scores of x: nothing a
    block cannot take). Returns pad. With pad of x's type, a driver runs a
    chunk's last rows % ROWS through the same block call as the others,
    and compiles one path (docs/perf/cpu-079)."""
    copy_rows(x, r, pad, 0, n)
    for p in range(n, ROWS):
        copy_rows(x, r + n - 1, pad, p, 1)
    return pad


def _is_rows(a):
    return is_score_array(a, 2)


def _is_vec(a, dtype=None):
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and (dtype is None or a.dtype == dtype))


def _is_sums(s, x):
    """Whether ``s`` may take per-pixel sums of x's scores: float64, or
    x's own dtype (the loss's narrow scratch, docs/perf/cpu-044)."""
    return _is_vec(s, types.float64) or _is_vec(s, compute_type(x.dtype))


def _halves(rows, wide, elem_size):
    """8-row parts per register (``halves``) and registers one after the
    other (``parts``) of a block of ``rows`` rows: two halves per register
    for float32 with ``wide`` (64-byte) vectors."""
    halves = 2 if wide and elem_size == 4 and rows % 16 == 0 else 1
    return halves, rows // (BLOCK8 * halves)


class _RowBlock:
    """IR view of rows ``r .. r + 8 * halves - 1`` of x: :meth:`columns` of
    a class block, each a vector of ``8 * halves`` pixels (rows r + i and
    r + 8 + i in lanes i and 8 + i)."""

    def __init__(self, context, builder, aty, aval, r, halves):
        self.builder = builder
        arr = context.make_array(aty)(context, builder, aval)
        self.data = arr.data
        self.C = builder.extract_value(arr.shape, 1)
        self.scores = ScoreIR(context, aty.dtype)
        self.elem = self.scores.elem
        self.size = self.scores.compute_size  # of the computed vectors (m, cols, ...)
        self.lanes = BLOCK8 * halves
        self.part = ir.VectorType(self.elem, BLOCK8)
        self.vec = ir.VectorType(self.elem, self.lanes)
        base = builder.mul(i64(builder, r), self.C)
        self.starts = [[builder.add(base, builder.mul(self.C, const(h * BLOCK8 + i)))
                        for h in range(halves)] for i in range(BLOCK8)]
        self.C8 = builder.sub(self.C, builder.srem(self.C, const(BLOCK8)))
        self.ninf = vector_of(self.vec, _NINF)
        self.chains = ARGMAX_CHAINS

    def _row(self, starts, c0):
        """Classes ``c0 .. c0 + 7`` of the rows at ``starts``, one per half."""
        b = self.builder
        parts = [self.scores.load(b, self.data, b.add(s, c0), BLOCK8) for s in starts]
        if len(parts) == 1:
            return parts[0]
        both = ir.Constant(ir.VectorType(I32, self.lanes), list(range(self.lanes)))
        return b.shuffle_vector(parts[0], parts[1], both)

    def class_scores(self, t, mask):
        """Each pixel's score of class ``t`` (an i32 vector, lane l the
        class of row r + l) where ``mask``, else 0: one gather from x (the
        rows' lines are in L1, the block has just read them)."""
        b = self.builder
        ivec = ir.VectorType(I32, self.lanes)
        row = ir.Constant(ivec, list(range(self.lanes)))
        at = b.add(b.mul(row, splat(b, ivec, b.trunc(self.C, I32))), t)  # < lanes * C
        return self.scores.masked_gather(b, b.gep(self.data, [self.starts[0][0]]), at, mask,
                                         vector_of(self.vec, 0.0))

    def columns(self, c0):
        """The 8 columns (class c0 + j of every pixel) of the block at c0."""
        return _transpose_ir(self.builder, [self._row(s, c0) for s in self.starts])

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


def _by_parts(rows, wide, part_codegen):
    """A block intrinsic's codegen from ``part_codegen(context, builder,
    sig, args, blk, offset)``, which does the pixels of the block ``blk``
    into outputs ``p + offset ..``: called once per part of the block
    (:func:`_halves`) with the :class:`_RowBlock` of rows ``r + offset
    ..``, args[0] being x and args[1] r. (The same part codegens run on
    the channels-first blocks of :mod:`.planeblock`.)"""
    def codegen(context, builder, sig, args):
        size = context.get_abi_sizeof(context.get_data_type(compute_type(sig.args[0].dtype)))
        halves, parts = _halves(rows, wide, size)
        for k in range(parts):
            offset = k * BLOCK8 * halves
            blk = _RowBlock(context, builder, sig.args[0], args[0],
                            _plus(builder, args[1], offset), halves)
            part_codegen(context, builder, sig, args, blk, offset)
        return context.get_dummy_value()
    return codegen


def _plus(builder, v, offset):
    return builder.add(i64(builder, v), const(offset))


#: Independent running (max, index) pairs per block in :func:`rows_argmax`
#: (column j of a class block goes to pair j % ARGMAX_CHAINS, merged at the
#: end): each class's compare and select waits on the one before, and with
#: one chain a block's max took long enough that the exp-sum after it could
#: not overlap with the next block. Two chains made argmax 1.1-1.25x
#: faster; four measured no better than two (docs/perf/cpu-029).
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


def _argmax_part(context, builder, sig, args, rw, offset, keep=None):
    """Argmax of the block ``rw``'s pixels into m and idx (``args`` (x, r,
    m, idx, p, ...)); returns ``(max vector, output index)``.
    ``keep(c, column)``, if given, is called with each class's column (so
    a caller can store it)."""
    ivec = ir.VectorType(I32, rw.lanes)

    def step(carried, c0, cols):
        carried = list(carried)
        c0_32 = builder.trunc(c0, I32)
        for j, v in cols:
            if keep is not None:
                keep(builder.add(c0, const(j)), v)
            k = 2 * (j % rw.chains)
            mx, ix = carried[k], carried[k + 1]
            # v > mx, or v the first NaN: "unordered or greater" while
            # mx is still a number (a NaN mx never changes again).
            take = builder.and_(builder.fcmp_unordered(">", v, mx),
                                builder.fcmp_ordered("ord", mx, mx))
            carried[k] = builder.select(take, v, mx)
            cls = splat(builder, ivec, builder.add(c0_32, ir.Constant(I32, j)))
            carried[k + 1] = builder.select(take, cls, ix)
        return carried

    res = rw.reduce([rw.ninf, ir.Constant(ivec, [0] * rw.lanes)] * rw.chains, step)
    chains = [(res[k], res[k + 1]) for k in range(0, len(res), 2)]
    while len(chains) > 1:
        chains = [_merge_argmax(builder, *chains[i:i + 2]) if i + 1 < len(chains)
                  else chains[i] for i in range(0, len(chains), 2)]
    mx, ix = chains[0]
    pm = context.make_array(sig.args[2])(context, builder, args[2])
    pi = context.make_array(sig.args[3])(context, builder, args[3])
    at = _plus(builder, args[4], offset)
    builder.store(mx, vptr(builder, pm.data, at, rw.vec), align=rw.size)
    builder.store(ix, vptr(builder, pi.data, at, ivec), align=4)
    return mx, at


def _max_part(context, builder, sig, args, rw, offset, keep=None):
    """The max of the block ``rw``'s pixels into m (``args`` (x, r, m, p,
    ...)), NaN where any score is NaN; returns ``(max vector, output
    index)``. :func:`_argmax_part` without the index, for the ops that do
    not need it: each class costs a ``vmaxps`` and a NaN compare where the
    argmax's costs two compares and two selects (docs/perf/cpu-044).
    ``keep`` as for :func:`_argmax_part`."""
    mask = ir.VectorType(ir.IntType(1), rw.lanes)

    def step(carried, c0, cols):
        carried = list(carried)
        for j, v in cols:
            if keep is not None:
                keep(builder.add(c0, const(j)), v)
            k = j % rw.chains
            mx = carried[k]
            # x86's max: the first operand where it is greater, else the
            # second (a NaN column replaces mx; the NaN mask remembers it).
            carried[k] = builder.select(builder.fcmp_ordered(">", mx, v), mx, v)
            carried[-1] = builder.or_(carried[-1], builder.fcmp_unordered("uno", v, v))
        return carried

    res = rw.reduce([rw.ninf] * rw.chains + [ir.Constant(mask, [0] * rw.lanes)], step)
    mx = res[0]
    for other in res[1:-1]:
        mx = builder.select(builder.fcmp_ordered(">", mx, other), mx, other)
    mx = builder.select(res[-1], vector_of(rw.vec, float("nan")), mx)
    pm = context.make_array(sig.args[2])(context, builder, args[2])
    at = _plus(builder, args[3], offset)
    builder.store(mx, vptr(builder, pm.data, at, rw.vec), align=rw.size)
    return mx, at


def _store_sum(context, builder, sig, args, rw, at, total):
    """``total`` (x's precision) into ``s`` (args[-1]: float64 or x's
    dtype) at ``at``."""
    elem = context.get_data_type(sig.args[-1].dtype)
    svec = ir.VectorType(elem, rw.lanes)
    if rw.elem != elem:
        total = builder.fpext(total, svec)
    ps = context.make_array(sig.args[-1])(context, builder, args[-1])
    builder.store(total, vptr(builder, ps.data, at, svec), align=context.get_abi_sizeof(elem))


def _exp_term(builder, v, mv, tv):
    return exp_shifted_ir(builder, builder.fmul(builder.fsub(v, mv), tv))


def _column_at(builder, c, C, lanes, offset):
    """Index in the column scratch of class ``c``'s column of the part at
    ``offset``: each part's C columns of ``lanes`` pixels one after the
    other, the parts one after the other (C * ROWS elements in all)."""
    return builder.add(builder.mul(c, const(lanes)), builder.mul(C, const(offset)))


def _argmax_expsum_part(context, builder, sig, args, rw, offset, store=False, index=True,
                        exact=False):
    """:func:`_argmax_part`, keeping each class's column in ``cols`` (args
    (x, r, m, idx, p, inv_t, cols, s)), then the exp-sum of those columns:
    one load each, where a second pass over x loads (and transposes) again.
    With ``store``, each exponential replaces its score in ``cols``.
    Without ``index``, :func:`_max_part` instead (args (x, r, m, p, inv_t,
    cols, s)): for the ops that need the max only, 1.1-1.2x faster in
    cache (docs/perf/cpu-045). ``exact``: the sum less the max's 1 by
    :func:`_sum_classes`' exact rule (the log ops), else ``s - 1``."""
    k = 0 if index else -1  # where the arguments after idx are
    cols = context.make_array(sig.args[6 + k])(context, builder, args[6 + k]).data

    def ptr(c, vec):
        return vptr(builder, cols, _column_at(builder, c, rw.C, rw.lanes, offset), vec)

    def keep(c, v):
        builder.store(v, ptr(c, v.type), align=context.get_abi_sizeof(v.type.element))

    reduce_part = _argmax_part if index else _max_part
    mx, at = reduce_part(context, builder, sig, args, rw, offset, keep)
    tv = splat(builder, rw.vec, context.cast(builder, args[5 + k], sig.args[5 + k],
                                             compute_type(sig.args[0].dtype)))

    def term(c):
        e = _exp_term(builder, builder.load(ptr(c, rw.vec), align=rw.size), mx, tv)
        if store:
            builder.store(e, ptr(c, rw.vec), align=rw.size)
        return e

    _store_sum(context, builder, sig, args, rw, at, _sum_classes(builder, rw, term, exact))


def _fold_classes(builder, rw, init, step):
    """``carried = step(c, carried, k)`` over the classes c, in pairs
    (classes 2j and 2j + 1 with k = 0 and 1) and then the last class of an
    odd C with k = 0: a caller keeping two accumulators, ``carried[k]``,
    has adds that do not wait on each other."""
    b = builder
    C2 = b.sub(rw.C, b.srem(rw.C, const(2)))
    carried = loop(b, const(0), C2, 2, init,
                   lambda c, acc: step(b.add(c, const(1)), step(c, acc, 0), 1), "pairs")
    return loop(b, C2, rw.C, 1, carried, lambda c, acc: step(c, acc, 0), "odd")


def _sum_classes(builder, rw, term, exact=True):
    """The sum over the classes c of the exponentials ``term(c)`` less the
    max's 1, in two accumulators (:func:`_fold_classes`). ``exact``: by
    :func:`fastlogits.cpu.blocks.tiles.rest`, from the sums of all terms and
    of those other than 1 (the log ops' ``log1p``); else ``s - 1``, which
    gives back ``s`` exactly for softmax's and classify's ``1 / (1 + s')``
    without the second sum (docs/perf/cpu-074)."""
    b = builder

    def add(c, acc, k):
        acc = list(acc)
        e = term(c)
        acc[k] = b.fadd(acc[k], e)
        if exact:
            acc[2 + k] = b.fadd(acc[2 + k], non_one(b, e))
        return acc

    accs = _fold_classes(b, rw, [vector_of(rw.vec, 0.0)] * (4 if exact else 2), add)
    s = b.fadd(accs[0], accs[1])
    if not exact:
        return b.fsub(s, vector_of(s.type, 1.0))
    return rest_ir(b, s, b.fadd(accs[2], accs[3]))


def _finite(builder, v):
    """Lanes of the float vector ``v`` that are finite (neither NaN nor +-inf)."""
    fabs = intrinsic_fn(builder, f"llvm.fabs.{type_suffix(v.type)}", v.type, [v.type])
    return builder.fcmp_ordered("!=", builder.call(fabs, [v]), vector_of(v.type, float("inf")))


def _kept_columns(context, builder, sig, args, rw, offset):
    """The start of the fused loss and gradient parts (args (x, r, m, p,
    cols, tt, wt, ...)): the max of the block ``rw``'s pixels (into m),
    each class's column kept in ``cols`` on the way, then the target
    logits. Returns ``(data, col, mx, at, tv, wv, kept, xt)``: ``data(k)``
    the data pointer of array argument k, ``col(c)`` the pointer to class
    c's column in ``cols``, the max vector, the index of the block's first
    pixel in m, tt and wt, its targets (int32), their weights, the pixels
    not ignored (targets >= 0) and their target logits (0 where ignored).

    The target logits come from x by one gather (``rw.class_scores``),
    its lines in L1 after the max: a compare and a select per class in
    the exp-sum loop instead, on the vector pipes the exponentials keep
    busy, made the 19-class loss 1.14x slower channels-last (and a gather
    from ``cols``, just stored, waited on those stores; docs/perf/cpu-044,
    cpu-047, cpu-052)."""
    b = builder

    def data(k):
        return context.make_array(sig.args[k])(context, b, args[k]).data

    cols = data(4)

    def col(c):
        return vptr(b, cols, _column_at(b, c, rw.C, rw.lanes, offset), rw.vec)

    mx, at = _max_part(context, b, sig, args, rw, offset,
                       lambda c, v: b.store(v, col(c), align=rw.size))
    tvec = ir.VectorType(I32, rw.lanes)
    tv = b.load(vptr(b, data(5), at, tvec), align=4)
    wv = b.load(vptr(b, data(6), at, rw.vec), align=rw.size)
    kept = b.icmp_signed(">=", tv, ir.Constant(tvec, [0] * rw.lanes))
    return data, col, mx, at, tv, wv, kept, rw.class_scores(tv, kept)


def _exp_columns(builder, rw, col, mx, wdata, store):
    """Over the block's columns (``col(c)``: class c's, in the column
    scratch): the sum of the exponentials ``exp(x_c - m)`` less the max's
    1 (:func:`_sum_classes`) and, given the
    pointer ``wdata`` to the class weights (label smoothing), ``sum_c
    w[c] (m - x_c)``; with ``store`` each exponential replaces its score.
    Returns ``(s, sm)`` (sm None without ``wdata``). Two exp-sum
    accumulators (:func:`_fold_classes`), so the adds do not wait on each
    other; the smoothing sum has one (its adds wait on the exp's)."""
    b = builder
    smooth = wdata is not None

    def step(c, carried, k):
        """Class c into the accumulator k of ``carried`` (sums[, sm])."""
        carried = list(carried)
        v = b.load(col(c), align=rw.size)
        e = exp_shifted_ir(b, b.fsub(v, mx))
        if store:
            b.store(e, col(c), align=rw.size)
        carried[k] = b.fadd(carried[k], e)
        carried[2 + k] = b.fadd(carried[2 + k], non_one(b, e))
        if smooth:
            wc = splat(b, rw.vec, b.load(b.gep(wdata, [c])))
            carried[4] = b.fadd(carried[4], b.fmul(wc, b.fsub(mx, v)))
        return carried

    carried = _fold_classes(b, rw, [vector_of(rw.vec, 0.0)] * (5 if smooth else 4), step)
    return (rest_ir(b, b.fadd(carried[0], carried[1]), b.fadd(carried[2], carried[3])),
            carried[4] if smooth else None)


def xent_args_ok(x, r, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls):
    """The argument types of a fused loss intrinsic (:func:`_xent_part`),
    x's kind (rows or planes) checked by the caller."""
    ct = compute_type(x.dtype)
    smooth = isinstance(w, types.NoneType) and isinstance(ls, types.NoneType) or (
        _is_vec(w, ct) and _is_vec(ls, ct))
    return (ct == types.float32 and _is_vec(m, ct) and _is_vec(cols, ct)
            and _is_vec(tt, types.int32) and _is_vec(wt, ct) and _is_vec(loss, ct)
            and _is_vec(sums, types.float64) and isinstance(want_loss, types.Boolean)
            and all(isinstance(v, types.Integer) for v in (r, p, at)) and smooth)


def _xent_part(context, builder, sig, args, rw, offset):
    """The cross-entropy losses of the block ``rw``'s pixels in one pass
    (args (x, r, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls);
    float32): the max (:func:`_max_part`, into m), each class's column
    kept in ``cols`` (C * lanes), the target's logit gathered from x
    (``rw.class_scores``), then over the columns the exp-sum (and, when
    ``w`` is an array, the smoothing sum ``sm = sum_c w[c] (m - x_c)``,
    :func:`_exp_columns`), ``log s`` as ``log1p`` of the sum less the max's
    term (:func:`log1p32_ir` with the flags of ``EXP_FASTMATH``:
    ``reassoc`` folds its ``(1 + s) - 1``, and moves log's error from 1
    to 2.2 ulp), and
    per pixel ``wt * (log s + m - x_t)``, label-smoothed with ``ls = (1 -
    eps, eps / C, W)`` to ``ls[0] * that + ls[1] * (ls[2] log s + sm)``:
    NaN where the max is not finite, 0 where ``tt`` < 0 (ignored). Stored
    into ``loss[at:at + lanes]`` when ``want_loss``; the losses and the
    weights ``wt`` added, in float64, to the two halves of ``sums`` (2 x
    the block's pixels), at ``offset``."""
    b = builder
    vec, size, lanes = rw.vec, rw.size, rw.lanes
    dvec = ir.VectorType(ir.DoubleType(), lanes)
    data, col, mx, at, tv, wv, kept, xt = _kept_columns(context, b, sig, args, rw, offset)
    smooth = not isinstance(sig.args[11], types.NoneType)
    total, smv = _exp_columns(b, rw, col, mx, data(11) if smooth else None, False)
    first = len(b.block.instructions)
    lse = log1p32_ir(b, total)
    flag_block_from(b, first, EXP_FASTMATH)
    finite = _finite(b, mx)
    lv = b.fmul(wv, b.fadd(lse, b.fsub(mx, xt)))
    if smooth:
        ls = data(12)
        keep, epsc, wall = (splat(b, vec, b.load(b.gep(ls, [const(k)]))) for k in range(3))
        lv = b.fadd(b.fmul(keep, lv), b.fmul(epsc, b.fadd(b.fmul(wall, lse), smv)))
    lv = b.select(finite, lv, vector_of(vec, float("nan")))
    lv = b.select(kept, lv, vector_of(vec, 0.0))
    with b.if_then(b.icmp_unsigned("!=", args[9], ir.Constant(args[9].type, 0))):
        b.store(lv, vptr(b, data(7), _plus(b, args[8], offset), vec), align=size)
    sarr = context.make_array(sig.args[10])(context, b, args[10])
    half = b.sdiv(b.extract_value(sarr.shape, 0), const(2))  # the block's pixels
    for k, v in enumerate((lv, wv)):
        ptr = vptr(b, sarr.data, b.add(b.mul(half, const(k)), const(offset)), dvec)
        b.store(b.fadd(b.load(ptr, align=8), b.fpext(v, dvec)), ptr, align=8)


def xent_grad_args_ok(x, r, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out, out_at):
    """The argument types of a fused gradient intrinsic
    (:func:`_xent_grad_part`), x's and out's kinds (rows or planes) checked
    by the caller. ``out`` is of x's dtype (float16 bits included: each
    gradient rounded once, as stored) or of the type x's scores are
    computed in."""
    vecs = (m, cols, wt, coef, bc, s, xt, sm)
    ct = compute_type(x.dtype)
    return (out.dtype in (x.dtype, ct) and all(_is_vec(v, ct) for v in vecs)
            and _is_vec(tt, types.int32)
            and (isinstance(w, types.NoneType) or _is_vec(w, ct))
            and all(isinstance(v, types.Integer) for v in (r, p, out_at)))


def grad_value(builder, e, av, bc, dv, tv, kept, c):
    """Class c's cross-entropy gradient of a block's pixels from their
    exponentials ``e``: ``e * av - bc``, less ``dv`` where the target
    ``tv`` is c, 0 where ``kept`` is false (an ignored pixel: a select, so
    NaN logits there give 0 too). Final when stored: by non-temporal
    stores it could not be corrected afterwards without reading it back."""
    b = builder
    # The zeroing select first: x86 folds it into the multiply-subtract
    # (AVX-512 zero-masking, one operation fewer per class); an ignored
    # pixel's target (-1) never equals c, so the target select keeps its 0.
    r = b.select(kept, b.fsub(b.fmul(e, av), splat(b, e.type, bc)), vector_of(e.type, 0.0))
    hit = b.icmp_signed("==", tv, splat(b, tv.type, b.trunc(c, I32)))
    return b.select(hit, b.fsub(r, dv), r)


def _xent_grad_part(context, builder, sig, args, rw, offset):
    """The cross-entropy gradient of the block ``rw``'s pixels in one pass,
    returning ``value(c)``, class c's final gradient vector (for the
    caller's stores: transposed back for rows, straight for planes).

    args (x, r, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out, out_at),
    all vectors in x's dtype but ``tt`` (int32): the max
    (:func:`_max_part`, into m) with each class's column kept in ``cols``
    (C * lanes, so it stays in L1); the target's logit gathered from x
    (``rw.class_scores``, into xt); then over the columns the
    exponentials (replacing the scores in ``cols``), their sum less the
    max's 1 (:func:`_exp_columns`) and, when
    ``w`` is an array (label smoothing), ``sum_c w[c] (m - x_c)``, into s
    and sm at the block's pixels, for the loss step that follows
    (:func:`fastlogits.cpu.ops.losses._pixel_losses`). The gradient's scales,
    ``A = (coef[0] wt + coef[1]) / (1 + s)`` (NaN where the max is not finite)
    and ``D = coef[0] wt``, with ``coef = (g (1 - eps), g eps W / C)``
    and ``bc[c] = g eps w[c] / C``, give :func:`grad_value`. No score of x
    is read after this returns, so out may be x."""
    b = builder
    vec, size = rw.vec, rw.size
    data, col, mx, at, tv, wv, kept, xt = _kept_columns(context, b, sig, args, rw, offset)
    smooth = not isinstance(sig.args[9], types.NoneType)
    b.store(xt, vptr(b, data(11), at, vec), align=size)
    sv, smv = _exp_columns(b, rw, col, mx, data(9) if smooth else None, True)
    for k, v in ((10, sv),) + (((12, smv),) if smooth else ()):
        b.store(v, vptr(b, data(k), at, vec), align=size)
    coef = data(7)
    k0 = splat(b, vec, b.load(b.gep(coef, [const(0)])))
    k1 = splat(b, vec, b.load(b.gep(coef, [const(1)])))
    finite = _finite(b, mx)
    dv = b.fmul(k0, wv)
    av = b.select(finite, b.fdiv(b.fadd(dv, k1), b.fadd(sv, vector_of(vec, 1.0))),
                  vector_of(vec, float("nan")))
    bcs = data(8)

    def value(c):
        e = b.load(col(c), align=size)
        return grad_value(b, e, av, b.load(b.gep(bcs, [c])), dv, tv, kept, c)

    return value


#: What :func:`store_values` computes.
STORE_SOFTMAX, STORE_LOG_SOFTMAX = 0, 1


def store_values(context, builder, sig, args, lanes, offset, what):
    """``value(c)``: the vector of class c's results of the ``lanes``
    pixels of a block whose columns are in ``cols`` (args (cols, m, inv_t,
    g, p, out, ...), the part at ``offset``): ``column * g`` (softmax: the
    stored exponentials times 1 / s) or ``(column - m) * inv_t - g``
    (log_softmax: scores, g = log s). Shared by the row blocks' way back
    (:func:`_rows_store_part`) and the channels-first blocks'
    (:mod:`.planeblock`)."""
    b = builder
    oty = sig.args[5]
    C = b.extract_value(context.make_array(oty)(context, b, args[5]).shape, 1)
    ctype = compute_type(oty.dtype)  # float16 bits out: computed in float32
    elem = context.get_data_type(ctype)
    size = context.get_abi_sizeof(elem)
    vec = ir.VectorType(elem, lanes)
    cols = context.make_array(sig.args[0])(context, b, args[0]).data
    at = _plus(b, args[4], offset)
    gv = b.load(vptr(b, context.make_array(sig.args[3])(context, b, args[3]).data, at, vec),
                align=size)
    mdata = context.make_array(sig.args[1])(context, b, args[1]).data
    if what == STORE_LOG_SOFTMAX:
        mv = b.load(vptr(b, mdata, at, vec), align=size)
        tv = splat(b, vec, context.cast(b, args[2], sig.args[2], ctype))

    def value(c):
        v = b.load(vptr(b, cols, _column_at(b, c, C, lanes, offset), vec), align=size)
        if what == STORE_LOG_SOFTMAX:
            return b.fsub(b.fmul(b.fsub(v, mv), tv), gv)
        return b.fmul(v, gv)

    return value


def _store_rows(context, builder, oty, oval, row, halves, value):
    """Rows ``row ..`` (an i64 value) of ``out`` (Numba type ``oty``, value
    ``oval``; ``8 * halves`` rows) from ``value(c)``, class c's vector of
    their results (row i + 8 h in lane i + 8 h), transposed back by the
    shuffles of the loads and stored 8 classes at a time, the last class
    block overlapping the one before (it rewrites the same values)."""
    b = builder
    oarr = context.make_array(oty)(context, b, oval)
    C = b.extract_value(oarr.shape, 1)
    out = ScoreIR(context, oty.dtype)  # float16 bits: rounded as stored
    base = b.mul(row, C)
    starts = [[b.add(base, b.mul(C, const(h * BLOCK8 + i))) for h in range(halves)]
              for i in range(BLOCK8)]

    def store_block(c0):
        rows = _transpose_ir(b, [value(b.add(c0, const(j))) for j in range(BLOCK8)])
        for i, r in enumerate(rows):
            for h in range(halves):
                half = r if halves == 1 else b.shuffle_vector(
                    r, r, ir.Constant(ir.VectorType(I32, BLOCK8),
                                      list(range(h * BLOCK8, (h + 1) * BLOCK8))))
                out.store(b, half, oarr.data, b.add(starts[i][h], c0))

    C8 = b.sub(C, b.srem(C, const(BLOCK8)))

    def full(c0, carried):
        store_block(c0)
        return carried

    loop(b, const(0), C8, BLOCK8, [], full, "stores")
    with b.if_then(b.icmp_signed("<", C8, C)):
        store_block(b.sub(C, const(BLOCK8)))


def _rows_store_part(context, builder, sig, args, halves, offset, what):
    """Rows ``r + offset ..`` of ``out`` (args (cols, m, inv_t, g, p, out,
    r)) from the part's columns in ``cols`` (:func:`store_values`,
    :func:`_store_rows`)."""
    value = store_values(context, builder, sig, args, BLOCK8 * halves, offset, what)
    _store_rows(context, builder, sig.args[5], args[5], _plus(builder, args[6], offset),
                halves, value)


def _wsum_part(context, builder, sig, args, rw, offset):
    """``s[p:p + lanes]`` (args[-1], float64 or x's dtype) gets ``sum_c w[c] * (m -
    x_c)`` over the block ``rw``'s pixels (args (x, r, m, p, w, s)), in
    x's precision (two interleaved accumulators, so the adds do not wait
    on each other)."""
    pm = context.make_array(sig.args[2])(context, builder, args[2])
    at = _plus(builder, args[3], offset)
    mv = builder.load(vptr(builder, pm.data, at, rw.vec), align=rw.size)
    wdata = context.make_array(sig.args[4])(context, builder, args[4]).data

    def step(carried, c0, cols):
        acc = list(carried)
        for j, v in cols:
            wj = builder.load(builder.gep(wdata, [builder.add(c0, const(j))]))
            wc = splat(builder, rw.vec, wj)
            acc[j % 2] = builder.fadd(acc[j % 2], builder.fmul(wc, builder.fsub(mv, v)))
        return acc

    zero = vector_of(rw.vec, 0.0)
    a0, a1 = rw.reduce([zero, zero], step)
    _store_sum(context, builder, sig, args, rw, at, builder.fadd(a0, a1))


def max_expsum_args_ok(x, r, m, p, inv_t, cols, s):
    """The argument types of a max-and-exp-sum intrinsic, x's kind (rows or
    planes) checked by the caller."""
    ct = compute_type(x.dtype)
    return (_is_vec(m, ct) and _is_vec(cols, ct) and _is_sums(s, x)
            and isinstance(r, types.Integer) and isinstance(p, types.Integer)
            and isinstance(inv_t, types.Float))


def _expsum_args_ok(x, r, m, idx, p, inv_t, cols, s):
    return _is_rows(x) and _is_vec(idx, types.int32) and max_expsum_args_ok(x, r, m, p, inv_t,
                                                                             cols, s)


def block_intrinsics(rows, wide):
    """The block intrinsics (a namespace: ``argmax``, ``argmax_expsum``,
    ``wsum``, ``max_expsum``, ``max_expstore``, ``xent``, ``store_softmax``,
    ``store_log_softmax``, ``xent_grad``)
    for blocks of ``rows`` rows (8 or 16) laid out for ``wide`` (64-byte)
    vectors or not: the module's ``rows_*`` names are
    ``block_intrinsics(ROWS, target_has_avx512())``; tests build every
    layout, whatever the machine."""

    @intrinsic
    def rows_argmax(typingctx, x, r, m, idx, p):
        """Max of rows ``r .. r + ROWS - 1`` of the C-contiguous (rows, C)
        float array ``x`` into ``m[p:p + ROWS]`` (x's dtype) and the index
        of its first occurrence into ``idx[p:p + ROWS]`` (int32); the first
        NaN wins over any number (NumPy's rule, as
        :func:`fastlogits.cpu.blocks.tiles.tile_argmax`)."""
        if not (_is_rows(x) and _is_vec(m, compute_type(x.dtype)) and _is_vec(idx, types.int32)
                and isinstance(r, types.Integer) and isinstance(p, types.Integer)):
            return None
        return types.none(x, r, m, idx, p), _by_parts(rows, wide, _argmax_part)

    @intrinsic
    def rows_wsum(typingctx, x, r, m, p, w, s):
        """``s[p + i] = sum_c w[c] * (m[p + i] - x[r + i, c])`` for i < ROWS
        (the label-smoothing sum of :mod:`fastlogits.cpu.ops.losses`; ``w``
        (C,) in x's dtype, ``s`` float64 or x's dtype, the sum in x's
        precision)."""
        if not (_is_rows(x) and _is_vec(m, compute_type(x.dtype))
                and _is_vec(w, compute_type(x.dtype))
                and _is_sums(s, x)
                and isinstance(r, types.Integer) and isinstance(p, types.Integer)):
            return None
        return types.none(x, r, m, p, w, s), _by_parts(rows, wide, _wsum_part)

    @intrinsic
    def rows_argmax_expsum(typingctx, x, r, m, idx, p, inv_t, cols, s):
        """:func:`rows_argmax`, and ``s[p + i] = sum_c exp((x[r + i, c] -
        m[p + i]) * inv_t) - 1`` for i < ROWS (``s - 1``, for classify's
        ``1 / (1 + s')``: not the log ops' exact rule; ``s`` float64 or x's dtype, the sum in x's
        precision: for C up to :data:`fastlogits.cpu.blocks.tiles.SUM_BLOCK`;
        garbage where the max is not finite: callers mask those pixels, as
        for the tiles). One pass over the rows: each class's transposed
        column is stored in ``cols`` (at least C * ROWS elements of x's dtype,
        an L1 scratch) as the max is found, and the exp-sum reads them back
        (docs/perf/cpu-031)."""
        if not _expsum_args_ok(x, r, m, idx, p, inv_t, cols, s):
            return None

        return types.none(x, r, m, idx, p, inv_t, cols, s), _by_parts(rows, wide,
                                                                      _argmax_expsum_part)

    def _max_intrinsic(store):
        @intrinsic
        def max_expsum(typingctx, x, r, m, p, inv_t, cols, s):
            """:func:`rows_argmax_expsum` without the index: the max only;
            with ``store`` (``rows_max_expstore``, softmax) the exponentials,
            not the scores, are left in ``cols`` (for the stores below);
            without, the sum of the terms but the max's by the exact rule
            of :func:`fastlogits.cpu.blocks.tiles.rest` (the log ops)."""
            if not (_is_rows(x) and max_expsum_args_ok(x, r, m, p, inv_t, cols, s)):
                return None
            return types.none(x, r, m, p, inv_t, cols, s), _by_parts(
                rows, wide, lambda *a: _argmax_expsum_part(*a, store=store, index=False,
                                                           exact=not store))
        return max_expsum

    rows_max_expsum = _max_intrinsic(False)
    rows_max_expstore = _max_intrinsic(True)

    def _store_intrinsic(what):
        @intrinsic
        def store(typingctx, cols, m, inv_t, g, p, out, r):
            if not (_is_rows(out) and all(_is_vec(a, compute_type(out.dtype))
                                          for a in (cols, m, g))
                    and isinstance(inv_t, types.Float)
                    and isinstance(p, types.Integer) and isinstance(r, types.Integer)):
                return None
            return types.none(cols, m, inv_t, g, p, out, r), _store_codegen(what)
        return store

    def _store_codegen(what):
        def codegen(context, builder, sig, args):
            size = context.get_abi_sizeof(context.get_data_type(compute_type(sig.args[5].dtype)))
            halves, parts = _halves(rows, wide, size)
            for k in range(parts):
                _rows_store_part(context, builder, sig, args, halves, k * BLOCK8 * halves, what)
            return context.get_dummy_value()
        return codegen

    #: ``out[r + i, c] = cols_c[i] * g[p + i]`` for i < ROWS (the columns
    #: :func:`rows_max_expstore` left: softmax, g = 1 / s). out (rows,
    #: C) C-contiguous in the dtype of cols, m and g; m and inv_t unused.
    rows_store_softmax = _store_intrinsic(STORE_SOFTMAX)
    #: ``out[r + i, c] = (cols_c[i] - m[p + i]) * inv_t - g[p + i]`` (the
    #: score columns :func:`rows_argmax_expsum` left: log_softmax, g = log s).
    rows_store_log_softmax = _store_intrinsic(STORE_LOG_SOFTMAX)

    @intrinsic
    def rows_xent_grad(typingctx, x, r, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                       out_at):
        """The cross-entropy gradient of rows ``r .. r + ROWS - 1`` of x
        into rows ``out_at ..`` of out (rows, C), final, and the block's m,
        s, xt (and sm, with ``w`` not None) for the loss step, in one pass
        (:func:`_xent_grad_part`; ``cols`` at least C * ROWS elements)."""
        if not (_is_rows(x) and _is_rows(out)
                and xent_grad_args_ok(x, r, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                                      out_at)):
            return None

        def part(context, builder, sig, args, rw, offset):
            value = _xent_grad_part(context, builder, sig, args, rw, offset)
            _store_rows(context, builder, sig.args[13], args[13],
                        _plus(builder, args[14], offset), rw.lanes // BLOCK8, value)

        return (types.none(x, r, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out, out_at),
                _by_parts(rows, wide, part))

    @intrinsic
    def rows_xent(typingctx, x, r, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls):
        """The cross-entropy losses of rows ``r .. r + ROWS - 1`` in one
        pass (:func:`_xent_part`; ``cols`` at least C * ROWS elements; ``w``
        and ``ls`` both None, or label smoothing's class weights and
        coefficients): float32 x only."""
        if not (_is_rows(x) and xent_args_ok(x, r, m, p, cols, tt, wt, loss, at, want_loss,
                                             sums, w, ls)):
            return None
        return (types.none(x, r, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls),
                _by_parts(rows, wide, _xent_part))

    return SimpleNamespace(argmax=rows_argmax, argmax_expsum=rows_argmax_expsum,
                           xent=rows_xent, max_expsum=rows_max_expsum,
                           max_expstore=rows_max_expstore,
                           wsum=rows_wsum,
                           store_softmax=rows_store_softmax,
                           store_log_softmax=rows_store_log_softmax,
                           xent_grad=rows_xent_grad)


_TARGET = block_intrinsics(ROWS, target_has_avx512())
rows_argmax = _TARGET.argmax
rows_argmax_expsum = _TARGET.argmax_expsum
rows_wsum = _TARGET.wsum
rows_store_softmax = _TARGET.store_softmax
rows_store_log_softmax = _TARGET.store_log_softmax
rows_xent_grad = _TARGET.xent_grad
rows_xent = _TARGET.xent
rows_max_expsum = _TARGET.max_expsum
rows_max_expstore = _TARGET.max_expstore
