"""Blocks of channels-first pixels, their state in registers.

A channels-first tile's class-c scores are one contiguous segment of
class c's plane, so the tile loops of :mod:`.tiles` vectorize as they
are; but they keep each pixel's running max, index and exp-sum in L1
scratch arrays, loaded and stored again for every class (three loads and
two stores per vector of scores for the argmax). On AMD Zen 4 that
arithmetic ran at 8 cycles per 16 scores, and the channels-first argmax
at 19 classes at 37 % of the read bandwidth against 84 % channels-last
(docs/perf/cpu-037).

These intrinsics take :data:`LANES` consecutive pixels of every class
plane of a C-contiguous (outer, C, inner) x, one vector load per class,
and reduce the classes with the pixels' running max, index and exp-sum in
vector registers: the same part codegens as the channels-last row blocks
of :mod:`.rowblock` (argmax in :data:`CHAINS` chains, the fused exp-sum
over the columns kept in an L1 scratch, the smoothing sum), on columns
that need no transpose. The way back for softmax, log_softmax and the
cross-entropy gradient stores each class's vector of results into its
plane of an L1 scratch tile, or straight into the output's by
non-temporal stores (:data:`WRITE_EBUF`); the gradient is computed and
stored final (targets and ignored pixels included) by the block that
read its scores (``xent_grad``).

The column scratch matters more here than for rows: the C segments of a
block sit a plane apart, and planes whose size is a multiple of 4 KiB
(1024 x 2048 pixels, 512 x 512, ...) put every one of them in the same L1
set (and, a multiple of 128 KiB, L2 set): a second pass over x would find
most of them evicted. The drivers start blocks on 64-byte lines
(:func:`fastlogits.cpu.blocks.tiles.cf_tile`) and prefetch the planes a few
blocks ahead (:func:`fastlogits.cpu.llvm.prefetch.prefetch_planes`).

A block is addressed by the flat index ``start = (o * C) * inner + i``
of its first score (pixel i of image o, class 0); pixels ``i .. i +
LANES - 1`` must exist. x (and ``out``) must be C-contiguous; nothing is
bounds-checked. An image's pixels outside whole blocks (before its first
line, after its last block, an image smaller than a block) are copied
into a padded block of x's type (:func:`padded_planes`), so a driver runs
them through the same calls and compiles no other path
(docs/perf/cpu-080).

x may hold float16 bits (:mod:`fastlogits.cpu.llvm.scores`, the reading intrinsics): its
loads are halves widened in registers, and "x's dtype" below (of m,
cols, w, ...) then means float32. The stores and the gradient take
float x only.
"""

from types import SimpleNamespace

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.rowblock import (ROWS, STORE_LOG_SOFTMAX, STORE_SOFTMAX,
                                            _argmax_expsum_part, _argmax_part, _is_sums, _is_vec,
                                            _wsum_part, _xent_grad_part, _xent_part,
                                            max_expsum_args_ok, store_values, xent_args_ok,
                                            xent_grad_args_ok)
from fastlogits.cpu.llvm.rowcopy import copy_flat
from fastlogits.cpu.llvm.irutil import I32, I64, const, i64, loop, splat, vector_of
from fastlogits.cpu.llvm.scores import ScoreIR, compute_type, is_score_array
from fastlogits.cpu.llvm.stream import LINE, mark_nontemporal

#: Pixels of one block: as many as the row blocks' rows (16 on AVX-512,
#: else 8), so a block's float32 scores of one class fill one vector
#: register (float64 takes two).
LANES = ROWS

_NINF = float("-inf")

#: How the channels-first blocks write an x-sized output (softmax,
#: log_softmax, the cross-entropy gradient): into an L1 scratch tile,
#: then its class rows into out by ordinary stores (``WRITE_EBUF``) or
#: non-temporal ones (``WRITE_EBUF_STREAM``, :mod:`fastlogits.cpu.llvm.stream`); or straight
#: from the blocks by non-temporal stores, a whole line per class and
#: block (``WRITE_STREAM``: out's blocks must start lines, as x's do).
#: Straight by ordinary stores, one line in each of C planes per block,
#: ran 0.9x as fast as the tile loops' runs of lines (docs/perf/cpu-038).
WRITE_EBUF, WRITE_EBUF_STREAM, WRITE_STREAM = 0, 1, 2

#: Independent running (max, index) pairs of a block's argmax (class c0 + j
#: of a step in pair j, merged at the end), as the row blocks' two. One,
#: two and four chains ran alike on AMD Zen 4 (docs/perf/cpu-037): two,
#: so the sums' two accumulators take the same steps.
CHAINS = 2


def _is_planes(a):
    return is_score_array(a, 3)


def on_c_planes(fn):
    """A Numba-callable ``f(x, ...)`` that runs the njit function ``fn(x,
    ...)`` when x and every other 3-D array argument are C-contiguous
    float arrays, and does nothing otherwise: the plane intrinsics only
    type on C-contiguous arrays, and a driver compiled for a strided view
    (which it sends to the tile loops at run time) must still type. Not
    callable from Python."""
    def stub(*args):
        raise NotImplementedError(f"{fn.__name__} is only callable from Numba code")

    stub.__name__ = stub.__qualname__ = fn.__name__
    # Called with *args, which Numba's IR inliner cannot expand (LLVM
    # inlines it): not inlined by fastlogits.cpu.calls.
    fn.targetoptions["inline"] = "never"

    @overload(stub, fastmath=FASTMATH)
    def _overload(*args):
        if _is_planes(args[0]) and all(_is_planes(a) for a in args
                                       if isinstance(a, types.Array) and a.ndim == 3):
            return lambda *args: fn(*args)
        return lambda *args: None

    return stub


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def padded_planes(x, o, i, n, pad):
    """Pixels ``i .. i + n - 1`` of image o of x (outer, C, inner), ``0 <
    n <= LANES``, as a whole block: copied into ``pad[0, :, :n]`` (pad (1,
    C, LANES) of x's dtype), the other lanes copies of pixel ``i + n - 1``
    (scores of x: nothing a block cannot take). Returns pad. With pad of
    x's type, a driver runs an image's pixels outside whole blocks through
    the same block calls as the others and compiles one path, as the row
    blocks' :func:`fastlogits.cpu.blocks.rowblock.padded_block`
    (docs/perf/cpu-080)."""
    C, inner = x.shape[1], x.shape[2]
    start = o * C * inner + i
    for c in range(C):
        copy_flat(x, start + c * inner, pad, c * LANES, n)
        for p in range(n, LANES):
            copy_flat(x, start + c * inner + n - 1, pad, c * LANES + p, 1)
    return pad


class _PlaneBlock:
    """IR view of ``lanes`` pixels of every class plane of x (outer, C,
    inner) from the flat index ``start``: :meth:`column` c is
    ``x.flat[start + c * inner:][:lanes]``, one vector load. The same
    interface as :class:`fastlogits.cpu.blocks.rowblock._RowBlock`, so the part
    codegens of :mod:`.rowblock` run on it."""

    def __init__(self, context, builder, aty, aval, start, lanes, wide_offsets=False):
        self.builder = builder
        self.wide_offsets = wide_offsets
        arr = context.make_array(aty)(context, builder, aval)
        self.data = arr.data
        self.C = builder.extract_value(arr.shape, 1)
        self.inner = builder.extract_value(arr.shape, 2)
        self.scores = ScoreIR(context, aty.dtype)
        self.elem = self.scores.elem
        self.size = self.scores.compute_size  # of the computed vectors (m, cols, ...)
        self.lanes = lanes
        self.vec = ir.VectorType(self.elem, lanes)
        self.start = i64(builder, start)
        self.ninf = vector_of(self.vec, _NINF)
        self.chains = CHAINS

    def column(self, c):
        """The scores of class ``c`` (an i64 value) of the block's pixels."""
        b = self.builder
        return self.scores.load(b, self.data, b.add(self.start, b.mul(c, self.inner)),
                                self.lanes)

    def class_scores(self, t, mask):
        """Each pixel's score of class ``t`` (an i32 vector, lane l the
        class of the block's pixel l) where ``mask``, else 0: one gather
        from x, by 32-bit offsets (a plane apart per class) when C planes
        fit them, else 64-bit ones (x86: two gathers of half the lanes; the
        only ones with ``wide_offsets``, for the tests)."""
        b = self.builder
        base = b.gep(self.data, [self.start])
        zero = vector_of(self.vec, 0.0)

        def gather(ity):
            ivec = ir.VectorType(ity, self.lanes)
            t_ = t if ity == I32 else b.sext(t, ivec)
            inner = b.trunc(self.inner, I32) if ity == I32 else self.inner
            at = b.add(b.mul(t_, splat(b, ivec, inner)), ir.Constant(ivec, list(range(self.lanes))))
            return self.scores.masked_gather(b, base, at, mask, zero)

        if self.wide_offsets:
            return gather(I64)
        small = b.icmp_signed("<=", b.mul(self.C, self.inner), const(2 ** 31 - 1))
        with b.if_else(small) as (then, otherwise):
            with then:
                narrow, narrow_block = gather(I32), b.block
            with otherwise:
                wide, wide_block = gather(I64), b.block
        scores = b.phi(self.vec)
        scores.add_incoming(narrow, narrow_block)
        scores.add_incoming(wide, wide_block)
        return scores

    def reduce(self, init, step):
        """Fold ``step(carried, c0, cols)`` over the classes, ``cols`` a
        list of ``(j, column)`` of classes ``c0 + j``: :data:`CHAINS`
        classes per step (the argmax's chains; the sums' two accumulators
        take j % 2), then the last C % CHAINS classes one per step."""
        b = self.builder
        n = CHAINS
        Cn = b.sub(self.C, b.srem(self.C, const(n)))
        acc = loop(b, const(0), Cn, n, init,
                   lambda c0, carried: step(carried, c0, [(j, self.column(b.add(c0, const(j))))
                                                          for j in range(n)]),
                   "classes")
        return loop(b, Cn, self.C, 1, acc,
                    lambda c, carried: step(carried, c, [(0, self.column(c))]), "rest")


def _reading(lanes, part_codegen, wide_offsets=False):
    """A block intrinsic's codegen: ``part_codegen`` (a part codegen of
    :mod:`.rowblock`) on the :class:`_PlaneBlock` at ``start`` (args[1])."""
    def codegen(context, builder, sig, args):
        blk = _PlaneBlock(context, builder, sig.args[0], args[0], args[1], lanes, wide_offsets)
        part_codegen(context, builder, sig, args, blk, 0)
        return context.get_dummy_value()
    return codegen


def _store_planes(context, builder, oty, oval, start, lanes, nontemporal, value):
    """Store ``value(c)`` (a vector of ``lanes`` results) for every class c
    at the block ``start`` of ``out`` (Numba type ``oty``, value ``oval``):
    into class c's plane, by non-temporal stores (:mod:`fastlogits.cpu.llvm.stream`) with
    ``nontemporal``, which need every class's address to start a 64-byte
    line."""
    b = builder
    oarr = context.make_array(oty)(context, b, oval)
    C = b.extract_value(oarr.shape, 1)
    inner = b.extract_value(oarr.shape, 2)
    out = ScoreIR(context, oty.dtype)  # float16 bits: rounded as stored
    start = i64(b, start)

    def store(c, carried):
        st = out.store(b, value(c), oarr.data, b.add(start, b.mul(c, inner)),
                       align=LINE if nontemporal else None)
        if nontemporal:
            mark_nontemporal(b, st)
        return carried

    loop(b, const(0), C, 1, [], store, "stores")


def _storing(lanes, what, nontemporal):
    """The codegen of a store intrinsic (args (cols, m, inv_t, g, p, out,
    start)): each class's results (:func:`fastlogits.cpu.blocks.rowblock.store_values`)
    into its plane of ``out`` (:func:`_store_planes`)."""
    def codegen(context, builder, sig, args):
        value = store_values(context, builder, sig, args, lanes, 0, what)
        _store_planes(context, builder, sig.args[5], args[5], args[6], lanes, nontemporal, value)
        return context.get_dummy_value()
    return codegen


def plane_intrinsics(lanes, wide_offsets=False):
    """The channels-first block intrinsics for blocks of ``lanes`` pixels:
    a namespace with the names of :func:`fastlogits.cpu.blocks.rowblock.block_intrinsics`'
    (``argmax``, ``argmax_expsum``, ``wsum``, ``max_expsum``,
    ``max_expstore``, ``xent``, ``xent_grad``, ``store_softmax``,
    ``store_log_softmax``), each taking x or out (outer, C, inner) and the
    block's ``start`` where the row blocks take (rows, C) and a row; and
    ``stream_softmax``, ``stream_log_softmax``, ``stream_xent_grad``: the
    stores by non-temporal stores (every class's out address of the block
    must start a 64-byte line). The module's ``planes_*`` names are
    ``plane_intrinsics(LANES)``; tests build other widths too, and with
    ``wide_offsets`` the losses' gathers of the 64-bit offsets that only
    x of 2**31 elements or more would otherwise take
    (:meth:`_PlaneBlock.class_scores`)."""

    @intrinsic
    def planes_argmax(typingctx, x, start, m, idx, p):
        """Max over the classes of the block's pixels into ``m[p:p +
        lanes]`` (x's dtype) and the index of its first occurrence into
        ``idx[p:p + lanes]`` (int32); the first NaN wins over any number
        (NumPy's rule)."""
        if not (_is_planes(x) and _is_vec(m, compute_type(x.dtype))
                and _is_vec(idx, types.int32)
                and isinstance(start, types.Integer) and isinstance(p, types.Integer)):
            return None
        return types.none(x, start, m, idx, p), _reading(lanes, _argmax_part)

    def _expsum_ok(x, start, m, idx, p, inv_t, cols, s):
        return (_is_planes(x) and _is_vec(idx, types.int32)
                and max_expsum_args_ok(x, start, m, p, inv_t, cols, s))

    @intrinsic
    def planes_argmax_expsum(typingctx, x, start, m, idx, p, inv_t, cols, s):
        """:func:`planes_argmax`, and ``s[p + i] = sum_c exp((x_c - m[p +
        i]) * inv_t) - 1`` (``s - 1``, for classify's ``1 / (1 + s')``: not
        the log ops' exact rule; float64 or x's dtype, the sum in x's precision: C up to
        :data:`fastlogits.cpu.blocks.tiles.SUM_BLOCK`; garbage where the max is
        not finite); each class's scores are kept in ``cols`` (C * lanes
        elements of x's dtype, an L1 scratch) on the way, and the exp-sum
        reads them back."""
        if not _expsum_ok(x, start, m, idx, p, inv_t, cols, s):
            return None
        return types.none(x, start, m, idx, p, inv_t, cols, s), _reading(
            lanes, _argmax_expsum_part)

    def _max_intrinsic(store):
        @intrinsic
        def max_expsum(typingctx, x, start, m, p, inv_t, cols, s):
            """:func:`planes_argmax_expsum` without the index: the max
            only; with ``store`` (``planes_max_expstore``, softmax) the
            exponentials, not the scores, are left in ``cols``; without,
            the sum of the terms but the max's by the exact rule of
            :func:`fastlogits.cpu.blocks.tiles.rest` (the log ops)."""
            if not (_is_planes(x) and max_expsum_args_ok(x, start, m, p, inv_t, cols, s)):
                return None
            return types.none(x, start, m, p, inv_t, cols, s), _reading(
                lanes, lambda *a: _argmax_expsum_part(*a, store=store, index=False,
                                                      exact=not store))
        return max_expsum

    planes_max_expsum = _max_intrinsic(False)
    planes_max_expstore = _max_intrinsic(True)

    @intrinsic
    def planes_wsum(typingctx, x, start, m, p, w, s):
        """``s[p + i] = sum_c w[c] * (m[p + i] - x_c)`` for the block's
        pixels (``w`` (C,) in x's dtype, ``s`` float64 or x's dtype, the sum in x's
        precision)."""
        if not (_is_planes(x) and _is_vec(m, compute_type(x.dtype))
                and _is_vec(w, compute_type(x.dtype))
                and _is_sums(s, x)
                and isinstance(start, types.Integer) and isinstance(p, types.Integer)):
            return None
        return types.none(x, start, m, p, w, s), _reading(lanes, _wsum_part)

    def _store_intrinsic(what, nontemporal=False):
        @intrinsic
        def store(typingctx, cols, m, inv_t, g, p, out, start):
            if not (_is_planes(out) and all(_is_vec(a, compute_type(out.dtype))
                                            for a in (cols, m, g))
                    and isinstance(inv_t, types.Float)
                    and isinstance(p, types.Integer) and isinstance(start, types.Integer)):
                return None
            return (types.none(cols, m, inv_t, g, p, out, start),
                    _storing(lanes, what, nontemporal))
        return store

    def _grad_intrinsic(nontemporal):
        @intrinsic
        def xent_grad(typingctx, x, start, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                      out_start):
            """The cross-entropy gradient of the block's pixels into the
            block ``out_start`` of out (by non-temporal stores with
            ``nontemporal``), final, and their m, s, xt (and sm, with ``w``
            not None) for the loss step, in one pass
            (:func:`fastlogits.cpu.blocks.rowblock._xent_grad_part`)."""
            if not (_is_planes(x) and _is_planes(out)
                    and xent_grad_args_ok(x, start, m, p, cols, tt, wt, coef, bc, w, s, xt, sm,
                                          out, out_start)):
                return None

            def codegen(context, builder, sig, args):
                blk = _PlaneBlock(context, builder, sig.args[0], args[0], args[1], lanes,
                                  wide_offsets)
                value = _xent_grad_part(context, builder, sig, args, blk, 0)
                _store_planes(context, builder, sig.args[13], args[13], args[14], lanes,
                              nontemporal, value)
                return context.get_dummy_value()

            return (types.none(x, start, m, p, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                               out_start), codegen)
        return xent_grad

    @intrinsic
    def planes_xent(typingctx, x, start, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls):
        """The cross-entropy losses of the block's pixels in one pass
        (:func:`fastlogits.cpu.blocks.rowblock._xent_part`, label-smoothed with
        ``w`` and ``ls`` not None): float32 x only."""
        if not (_is_planes(x) and xent_args_ok(x, start, m, p, cols, tt, wt, loss, at,
                                               want_loss, sums, w, ls)):
            return None
        return (types.none(x, start, m, p, cols, tt, wt, loss, at, want_loss, sums, w, ls),
                _reading(lanes, _xent_part, wide_offsets))

    return SimpleNamespace(argmax=planes_argmax, argmax_expsum=planes_argmax_expsum,
                           xent=planes_xent, max_expsum=planes_max_expsum,
                           max_expstore=planes_max_expstore,
                           wsum=planes_wsum,
                           store_softmax=_store_intrinsic(STORE_SOFTMAX),
                           store_log_softmax=_store_intrinsic(STORE_LOG_SOFTMAX),
                           xent_grad=_grad_intrinsic(False),
                           stream_softmax=_store_intrinsic(STORE_SOFTMAX, True),
                           stream_log_softmax=_store_intrinsic(STORE_LOG_SOFTMAX, True),
                           stream_xent_grad=_grad_intrinsic(True))


_TARGET = plane_intrinsics(LANES)
planes_argmax = _TARGET.argmax
planes_argmax_expsum = _TARGET.argmax_expsum
planes_wsum = _TARGET.wsum
planes_store_softmax = _TARGET.store_softmax
planes_store_log_softmax = _TARGET.store_log_softmax
planes_xent_grad = _TARGET.xent_grad
planes_stream_softmax = _TARGET.stream_softmax
planes_stream_log_softmax = _TARGET.stream_log_softmax
planes_stream_xent_grad = _TARGET.stream_xent_grad
planes_xent = _TARGET.xent
planes_max_expsum = _TARGET.max_expsum
planes_max_expstore = _TARGET.max_expstore
