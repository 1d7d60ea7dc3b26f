"""softmax, log_softmax and logsumexp on the CPU: one read of x per tile.

A tile's scores stay in L1/L2 while its max, its exp-sum and its write
happen, so x comes from memory once; softmax stores the exponentials on the
way and rescales them in cache. ``mode`` picks the op at run time, outside
the inner loops, so the three share one compiled driver per layout.

Drivers (called from :mod:`fastlogits.api` with validated, canonical views):

- :func:`expnorm_cf`: channels-first ``(outer, C, inner)``, tiles of inner
  pixels (contiguous class rows);
- :func:`expnorm_cl_tiles`: channels-last ``(rows, C)``, small C, tiles of
  rows seen transposed;
- :func:`expnorm_cl_rows`: channels-last ``(rows, C)``, large C, C-contiguous,
  one lane-folded row at a time.
"""

import numpy as np
from numba import njit, prange

from fastlogits.config import FASTMATH
from fastlogits.cpu.fastlog import log64
from fastlogits.cpu.rowvec import vrow_argmax, vrow_expsum
from fastlogits.cpu.tiles import (chunk_bounds, is_finite, load_transposed, store_transposed,
                                  tile_exp_store, tile_expsum, tile_max, work_chunks)

SOFTMAX = 0
LOG_SOFTMAX = 1
LOGSUMEXP = 2


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tile(x, o, i0, P, inv_t, mode, m, g, s, part, ebuf):
    """One tile: max ``m``, exp-sum ``s`` and, for softmax/log_softmax, the
    result in the L1 scratch ``ebuf[0, :, :P]``.

    The result goes to a scratch, never straight to ``out``: when ``out``
    is ``x`` (in place) LLVM's runtime alias check would send every loop
    reading x and writing out to its scalar fallback.
    """
    C = x.shape[1]
    tile_max(x, o, i0, P, m)
    if mode == SOFTMAX:
        tile_exp_store(x, o, i0, P, m, inv_t, s, part, ebuf, 0, 0)
    else:
        tile_expsum(x, o, i0, P, m, inv_t, s, part)
    nan = g.dtype.type(np.nan)
    if mode == SOFTMAX:
        for p in range(P):
            g[p] = 1.0 / s[p] if is_finite(m[p]) else nan
        for c in range(C):
            for p in range(P):
                ebuf[0, c, p] = ebuf[0, c, p] * g[p]
    elif mode == LOG_SOFTMAX:
        for p in range(P):
            g[p] = log64(s[p]) if is_finite(m[p]) else nan
        for c in range(C):
            for p in range(P):
                ebuf[0, c, p] = (x[o, c, i0 + p] - m[p]) * inv_t - g[p]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _lse(P, m, s, inv_t, red, r0):
    """logsumexp ``m * inv_t + log s``; m itself (NaN, +inf, -inf) where not finite."""
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    for p in range(P):
        red[r0 + p] = m[p] * inv_t + log64(s[p]) if is_finite(m[p]) else m[p]


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cf(x, out, red, inv_t, mode, tile, nthreads):
    """Channels-first: ``x``, ``out`` (outer, C, inner) C-contiguous; ``red``
    (outer, inner). ``out`` is written for softmax/log_softmax, ``red`` for
    logsumexp; the unused one may be any array of that type (not touched).

    One read of x: the tile's C x P scores stay in L1/L2 between the max
    pass, the exp-sum pass and the write.
    """
    outer, C, inner = x.shape
    ntiles = (inner + tile - 1) // tile
    njobs = outer * ntiles
    nchunks = work_chunks(njobs, nthreads)
    for chunk in prange(nchunks):
        ebuf = np.empty((1, C, tile), dtype=x.dtype)
        m = np.empty(tile, dtype=x.dtype)
        g = np.empty(tile, dtype=x.dtype)
        part = np.empty(tile, dtype=x.dtype)
        s = np.empty(tile, dtype=np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, inner - i0)
            _tile(x, o, i0, P, inv_t, mode, m, g, s, part, ebuf)
            if mode == LOGSUMEXP:
                _lse(P, m, s, inv_t, red[o], i0)
            else:
                i0 = max(i0, 0)  # no wraparound select (see tiles.py)
                for c in range(C):
                    for p in range(P):
                        out[o, c, i0 + p] = ebuf[0, c, p]


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cl_tiles(x, out, red, inv_t, mode, tile, nthreads):
    """Channels-last, small C: ``x``, ``out`` (rows, C); ``red`` (rows,).

    A tile of rows is transposed into an L1 scratch (C, P) first, so every
    loop after it is contiguous across pixels; the result goes back row by
    row.
    """
    rows, C = x.shape
    ntiles = (rows + tile - 1) // tile
    nchunks = work_chunks(ntiles, nthreads)
    for chunk in prange(nchunks):
        buf = np.empty((1, C, tile), dtype=x.dtype)
        ebuf = np.empty((1, C, tile), dtype=x.dtype)
        m = np.empty(tile, dtype=x.dtype)
        g = np.empty(tile, dtype=x.dtype)
        part = np.empty(tile, dtype=x.dtype)
        s = np.empty(tile, dtype=np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            _tile(buf, 0, 0, P, inv_t, mode, m, g, s, part, ebuf)
            if mode == LOGSUMEXP:
                _lse(P, m, s, inv_t, red, r0)
            else:
                store_transposed(ebuf, P, out, r0)


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def expnorm_cl_rows(x, out, red, inv_t, mode, nthreads):
    """Channels-last, C-contiguous ``x`` and ``out`` (rows, C), a row at a
    time as vectors (:mod:`fastlogits.cpu.rowvec`);
    ``red`` (rows,). For logsumexp ``out`` may be any (1, C) C-contiguous
    array; for softmax/log_softmax ``red`` is not touched."""
    rows, C = x.shape
    nan = x.dtype.type(np.nan)
    nchunks = work_chunks(rows, nthreads)
    for chunk in prange(nchunks):
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        for r in range(r0, r1):
            # logsumexp passes a (1, C) stand-in for out: never written.
            ro = r if mode != LOGSUMEXP else 0
            mx, _ = vrow_argmax(x, r)
            s = vrow_expsum(x, r, mx, inv_t, out, ro, mode == SOFTMAX)
            ok = is_finite(mx)
            if mode == SOFTMAX:
                g = x.dtype.type(1.0 / s) if ok else nan
                for c in range(C):
                    out[ro, c] = out[ro, c] * g
            elif mode == LOG_SOFTMAX:
                g = x.dtype.type(log64(s)) if ok else nan
                for c in range(C):
                    out[ro, c] = (x[r, c] - mx) * inv_t - g
            else:
                red[r] = mx * inv_t + log64(s) if ok else mx
