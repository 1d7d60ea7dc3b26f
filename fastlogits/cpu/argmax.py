"""argmax and classify on the CPU: labels (and confidence) in one read of x.

classify never materializes probabilities: the top-1 probability is
``1 / sum_c exp((x_c - max) / T)``, computed from the tile's max and exp-sum
while the tile is still in cache. ``with_conf`` turns the exp-sum off for a
plain argmax; the branch sits outside the inner loops.

Drivers mirror :mod:`fastlogits.cpu.softmax`: :func:`argmax_cf` (channels-
first), :func:`argmax_cl_tiles` (channels-last, small C),
:func:`argmax_cl_rows` (channels-last, large C, C-contiguous rows).
"""

import numpy as np
from numba import njit, prange

from fastlogits.config import FASTMATH
from fastlogits.cpu.tiles import (LANES, is_finite, row_argmax, row_expsum, tile_argmax,
                                  tile_expsum)


@njit(fastmath=FASTMATH, cache=True)
def _tile(xt, labels, conf, inv_t, with_conf):
    P = xt.shape[1]
    m = np.empty(P, dtype=xt.dtype)
    idx = np.empty(P, dtype=np.int64)
    tile_argmax(xt, m, idx)
    for p in range(P):
        labels[p] = idx[p]
    if with_conf:
        s = np.empty(P, dtype=np.float64)
        tile_expsum(xt, m, inv_t, s)
        nan = conf.dtype.type(np.nan)
        for p in range(P):
            conf[p] = 1.0 / s[p] if is_finite(m[p]) else nan


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def argmax_cf(x, labels, conf, inv_t, with_conf, tile):
    """Channels-first: ``x`` (outer, C, inner); ``labels``, ``conf`` (outer, inner)."""
    outer, C, inner = x.shape
    ntiles = (inner + tile - 1) // tile
    for job in prange(outer * ntiles):
        o = job // ntiles
        i0 = (job - o * ntiles) * tile
        i1 = min(i0 + tile, inner)
        _tile(x[o, :, i0:i1], labels[o, i0:i1], conf[o, i0:i1], inv_t, with_conf)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def argmax_cl_tiles(x, labels, conf, inv_t, with_conf, tile):
    """Channels-last, small C: ``x`` (rows, C); ``labels``, ``conf`` (rows,)."""
    rows = x.shape[0]
    ntiles = (rows + tile - 1) // tile
    for job in prange(ntiles):
        r0 = job * tile
        r1 = min(r0 + tile, rows)
        _tile(x[r0:r1].T, labels[r0:r1], conf[r0:r1], inv_t, with_conf)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def argmax_cl_rows(x, labels, conf, inv_t, with_conf):
    """Channels-last, large C, C-contiguous ``x`` (rows, C)."""
    rows = x.shape[0]
    for r in prange(rows):
        lane_m = np.empty(LANES, dtype=x.dtype)
        lane_i = np.empty(LANES, dtype=np.int64)
        row = x[r]
        mx, i = row_argmax(row, lane_m, lane_i)
        labels[r] = i
        if with_conf:
            lane_s = np.empty(LANES, dtype=np.float64)
            s = row_expsum(row, mx, inv_t, lane_m, lane_s, lane_m, False)
            conf[r] = 1.0 / s if is_finite(mx) else np.nan
