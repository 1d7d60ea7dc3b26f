"""argmax and classify on the GPU: labels (and confidence) in one read of x.

classify never materializes probabilities: the top-1 probability is
``1 / s`` with ``s = sum_c exp((x_c - max) / T)``, folded in the same pass
as the max and its first index (:func:`fastlogits.cuda.kernels.device.fold`).
``with_conf=False`` (plain argmax) skips the exponentials; ``conf`` is then
a 1-element stand-in never touched.

Views: ``x`` (outer, C, inner); ``labels`` (any integer dtype) and ``conf``
(the compute dtype) (outer, inner). Regimes mirror
:mod:`fastlogits.cuda.kernels.softmax` (and :mod:`fastlogits.cpu.ops.argmax`):
channels-first a thread per pixel, channels-last small C through a shared
tile, otherwise a group of threads per row.
"""

import numpy as np
from numba import cuda, int64

from fastlogits.cuda.kernels.device import (MAX_THREADS, fold, fold_strided, group_reduce, is_finite,
                                            pixel_two_pass, score, tile_copy)


@cuda.jit(device=True)
def _confidence(m, s, one, nan):
    """``1 / (1 + s)`` (``s`` without the first maximum), NaN for a pixel
    with a non-finite max."""
    return one / (one + s) if is_finite(m) else nan


@cuda.jit(cache=True)
def argmax_cf(x, labels, conf, cdt, inv_t, with_conf):
    """Channels-first: a thread per pixel, class planes read coalesced;
    classify in two passes (:func:`.device.pixel_two_pass`)."""
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    outer, C, inner = x.shape
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        m, s, idx = pixel_two_pass(x, o, i, C, inv_t, with_conf, one, zero, cdt)
        labels[o, i] = idx
        if with_conf:
            conf[o, i] = _confidence(m, s, one, nan)


@cuda.jit(cache=True)
def argmax_cl_tile(x, labels, conf, cdt, inv_t, with_conf, pitch):
    """Channels-last, small C: ``x`` (rows, C, 1) through a shared tile of
    ``blockDim.x * pitch`` elements (see :func:`.softmax.expnorm_cl_tile`);
    each thread then writes its row's label, coalesced across the block."""
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
                m, s, comp, idx = fold(m, s, comp, idx, score(tile[base + c], ct), c, inv_t,
                                       one, with_conf)
            labels[r0 + tid, 0] = idx
            if with_conf:
                conf[r0 + tid, 0] = _confidence(m, s - comp, one, nan)
        cuda.syncthreads()


@cuda.jit(cache=True)
def argmax_rows(x, labels, conf, cdt, inv_t, with_conf, G, shuffle):
    """A group of ``G`` threads per pixel (row), lanes striding the classes;
    see :func:`.softmax.expnorm_rows`."""
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
        m = ninf
        s = -one
        comp = zero
        idx = big
        if p < npix and lane < C:
            m, s, comp, idx = fold_strided(x, o, i, lane + G, C, G, score(x[o, lane, i], ct),
                                           zero, zero, int64(lane), inv_t, one, with_conf, cdt)
        m, s, idx = group_reduce(m, s - comp, idx, inv_t, G, shuffle, sm_m, sm_s, sm_i, ninf,
                                 one, big)
        if p < npix and lane == 0:
            labels[o, i] = idx
            if with_conf:
                conf[o, i] = _confidence(m, s, one, nan)
