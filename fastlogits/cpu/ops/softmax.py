"""softmax, log_softmax and logsumexp on the CPU: one read of x per tile.

A tile's scores stay in L1/L2 while its max, its exp-sum and its write
happen, so x comes from memory once; softmax stores the exponentials on the
way and rescales them in cache. ``mode`` picks the op at run time, outside
the inner loops, so the three share one compiled driver per layout.

Drivers (called from :mod:`fastlogits.api` with validated, canonical views):

- :func:`expnorm_cf_blocks`: channels-first ``(outer, C, inner)``,
  C-contiguous, up to ``cpu_plane_block_max_classes`` classes: tiles of
  inner pixels (contiguous class rows), their blocks of pixels reduced in
  registers (:mod:`fastlogits.cpu.blocks.planeblock`), an image's pixels
  outside whole blocks in a padded block; a large output (not over x)
  written by non-temporal stores (:mod:`fastlogits.cpu.llvm.stream`);
- :func:`expnorm_cf`: channels-first, any strides or classes, the tile
  loops;
- :func:`expnorm_cl_tiles`: channels-last ``(rows, C)``, few classes or
  rows that are not contiguous, tiles of rows seen transposed;
- :func:`expnorm_cl_rows`: channels-last ``(rows, C)``, C-contiguous, from
  ``cpu_row_min_classes`` classes, blocks of rows read by the vector
  row kernels of :mod:`fastlogits.cpu.blocks.rowvec`;
- :func:`expnorm_cl_blocks`: channels-last ``(rows, C)``, C-contiguous, 8
  to ``cpu_row_block_expnorm_max_classes`` classes and at least a block
  of rows, blocks of rows transposed in registers
  (:mod:`fastlogits.cpu.blocks.rowblock`), the last rows in a block that
  overlaps the one before.
"""

import numpy as np
from numba import njit

from fastlogits._modes import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX
from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.planeblock import (LANES, WRITE_EBUF, WRITE_EBUF_STREAM, WRITE_STREAM,
                                              padded_planes, planes_max_expstore, planes_max_expsum,
                                              planes_store_log_softmax, planes_store_softmax,
                                              planes_stream_log_softmax, planes_stream_softmax)
from fastlogits.cpu.blocks.rowblock import (ROWS, rows_max_expstore, rows_max_expsum,
                                            rows_store_log_softmax, rows_store_softmax)
from fastlogits.cpu.blocks.rowvec import CHUNK_BYTES, vrow_argmax, vrow_expsum, vrow_max_expsum
from fastlogits.cpu.blocks.tiles import (cf_chunks, cf_tile, chunk_bounds, is_finite, load_rows,
                                         load_transposed, next_tile_cl, store_transposed, tile_exp_store,
                                         tile_expsum, tile_max, tile_to_out, work_chunks)
from fastlogits.cpu.llvm.alloc import empty
from fastlogits.cpu.llvm.rowcopy import copy_rows
from fastlogits.cpu.llvm.fastlog import flog1p
from fastlogits.cpu.llvm.prefetch import (no_region, plane_rows_region, planes_ahead,
                                          prefetch_planes, prefetch_row, prefetch_rows, region_from,
                                          rows_ahead)
from fastlogits.cpu.llvm.scores import holds_half_bits, score, scratch, store_score
from fastlogits.cpu.llvm.stream import stream_affine, stream_fence


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _softmax_epilogue(P, m, s, g):
    """Per pixel, from ``s``, the exp-sum less the max's term 1
    (:func:`fastlogits.cpu.blocks.tiles.rest`): softmax's scale ``g = 1 /
    (1 + s)``; NaN where the max is not finite (NaN, +inf or a pixel of
    -inf only)."""
    nan = g.dtype.type(np.nan)
    for p in range(P):
        g[p] = 1.0 / (1.0 + s[p]) if is_finite(m[p]) else nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _log_epilogue(P, m, s, g):
    """:func:`_softmax_epilogue` for log_softmax: ``g = log1p(s)`` (in x's
    precision: :func:`flog1p`)."""
    nan = g.dtype.type(np.nan)
    for p in range(P):
        g[p] = flog1p(g.dtype.type(s[p])) if is_finite(m[p]) else nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _epilogue(P, m, s, mode, g):
    """The epilogue of softmax or log_softmax (``mode``):
    :func:`_softmax_epilogue` or :func:`_log_epilogue`."""
    if mode == SOFTMAX:
        _softmax_epilogue(P, m, s, g)
    else:
        _log_epilogue(P, m, s, g)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile(x, o, i0, P, inv_t, mode, m, g, s, part, ebuf, eo, ei0, pf):
    """One tile: max ``m``, exp-sum ``s`` and, for softmax/log_softmax, the
    result in ``ebuf[eo, :, ei0:ei0 + P]``; prefetches the region ``pf``
    in 2 C shares (max and exp-sum passes).

    ``ebuf`` is an L1 scratch, or the output itself where it cannot
    overlap x: when ``out`` is ``x`` (in place) LLVM's runtime alias check
    would send every loop reading x and writing out to its scalar fallback.
    """
    C = x.shape[1]
    ei0 = max(ei0, 0)  # no wraparound select (see tiles.py)
    tile_max(x, o, i0, P, m, part, pf)
    if mode == SOFTMAX:
        tile_exp_store(x, o, i0, P, m, inv_t, s, part, ebuf, eo, ei0, True, False,
                       region_from(pf, C))
    else:
        tile_expsum(x, o, i0, P, m, inv_t, s, part, True, region_from(pf, C))
    if mode == LOGSUMEXP:
        return
    _epilogue(P, m, s, mode, g)
    if mode == SOFTMAX:
        for c in range(C):
            for p in range(P):
                ebuf[eo, c, ei0 + p] = ebuf[eo, c, ei0 + p] * g[p]
    elif mode == LOG_SOFTMAX:
        i0 = max(i0, 0)
        for c in range(C):
            for p in range(P):
                ebuf[eo, c, ei0 + p] = (score(x[o, c, i0 + p]) - m[p]) * inv_t - g[p]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _lse(P, m, s, inv_t, red, r0):
    """logsumexp ``m * inv_t + log1p(s)`` (s as for :func:`_epilogue`; the
    log in x's precision: :func:`flog1p`);
    m itself (NaN, +inf, -inf) where not finite. ``red`` may hold float16
    bits (:mod:`fastlogits.cpu.llvm.scores`)."""
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    for p in range(P):
        v = m[p] * inv_t + flog1p(m.dtype.type(s[p])) if is_finite(m[p]) else m[p]
        red[r0 + p] = store_score(red, v)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _plane_tile(x, start, P, out, red, o, i0, n, inv_t, exps, logs, lse, m, g, s, cols, ebuf,
                write, ahead):
    """P pixels of x from flat index ``start`` (P a multiple of
    ``planeblock.LANES``): one pass over x finds each block's max and
    exp-sum in registers, keeping its scores (softmax: their
    exponentials) in ``cols`` (C * P); then the epilogue over the P
    pixels at once, and the results of the first n from ``cols`` into
    ``out[o, :, i0:i0 + n]`` (which may be x: the tile's scores are all
    read before any is written) as ``write`` says (``planeblock.WRITE_*``;
    ``WRITE_STREAM``: out's blocks where x's are, n = P); or the
    logsumexp into ``red[o, i0:i0 + n]``. The op by switches, one True
    (:func:`fastlogits.cpu.switches.mode_switches`: ``exps`` softmax,
    ``logs`` log_softmax, ``lse`` logsumexp). For logsumexp ``out`` is a
    stand-in, for softmax/log_softmax ``red``: neither is touched.
    Prefetches ``ahead`` pixels ahead
    (:func:`fastlogits.cpu.llvm.prefetch.prefetch_planes`)."""
    C = x.shape[1]
    for q in range(0, P, LANES):
        prefetch_planes(x, start + q, LANES, ahead)
        if exps is not None:
            planes_max_expstore(x, start + q, m, q, inv_t, cols[q * C:(q + LANES) * C], s)
        if logs is not None or lse is not None:
            planes_max_expsum(x, start + q, m, q, inv_t, cols[q * C:(q + LANES) * C], s)
    if lse is not None:
        _lse(n, m, s, inv_t, red[o], i0)
    if exps is not None:
        _softmax_epilogue(P, m, s, g)
    if logs is not None:
        _log_epilogue(P, m, s, g)
    if exps is not None or logs is not None:
        for q in range(0, P, LANES):
            qcols = cols[q * C:(q + LANES) * C]
            if write == WRITE_STREAM:
                if exps is not None:
                    planes_stream_softmax(qcols, m, inv_t, g, q, out, start + q)
                if logs is not None:
                    planes_stream_log_softmax(qcols, m, inv_t, g, q, out, start + q)
            else:
                if exps is not None:
                    planes_store_softmax(qcols, m, inv_t, g, q, ebuf, q)
                if logs is not None:
                    planes_store_log_softmax(qcols, m, inv_t, g, q, ebuf, q)
        if write != WRITE_STREAM:
            tile_to_out(ebuf, out, o, i0, n, write == WRITE_EBUF_STREAM)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _cf_tile(src, so, si0, P, o, i0, inv_t, mode, m, g, s, part, out, red, ebuf, straight,
             stream, pf):
    """The tile loops' part of :func:`expnorm_cf`: pixels ``i0 .. i0 + P -
    1`` of image o, their scores ``src[so, :, si0:si0 + P]`` (x's own, or
    a copy); the results made in out's tile with ``straight``, else in the
    scratch ``ebuf`` and copied into out (by non-temporal stores with
    ``stream``), or the logsumexp into ``red[o]``. Prefetches the region
    ``pf``."""
    if straight:
        _tile(src, so, si0, P, inv_t, mode, m, g, s, part, out, o, i0, pf)
        return
    _tile(src, so, si0, P, inv_t, mode, m, g, s, part, ebuf, 0, 0, pf)
    if mode == LOGSUMEXP:
        _lse(P, m, s, inv_t, red[o], i0)
    else:
        tile_to_out(ebuf, out, o, i0, P, stream)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cf_blocks(task, ntasks, x, out, red, inv_t, exps, logs, lse, tile, nthreads, write,
                      ahead_bytes):
    """Channels-first by the register blocks only: ``x``, ``out`` (outer,
    C, inner) C-contiguous, C <= ``tiles.SUM_BLOCK``; ``red`` (outer,
    inner). The op by switches, one True, compiled per op
    (:func:`fastlogits.cpu.switches.mode_switches`: ``exps`` softmax,
    ``logs`` log_softmax, ``lse`` logsumexp). ``out`` is written for
    softmax/log_softmax, ``red`` for logsumexp; the unused one may be any
    array of that type (not touched). Tiles from
    :func:`fastlogits.cpu.blocks.tiles.cf_tile`,
    their whole blocks of ``planeblock.LANES`` pixels read in place
    (prefetching ``ahead_bytes`` ahead in each class plane) and written
    as ``write`` says (``planeblock.WRITE_*``), the rest as one padded
    block (:func:`fastlogits.cpu.blocks.planeblock.padded_planes`)
    through the scratch tile: no tile loops compiled (docs/perf/cpu-080).
    """
    outer, C, inner = x.shape
    stream = write != WRITE_EBUF
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        # The results' scratch tile: a padded block's only when streamed
        # straight from the blocks; none for logsumexp.
        ebuf = scratch((1, C, 1 if lse is not None else LANES if write == WRITE_STREAM
                        else tile), x)
        m = scratch(tile, x)
        g = scratch(tile, x)
        s = empty(tile, np.float64)
        cols = scratch(C * tile, x)
        pad = empty((1, C, LANES), x.dtype)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            PB = P - P % LANES
            # Two call sites: x itself in the first (one call site, x and the
            # padded block a phi, made log_softmax 0.68x as fast; docs/perf/cpu-080).
            if PB > 0:
                _plane_tile(x, (o * C) * inner + i0, PB, out, red, o, i0, PB, inv_t, exps, logs,
                            lse, m, g, s, cols, ebuf, write, ahead)
            if PB < P:
                _plane_tile(padded_planes(x, o, i0 + PB, P - PB, pad), 0, LANES, out, red, o,
                            i0 + PB, P - PB, inv_t, exps, logs, lse, m, g, s, cols, ebuf,
                            WRITE_EBUF, 0)
        if stream:
            stream_fence()


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cf(task, ntasks, x, out, red, inv_t, mode, tile, nthreads, direct, write, ahead_bytes,
               copy_tiles):
    """Channels-first by the tile loops: ``x``, ``out`` (outer, C, inner),
    any strides or C; ``red`` (outer, inner), as for
    :func:`expnorm_cf_blocks`. Tiles from
    :func:`fastlogits.cpu.blocks.tiles.cf_tile`. With ``direct`` (out
    C-contiguous, not overlapping x) the results are written straight
    into ``out``, unless it holds float16 bits (which must not hold
    unscaled exponentials: rounded twice); otherwise through an L1
    scratch; log_softmax's tiles copied first (``copy_tiles``) go straight
    into a C-contiguous ``out`` in place too. When ``out`` is streamed
    (``write`` not ``WRITE_EBUF``: a C-contiguous output larger than the
    caches) the results go through the scratch and into ``out`` by
    non-temporal stores (:mod:`fastlogits.cpu.llvm.stream`). Prefetches
    ``ahead_bytes`` ahead in each class plane
    (:func:`fastlogits.cpu.llvm.prefetch.plane_rows_region`).

    One read of x: the tile's C x P scores stay in L1/L2 between the max
    pass, the exp-sum pass and the write; with ``copy_tiles``, in a copy
    (:func:`fastlogits.cpu.blocks.tiles.load_rows`) that the tile loops read.
    """
    outer, C, inner = x.shape
    stream = write != WRITE_EBUF
    # The tile loops' results straight into out's tile? Never for float16
    # bits; log_softmax's copied tiles in place too, as the loops read the
    # copy (softmax's exponentials, stored into out and scaled there on
    # planes whose rows share cache sets, measured 0.86-0.91x so; docs/perf/cpu-068).
    straight = (mode != LOGSUMEXP and not stream and not holds_half_bits(out)
                and (direct or (copy_tiles and mode == LOG_SOFTMAX
                                and out.flags.c_contiguous)))
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        # The results' scratch tile, unless straight; never for logsumexp.
        ebuf = scratch((1, C, tile if mode != LOGSUMEXP and not straight else 1), x)
        m = scratch(tile, x)
        g = scratch(tile, x)
        part = scratch(2 * tile, x)  # 2 halves: tiles.tile_expsum
        s = empty(2 * tile, np.float64)
        buf = scratch((1, C, tile if copy_tiles else 1), x)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            if P == 0:
                continue
            pf = plane_rows_region(x, o, i0, P, ahead)
            if copy_tiles:
                load_rows(x, o, i0, P, buf, pf)
                _cf_tile(buf, 0, 0, P, o, i0, inv_t, mode, m, g, s, part, out, red, ebuf,
                         straight, stream, no_region(buf))
            else:
                _cf_tile(x, o, i0, P, o, i0, inv_t, mode, m, g, s, part, out, red, ebuf,
                         straight, stream, pf)
        if stream:
            stream_fence()


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cl_tiles(task, ntasks, x, out, red, inv_t, mode, tile, nthreads, ahead_bytes):
    """Channels-last, small C: ``x``, ``out`` (rows, C); ``red`` (rows,).

    A tile of rows is transposed into an L1 scratch (C, P) first, so every
    loop after it is contiguous across pixels; the result goes back row by
    row.
    """
    rows, C = x.shape
    ntiles = (rows + tile - 1) // tile
    nchunks = work_chunks(ntiles, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        buf = scratch((1, C, tile), x)
        ebuf = scratch((1, C, tile), x)
        m = scratch(tile, x)
        g = scratch(tile, x)
        part = scratch(2 * tile, x)
        s = empty(2 * tile, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            _tile(buf, 0, 0, P, inv_t, mode, m, g, s, part, ebuf, 0, 0,
                  next_tile_cl(x, r0, tile, min(rows, j1 * tile), 2 * C, ahead_bytes))
            if mode == LOGSUMEXP:
                _lse(P, m, s, inv_t, red, r0)
            else:
                store_transposed(ebuf, P, out, r0)


#: Rows per block of :func:`expnorm_cl_rows`: the per-row log or division
#: runs vectorized over a block instead of once per row (a scalar log per
#: row doubled logsumexp at C = 8).
ROW_BLOCK = 64

#: Bytes of x per block of :func:`expnorm_cl_rows` for softmax and
#: log_softmax, at most: long rows go in fewer than :data:`ROW_BLOCK` per
#: block, so that the block's rows of x (log_softmax) or of its
#: exponentials (softmax) are still in L2 when the epilogue writes them
#: (64 rows of 32000 float32 are 8 MB: they came back from memory).
#: Not logsumexp, which writes nothing per row (fewer rows per block made
#: it 0.8x at 600-800 classes, for a reason not found; docs/perf/cpu-058).
ROW_BLOCK_BYTES = 128 * 1024


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def rows_per_block(C, itemsize, mode):
    """Rows per block of :func:`expnorm_cl_rows`: :data:`ROW_BLOCK`; for
    softmax and log_softmax fewer for rows longer than ``ROW_BLOCK_BYTES /
    ROW_BLOCK``, at least one."""
    if mode == LOGSUMEXP:
        return ROW_BLOCK
    return max(1, min(ROW_BLOCK, ROW_BLOCK_BYTES // (C * itemsize)))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _vector_rows(x, out, red, r0, P, inv_t, mode, m, g, s, ahead, stream, apart, e):
    """Rows ``r0 .. r0 + P - 1`` of :func:`expnorm_cl_rows`: max and exp-sum row by
    row as vectors (prefetching ``ahead``), then the epilogue over the P
    rows at once and their rows of ``out``, by non-temporal stores with
    ``stream``. Staged (with ``stream``, or for an ``out`` of float16
    bits, which must not hold unscaled exponentials: rounded twice,
    :func:`is_staged`) softmax's exponentials wait in the scratch ``e``,
    at least (P, C), instead of in out. ``m``, ``g``, ``s``: scratch of at least P
    elements.

    log_softmax rows of one chunk (``rowvec.CHUNK_BYTES``) into an ``out``
    ``apart`` from x (and not staged) take softmax's two passes, the
    exponentials stored into out, discarded by the epilogue: so out's
    lines are fetched while the exponentials are computed, not after
    (1.1-1.4x at 64-300 classes; docs/perf/cpu-063)."""
    C = x.shape[1]
    staged = is_staged(out, stream)
    store = mode == SOFTMAX or (mode == LOG_SOFTMAX and apart and not staged
                                and C * x.itemsize <= CHUNK_BYTES)
    for p in range(P):
        r = r0 + p
        prefetch_row(x, r, ahead)
        if store:
            mx, _ = vrow_argmax(x, r)
            m[p] = mx
            if staged:
                s[p] = vrow_expsum(x, r, mx, inv_t, e, p, True, mode != SOFTMAX)
            else:
                s[p] = vrow_expsum(x, r, mx, inv_t, out, r, True, mode != SOFTMAX)
        else:  # no exponentials to store: max and exp-sum in one pass
            m[p], s[p] = vrow_max_expsum(x, r, inv_t)
    if mode == LOGSUMEXP:
        _lse(P, m, s, inv_t, red, r0)
        return
    _epilogue(P, m, s, mode, g)
    zero = g.dtype.type(0.0)
    for p in range(P):
        r = r0 + p
        gp = g[p]
        if stream:
            if mode == SOFTMAX:
                stream_affine(e, p * C, out, r * C, C, zero, gp, zero)
            else:
                stream_affine(x, r * C, out, r * C, C, m[p], inv_t, gp)
        elif mode == SOFTMAX and staged:
            for c in range(C):
                out[r, c] = store_score(out, e[p, c] * gp)
        elif mode == SOFTMAX:
            for c in range(C):
                out[r, c] = store_score(out, score(out[r, c]) * gp)
        else:
            mp = m[p]
            for c in range(C):
                out[r, c] = store_score(out, (score(x[r, c]) - mp) * inv_t - gp)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def is_staged(out, stream):
    """Whether softmax's exponentials (the row kernels') wait in a scratch
    rather than in ``out``: when ``stream``ed, or for an ``out`` of float16
    bits (a constant then: the other branches are not compiled)."""
    return stream or holds_half_bits(out)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cl_rows(task, ntasks, x, out, red, inv_t, mode, nthreads, ahead_bytes, stream, apart):
    """Channels-last, C-contiguous ``x`` and ``out`` (rows, C), a row at a
    time as vectors (:mod:`fastlogits.cpu.blocks.rowvec`); ``red`` (rows,). For
    logsumexp ``out`` may be any (1, C) C-contiguous array; for
    softmax/log_softmax ``red`` is not touched.

    Rows go in blocks of :func:`rows_per_block`: max and exp-sum row by row
    (prefetching ``ahead_bytes`` ahead), then the epilogue (``1 / s``,
    ``log s``) over the block's rows at once; ``stream`` and ``apart`` as
    for :func:`_vector_rows`.
    """
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    B = rows_per_block(C, x.itemsize, mode)
    nblocks = (rows + B - 1) // B
    nchunks = work_chunks(nblocks, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m = scratch(B, x)
        g = scratch(B, x)
        s = empty(B, np.float64)
        e = scratch((B if is_staged(out, stream) and mode == SOFTMAX else 1, C), x)
        j0, j1 = chunk_bounds(chunk, nchunks, nblocks)
        for job in range(j0, j1):
            r0 = job * B
            _vector_rows(x, out, red, r0, min(B, rows - r0), inv_t, mode, m, g, s, ahead,
                         stream, apart, e)
        if stream:
            stream_fence()


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _row_blocks(x, out, red, r0, o, P, inv_t, exps, logs, lse, m, g, s, cols, ahead):
    """Rows ``r0 .. r0 + P - 1`` of x, P a multiple of ``rowblock.ROWS``, a
    block at a time (:func:`expnorm_cl_blocks`), their results into rows
    ``r0 - o ..`` of out (red); the op by switches, as
    :func:`_plane_tile`'s."""
    for b0 in range(r0, r0 + P, ROWS):
        prefetch_rows(x, b0, ROWS, ahead)
        if exps is not None:
            rows_max_expstore(x, b0, m, 0, inv_t, cols, s)
            _softmax_epilogue(ROWS, m, s, g)
            rows_store_softmax(cols, m, inv_t, g, 0, out, b0 - o)
        if logs is not None:
            rows_max_expsum(x, b0, m, 0, inv_t, cols, s)
            _log_epilogue(ROWS, m, s, g)
            rows_store_log_softmax(cols, m, inv_t, g, 0, out, b0 - o)
        if lse is not None:
            rows_max_expsum(x, b0, m, 0, inv_t, cols, s)
            _lse(ROWS, m, s, inv_t, red, b0 - o)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cl_blocks(task, ntasks, x, out, red, inv_t, exps, logs, lse, nthreads, ahead_bytes):
    """Channels-last, C-contiguous ``x`` and ``out`` (rows, C), 8 <= C <=
    ``tiles.SUM_BLOCK``, rows >= ``rowblock.ROWS``; ``red`` (rows,). ROWS
    rows at a time (:func:`_row_blocks`): one pass transposes them in
    registers, finds the max and keeps the columns (for softmax, their
    exponentials) in an L1 scratch; the result is transposed back from it
    into ``out`` (which may be ``x``: a block's rows are all read before
    any is written). For logsumexp ``out`` may be any (1, C) C-contiguous
    array; for softmax/log_softmax ``red`` is not touched. The op by
    switches, one True, compiled per op
    (:func:`fastlogits.cpu.switches.mode_switches`; docs/perf/cpu-080).

    Chunks are whole blocks, the last one with the rows % ROWS left: its
    last ROWS rows go as one more block, through the same call, into a
    scratch block of out (red), whence the rows not done yet are copied.
    So each kernel compiles one path, the blocks' (docs/perf/cpu-079);
    the rows that block reads twice are its chunk's own (in place,
    already written: their results are not kept)."""
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    nblocks = rows // ROWS
    nchunks = work_chunks(nblocks, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m = scratch(ROWS, x)
        g = scratch(ROWS, x)
        s = empty(ROWS, np.float64)
        cols = scratch(C * ROWS, x)
        opad = empty((ROWS, C) if lse is None else (1, 1), out.dtype)
        rpad = empty(ROWS if lse is not None else 1, red.dtype)
        k0, k1 = chunk_bounds(chunk, nchunks, nblocks)
        b0, g1 = k0 * ROWS, k1 * ROWS
        r1 = rows if k1 == nblocks else g1
        while b0 < r1:
            # x itself in both calls: a phi of x and a scratch copy made
            # the blocks' loop 1.1x slower (docs/perf/cpu-079).
            if b0 < g1:
                ob, rb, at, o, P = out, red, b0, 0, g1 - b0
            else:
                ob, rb, at, o, P = opad, rpad, r1 - ROWS, r1 - ROWS, ROWS
            _row_blocks(x, ob, rb, at, o, P, inv_t, exps, logs, lse, m, g, s, cols, ahead)
            if b0 < g1:
                b0 = g1
                continue
            n = r1 - b0
            if lse is not None:
                for p in range(n):
                    red[b0 + p] = rpad[ROWS - n + p]
            if exps is not None or logs is not None:
                copy_rows(opad, ROWS - n, out, b0, n)
            b0 = r1
