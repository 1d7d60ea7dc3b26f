"""softmax, log_softmax and logsumexp on the GPU: one read of x from memory.

All kernels take the canonical views built by :mod:`fastlogits.cuda.host.ops`:
``x`` and ``out`` (outer, C, inner), ``red`` (outer, inner); ``out`` is
written for softmax / log_softmax, ``red`` for logsumexp (the other is a
1-element stand-in never touched). ``cdt`` carries the compute dtype
(see :mod:`.device`), ``mode`` picks the op at run time so the three share
one compiled kernel per regime and dtype. Grid-stride loops everywhere:
any grid size covers any input.

Regimes (mirroring :mod:`fastlogits.cpu.ops.softmax`):

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

from fastlogits._modes import LOGSUMEXP, SOFTMAX
from fastlogits.cuda.kernels.device import (MAX_THREADS, fold, fold_strided, group_reduce, is_finite,
                                            score, stored, tile_copy)


@cuda.jit(device=True)
def _value(v, m, g, inv_t, mode):
    """softmax (``g`` = 1/s) or log_softmax (``g`` = log s) of one score."""
    if mode == SOFTMAX:
        return math.exp((v - m) * inv_t) * g
    return (v - m) * inv_t - g


@cuda.jit(device=True)
def _write_strided(x, out, o, i, c, C, step, m, g, inv_t, mode, cdt):
    """Outputs of classes ``c, c + step, ...`` of pixel (o, i); four loads
    in flight per thread, each written back by the thread that read it (so
    ``out`` may be ``x``)."""
    ct = cdt.dtype.type
    while c + 3 * step < C:
        v0 = score(x[o, c, i], ct)
        v1 = score(x[o, c + step, i], ct)
        v2 = score(x[o, c + 2 * step, i], ct)
        v3 = score(x[o, c + 3 * step, i], ct)
        out[o, c, i] = stored(out, _value(v0, m, g, inv_t, mode))
        out[o, c + step, i] = stored(out, _value(v1, m, g, inv_t, mode))
        out[o, c + 2 * step, i] = stored(out, _value(v2, m, g, inv_t, mode))
        out[o, c + 3 * step, i] = stored(out, _value(v3, m, g, inv_t, mode))
        c += 4 * step
    while c < C:
        out[o, c, i] = stored(out, _value(score(x[o, c, i], ct), m, g, inv_t, mode))
        c += step


@cuda.jit(device=True)
def _scale(m, s, mode, one, nan):
    """The per-pixel constant of the write: 1 / (1 + s) (softmax) or
    log1p(s) (log_softmax), ``s`` the sum without the first maximum
    (:func:`.device.fold`); NaN for a pixel with a non-finite max, which
    makes all of its outputs NaN."""
    if not is_finite(m):
        return nan
    return one / (one + s) if mode == SOFTMAX else math.log1p(s)


@cuda.jit(device=True)
def _logsumexp(m, s, inv_t):
    """``m * inv_t + log1p(s)`` (``s`` without the first maximum: SciPy's
    rule), or m itself (NaN, +inf, -inf) for a non-finite max."""
    return m * inv_t + math.log1p(s) if is_finite(m) else m


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
        m, s, comp, idx = fold_strided(x, o, i, 1, C, 1, score(x[o, 0, i], ct), zero, zero, 0,
                                       inv_t, one, True, cdt)
        s = s - comp
        if mode == LOGSUMEXP:
            red[o, i] = stored(red, _logsumexp(m, s, inv_t))
        else:
            _write_strided(x, out, o, i, 0, C, 1, m, _scale(m, s, mode, one, nan), inv_t, mode,
                           cdt)


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
    for r0 in range(cuda.blockIdx.x * T, rows, cuda.gridDim.x * T):
        n = min(T, rows - r0)
        tile_copy(x, tile, r0, n, C, pitch, True)
        cuda.syncthreads()
        if tid < n:
            base = tid * pitch
            m = score(tile[base], ct)
            s = zero
            comp = zero
            idx = 0
            for c in range(1, C):
                m, s, comp, idx = fold(m, s, comp, idx, score(tile[base + c], ct), c, inv_t, one,
                                       True)
            s = s - comp
            if mode == LOGSUMEXP:
                red[r0 + tid, 0] = stored(red, _logsumexp(m, s, inv_t))
            else:
                g = _scale(m, s, mode, one, nan)
                for c in range(C):
                    v = _value(score(tile[base + c], ct), m, g, inv_t, mode)
                    tile[base + c] = stored(tile, v)
        cuda.syncthreads()
        if mode != LOGSUMEXP:
            tile_copy(out, tile, r0, n, C, pitch, False)
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
        s = -one
        comp = zero
        idx = big
        if p < npix and lane < C:
            m, s, comp, idx = fold_strided(x, o, i, lane + G, C, G, score(x[o, lane, i], ct),
                                           zero, zero, int64(lane), inv_t, one, True, cdt)
        m, s, idx = group_reduce(m, s - comp, idx, inv_t, G, shuffle, sm_m, sm_s, sm_i, ninf,
                                 one, big)
        if p < npix:
            if mode == LOGSUMEXP:
                if lane == 0:
                    red[o, i] = stored(red, _logsumexp(m, s, inv_t))
            else:
                _write_strided(x, out, o, i, lane, C, G, m, _scale(m, s, mode, one, nan), inv_t,
                               mode, cdt)
