"""argmax and classify on the CPU: labels (and confidence) in one read of x.

classify never materializes probabilities: the top-1 probability is
``1 / sum_c exp((x_c - max) / T)``, computed from the tile's max and exp-sum
while the tile is still in cache. ``with_conf`` turns the exp-sum off for a
plain argmax; the branch sits outside the inner loops.

Drivers mirror :mod:`fastlogits.cpu.softmax`: :func:`argmax_cf` (channels-
first), :func:`argmax_cl_tiles` (channels-last, few classes or rows that are not
contiguous), :func:`argmax_cl_rows` (channels-last, C-contiguous rows: the
register-transposed blocks of rows of :mod:`fastlogits.cpu.rowblock` or
the vector row kernels of :mod:`fastlogits.cpu.rowvec`).
"""

import numpy as np
from numba import njit, prange

from fastlogits.config import FASTMATH
from fastlogits.cpu.prefetch import no_region, prefetch_row, prefetch_rows, region_from, rows_ahead
from fastlogits.cpu.rowblock import ROWS, blocks_end, rows_argmax, rows_argmax_expsum
from fastlogits.cpu.rowvec import vrow_argmax, vrow_expsum
from fastlogits.cpu.tiles import (chunk_bounds, is_finite, load_transposed, next_tile_cl,
                                  tile_argmax, tile_expsum, work_chunks)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile(x, o, i0, P, labels, conf, r0, inv_t, with_conf, m, idx, s, part, pf):
    """Labels (and confidence) of one tile into ``labels[r0:r0 + P]``,
    prefetching the region ``pf`` in ``_shares(C, with_conf)`` shares."""
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    tile_argmax(x, o, i0, P, m, part, idx, pf)
    for p in range(P):
        labels[r0 + p] = idx[p]
    if with_conf:
        tile_expsum(x, o, i0, P, m, inv_t, s, part, region_from(pf, x.shape[1]))
        nan = conf.dtype.type(np.nan)
        for p in range(P):
            conf[r0 + p] = 1.0 / s[p] if is_finite(m[p]) else nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _shares(C, with_conf):
    """Prefetch shares of a tile: one per class of each pass over it."""
    return 2 * C if with_conf else C


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cf(x, labels, conf, inv_t, with_conf, tile, nthreads):
    """Channels-first: ``x`` (outer, C, inner); ``labels``, ``conf`` (outer, inner)
    (without ``with_conf``, ``conf`` may be any array of that type: not touched)."""
    outer, C, inner = x.shape
    ntiles = (inner + tile - 1) // tile
    njobs = outer * ntiles
    nchunks = work_chunks(njobs, nthreads)
    for chunk in prange(nchunks):
        m = np.empty(tile, dtype=x.dtype)
        part = np.empty(tile, dtype=x.dtype)
        idx = np.empty(tile, dtype=np.int32)
        s = np.empty(tile, dtype=np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, inner - i0)
            pf = no_region(x)  # channels-first: prefetching measured slower (log 22)
            # conf may be a one-row stand-in (argmax): row o only with_conf.
            _tile(x, o, i0, P, labels[o], conf[o if with_conf else 0], i0, inv_t, with_conf, m,
                  idx, s, part, pf)


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cl_tiles(x, labels, conf, inv_t, with_conf, tile, nthreads, ahead_bytes):
    """Channels-last, small C: ``x`` (rows, C); ``labels``, ``conf`` (rows,).
    A tile of rows is transposed into an L1 scratch (C, P) first."""
    rows, C = x.shape
    ntiles = (rows + tile - 1) // tile
    nchunks = work_chunks(ntiles, nthreads)
    for chunk in prange(nchunks):
        buf = np.empty((1, C, tile), dtype=x.dtype)
        m = np.empty(tile, dtype=x.dtype)
        part = np.empty(tile, dtype=x.dtype)
        idx = np.empty(tile, dtype=np.int32)
        s = np.empty(tile, dtype=np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            pf = next_tile_cl(x, r0, tile, min(rows, j1 * tile), _shares(C, with_conf),
                              ahead_bytes)
            _tile(buf, 0, 0, P, labels, conf, r0, inv_t, with_conf, m, idx, s, part, pf)


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def argmax_cl_rows(x, labels, conf, inv_t, with_conf, nthreads, ahead_bytes, blocks):
    """Channels-last, C-contiguous ``x`` (rows, C): with ``blocks``,
    ``rowblock.ROWS`` rows at a time transposed in registers
    (:mod:`fastlogits.cpu.rowblock`, C >= 8; classify's exp-sum reads the
    columns its argmax kept), else (and for a chunk's last rows % ROWS) a
    row at a time as vectors (:mod:`fastlogits.cpu.rowvec`); prefetching
    ``ahead_bytes`` ahead."""
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    nchunks = work_chunks(rows, nthreads)
    nan = conf.dtype.type(np.nan)
    for chunk in prange(nchunks):
        m = np.empty(ROWS, dtype=x.dtype)
        idx = np.empty(ROWS, dtype=np.int32)
        s = np.empty(ROWS, dtype=np.float64)
        cols = np.empty(C * ROWS if with_conf and blocks else 1, dtype=x.dtype)
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        g1 = blocks_end(r0, r1, blocks)
        for g in range(r0, g1, ROWS):
            prefetch_rows(x, g, ROWS, ahead)
            if with_conf:
                rows_argmax_expsum(x, g, m, idx, 0, inv_t, cols, s)
                for p in range(ROWS):
                    conf[g + p] = 1.0 / s[p] if is_finite(m[p]) else nan
            else:
                rows_argmax(x, g, m, idx, 0)
            for p in range(ROWS):
                labels[g + p] = idx[p]
        for r in range(g1, r1):
            prefetch_row(x, r, ahead)
            mx, i = vrow_argmax(x, r)
            labels[r] = i
            if with_conf:
                sr = vrow_expsum(x, r, mx, inv_t, x, r, False)
                conf[r] = 1.0 / sr if is_finite(mx) else nan
