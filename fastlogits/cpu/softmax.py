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
from fastlogits.cpu.tiles import (LANES, is_finite, row_argmax, row_expsum, safe_log, tile_exp_store,
                                  tile_expsum, tile_max)

SOFTMAX = 0
LOG_SOFTMAX = 1
LOGSUMEXP = 2


@njit(fastmath=FASTMATH, cache=True)
def _finish_tile(xt, ot, red, m, s, inv_t, mode):
    """Turn a tile's max ``m`` and exp-sum ``s`` into the op's output.

    softmax: ``ot`` already holds the exponentials, scale by 1/s; pixels with
    a non-finite max (NaN, +inf, all -inf) become NaN. log_softmax:
    ``(x - m) * inv_t - log s``. logsumexp: ``m * inv_t + log s``, or m
    itself (NaN, +inf or -inf, as the rules say) for those pixels.
    """
    C, P = xt.shape
    nan = xt.dtype.type(np.nan)
    g = np.empty(P, dtype=xt.dtype)
    if mode == SOFTMAX:
        for p in range(P):
            g[p] = 1.0 / s[p] if is_finite(m[p]) else nan
        for c in range(C):
            for p in range(P):
                ot[c, p] = ot[c, p] * g[p]
    elif mode == LOG_SOFTMAX:
        for p in range(P):
            g[p] = safe_log(s[p]) if is_finite(m[p]) else nan
        for c in range(C):
            for p in range(P):
                ot[c, p] = (xt[c, p] - m[p]) * inv_t - g[p]
    else:
        for p in range(P):
            red[p] = m[p] * inv_t + safe_log(s[p]) if is_finite(m[p]) else m[p]


@njit(fastmath=FASTMATH, cache=True)
def _tile(xt, ot, red, inv_t, mode):
    P = xt.shape[1]
    m = np.empty(P, dtype=xt.dtype)
    s = np.empty(P, dtype=np.float64)
    tile_max(xt, m)
    if mode == SOFTMAX:
        tile_exp_store(xt, m, inv_t, s, ot)
    else:
        tile_expsum(xt, m, inv_t, s)
    _finish_tile(xt, ot, red, m, s, inv_t, mode)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def expnorm_cf(x, out, red, inv_t, mode, tile):
    """Channels-first: ``x``, ``out`` (outer, C, inner); ``red`` (outer, inner).

    ``out`` is written for softmax/log_softmax, ``red`` for logsumexp; the
    unused one may be any array of the right shape (it is not touched).
    """
    outer, C, inner = x.shape
    ntiles = (inner + tile - 1) // tile
    for job in prange(outer * ntiles):
        o = job // ntiles
        i0 = (job - o * ntiles) * tile
        i1 = min(i0 + tile, inner)
        _tile(x[o, :, i0:i1], out[o, :, i0:i1], red[o, i0:i1], inv_t, mode)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def expnorm_cl_tiles(x, out, red, inv_t, mode, tile):
    """Channels-last, small C: ``x``, ``out`` (rows, C); ``red`` (rows,)."""
    rows = x.shape[0]
    ntiles = (rows + tile - 1) // tile
    for job in prange(ntiles):
        r0 = job * tile
        r1 = min(r0 + tile, rows)
        _tile(x[r0:r1].T, out[r0:r1].T, red[r0:r1], inv_t, mode)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def expnorm_cl_rows(x, out, red, inv_t, mode):
    """Channels-last, large C, C-contiguous ``x`` and ``out`` (rows, C);
    ``red`` (rows,). For logsumexp ``out`` may be any (1, C) C-contiguous
    array; for softmax/log_softmax ``red`` is not touched."""
    rows, C = x.shape
    nan = x.dtype.type(np.nan)
    for r in prange(rows):
        lane_m = np.empty(LANES, dtype=x.dtype)
        lane_i = np.empty(LANES, dtype=np.int64)
        lane_s = np.empty(LANES, dtype=np.float64)
        row = x[r]
        # logsumexp passes a (1, C) stand-in for out: never written.
        orow = out[r] if mode != LOGSUMEXP else out[0]
        mx, _ = row_argmax(row, lane_m, lane_i)
        s = row_expsum(row, mx, inv_t, lane_m, lane_s, orow, mode == SOFTMAX)
        ok = is_finite(mx)
        if mode == SOFTMAX:
            g = x.dtype.type(1.0 / s) if ok else nan
            for c in range(C):
                orow[c] = orow[c] * g
        elif mode == LOG_SOFTMAX:
            g = x.dtype.type(safe_log(s)) if ok else nan
            for c in range(C):
                orow[c] = (row[c] - mx) * inv_t - g
        else:
            red[r] = mx * inv_t + safe_log(s) if ok else mx
