"""Cross-entropy (and its gradient) on the CPU: one read of x per tile.

For a tile of P pixels the kernel takes, while the tile's C x P scores sit
in L1/L2: the per-pixel max (:func:`tile_max`), the target's logit (one
gather per pixel), the weighted smoothing sum ``sum_c w[c] * (m - x_c)``
(only with label smoothing), the exp-sum (the exponentials stored into the
gradient tile when it is wanted, :func:`tile_exp_store`), then per pixel
the loss, and finally the gradient, rescaled in cache::

    -logp[c]  = log s + (m - x_c)                       (s = sum exp(x - m))
    loss      = (1 - eps) w[t] (-logp[t]) + eps / C * (W log s + sum_c w[c] (m - x_c))
    grad[c]   = g * (e_c * A / s - eps / C * w[c]) - g * (1 - eps) w[t] [c == t]
    A         = (1 - eps) w[t] + eps / C * W            (W = sum_c w[c])

with ``g`` the gradient scale (1, or 1 / sum of target weights for a
"mean" gradient). The class loops and the per-pixel quantities are in
x's precision (float32 or float64); losses and weights are summed in
float64 per chunk of tiles, and the chunk sums are returned, so a mean
over millions of pixels stays accurate.

Targets are read as they are (uint8 or int64) and checked on the way: a
value outside [0, C) that is not ``ignore_index`` is counted (and treated
as ignored); the caller raises the error with the first such value.

The gradient may be x itself (``cross_entropy(..., grad_out=x)``): every
driver reads all of a tile's (a block's, a row's) logits it needs before
it writes that tile's gradient, and nothing else of x afterwards.

Drivers, one per layout regime (as in :mod:`fastlogits.cpu.ops.softmax`):
:func:`ce_cf_blocks` (channels-first, C-contiguous, up to
``cpu_plane_block_max_classes`` classes: tiles of blocks of pixels
reduced in registers, :mod:`fastlogits.cpu.blocks.planeblock`, an image's
pixels outside whole blocks as a padded block; a large gradient written
by non-temporal stores, :mod:`fastlogits.cpu.llvm.stream`), :func:`ce_cf`
(channels-first, more classes: the tile loops), :func:`ce_cl_tiles`
(channels-last, few classes: a tile of rows transposed into an L1
scratch) and
:func:`ce_cl_blocks` (channels-last, C-contiguous, from 8 to
``cpu_row_block_xent_max_classes`` classes: blocks of rows transposed in
registers, the gradient included, a chunk's last rows as a padded block)
and :func:`ce_cl_rows` (channels-last, C-contiguous, from
``cpu_row_min_classes`` classes on: one row at a time through the vector
row kernels).
Each writes ``[loss_sum, weight_sum, bad_count]`` of each of its chunks
into a row of ``table`` (float64, :func:`fastlogits.cpu.plan.chunk_table`),
summed by the host (:func:`fastlogits.cpu.plan.table_sums`).

The drivers' ``want_grad`` is True, or None for the loss alone (a
switch, :mod:`fastlogits.cpu.switches`): the gradient's code sits under
``if want_grad is not None:`` (in the drivers and in every helper they
pass it to), so a loss-only kernel is compiled without the gradient
blocks (docs/perf/cpu-078). Their ``smoothing`` switches label smoothing alike
(the register blocks' smoothed instances; docs/perf/cpu-079). Helpers that only
select per pixel take it as a plain boolean (``want_grad is not None``).

In the register blocks of both layouts, float32 losses without gradient
skip the per-pixel scratch: one fused intrinsic per block
(:func:`_fused_losses`: max, exp-sum, the smoothing sum with label
smoothing, target logit, log and loss in vector registers;
docs/perf/cpu-044, cpu-054). With a gradient, each block
of 16 pixels (8 with AVX2) is done by one fused intrinsic too
(:func:`_grad_blocks`): max, exponentials, their sum and the smoothing
sum from the block's columns in L1, then the final gradient (targets and
ignored pixels included) stored from registers; only the per-pixel loss
step follows, on the tile's scratch (docs/perf/cpu-047). Both take
the target logit by one gather from x, and each block prefetches its
share of the next tile's targets (:func:`_prefetch_block`; docs/perf/cpu-052).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.gather import lookup
from fastlogits.cpu.blocks.planeblock import (LANES, WRITE_EBUF, WRITE_EBUF_STREAM, WRITE_STREAM,
                                              padded_planes,
                                              planes_max_expsum, planes_stream_xent_grad, planes_wsum,
                                              planes_xent, planes_xent_grad)
from fastlogits.cpu.blocks.rowblock import (ROWS, padded_block, rows_max_expsum, rows_wsum,
                                            rows_xent, rows_xent_grad)
from fastlogits.cpu.blocks.rowvec import CHUNK_BYTES, vrow_argmax, vrow_expsum, vrow_max_expsum
from fastlogits.cpu.blocks.tiles import (SUM_BLOCK, cf_chunks, cf_tile, chunk_bounds, is_finite,
                                         load_rows, load_transposed, next_tile_cl, store_transposed,
                                         tile_exp_store, tile_expsum, tile_max, tile_to_out,
                                         work_chunks)
from fastlogits.cpu.llvm.alloc import empty, zeros
from fastlogits.cpu.llvm.rowcopy import copy_rows
from fastlogits.cpu.llvm.fastlog import flog1p
from fastlogits.cpu.llvm.prefetch import (no_region, plane_rows_region, planes_ahead, prefetch_planes,
                                          prefetch_row, prefetch_rows, prefetch_span, region_from,
                                          rows_ahead)
from fastlogits.cpu.llvm.scores import compute_type, holds_half_bits, score, scratch, store_score
from fastlogits.cpu.llvm.stream import stream_copy, stream_fence


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _targets(P, t, r0, ignore, C, w, tt, wt, keep):
    """Read P targets ``t[r0:r0 + P]``: ``tt[p]`` the class (int32), or -1
    for an ignored or bad pixel; ``wt[p]`` its weight from ``w`` (x's
    dtype; 0 where ``tt[p]`` is -1); ``keep[p]`` 1 or 0 in x's dtype (the
    gradient's mask, see :func:`_tile_grad`). Returns the number of bad
    targets (outside [0, C), not ``ignore``). The target logits follow
    (:func:`_target_logits_tile`, :func:`_target_logits_rows`).

    Branch-free (a branch would be mispredicted at scattered ignored
    pixels), so the loop vectorizes. The weights, indexed loads, come
    after it by vector gathers (:func:`lookup`), and not at all with unit
    weights (no ``class_weight``): inside the loop they kept LLVM from
    vectorizing it, 4.9 cycles per pixel against 0.8 without them
    (docs/perf/cpu-034, cpu-054).
    """
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    one = keep.dtype.type(1.0)
    zero = keep.dtype.type(0.0)
    unit = True
    for c in range(C):
        unit &= w[c] == one
    nbad = 0
    for p in range(P):
        ti = np.int64(t[r0 + p])
        inside = (ti >= 0) & (ti < C)
        kept = ti != ignore
        nbad += np.int64(kept & ~inside)
        ok = kept & inside
        tt[p] = ti if ok else -1
        keep[p] = one if ok else zero
        if unit:  # loop-invariant: LLVM unswitches the loop on it
            wt[p] = one if ok else zero
    if not unit:
        lookup(w, tt, wt, P)
    return nbad


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _target_logits_tile(x, o, i0, P, tt, xt):
    """``xt[p]``: the target's logit of tile pixel p (0 where ``tt[p]`` is
    -1). A branch around the load: measured faster here than loading every
    pixel (1.9 against 2.5 cycles per pixel, docs/perf/cpu-034)."""
    i0 = max(i0, 0)
    zero = xt.dtype.type(0.0)
    for p in range(P):
        xt[p] = score(x[o, max(tt[p], 0), i0 + p]) if tt[p] >= 0 else zero


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _target_logits_rows(x2, r0, P, tt, xt):
    """:func:`_target_logits_tile` for rows ``r0 .. r0 + P - 1`` of x2 (rows, C)."""
    r0 = max(r0, 0)
    zero = xt.dtype.type(0.0)
    for p in range(P):
        xt[p] = score(x2[r0 + p, max(tt[p], 0)]) if tt[p] >= 0 else zero


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _smoothing_sum(x, o, i0, P, m, w, part, sm):
    """``sm[p] = sum_c w[c] * (m[p] - x[o, c, i0 + p])``: each term >= 0 for
    positive weights, so no cancellation; in x's precision, SUM_BLOCK
    classes at a time."""
    i0 = max(i0, 0)
    C = x.shape[1]
    for p in range(P):
        sm[p] = 0.0
    for c0 in range(0, C, SUM_BLOCK):
        for p in range(P):
            part[p] = 0.0
        for c in range(c0, min(c0 + SUM_BLOCK, C)):
            wc = w[c]
            for p in range(P):
                part[p] += wc * (m[p] - score(x[o, c, i0 + p]))
        for p in range(P):
            sm[p] += part[p]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _pixel_losses(P, m, s, sm, xt, wt, tt, keep, epsc, wallx, gk, ge, smooth, a, d, want_grad,
                  acc, loss, r0, want_loss):
    """Per pixel of the tile (see the module docstring): the loss (0 where
    ignored, NaN where the max is not finite: a NaN, a +inf, or all -inf),
    into ``loss[r0:r0 + P]`` with ``want_loss``, label smoothing by ``keep,
    epsc, wallx`` (``ls`` of :func:`_smoothing_coefs`) where ``smooth``;
    with ``want_grad``, ``a = A / (1 + s)`` and ``d = g (1 - eps) w[t]`` from
    ``gk, ge`` (``coef`` of :func:`_grad_scales`; a loop of their own:
    without a gradient its division is not paid). Adds the sum of the
    losses to ``acc[0]``, of the target weights to ``acc[1]``, in float64.
    (The coefficients come as scalars: :func:`ce_cl_rows` calls this per
    row, and the two arrays passed instead doubled the loss's time at 150
    classes; docs/perf/cpu-062.)

    ``s`` is the exp-sum less the max's term (:func:`fastlogits.cpu.blocks.tiles.rest`):
    ``log1p(s)`` keeps a confident pixel's small loss precise.

    Branch-free (selects, and :func:`flog1p` instead of libm's scalar
    ``log1p``) so the loop runs at vector width. Every per-pixel quantity is
    in x's precision, the scratch too: float32's loop runs twice the lanes
    of float64's and reads half the bytes (docs/perf/cpu-034, cpu-044). Its terms are all >= 0 (log s >= 0, m - x_t >= 0), so a float32
    loss is within a few ulp, as the float32 exp-sum it starts from.
    """
    f = m.dtype.type
    nan = f(np.nan)
    zero = f(0.0)
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    lsum = 0.0
    wsum = 0.0
    for p in range(P):
        # Every value is computed unconditionally and then selected: a
        # conditional load or division would stay a branch.
        wp = wt[p]
        mx = m[p]
        lse = flog1p(s[p])  # s: the sum of the non-maximal terms (tiles.rest)
        lv = wp * (lse + (mx - xt[p]))
        smoothed = keep * lv + epsc * (wallx * lse + sm[p])
        lv = smoothed if smooth else lv
        lv = lv if is_finite(mx) else nan
        lv = lv if tt[p] >= 0 else zero
        if want_loss:  # loop-invariant: LLVM unswitches the loop on it
            loss[r0 + p] = lv
        lsum += np.float64(lv)
        wsum += np.float64(wp)
    if want_grad:
        for p in range(P):
            wp = wt[p]
            ap = (gk * wp + ge) / (s[p] + f(1.0))
            a[p] = ap if is_finite(m[p]) else nan
            d[p] = gk * wp
    acc[0] += lsum
    acc[1] += wsum


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, want_grad, acc, loss, r0,
                       want_loss):
    """:func:`_pixel_losses` of a tile or block, its coefficients from the
    arrays ``ls`` (:func:`_smoothing_coefs`) and ``coef``
    (:func:`_grad_scales`)."""
    _pixel_losses(P, m, s, sm, xt, wt, tt, ls[0], ls[1], ls[2], coef[0], coef[1], eps > 0.0, a,
                  d, want_grad, acc, loss, r0, want_loss)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def put_row(table, i, acc):
    """``table[i, :] = acc`` for 1-D ``acc`` as a plain loop: the slice
    assignment compiles Numba's broadcast check, whose error message
    compiles a dozen string functions (docs/perf/cpu-073)."""
    for k in range(table.shape[1]):
        table[i, k] = acc[k]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _add_block_sums(acc, sums):
    """Adds the fused blocks' sums (``sums``: the lanes' loss sums, then
    their weight sums) to ``acc[0]`` and ``acc[1]``; loops, not
    ``sums[:n].sum()``, whose overload compiles a function of its own
    (docs/perf/cpu-078)."""
    n = sums.shape[0] // 2
    for k in range(n):
        acc[0] += sums[k]
        acc[1] += sums[n + k]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile_losses(x, o, i0, P, t, r0, w, ignore, eps, ls, coef, et, eo, ei0,
                 want_grad, loss, want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf):
    """Everything of one tile but the gradient write: fills ``a``, ``d``,
    ``tt`` for it (and the exponentials into ``et[eo, :, ei0:ei0 + P]``
    unless ``want_grad`` is None: see the module docstring),
    writes ``loss[r0:r0 + P]`` with ``want_loss``, adds to ``acc``.
    Prefetches the region ``pf`` in 2 C shares (max and exp-sum passes)."""
    C = x.shape[1]
    one = w.dtype.type(1.0)
    tile_max(x, o, i0, P, m, part, pf)
    acc[2] += _targets(P, t, r0, ignore, C, w, tt, wt, keep)
    _target_logits_tile(x, o, i0, P, tt, xt)
    if eps > 0.0:
        _smoothing_sum(x, o, i0, P, m, w, part, sm)
    if want_grad is not None:
        tile_exp_store(x, o, i0, P, m, one, s, part, et, eo, ei0, True, True, region_from(pf, C))
    else:
        tile_expsum(x, o, i0, P, m, one, s, part, True, region_from(pf, C))
    _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, want_grad is not None, acc,
                       loss, r0, want_loss)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _scratch(tile, w):
    """Per-chunk scratch of ``tile`` pixels: m, part, a, s, sm (zeroed: read
    even without smoothing), xt, wt, d, keep in the type x's scores are
    computed in (``w``'s), tt int32 (docs/perf/cpu-044); part and s
    of 2 tile (their halves: :func:`fastlogits.cpu.blocks.tiles.tile_expsum`)."""
    return (empty(tile, w.dtype), empty(2 * tile, w.dtype), empty(tile, w.dtype),
            empty(2 * tile, w.dtype), zeros(tile, w.dtype), empty(tile, w.dtype),
            empty(tile, w.dtype), empty(tile, w.dtype), empty(tile, np.int32),
            empty(tile, w.dtype))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _grad_coef(w, eps, gscale):
    """``g * eps / C * w[c]`` in x's dtype (``w``'s; 0 without smoothing)."""
    C = w.shape[0]
    b = empty(w.shape[0], w.dtype)
    for c in range(C):
        b[c] = gscale * eps / C * w[c]
    return b


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _grad_scales(w, wall, eps, gscale):
    """``(g (1 - eps), g eps W / C)`` in x's dtype (``w``'s): the register
    blocks' gradient scales ``A = (coef[0] w[t] + coef[1]) / s`` and ``D =
    coef[0] w[t]`` (:func:`fastlogits.cpu.blocks.rowblock._xent_grad_part`)."""
    coef = empty(2, w.dtype)
    coef[0] = gscale * (1.0 - eps)
    coef[1] = gscale * eps * wall / w.shape[0]
    return coef


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _smoothing_coefs(w, wall, eps):
    """``(1 - eps, eps / C, W)`` in x's dtype (``w``'s): the fused loss
    blocks' label smoothing (:func:`fastlogits.cpu.blocks.rowblock._xent_part`),
    the values :func:`_pixel_losses` takes."""
    ls = empty(3, w.dtype)
    ls[0] = 1.0 - eps
    ls[1] = eps / w.shape[0]
    ls[2] = wall
    return ls


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def loss_coefs(w, w64, eps, gscale):
    """The coefficients every loss driver derives once per call, in x's
    dtype (``w``'s): ``(b, coef, ls)`` from :func:`_grad_coef`,
    :func:`_grad_scales` and :func:`_smoothing_coefs` (``W`` the sum of
    the float64 class weights ``w64``)."""
    wall = 0.0
    for c in range(w64.shape[0]):
        wall += w64[c]
    return (_grad_coef(w, eps, gscale), _grad_scales(w, wall, eps, gscale),
            _smoothing_coefs(w, wall, eps))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile_grad(g, o, i0, P, a, b, keep, tt, d):
    """The tile's exponentials ``g[o, :, i0:i0 + P]`` into d loss / d x, in
    cache: ``g * a[p] - b[c]``, minus ``d[p]`` at the target class, 0 where
    ``keep[p]`` is 0. A mask in x's precision keeps the loop at full vector
    width (an int64 compare would halve it); the select, not a multiply,
    zeroes ignored pixels whose logits may be NaN."""
    i0 = max(i0, 0)  # no wraparound select (see tiles.py): 2.1x slower without (docs/perf/cpu-034)
    C = g.shape[1]
    zero = g.dtype.type(0.0)
    for c in range(C):
        bc = b[c]
        for p in range(P):
            v = g[o, c, i0 + p] * a[p] - bc
            g[o, c, i0 + p] = v if keep[p] != zero else zero
    for p in range(P):
        if tt[p] >= 0:
            g[o, tt[p], i0 + p] -= d[p]


def _prefetch_block(x, first, ahead, t, t_first):
    """Numba-callable: prefetch the block of x ``ahead`` pixels past the
    one at ``first`` (channels-first planes (outer, C, inner) from that
    flat index, :func:`prefetch_planes`; rows (rows, C) from that row,
    :func:`prefetch_rows`), and the targets ``t[t_first:t_first +
    LANES]``.

    The drivers pass a ``t_first`` one tile ahead of the block's own
    targets: :func:`_targets` reads a tile's targets in one loop before
    its blocks, and those lines, unrequested, cost the 19-class loss
    1.05-1.09x, asked for in one burst at the tile's start no less
    (docs/perf/cpu-052). Each block asks for its share."""
    raise NotImplementedError("only callable from Numba code")


@overload(_prefetch_block, fastmath=FASTMATH)
def _prefetch_block_impl(x, first, ahead, t, t_first):
    # Planes or rows: their blocks are both LANES (= ROWS) pixels.
    prefetch = prefetch_planes if x.ndim == 3 else prefetch_rows

    def impl(x, first, ahead, t, t_first):
        prefetch(x, first, LANES, ahead)
        prefetch_span(t, t_first, t_first + LANES)
    return impl


def _fused_losses(x, first, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead, t, w, ls,
                  smooth):
    """Numba-callable: the losses of P pixels (a multiple of the block
    size) of float32 x in one fused pass, returning True: channels-first
    planes (outer, C, inner) from the flat index ``first`` by
    :func:`planes_xent`, or rows (rows, C) from row ``first`` by
    :func:`rows_xent`; ``tt``, ``wt`` from :func:`_targets` (tile pixel
    p), ``loss`` and the targets' flat index ``r0 + p``, the sums added to
    ``sums`` (2 * LANES float64); with ``smooth`` (a switch: True, or
    None), label-smoothed by the class weights ``w`` and ``ls``
    (:func:`_smoothing_coefs`; a False would run the smoothed instance with
    eps = 0: the same losses, slower); the next
    tile's targets of ``t`` prefetched (:func:`_prefetch_block`). For
    float64 x it does nothing and returns False: its log has no vector IR
    form."""
    raise NotImplementedError("only callable from Numba code")


@overload(_fused_losses, fastmath=FASTMATH)
def _fused_losses_impl(x, first, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead, t, w, ls,
                       smooth):
    if compute_type(x.dtype) != types.float32:
        return (lambda x, first, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead, t, w, ls,
                smooth: False)
    xent = planes_xent if x.ndim == 3 else rows_xent

    if isinstance(smooth, types.NoneType):
        def unsmoothed(x, first, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead, t, w, ls,
                       smooth):
            for q in range(0, P, LANES):
                _prefetch_block(x, first + q, ahead, t, r0 + P + q)
                xent(x, first + q, m, q, cols, tt, wt, loss, r0 + q, want_loss, sums, None, None)
            return True
        return unsmoothed

    def smoothed(x, first, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead, t, w, ls, smooth):
        for q in range(0, P, LANES):
            _prefetch_block(x, first + q, ahead, t, r0 + P + q)
            xent(x, first + q, m, q, cols, tt, wt, loss, r0 + q, want_loss, sums, w, ls)
        return True
    return smoothed


def _grad_blocks(x, first, P, sc, cols, coef, bc, w, smooth, out, out_first, nontemporal,
                 ahead, t, r0):
    """Numba-callable: the final gradient of P pixels (a multiple of the
    block size) of x, by the fused gradient blocks (``*_xent_grad``,
    :func:`fastlogits.cpu.blocks.rowblock._xent_grad_part`), into ``out`` from
    ``out_first`` (the first pixel's flat index of planes (outer, C, inner),
    by non-temporal stores with ``nontemporal``; the first row of rows),
    leaving each pixel's m, s, xt (and sm with ``smooth``, a switch as for
    :func:`_fused_losses`) in the
    :func:`_scratch` ``sc`` for :func:`_pixel_losses`. x as for
    :func:`_fused_losses`; ``tt``, ``wt`` of ``sc`` from :func:`_targets`;
    ``cols`` C * LANES elements; ``coef`` from :func:`_grad_scales`, ``bc``
    from :func:`_grad_coef`; the next tile's targets of ``t`` (these
    pixels' from flat index ``r0``) prefetched (:func:`_prefetch_block`)."""
    raise NotImplementedError("only callable from Numba code")


@overload(_grad_blocks, fastmath=FASTMATH)
def _grad_blocks_impl(x, first, P, sc, cols, coef, bc, w, smooth, out, out_first, nontemporal,
                      ahead, t, r0):
    if x.ndim == 3:
        plain, streamed = planes_xent_grad, planes_stream_xent_grad
    else:
        plain, streamed = rows_xent_grad, rows_xent_grad

    def unsmoothed(x, first, P, sc, cols, coef, bc, w, smooth, out, out_first, nontemporal,
                   ahead, t, r0):
        m, _, _, s, sm, xt, wt, _, tt, _ = sc
        for q in range(0, P, LANES):
            _prefetch_block(x, first + q, ahead, t, r0 + P + q)
            # Two instances, so the flag is not tested inside a block.
            if nontemporal:
                streamed(x, first + q, m, q, cols, tt, wt, coef, bc, None, s, xt, sm, out,
                         out_first + q)
            else:
                plain(x, first + q, m, q, cols, tt, wt, coef, bc, None, s, xt, sm, out,
                      out_first + q)

    def smoothed(x, first, P, sc, cols, coef, bc, w, smooth, out, out_first, nontemporal, ahead,
                 t, r0):
        m, _, _, s, sm, xt, wt, _, tt, _ = sc
        for q in range(0, P, LANES):
            _prefetch_block(x, first + q, ahead, t, r0 + P + q)
            if nontemporal:
                streamed(x, first + q, m, q, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                         out_first + q)
            else:
                plain(x, first + q, m, q, cols, tt, wt, coef, bc, w, s, xt, sm, out,
                      out_first + q)
    return unsmoothed if isinstance(smooth, types.NoneType) else smoothed


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _plane_losses(x, xo, xi0, P, t, r0, w, ignore, eps, smoothing, unfused, loss, want_loss, grad,
                  o, i0, n, b, coef, ls, want_grad, loss_only, write, cols, ebuf, sc, acc, sums,
                  ahead):
    """Losses of pixels ``xi0 .. xi0 + P - 1`` of image xo of x, P a
    multiple of ``planeblock.LANES`` (targets ``t[r0:r0 + P]``, losses
    into ``loss[r0:r0 + P]``), by the register blocks of
    :mod:`fastlogits.cpu.blocks.planeblock` (``cols``: C * LANES elements,
    one block's columns, reused so they stay in L1; ``sc``: a
    :func:`_scratch` of at least P pixels): the targets first, then one
    pass over x. With ``want_grad`` the fused gradient blocks
    (:func:`_grad_blocks`, ``b`` from :func:`_grad_coef`, ``coef`` from
    :func:`_grad_scales`) make each block's final gradient, the first n
    pixels' written into ``grad[o, :, i0:i0 + n]`` as ``write`` says
    (``planeblock.WRITE_*``: through ``ebuf`` (1, C, >= P); or straight
    from the blocks by non-temporal stores, where x's pixels are: n = P,
    (o, i0) = (xo, xi0)); otherwise the max and exp-sum blocks, the target
    logits and the smoothing sums. Then the per-pixel step
    (:func:`_pixel_losses`). Prefetches ``ahead`` pixels ahead, and the
    next tile's targets (:func:`_prefetch_block`).

    float32 losses without gradient take one fused pass instead
    (:func:`_fused_losses`, label smoothing by ``ls`` from
    :func:`_smoothing_coefs`), adding their sums to ``sums`` (float64, 2
    * LANES: the caller adds them to ``acc``): no scratch between the
    blocks and the per-pixel step (docs/perf/cpu-044, cpu-054).
    Switches as for :func:`_block_losses`: ``smoothing``, ``unfused``,
    ``loss_only``."""
    m, _, a, s, sm, xt, wt, d, tt, keep = sc
    C, inner = x.shape[1], x.shape[2]
    xi0 = max(xi0, 0)  # no wraparound select (see tiles.py)
    start = xo * C * inner + xi0
    acc[2] += _targets(P, t, r0, ignore, C, w, tt, wt, keep)
    # (Pruned as in _block_losses.)
    if want_grad is None:
        if loss_only is not None:
            if unfused is None:
                if not _fused_losses(x, start, P, m, cols, tt, wt, loss, r0, want_loss, sums,
                                     ahead, t, w, ls, smoothing):
                    raise AssertionError("unfused is None for scores not computed in float32")
                return
            one = w.dtype.type(1.0)
            for q in range(0, P, LANES):
                _prefetch_block(x, start + q, ahead, t, r0 + P + q)
                planes_max_expsum(x, start + q, m, q, one, cols, s)
            _target_logits_tile(x, xo, xi0, P, tt, xt)
            if smoothing is not None:
                for q in range(0, P, LANES):
                    planes_wsum(x, start + q, m, q, w, sm)
            _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, False, acc, loss, r0,
                               want_loss)
        return
    if write == WRITE_STREAM:
        _grad_blocks(x, start, P, sc, cols, coef, b, w, smoothing, grad, start, True, ahead, t, r0)
    else:  # (two calls: grad and ebuf differ in type for float16 bits)
        _grad_blocks(x, start, P, sc, cols, coef, b, w, smoothing, ebuf, 0, False, ahead, t, r0)
    _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, False, acc, loss, r0,
                       want_loss)
    if write != WRITE_STREAM:
        tile_to_out(ebuf, grad, o, i0, n, write == WRITE_EBUF_STREAM)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _padded_targets(t, r, n, ignore, C, tpad, acc):
    """The targets of a padded block (:func:`ce_cl_blocks`,
    :func:`ce_cf_blocks`): ``t[r:r + n]`` into ``tpad`` (a block's
    length), the kept classes as they are, an ignored or bad target and
    the padding as ``t``'s -1 (no class of a block's C, and a value ``t``
    can hold, which ``ignore`` need not be: uint8 targets with the default
    -100), to be ignored in place of ``ignore``. Adds the number of bad
    targets (outside [0, C), not ``ignore``) to ``acc[2]``, as the loop
    goes: a count returned instead took 2-8 % more LLVM IR in the kernel
    (docs/perf/cpu-080)."""
    none = t.dtype.type(-1)
    for p in range(tpad.shape[0]):
        ti = np.int64(t[r + p]) if p < n else ignore
        kept = ti != ignore and 0 <= ti < C
        if ti != ignore and not kept:
            acc[2] += 1
        tpad[p] = t[r + p] if kept else none


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _cf_tile_losses(src, so, si0, P, o, i0, inner, t, w, ignore, eps, ls, coef, b, grad, ebuf,
                    want_grad, loss, want_loss, sc, acc, direct, stream, pf):
    """The tile loops' part of :func:`ce_cf`: pixels ``i0 .. i0 + P - 1``
    of image o, their scores ``src[so, :, si0:si0 + P]`` (x's own, or a
    copy); the gradient made in grad's tile with ``direct``, else in the
    scratch ``ebuf`` and copied into grad (by non-temporal stores with
    ``stream``). Prefetches the region ``pf``."""
    m, part, a, s, sm, xt, wt, d, tt, keep = sc
    r0 = o * inner + i0
    if want_grad is None:
        _tile_losses(src, so, si0, P, t, r0, w, ignore, eps, ls, coef, grad, o, i0, want_grad,
                     loss, want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf)
        return
    if direct:
        _tile_losses(src, so, si0, P, t, r0, w, ignore, eps, ls, coef, grad, o, i0, want_grad,
                     loss, want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf)
        _tile_grad(grad, o, i0, P, a, b, keep, tt, d)
        return
    _tile_losses(src, so, si0, P, t, r0, w, ignore, eps, ls, coef, ebuf, 0, 0, want_grad, loss,
                 want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf)
    _tile_grad(ebuf, 0, 0, P, a, b, keep, tt, d)
    tile_to_out(ebuf, grad, o, i0, P, stream)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def ce_cf_blocks(task, ntasks, x, t, w, w64, ignore, eps, smoothing, gscale, grad, want_grad,
                 loss, want_loss, tile, nthreads, write, ahead_bytes, unfused, loss_only, table):
    """Channels-first by the register blocks only: C-contiguous ``x``,
    ``grad`` (outer, C, inner), C <= ``tiles.SUM_BLOCK``; ``t``, ``loss``
    flat (outer * inner,). ``grad``/``loss`` are untouched (may be any
    array of that type) without ``want_grad``/``want_loss``. Tiles from
    :func:`fastlogits.cpu.blocks.tiles.cf_tile`, their whole blocks of
    ``planeblock.LANES`` pixels by :func:`_plane_losses` in place, the
    gradient written as ``write`` says (``planeblock.WRITE_*``),
    prefetching ``ahead_bytes`` ahead in each class plane. An image's
    pixels outside whole blocks go through the same call as a padded block
    (:func:`fastlogits.cpu.blocks.planeblock.padded_planes`), their targets
    by :func:`_padded_targets`, their losses made in a padded row and
    copied out, their gradient through the scratch tile: no tile loops
    compiled (docs/perf/cpu-080). ``smoothing``, ``unfused``,
    ``loss_only``: switches, as for :func:`ce_cl_blocks`.

    One read of x: the gradient is made from the block's scores in
    registers and L1, final, as the block is read."""
    outer, C, inner = x.shape
    b, coef, ls = loss_coefs(w, w64, eps, gscale)
    padded_ignore = np.int64(t.dtype.type(-1))  # see _padded_targets
    stream = write != WRITE_EBUF
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        sc = _scratch(tile, w)
        # The gradient's scratch tile: a padded block's only when streamed
        # straight from the blocks.
        ebuf = scratch((1, C, 1 if want_grad is None else LANES if write == WRITE_STREAM
                        else tile), x)
        cols = scratch(C * LANES, x)
        pad = empty((1, C, LANES), x.dtype)
        tpad = empty(LANES, t.dtype)
        lpad = empty(LANES, loss.dtype)
        acc = zeros(3, np.float64)
        sums = zeros(2 * LANES, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            PB = P - P % LANES
            r0 = o * inner + i0
            # The whole blocks in place, then the rest as a padded block:
            # one call site, so LLVM inlines one copy of the blocks.
            for rest in range(2):
                if rest == 0:
                    if PB == 0:
                        continue
                    xb, xo, xi0, Pb, tb, rb, ig, lb, n, wr, ah = (x, o, i0, PB, t, r0, ignore, loss,
                                                                  PB, write, ahead)
                else:
                    if PB == P:
                        break
                    n = P - PB
                    _padded_targets(t, r0 + PB, n, ignore, C, tpad, acc)
                    xb, xo, xi0, Pb, tb, rb, ig, lb, wr, ah = (padded_planes(x, o, i0 + PB, n, pad),
                                                               0, 0, LANES, tpad, 0, padded_ignore,
                                                               lpad, WRITE_EBUF, 0)
                _plane_losses(xb, xo, xi0, Pb, tb, rb, w, ig, eps, smoothing, unfused, lb,
                              want_loss, grad, o, i0 + rest * PB, n, b, coef, ls, want_grad,
                              loss_only, wr, cols, ebuf, sc, acc, sums, ah)
            if want_loss and PB < P:
                for p in range(P - PB):
                    loss[r0 + PB + p] = lpad[p]
        if stream:
            stream_fence()
        _add_block_sums(acc, sums)
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def ce_cf(task, ntasks, x, t, w, w64, ignore, eps, gscale, grad, want_grad, loss, want_loss,
          tile, nthreads, direct, write, ahead_bytes, copy_tiles, table):
    """Channels-first by the tile loops: ``x``, ``grad`` (outer, C, inner),
    any strides or C; ``t``, ``loss`` as for :func:`ce_cf_blocks`. Tiles
    from :func:`fastlogits.cpu.blocks.tiles.cf_tile`, read in place or,
    with ``copy_tiles``, as a copy (:func:`fastlogits.cpu.blocks.tiles.load_rows`),
    prefetching ``ahead_bytes`` ahead in each class plane
    (:func:`fastlogits.cpu.llvm.prefetch.plane_rows_region`).

    One read of x: the exponentials go into the gradient tile and are
    rescaled there while still in cache. Without ``direct`` (``grad`` is
    x: in place), when the gradient is streamed (``write`` not
    ``WRITE_EBUF``: written by non-temporal stores), or for a ``grad`` of
    float16 bits (which must not hold unscaled exponentials: rounded
    twice) they go into an L1 scratch tile copied to ``grad`` at the
    end: loops that read x and write its own memory fail LLVM's runtime
    alias check and run scalar (in place took 125 ms against 45 at
    1024 x 2048 x 19; docs/perf/cpu-036). (Tiles copied first,
    ``copy_tiles``, could make it in grad's tile in place too: measured
    0.91x, docs/perf/cpu-068.)
    """
    outer, C, inner = x.shape
    direct = direct and not holds_half_bits(grad)
    b, coef, ls = loss_coefs(w, w64, eps, gscale)
    stream = write != WRITE_EBUF
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        sc = _scratch(tile, w)
        ebuf = scratch((1, C, tile if want_grad is not None and (stream or not direct) else 1), x)
        buf = scratch((1, C, tile if copy_tiles else 1), x)
        acc = zeros(3, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            if P == 0:
                continue
            pf = plane_rows_region(x, o, i0, P, ahead)
            if copy_tiles:
                load_rows(x, o, i0, P, buf, pf)
                _cf_tile_losses(buf, 0, 0, P, o, i0, inner, t, w, ignore, eps, ls, coef, b, grad,
                                ebuf, want_grad, loss, want_loss, sc, acc, direct and not stream,
                                stream, no_region(buf))
            else:
                _cf_tile_losses(x, o, i0, P, o, i0, inner, t, w, ignore, eps, ls, coef, b, grad,
                                ebuf, want_grad, loss, want_loss, sc, acc, direct and not stream,
                                stream, pf)
        if stream:
            stream_fence()
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def ce_cl_tiles(task, ntasks, x, t, w, w64, ignore, eps, gscale, grad, want_grad, loss,
                want_loss, tile, nthreads, ahead_bytes, table):
    """Channels-last, small C: ``x``, ``grad`` (rows, C); ``t``, ``loss`` (rows,).

    A tile of rows is transposed into an L1 scratch (C, P); the
    exponentials go to a second scratch, become the gradient there and go
    back row by row (:func:`store_transposed`).
    """
    rows, C = x.shape
    b, coef, ls = loss_coefs(w, w64, eps, gscale)
    ntiles = (rows + tile - 1) // tile
    nchunks = work_chunks(ntiles, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        buf = scratch((1, C, tile), x)
        ebuf = scratch((1, C, tile), x) if want_grad is not None else buf
        m, part, a, s, sm, xt, wt, d, tt, keep = _scratch(tile, w)
        acc = zeros(3, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            pf = next_tile_cl(x, r0, tile, min(rows, j1 * tile), 2 * C, ahead_bytes)
            _tile_losses(buf, 0, 0, P, t, r0, w, ignore, eps, ls, coef, ebuf, 0, 0,
                         want_grad, loss, want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf)
            if want_grad is not None:
                _tile_grad(ebuf, 0, 0, P, a, b, keep, tt, d)
                store_transposed(ebuf, P, grad, r0)
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _block_losses(x, r0, P, t, w, ignore, eps, smoothing, unfused, loss, want_loss, grad, b,
                  coef, ls, want_grad, loss_only, ahead, cols, sc, acc, sums):
    """Losses of rows ``r0 .. r0 + P - 1`` of x (rows, C), P a multiple of
    ``rowblock.ROWS``, by blocks of rows transposed in registers
    (:mod:`fastlogits.cpu.blocks.rowblock`; ``cols`` its column scratch: C * ROWS
    elements; ``sc``: a :func:`_scratch` of at least P pixels): the
    targets first, then with ``want_grad`` the fused gradient blocks
    (:func:`_grad_blocks`, ``b`` from :func:`_grad_coef`, ``coef`` from
    :func:`_grad_scales`) writing the final rows of ``grad``, otherwise the
    max and exp-sum blocks, the target logits and the smoothing sums; then
    the per-pixel step. (A call per many blocks: the scratch arrays'
    reference counting, paid per call, cost more than the arithmetic of
    one block.) float32 losses without gradient take one fused pass
    instead, the whole step (:func:`_fused_losses`, label smoothing by
    ``ls``), adding their sums to ``sums``.

    Switches, True or None as ``want_grad`` is
    (:mod:`fastlogits.cpu.switches`): ``loss_only`` True without the
    gradient (its complement: a kernel with the gradient compiles no
    loss-only blocks, docs/perf/cpu-080); ``smoothing`` True for ``eps >
    0``; ``unfused`` None where x is computed in float32, so that a
    float32 kernel without gradient compiles the fused pass alone
    (docs/perf/cpu-079); a None for other x raises AssertionError."""
    m, _, a, s, sm, xt, wt, d, tt, keep = sc
    C = x.shape[1]
    r0 = max(r0, 0)
    acc[2] += _targets(P, t, r0, ignore, C, w, tt, wt, keep)
    # A True switch prunes nothing (fastlogits.cpu.switches): a loss-only
    # kernel's gradient is pruned by want_grad's None (and, for float32, its
    # unfused blocks after the fused pass's return by unfused's), a gradient
    # kernel's loss-only blocks by loss_only's None.
    if want_grad is None:
        if loss_only is not None:
            if unfused is None:
                if not _fused_losses(x, r0, P, m, cols, tt, wt, loss, r0, want_loss, sums, ahead,
                                     t, w, ls, smoothing):
                    raise AssertionError("unfused is None for scores not computed in float32")
                return
            one = w.dtype.type(1.0)
            for q in range(0, P, ROWS):
                _prefetch_block(x, r0 + q, ahead, t, r0 + P + q)
                rows_max_expsum(x, r0 + q, m, q, one, cols, s)
            _target_logits_rows(x, r0, P, tt, xt)
            if smoothing is not None:
                for q in range(0, P, ROWS):
                    rows_wsum(x, r0 + q, m, q, w, sm)
            _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, False, acc, loss, r0,
                               want_loss)
        return
    _grad_blocks(x, r0, P, sc, cols, coef, b, w, smoothing, grad, r0, False, ahead, t, r0)
    _tile_pixel_losses(P, m, s, sm, xt, wt, tt, ls, coef, eps, a, d, False, acc, loss, r0,
                       want_loss)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _grad_row(g, at, apx, b, ti, d):
    """Row ``at`` of g, one pixel's exponentials, into its gradient: ``e *
    apx - b[c]``, less ``d`` at its target ``ti``."""
    for c in range(g.shape[1]):
        g[at, c] = g[at, c] * apx - b[c]
    g[at, ti] -= d


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def ce_cl_blocks(task, ntasks, x, t, w, w64, ignore, eps, smoothing, gscale, grad, want_grad,
                 loss, want_loss, nthreads, ahead_bytes, unfused, loss_only, tile, table):
    """Channels-last, C-contiguous ``x``, ``grad`` (rows, C), C >= 8; ``t``,
    ``loss`` (rows,): ``tile`` rows (a multiple of ``rowblock.ROWS``) at a
    time by blocks of ROWS rows transposed in registers
    (:func:`_block_losses`), prefetching ``ahead_bytes`` ahead. Without
    ``want_grad``, ``grad`` may be any (1, k) array of x's computed type.
    ``smoothing``, ``unfused``, ``loss_only``: switches, see
    :func:`_block_losses` (a kernel compiles the blocks it runs: without
    label smoothing, float32 without gradient by the fused pass alone,
    with the gradient no loss-only blocks; docs/perf/cpu-079, cpu-080).

    A chunk's last rows % ROWS go through the same call as a padded block
    (:func:`fastlogits.cpu.blocks.rowblock.padded_block`), their targets by
    :func:`_padded_targets`; their losses and gradient rows are made in
    padded blocks of their own and copied out."""
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    b, coef, ls = loss_coefs(w, w64, eps, gscale)
    padded_ignore = np.int64(t.dtype.type(-1))  # see _padded_targets
    nchunks = work_chunks(rows, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        sc = _scratch(tile, w)
        cols = scratch(C * ROWS, x)
        pad = empty((ROWS, C), x.dtype)
        tpad = empty(ROWS, t.dtype)
        lpad = empty(ROWS, loss.dtype)
        gpad = empty((ROWS, C) if want_grad is not None else (1, 1), grad.dtype)
        acc = zeros(3, np.float64)
        sums = zeros(2 * ROWS, np.float64)
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        b0 = r0
        while b0 < r1:
            P = min(tile, r1 - b0) // ROWS * ROWS
            n = r1 - b0 if P == 0 else 0
            if n == 0:
                xb, tb, lb, gb, at, ig = x, t, loss, grad, b0, ignore
            else:
                _padded_targets(t, b0, n, ignore, C, tpad, acc)
                xb, tb, lb, gb, at, ig = (padded_block(x, b0, n, pad), tpad, lpad, gpad, 0,
                                          padded_ignore)
                P = ROWS
            _block_losses(xb, at, P, tb, w, ig, eps, smoothing, unfused, lb, want_loss, gb, b,
                          coef, ls, want_grad, loss_only, ahead, cols, sc, acc, sums)
            if n == 0:
                b0 += P
                continue
            if want_loss:
                for p in range(n):
                    loss[b0 + p] = lpad[p]
            if want_grad is not None:
                copy_rows(gpad, 0, grad, b0, n)
            b0 = r1
        _add_block_sums(acc, sums)
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def ce_cl_rows(task, ntasks, x, t, w, w64, ignore, eps, smoothing, gscale, grad, want_grad,
               loss, want_loss, nthreads, ahead_bytes, stream, table):
    """Channels-last, C-contiguous ``x``, ``grad`` (rows, C); ``t``, ``loss``
    (rows,): a row at a time as vectors (:mod:`fastlogits.cpu.blocks.rowvec`),
    prefetching ``ahead_bytes`` ahead. Without ``want_grad``, ``grad`` may
    be any (1, k) array of x's computed type. With ``stream``, or for a
    ``grad`` of float16 bits (rounded once), the gradient rows of kept
    pixels are staged: made in a scratch row and copied into grad, by
    non-temporal stores with ``stream``. ``smoothing`` as for
    :func:`ce_cl_blocks`."""
    rows, C = x.shape
    grads = want_grad is not None
    staged = stream or holds_half_bits(grad)
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    b, coef, ls = loss_coefs(w, w64, eps, gscale)
    keep, epsc, wallx, gk, ge = ls[0], ls[1], ls[2], coef[0], coef[1]  # per row, as scalars
    smooth = smoothing is not None
    one = w.dtype.type(1.0)
    zero = w.dtype.type(0.0)
    # Rows of more than one chunk: the loss's max and exp-sum in one pass
    # (1.35-1.46x at 32000 classes); shorter rows two (the one-pass
    # kernel made the loss 0.88-0.91x at 150-200 classes, though not
    # logsumexp; docs/perf/cpu-057).
    one_pass = C * x.itemsize > CHUNK_BYTES
    nchunks = work_chunks(rows, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m1, _, a1, s1, sm1, xt1, wt1, d1, tt1, _ = _scratch(1, w)  # one pixel's
        acc = zeros(3, np.float64)
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        # The gradient row is made in grad's row, or staged in this one
        # (then streamed, or rounded to float16 bits).
        row = scratch((1, C) if staged else (1, 1), x)
        for r in range(r0, r1):
            prefetch_row(x, r, ahead)
            gr = r if grads else 0
            ti = np.int64(t[r])
            if ti != ignore and (ti < 0 or ti >= C):
                acc[2] += 1
                ti = -1
            if ti == ignore:
                ti = -1
            if ti < 0:
                if want_loss:
                    loss[r] = 0.0
                if want_grad is not None:
                    for c in range(C):
                        grad[gr, c] = store_score(grad, zero)
                continue
            if grads or not one_pass:
                mx, _ = vrow_argmax(x, r)
            else:  # max and exp-sum in one pass over the row
                mx, s1[0] = vrow_max_expsum(x, r, one)
            sm = 0.0
            if smoothing is not None:
                for c in range(C):
                    sm += w[c] * (mx - score(x[r, c]))
            m1[0] = mx
            xt1[0] = score(x[r, ti])
            if staged and (grads or not one_pass):  # after every read of the row
                s1[0] = vrow_expsum(x, r, mx, one, row, 0, grads, True)
            elif grads or not one_pass:  # grad may be x
                s1[0] = vrow_expsum(x, r, mx, one, grad, gr, grads, True)
            sm1[0] = sm
            wt1[0] = w[ti]
            tt1[0] = ti
            _pixel_losses(1, m1, s1, sm1, xt1, wt1, tt1, keep, epsc, wallx, gk, ge, smooth, a1,
                          d1, grads, acc, loss, r, want_loss)
            if want_grad is None:
                continue
            if staged:  # (row and grad differ in type for float16 bits)
                _grad_row(row, 0, a1[0], b, ti, d1[0])
                if stream:
                    stream_copy(row, 0, grad, r * C, C)
                else:
                    for c in range(C):
                        grad[r, c] = store_score(grad, row[0, c])
            else:
                _grad_row(grad, gr, a1[0], b, ti, d1[0])
        if stream:
            stream_fence()
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def target_weight_sum(task, ntasks, t, w64, ignore, nthreads, table):
    """``(sum of w64[t] over non-ignored targets, number of bad targets)``
    of each chunk of the flat targets ``t``, into a row of ``table``: the
    denominator of a "mean" gradient, needed before the pass that writes
    it (reads the targets only)."""
    n = t.shape[0]
    C = w64.shape[0]
    nchunks = work_chunks(n, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        total = 0.0
        nbad = 0.0
        j0, j1 = chunk_bounds(chunk, nchunks, n)
        for j in range(j0, j1):
            ti = np.int64(t[j])
            if ti != ignore:
                if 0 <= ti < C:
                    total += w64[ti]
                else:
                    nbad += 1
        table[chunk, 0] = total
        table[chunk, 1] = nbad
