"""softmax, log_softmax and logsumexp on the GPU: one read of x from memory.

All kernels take the canonical views built by :mod:`fastlogits.cuda.ops`:
``x`` and ``out`` (outer, C, inner), ``red`` (outer, inner); ``out`` is
written for softmax / log_softmax, ``red`` for logsumexp (the other is a
1-element stand-in never touched). ``cdt`` carries the compute dtype
(see :mod:`.device`), ``mode`` picks the op at run time so the three share
one compiled kernel per regime and dtype. Grid-stride loops everywhere:
any grid size covers any input.

Regimes (mirroring :mod:`fastlogits.cpu.softmax`):

- :func:`expnorm_cf`: channels-first (inner > 1), a thread per pixel;
  consecutive threads read consecutive pixels of one class plane, so every
  load is coalesced. Pass 1 folds max, exp-sum (online); pass 2 re-reads
  the pixel's scores (L1/L2-resident) to write the outputs.
- :func:`expnorm_cl_tile`: channels-last with small C (inner == 1), a
  thread per pixel; the block first copies its tile of ``blockDim.x`` rows
  (``n * C`` contiguous scores) into shared memory with coalesced loads,
  each thread reduces its row from shared memory (odd row pitch: no bank
  conflicts), writes its results back into the tile, and the block stores
  the tile coalesced.
- :func:`expnorm_rows`: a group of ``G`` threads per row (a warp for
  medium C, the whole block for large C); lanes stride the classes
  (coalesced for channels-last), the group combines its partial states
  with warp shuffles or a shared-memory tree, then every lane writes its
  classes.
"""

import math

import numpy as np
from numba import cuda, int64

from fastlogits.cuda.device import MAX_THREADS, fold, group_reduce, is_finite

SOFTMAX = 0
LOG_SOFTMAX = 1
LOGSUMEXP = 2


@cuda.jit(device=True)
def _write_pixel(x, out, red, o, i, C, m, s, inv_t, mode, cdt, one, nan):
    """Outputs of pixel (o, i) of a 3-D view from its max ``m`` and exp-sum
    ``s``; pixels with a non-finite max are NaN (softmax, log_softmax) or
    keep ``m`` as their logsumexp (NaN, +inf or -inf)."""
    ct = cdt.dtype.type
    ok = is_finite(m)
    if mode == LOGSUMEXP:
        red[o, i] = m * inv_t + math.log(s) if ok else m
    elif mode == SOFTMAX:
        g = one / s if ok else nan
        for c in range(C):
            out[o, c, i] = math.exp((ct(x[o, c, i]) - m) * inv_t) * g
    else:
        g = math.log(s) if ok else nan
        for c in range(C):
            out[o, c, i] = (ct(x[o, c, i]) - m) * inv_t - g


@cuda.jit(cache=True)
def expnorm_cf(x, out, red, cdt, inv_t, mode):
    """Channels-first: a thread per pixel, class planes read coalesced."""
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    outer, C, inner = x.shape
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        m = ct(x[o, 0, i])
        s = one
        comp = zero
        idx = 0
        for c in range(1, C):
            m, s, comp, idx = fold(m, s, comp, idx, ct(x[o, c, i]), c, inv_t, one, True)
        _write_pixel(x, out, red, o, i, C, m, s - comp, inv_t, mode, cdt, one, nan)


@cuda.jit(cache=True)
def expnorm_cl_tile(x, out, red, cdt, inv_t, mode, pitch):
    """Channels-last, small C: ``x`` (rows, C, 1) through a shared tile.

    Launched with dynamic shared memory of ``blockDim.x * pitch`` elements
    of x's dtype; ``pitch`` is C rounded up to odd.
    """
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    tile = cuda.shared.array(0, dtype=x.dtype)
    rows, C = x.shape[0], x.shape[1]
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    # Division-free walk of the tile's (row, class) pairs k = tid + j*T.
    dr = T // C
    dc = T - dr * C
    for r0 in range(cuda.blockIdx.x * T, rows, cuda.gridDim.x * T):
        n = min(T, rows - r0)
        r = tid // C
        c = tid - r * C
        while r < n:
            tile[r * pitch + c] = x[r0 + r, c, 0]
            r += dr
            c += dc
            if c >= C:
                c -= C
                r += 1
        cuda.syncthreads()
        if tid < n:
            base = tid * pitch
            m = ct(tile[base])
            s = one
            comp = zero
            idx = 0
            for c in range(1, C):
                m, s, comp, idx = fold(m, s, comp, idx, ct(tile[base + c]), c, inv_t, one, True)
            s = s - comp
            ok = is_finite(m)
            if mode == LOGSUMEXP:
                red[r0 + tid, 0] = m * inv_t + math.log(s) if ok else m
            elif mode == SOFTMAX:
                g = one / s if ok else nan
                for c in range(C):
                    tile[base + c] = math.exp((ct(tile[base + c]) - m) * inv_t) * g
            else:
                g = math.log(s) if ok else nan
                for c in range(C):
                    tile[base + c] = (ct(tile[base + c]) - m) * inv_t - g
        cuda.syncthreads()
        if mode != LOGSUMEXP:
            r = tid // C
            c = tid - r * C
            while r < n:
                out[r0 + r, c, 0] = tile[r * pitch + c]
                r += dr
                c += dc
                if c >= C:
                    c -= C
                    r += 1
        # The next tile overwrites shared memory only after every store.
        cuda.syncthreads()


@cuda.jit(cache=True)
def expnorm_rows(x, out, red, cdt, inv_t, mode, G, shuffle):
    """A group of ``G`` threads per pixel (row): lanes stride the classes.

    ``G`` divides ``blockDim.x`` (a warp for medium C, the block for large
    C); ``shuffle`` picks warp shuffles or the shared-memory tree.
    """
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    ninf = ct(-np.inf)
    sm_m = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    sm_s = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    sm_i = cuda.shared.array(MAX_THREADS, dtype=int64)
    outer, C, inner = x.shape
    npix = outer * inner
    big = int64(C)
    tid = cuda.threadIdx.x
    groups = cuda.blockDim.x // G
    g = tid // G
    lane = tid - g * G
    for p0 in range(cuda.blockIdx.x * groups, npix, cuda.gridDim.x * groups):
        p = p0 + g
        o = p // inner
        i = p - o * inner
        # Identity state for lanes with no classes (or no pixel).
        m = ninf
        s = zero
        comp = zero
        idx = big
        if p < npix and lane < C:
            m = ct(x[o, lane, i])
            s = one
            idx = int64(lane)
            for c in range(lane + G, C, G):
                m, s, comp, idx = fold(m, s, comp, idx, ct(x[o, c, i]), c, inv_t, one, True)
        m, s, idx = group_reduce(m, s - comp, idx, inv_t, G, shuffle, sm_m, sm_s, sm_i, ninf,
                                 zero, big)
        if p < npix:
            ok = is_finite(m)
            if mode == LOGSUMEXP:
                if lane == 0:
                    red[o, i] = m * inv_t + math.log(s) if ok else m
            elif mode == SOFTMAX:
                gs = one / s if ok else nan
                for c in range(lane, C, G):
                    out[o, c, i] = math.exp((ct(x[o, c, i]) - m) * inv_t) * gs
            else:
                gs = math.log(s) if ok else nan
                for c in range(lane, C, G):
                    out[o, c, i] = (ct(x[o, c, i]) - m) * inv_t - gs

