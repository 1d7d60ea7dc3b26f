"""argmax and classify on the CPU: labels (and confidence) in one read of x.

classify never materializes probabilities: the top-1 probability is
``1 / sum_c exp((x_c - max) / T)``, computed from the tile's max and exp-sum
while the tile is still in cache. ``with_conf`` turns the exp-sum off for a
plain argmax; the branch sits outside the inner loops.

Drivers mirror :mod:`fastlogits.cpu.ops.softmax`: :func:`argmax_cf` (channels-
first: blocks of pixels reduced in registers, :mod:`fastlogits.cpu.blocks.planeblock`,
and tiles for the rest), :func:`argmax_cl_tiles` (channels-last, few classes
or rows that are not contiguous), :func:`argmax_cl_rows` (channels-last, C-contiguous rows: the
register-transposed blocks of rows of :mod:`fastlogits.cpu.blocks.rowblock` or
the vector row kernels of :mod:`fastlogits.cpu.blocks.rowvec`).
"""

import numpy as np
from numba import njit

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.planeblock import LANES, on_c_planes, planes_argmax, planes_argmax_expsum
from fastlogits.cpu.blocks.rowblock import ROWS, blocks_end, rows_argmax, rows_argmax_expsum
from fastlogits.cpu.blocks.rowvec import vrow_argmax, vrow_expsum
from fastlogits.cpu.blocks.tiles import (cf_tile, cf_tiles, chunk_bounds, is_finite, load_rows,
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
def _plane_tile_c(x, o, i0, P, labels, conf, inv_t, with_conf, m, idx, s, cols, ahead):
    """Labels (and confidence) of pixels ``i0 .. i0 + P - 1`` of image o
    into ``labels[i0:i0 + P]``, P a multiple of ``planeblock.LANES``: block
    by block, each block's max, index (and exp-sum, from the scores it
    keeps in ``cols``) in registers (:mod:`fastlogits.cpu.blocks.planeblock`),
    prefetching ``ahead`` pixels ahead (:func:`prefetch_planes`)."""
    C, inner = x.shape[1], x.shape[2]
    i0 = max(i0, 0)  # no wraparound select (see tiles.py)
    start = o * C * inner + i0
    for q in range(0, P, LANES):
        prefetch_planes(x, start + q, LANES, ahead)
        if with_conf:
            planes_argmax_expsum(x, start + q, m, idx, q, inv_t, cols, s)
        else:
            planes_argmax(x, start + q, m, idx, q)
    for p in range(P):
        labels[i0 + p] = idx[p]
    if with_conf:
        nan = conf.dtype.type(np.nan)
        for p in range(P):
            conf[i0 + p] = 1.0 / (1.0 + s[p]) if is_finite(m[p]) else nan


#: :func:`_plane_tile_c` for C-contiguous x; nothing for strided x (whose
#: ``blocks`` is false).
_plane_tile = on_c_planes(_plane_tile_c)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _shares(C, with_conf):
    """Prefetch shares of a tile: one per class of each pass over it."""
    return 2 * C if with_conf else C


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cf(task, ntasks, x, labels, conf, inv_t, with_conf, tile, nthreads, blocks, ahead_bytes,
              copy_tiles):
    """Channels-first: ``x`` (outer, C, inner); ``labels``, ``conf`` (outer, inner)
    (without ``with_conf``, ``conf`` may be any array of that type: not
    touched). Tiles from :func:`fastlogits.cpu.blocks.tiles.cf_tile`. With
    ``blocks`` (C-contiguous x; C <= ``tiles.SUM_BLOCK`` for classify),
    each tile's whole blocks of ``planeblock.LANES`` pixels go by the
    register blocks and the rest by the tile loops; without, every pixel
    by the tile loops. The blocks prefetch ``ahead_bytes`` ahead in each
    class plane. With ``copy_tiles`` (and ``with_conf``) the tile loops read a
    copy of their tile (:func:`fastlogits.cpu.blocks.tiles.load_rows`)."""
    outer, C, inner = x.shape
    ahead = planes_ahead(x, ahead_bytes)
    per_image = cf_tiles(x, tile)
    njobs = outer * per_image
    nchunks = work_chunks(njobs, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m = scratch(tile, x)
        part = scratch(2 * tile, x)  # 2 halves: tiles.tile_expsum
        idx = empty(tile, np.int32)
        s = empty(2 * tile, np.float64)
        cols = scratch(C * LANES if blocks and with_conf else 1, x)
        buf = scratch((1, C, tile if copy_tiles and with_conf else 1), x)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            if P == 0:
                continue
            PB = P - P % LANES if blocks else 0
            # conf may be a one-row stand-in (argmax): row o only with_conf.
            co = conf[o if with_conf else 0]
            if PB > 0:
                _plane_tile(x, o, i0, PB, labels[o], co, inv_t, with_conf, m, idx, s, cols,
                            ahead)
            if PB < P:
                pf = plane_rows_region(x, o, i0 + PB, P - PB, ahead)
                if copy_tiles and with_conf:
                    load_rows(x, o, i0 + PB, P - PB, buf, pf)
                    _tile(buf, 0, 0, P - PB, labels[o], co, i0 + PB, inv_t, with_conf, m, idx, s,
                          part, no_region(buf))
                else:
                    _tile(x, o, i0 + PB, P - PB, labels[o], co, i0 + PB, inv_t, with_conf, m, idx,
                          s, part, pf)


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
