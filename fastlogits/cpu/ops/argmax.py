"""argmax and classify on the CPU: labels (and confidence) in one read of x.

classify never materializes probabilities: the top-1 probability is
``1 / sum_c exp((x_c - max) / T)``, computed from the tile's max and exp-sum
while the tile is still in cache. ``with_conf`` turns the exp-sum off for a
plain argmax; the branch sits outside the inner loops.

Drivers mirror :mod:`fastlogits.cpu.ops.softmax`: :func:`argmax_cf_blocks`
(channels-first, C-contiguous, few classes: blocks of pixels reduced in
registers, :mod:`fastlogits.cpu.blocks.planeblock`), :func:`argmax_cf`
(channels-first, any strides or classes: the tile loops), :func:`argmax_cl_tiles` (channels-last, few classes
or rows that are not contiguous), :func:`argmax_cl_rows` (channels-last, C-contiguous rows: the
register-transposed blocks of rows of :mod:`fastlogits.cpu.blocks.rowblock` or
the vector row kernels of :mod:`fastlogits.cpu.blocks.rowvec`).
"""

import numpy as np
from numba import njit

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.planeblock import LANES, padded_planes, planes_argmax, planes_argmax_expsum
from fastlogits.cpu.blocks.rowblock import ROWS, blocks_end, rows_argmax, rows_argmax_expsum
from fastlogits.cpu.blocks.rowvec import vrow_argmax, vrow_expsum
from fastlogits.cpu.blocks.tiles import (cf_chunks, cf_tile, chunk_bounds, is_finite, load_rows,
                                         load_transposed, next_tile_cl, tile_argmax, tile_expsum,
                                         work_chunks)
from fastlogits.cpu.llvm.alloc import empty
from fastlogits.cpu.llvm.prefetch import (no_region, plane_rows_region, planes_ahead, prefetch_planes,
                                          prefetch_row, prefetch_rows, region_from, rows_ahead)
from fastlogits.cpu.llvm.scores import scratch


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile(x, o, i0, P, labels, conf, r0, inv_t, with_conf, m, idx, s, part, pf):
    """Labels (and confidence) of one tile into ``labels[r0:r0 + P]``,
    prefetching the region ``pf`` in ``_shares(C, with_conf)`` shares."""
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    tile_argmax(x, o, i0, P, m, part, idx, pf)
    for p in range(P):
        labels[r0 + p] = idx[p]
    if with_conf:
        tile_expsum(x, o, i0, P, m, inv_t, s, part, False, region_from(pf, x.shape[1]))
        nan = conf.dtype.type(np.nan)
        for p in range(P):
            conf[r0 + p] = 1.0 / (1.0 + s[p]) if is_finite(m[p]) else nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _plane_blocks(x, start, P, inv_t, with_conf, m, idx, s, cols, ahead):
    """Max, index (and exp-sum, from the scores kept in ``cols``) of the
    P pixels from flat index ``start`` of x (P a multiple of
    ``planeblock.LANES``) into ``m``, ``idx`` (and ``s``) ``[:P]``, block
    by block in registers (:mod:`fastlogits.cpu.blocks.planeblock`),
    prefetching ``ahead`` pixels ahead (:func:`prefetch_planes`)."""
    for q in range(0, P, LANES):
        prefetch_planes(x, start + q, LANES, ahead)
        if with_conf:
            planes_argmax_expsum(x, start + q, m, idx, q, inv_t, cols, s)
        else:
            planes_argmax(x, start + q, m, idx, q)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _put_labels(labels, conf, i0, n, with_conf, m, idx, s):
    """``labels[i0:i0 + n]`` (and ``conf``) from the first n pixels of
    :func:`_plane_blocks`' scratch."""
    i0 = max(i0, 0)  # no wraparound select (see tiles.py)
    for p in range(n):
        labels[i0 + p] = idx[p]
    if with_conf:
        nan = conf.dtype.type(np.nan)
        for p in range(n):
            conf[i0 + p] = 1.0 / (1.0 + s[p]) if is_finite(m[p]) else nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _shares(C, with_conf):
    """Prefetch shares of a tile: one per class of each pass over it."""
    return 2 * C if with_conf else C


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cf_blocks(task, ntasks, x, labels, conf, inv_t, with_conf, tile, nthreads, ahead_bytes):
    """Channels-first by the register blocks only: C-contiguous ``x``
    (outer, C, inner), C <= ``tiles.SUM_BLOCK`` for classify; ``labels``,
    ``conf`` (outer, inner) (without ``with_conf``, ``conf`` may be any
    array of that type: not touched). Tiles from
    :func:`fastlogits.cpu.blocks.tiles.cf_tile`, their whole blocks of
    ``planeblock.LANES`` pixels read in place (prefetching
    ``ahead_bytes`` ahead in each class plane), the rest as one padded
    block (:func:`fastlogits.cpu.blocks.planeblock.padded_planes`): no
    tile loops compiled (docs/perf/cpu-080)."""
    outer, C, inner = x.shape
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        m = scratch(tile, x)
        idx = empty(tile, np.int32)
        s = empty(tile, np.float64)
        cols = scratch(C * LANES if with_conf else 1, x)
        pad = empty((1, C, LANES), x.dtype)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            # conf may be a one-row stand-in (argmax): row o only with_conf.
            co = conf[o if with_conf else 0]
            PB = P - P % LANES
            # The whole blocks in place, then the rest as a padded block:
            # one call site, so LLVM inlines one copy of the blocks.
            for rest in range(2):
                if rest == 0:
                    if PB == 0:
                        continue
                    xb, start, Pb, n, ah = x, (o * C) * inner + i0, PB, PB, ahead
                else:
                    if PB == P:
                        break
                    n = P - PB
                    xb, start, Pb, ah = padded_planes(x, o, i0 + PB, n, pad), 0, LANES, 0
                _plane_blocks(xb, start, Pb, inv_t, with_conf, m, idx, s, cols, ah)
                _put_labels(labels[o], co, i0 + rest * PB, n, with_conf, m, idx, s)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cf(task, ntasks, x, labels, conf, inv_t, with_conf, tile, nthreads, ahead_bytes,
              copy_tiles):
    """Channels-first by the tile loops: ``x`` (outer, C, inner), any
    strides or C; ``labels``, ``conf`` as for :func:`argmax_cf_blocks`.
    Tiles from :func:`fastlogits.cpu.blocks.tiles.cf_tile`; with
    ``copy_tiles`` (and ``with_conf``) the tile loops read a copy of their
    tile (:func:`fastlogits.cpu.blocks.tiles.load_rows`)."""
    outer, C, inner = x.shape
    ahead = planes_ahead(x, ahead_bytes)
    per_image, njobs, nchunks, c0, c1 = cf_chunks(x, tile, nthreads, task, ntasks)
    for chunk in range(c0, c1):
        m = scratch(tile, x)
        part = scratch(2 * tile, x)  # 2 halves: tiles.tile_expsum
        idx = empty(tile, np.int32)
        s = empty(2 * tile, np.float64)
        buf = scratch((1, C, tile if copy_tiles and with_conf else 1), x)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            if P == 0:
                continue
            co = conf[o if with_conf else 0]
            pf = plane_rows_region(x, o, i0, P, ahead)
            if copy_tiles and with_conf:
                load_rows(x, o, i0, P, buf, pf)
                _tile(buf, 0, 0, P, labels[o], co, i0, inv_t, with_conf, m, idx, s, part,
                      no_region(buf))
            else:
                _tile(x, o, i0, P, labels[o], co, i0, inv_t, with_conf, m, idx, s, part, pf)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cl_tiles(task, ntasks, x, labels, conf, inv_t, with_conf, tile, nthreads, ahead_bytes):
    """Channels-last, small C: ``x`` (rows, C); ``labels``, ``conf`` (rows,).
    A tile of rows is transposed into an L1 scratch (C, P) first."""
    rows, C = x.shape
    ntiles = (rows + tile - 1) // tile
    nchunks = work_chunks(ntiles, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        buf = scratch((1, C, tile), x)
        m = scratch(tile, x)
        part = scratch(2 * tile, x)
        idx = empty(tile, np.int32)
        s = empty(2 * tile, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            pf = next_tile_cl(x, r0, tile, min(rows, j1 * tile), _shares(C, with_conf),
                              ahead_bytes)
            _tile(buf, 0, 0, P, labels, conf, r0, inv_t, with_conf, m, idx, s, part, pf)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cl_rows(task, ntasks, x, labels, conf, inv_t, with_conf, nthreads, ahead_bytes, blocks):
    """Channels-last, C-contiguous ``x`` (rows, C): with ``blocks``,
    ``rowblock.ROWS`` rows at a time transposed in registers
    (:mod:`fastlogits.cpu.blocks.rowblock`, C >= 8; classify's exp-sum reads the
    columns its argmax kept), else (and for a chunk's last rows % ROWS) a
    row at a time as vectors (:mod:`fastlogits.cpu.blocks.rowvec`); prefetching
    ``ahead_bytes`` ahead."""
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    nchunks = work_chunks(rows, nthreads)
    nan = conf.dtype.type(np.nan)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m = scratch(ROWS, x)
        idx = empty(ROWS, np.int32)
        s = empty(ROWS, np.float64)
        cols = scratch(C * ROWS if with_conf and blocks else 1, x)
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        g1 = blocks_end(r0, r1, blocks)
        for g in range(r0, g1, ROWS):
            prefetch_rows(x, g, ROWS, ahead)
            if with_conf:
                rows_argmax_expsum(x, g, m, idx, 0, inv_t, cols, s)
                for p in range(ROWS):
                    conf[g + p] = 1.0 / (1.0 + s[p]) if is_finite(m[p]) else nan
            else:
                rows_argmax(x, g, m, idx, 0)
            for p in range(ROWS):
                labels[g + p] = idx[p]
        for r in range(g1, r1):
            prefetch_row(x, r, ahead)
            mx, i = vrow_argmax(x, r)
            labels[r] = i
            if with_conf:
                sr = vrow_expsum(x, r, mx, inv_t, x, r, False, False)
                conf[r] = 1.0 / (1.0 + sr) if is_finite(mx) else nan
