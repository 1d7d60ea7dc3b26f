"""Building blocks shared by the CPU kernels: work on one tile of pixels.

A tile is a 2-D view ``xt`` of shape (C, P): C classes of P pixels. Every
loop runs classes outside and pixels inside, so the inner loop is
elementwise across pixels (no reduction inside it) and vectorizes without
``nnan``: each pixel's running max, index and sum live in small scratch
vectors that stay in L1 for the whole tile.

- channels-first: ``xt = x[o, :, i0:i1]``, a class row of the tile is
  contiguous;
- channels-last, small C: ``xt = x[r0:r1, :].T``, strided (gathers, but the
  tile's ``P * C`` scores sit in L1);
- channels-last, large C: one row at a time, folded to (C // LANES, LANES)
  so LANES partial results run side by side and are combined at the end
  (:func:`row_max`, :func:`row_expsum`).
"""

import math

import numpy as np
from numba import njit

from fastlogits.config import FASTMATH
from fastlogits.cpu.fastexp import fexp

#: Classes summed in the input precision before the partial sum is added to
#: a float64 total: float32 sums stay accurate for C in the hundreds of
#: thousands while the inner loop runs at float32 width.
SUM_BLOCK = 128

#: Lanes a large-C row is folded into (one AVX-512 vector of float32).
LANES = 16


@njit(fastmath=FASTMATH, cache=True)
def tile_max(xt, m):
    """Per-pixel max of ``xt`` (C, P) into ``m``; a NaN anywhere gives NaN."""
    C, P = xt.shape
    for p in range(P):
        m[p] = xt[0, p]
    for c in range(1, C):
        for p in range(P):
            v = xt[c, p]
            mp = m[p]
            # Once m is NaN it stays NaN (v > NaN is False; a NaN v keeps NaN).
            m[p] = v if (v > mp) | (v != v) else mp


@njit(fastmath=FASTMATH, cache=True)
def tile_argmax(xt, m, idx):
    """Per-pixel max into ``m`` and the index of its first occurrence into
    ``idx``; the first NaN wins over any number (NumPy's rule)."""
    C, P = xt.shape
    for p in range(P):
        m[p] = xt[0, p]
        idx[p] = 0
    for c in range(1, C):
        for p in range(P):
            v = xt[c, p]
            mp = m[p]
            take = (v > mp) | ((v != v) & (mp == mp))
            m[p] = v if take else mp
            idx[p] = c if take else idx[p]


@njit(fastmath=FASTMATH, cache=True)
def tile_expsum(xt, m, inv_t, s):
    """``s[p] = sum_c exp((xt[c, p] - m[p]) * inv_t)``, float64 over blocks.

    Pixels with a non-finite max get garbage here; callers mask them.
    """
    C, P = xt.shape
    part = np.empty(P, dtype=xt.dtype)
    for p in range(P):
        s[p] = 0.0
    for c0 in range(0, C, SUM_BLOCK):
        for p in range(P):
            part[p] = 0.0
        for c in range(c0, min(c0 + SUM_BLOCK, C)):
            for p in range(P):
                part[p] += fexp((xt[c, p] - m[p]) * inv_t)
        for p in range(P):
            s[p] += part[p]


@njit(fastmath=FASTMATH, cache=True)
def tile_exp_store(xt, m, inv_t, s, et):
    """:func:`tile_expsum` that also stores the exponentials (the softmax
    numerators) into ``et`` (C, P), which may be ``xt`` itself (in place)."""
    C, P = xt.shape
    part = np.empty(P, dtype=xt.dtype)
    for p in range(P):
        s[p] = 0.0
    for c0 in range(0, C, SUM_BLOCK):
        for p in range(P):
            part[p] = 0.0
        for c in range(c0, min(c0 + SUM_BLOCK, C)):
            for p in range(P):
                e = fexp((xt[c, p] - m[p]) * inv_t)
                et[c, p] = e
                part[p] += e
        for p in range(P):
            s[p] += part[p]


@njit(fastmath=FASTMATH, cache=True)
def is_finite(v):
    """True for a finite float (a NaN or an inf gives v - v = NaN)."""
    return v - v == 0.0


@njit(fastmath=FASTMATH, cache=True)
def row_fold(row):
    """``row`` (C,) as (C // LANES, LANES) plus the tail start (a view)."""
    C = row.shape[0]
    body = (C // LANES) * LANES
    return row[:body].reshape((C // LANES, LANES)), body


@njit(fastmath=FASTMATH, cache=True)
def row_argmax(row, lane_m, lane_i):
    """Max and first index of the contiguous ``row``, lane-folded.

    Returns ``(max, index)`` with the tile rules (first NaN, else first max).
    """
    folded, body = row_fold(row)
    best = -np.inf
    best_i = -1
    if folded.shape[0] > 0:
        tile_argmax(folded, lane_m, lane_i)
        # Combine lanes: lane l's candidate is class lane_i[l] * LANES + l.
        for l in range(LANES):
            v = lane_m[l]
            c = lane_i[l] * LANES + l
            if best_i < 0:
                take = True
            elif best != best:
                take = (v != v) & (c < best_i)
            elif v != v:
                take = True
            else:
                take = (v > best) | ((v == best) & (c < best_i))
            if take:
                best = v
                best_i = c
    for c in range(body, row.shape[0]):
        v = row[c]
        if best_i < 0:
            take = True
        else:
            take = (v > best) | ((v != v) & (best == best))
        if take:
            best = v
            best_i = c
    return best, best_i


@njit(fastmath=FASTMATH, cache=True)
def row_expsum(row, mx, inv_t, lane_m, lane_s, out_row, write):
    """``sum exp((row - mx) * inv_t)`` of a contiguous row, lane-folded;
    with ``write`` the exponentials go to ``out_row`` (may be ``row``;
    without ``write`` it is not touched and may be any 1-D array)."""
    folded, body = row_fold(row)
    total = 0.0
    if folded.shape[0] > 0:
        lane_m[:] = mx
        if write:
            out_folded, _ = row_fold(out_row)
            tile_exp_store(folded, lane_m, inv_t, lane_s, out_folded)
        else:
            tile_expsum(folded, lane_m, inv_t, lane_s)
        for l in range(LANES):
            total += lane_s[l]
    for c in range(body, row.shape[0]):
        e = fexp((row[c] - mx) * inv_t)
        if write:
            out_row[c] = e
        total += e
    return total


@njit(fastmath=FASTMATH, cache=True)
def safe_log(s):
    """``log`` of a positive float64 sum (scalar libm; called once a pixel)."""
    return math.log(s)
