"""cross_entropy and confusion_matrix on the GPU: the kernels (their host
side, :mod:`fastlogits.cuda.host.losses`, plans, launches and checks).

cross_entropy is fused: a thread per pixel reads its scores once for the
max, once more (from L1/L2) for the exp-sum, then the target's logit and
(with ``label_smoothing``) the weighted logit sum; the gradient, when
asked for, is written by a further sweep over the pixel's scores while
they are still cached. The evaluation loss (no smoothing, no gradient)
has its own kernel with fewer registers. A group of threads per row folds
max and exp-sum in one pass (:func:`fastlogits.cuda.kernels.device.fold`). Pixel
losses and target weights are summed per thread and per block (a pairwise
tree), then over blocks in float64 by :func:`sum_rows`, on the device.

confusion_matrix, a thread per pixel, is one kernel: each pixel's argmax
goes straight into a per-block shared-memory histogram (when C * C bins
fit), with no label map, and ignored pixels' scores are never read. The
other regimes run the argmax kernels of :mod:`.argmax` into a temporary
int32 label map, then count (target, label) pairs.

Target values outside [0, C) that are not ``ignore_index`` set the error
flag (:mod:`.errflag`; the pixel is skipped, nothing is read out of
bounds), and the host raises the same ``ValueError`` as the CPU backend.

Regimes: a thread per pixel (channels-first, and channels-last with small
C, whose scores a thread reads from L1-resident lines) or, as
``ops.plan`` decides for larger C, a group of threads per row.
"""

import math

import numpy as np
from numba import cuda, float64, int32, int64

from fastlogits.cuda.kernels.device import (MAX_THREADS, block_total, fold_strided, group_reduce,
                                            group_sum, is_finite, pixel_two_pass, score, stored)
from fastlogits.cuda.kernels.errflag import block_sees_flag, raise_flag

#: Error code of a target value outside [0, C) that is not ignore_index.
BAD_TARGET = 1

#: Confusion histograms with at most this many bins (C * C) are built in
#: shared memory (int32) per block, then added to the global matrix.
SHARED_BINS = 4096


@cuda.jit(device=True)
def _weighted_sum(x, o, i, c, C, step, w, m, zero, cdt):
    """``sum w[c] * (x[o, c, i] - m)`` over classes ``c, c + step, ...``:
    relative to the pixel's max, so a large common offset cancels exactly
    instead of in float32 rounding."""
    ct = cdt.dtype.type
    acc = zero
    while c < C:
        acc += w[c] * (score(x[o, c, i], ct) - m)
        c += step
    return acc


@cuda.jit(device=True)
def _pixel_loss(m, s, zt, wt, zw, eps, epsc, wsum, one, zero, nan):
    """Loss of a pixel: ``w[t] * (lse - z_t)``, smoothed with
    ``eps / C * sum w_c (lse - z_c)``, all relative to the max m
    (``lse - m = log1p(s)``, ``s`` without the first maximum;
    ``zw = sum w_c (z_c - m)``); NaN for a non-finite max."""
    ls = math.log1p(s) if is_finite(m) else nan
    loss = wt * ((m - zt) + ls)
    if eps > zero:
        loss = (one - eps) * loss + epsc * (wsum * ls - zw)
    return loss


@cuda.jit(device=True)
def _write_grad(x, grad, w, o, i, c, C, step, tv, m, s, wt, eps, epsc, wsum, gscale, one,
                nan, cdt):
    """``(p_c ((1-eps) w_t + eps/C sum(w)) - (1-eps) w_t [c == t] - eps/C w_c) * gscale``
    for classes ``c, c + step, ...`` of pixel (o, i); NaN for a non-finite max."""
    ct = cdt.dtype.type
    a = ((one - eps) * wt + epsc * wsum) / (one + s) if is_finite(m) else nan
    hit = (one - eps) * wt
    while c < C:
        g = math.exp(score(x[o, c, i], ct) - m) * a - epsc * w[c]
        if c == tv:
            g -= hit
        grad[o, c, i] = stored(grad, g * gscale)
        c += step


@cuda.jit(device=True)
def _zero_grad(grad, o, i, c, C, step):
    while c < C:
        grad[o, c, i] = 0
        c += step


@cuda.jit(device=True)
def _store_partials(acc_l, acc_w, sm, partial):
    """The block's totals of its threads' losses and weights into
    ``partial[0, block]`` and ``partial[1, block]`` (every thread calls it;
    ``sm`` is shared scratch of ``blockDim.x`` entries)."""
    tot_l = block_total(acc_l, sm)
    tot_w = block_total(acc_w, sm)
    if cuda.threadIdx.x == 0:
        partial[0, cuda.blockIdx.x] = tot_l
        partial[1, cuda.blockIdx.x] = tot_w


@cuda.jit(cache=True)
def cross_entropy_pixels(x, t, w, loss, grad, partial, flag, cdt, ignore, eps, epsc, wsum,
                         gs, with_loss, with_grad):
    """A thread per pixel of ``x`` (outer, C, inner): loss (and gradient)
    of each; per-block sums of losses and target weights into
    ``partial[0, block]``, ``partial[1, block]``. The gradient's scale is
    ``gs[0]`` (computed on the device); with ``with_grad``, a flag raised
    before the launch (the targets' pre-pass) leaves every output untouched."""
    if with_grad and block_sees_flag(flag, cuda.shared.array(1, int64)):
        return
    gscale = gs[0]
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, C, inner = x.shape
    acc_l = zero
    acc_w = zero
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv == ignore:
            if with_loss:
                loss[o, i] = zero
            if with_grad:
                _zero_grad(grad, o, i, 0, C, 1)
        elif tv < 0 or tv >= C:
            raise_flag(flag, BAD_TARGET, p)
        else:
            m, s, _ = pixel_two_pass(x, o, i, C, one, True, one, zero, cdt)
            zw = _weighted_sum(x, o, i, 0, C, 1, w, m, zero, cdt) if eps > zero else zero
            wt = w[tv]
            lp = _pixel_loss(m, s, score(x[o, tv, i], ct), wt, zw, eps, epsc, wsum, one, zero,
                             nan)
            if with_loss:
                loss[o, i] = lp
            if with_grad:
                _write_grad(x, grad, w, o, i, 0, C, 1, tv, m, s, wt, eps, epsc, wsum, gscale,
                            one, nan, cdt)
            acc_l += lp
            acc_w += wt
    _store_partials(acc_l, acc_w, sm, partial)


@cuda.jit(cache=True)
def cross_entropy_loss_pixels(x, t, w, loss, partial, flag, cdt, ignore, with_loss):
    """:func:`cross_entropy_pixels` without label smoothing or gradient
    (the evaluation loss): 47 registers per thread instead of 56 (sm_90),
    so an SM holds five blocks of 256 threads instead of four."""
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, C, inner = x.shape
    acc_l = zero
    acc_w = zero
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv == ignore:
            if with_loss:
                loss[o, i] = zero
        elif tv < 0 or tv >= C:
            raise_flag(flag, BAD_TARGET, p)
        else:
            m, s, _ = pixel_two_pass(x, o, i, C, one, True, one, zero, cdt)
            wt = w[tv]
            lp = _pixel_loss(m, s, score(x[o, tv, i], ct), wt, zero, zero, zero, zero, one, zero,
                             nan)
            if with_loss:
                loss[o, i] = lp
            acc_l += lp
            acc_w += wt
    _store_partials(acc_l, acc_w, sm, partial)


@cuda.jit(cache=True)
def cross_entropy_rows(x, t, w, loss, grad, partial, flag, cdt, ignore, eps, epsc, wsum, gs,
                       with_loss, with_grad, G, shuffle):
    """A group of ``G`` threads per pixel (row), lanes striding the classes
    (see :func:`.softmax.expnorm_rows`); partial sums, ``gs`` and the flag
    as :func:`cross_entropy_pixels`."""
    if with_grad and block_sees_flag(flag, cuda.shared.array(1, int64)):
        return
    gscale = gs[0]
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
    acc_l = zero
    acc_w = zero
    for p0 in range(cuda.blockIdx.x * groups, npix, cuda.gridDim.x * groups):
        p = p0 + g
        o = p // inner
        i = p - o * inner
        # The pixel's verdict on its target is the same for all its lanes,
        # so every branch below is uniform across the group.
        tv = int64(t[o, i]) if p < npix else ignore
        valid = p < npix and tv != ignore and 0 <= tv < C
        m = ninf
        s = -one
        comp = zero
        idx = big
        # The target's logit before the group's reductions: with grad = x
        # (in place) another lane may overwrite it once they are done.
        xt = score(x[o, tv, i], ct) if valid else zero
        if valid and lane < C:
            m, s, comp, idx = fold_strided(x, o, i, lane + G, C, G, score(x[o, lane, i], ct),
                                           zero, zero, int64(lane), one, one, True, cdt)
        m, s, idx = group_reduce(m, s - comp, idx, one, G, shuffle, sm_m, sm_s, sm_i, ninf, one,
                                 big)
        zw = zero
        if eps > zero:
            zw = group_sum(_weighted_sum(x, o, i, lane, C, G, w, m, zero, cdt) if valid else zero,
                           G, shuffle, sm_s, zero)
        if p < npix:
            if tv == ignore:
                if with_loss and lane == 0:
                    loss[o, i] = zero
                if with_grad:
                    _zero_grad(grad, o, i, lane, C, G)
            elif not valid:
                if lane == 0:
                    raise_flag(flag, BAD_TARGET, p)
            else:
                wt = w[tv]
                lp = _pixel_loss(m, s, xt, wt, zw, eps, epsc, wsum, one, zero, nan)
                if lane == 0:
                    if with_loss:
                        loss[o, i] = lp
                    acc_l += lp
                    acc_w += wt
                if with_grad:
                    _write_grad(x, grad, w, o, i, lane, C, G, tv, m, s, wt, eps, epsc, wsum,
                                gscale, one, nan, cdt)
    _store_partials(acc_l, acc_w, sm_s, partial)


@cuda.jit(cache=True)
def target_weights(t, w, partial, flag, cdt, ignore, C):
    """Per-block sums of ``w[t]`` over non-ignored pixels (the "mean"
    denominator, needed before a gradient can be written); flags bad targets."""
    zero = cdt.dtype.type(0)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, inner = t.shape
    acc = zero
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv != ignore:
            if tv < 0 or tv >= C:
                raise_flag(flag, BAD_TARGET, p)
            else:
                acc += w[tv]
    tot = block_total(acc, sm)
    if cuda.threadIdx.x == 0:
        partial[0, cuda.blockIdx.x] = tot


@cuda.jit(cache=True)
def sum_rows(partial, sums, scale, want_scale):
    """``sums[r] = sum(partial[r, :])`` in float64, by one block (a fixed
    order: the same inputs give the same bits); with ``want_scale``,
    ``scale[0] = 1 / sums[0]`` in scale's dtype (inf for a zero total): the
    gradient's "mean" factor, read by the loss kernels on the device."""
    sm = cuda.shared.array(MAX_THREADS, dtype=float64)
    rows, n = partial.shape
    for r in range(rows):
        acc = float64(0)
        for k in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            acc += float64(partial[r, k])
        tot = block_total(acc, sm)
        if cuda.threadIdx.x == 0:
            sums[r] = tot
        cuda.syncthreads()
    if want_scale and cuda.threadIdx.x == 0:
        st = scale.dtype.type
        total = sums[0]
        scale[0] = st(math.inf) if total == 0 else st(float64(1) / total)


@cuda.jit(device=True)
def clear_hist(hist, C, tid, T):
    """Zero a block's shared (C * C) histogram (every thread calls it)."""
    for k in range(tid, C * C, T):
        hist[k] = 0
    cuda.syncthreads()


@cuda.jit(device=True)
def count_pair(hist, counts, C, target, label, use_shared):
    """Count one (target, label) pair: in the block's shared (C * C)
    histogram with ``use_shared``, else straight in ``counts`` (C, C)."""
    if use_shared:
        cuda.atomic.add(hist, target * C + label, 1)
    else:
        cuda.atomic.add(counts, (target, label), 1)


@cuda.jit(device=True)
def flush_hist(hist, counts, C, tid, T):
    """Add a block's shared histogram to ``counts``: one atomic per nonzero
    bin (every thread calls it)."""
    cuda.syncthreads()
    for k in range(tid, C * C, T):
        n = hist[k]
        if n != 0:
            r = k // C
            cuda.atomic.add(counts, (r, k - r * C), int64(n))


@cuda.jit(cache=True)
def confusion_pixels(x, t, counts, flag, cdt, ignore, use_shared):
    """argmax and count fused, a thread per pixel of ``x`` (outer, C,
    inner): the label map is never written, and an ignored pixel's scores
    are never read. Pairs go to a per-block int32 histogram in shared
    memory when ``use_shared`` (C * C <= SHARED_BINS), else straight to
    ``counts`` (C, C) int64; bad targets set the flag."""
    hist = cuda.shared.array(SHARED_BINS, dtype=int32)
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    outer, C, inner = x.shape
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    if use_shared:
        clear_hist(hist, C, tid, T)
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv != ignore:
            if tv < 0 or tv >= C:
                raise_flag(flag, BAD_TARGET, p)
            else:
                _, _, label = pixel_two_pass(x, o, i, C, one, False, one, zero, cdt)
                count_pair(hist, counts, C, tv, label, use_shared)
    if use_shared:
        flush_hist(hist, counts, C, tid, T)


@cuda.jit(cache=True)
def confusion_count(labels, t, counts, flag, ignore, use_shared):
    """Add each pixel's (target, label) pair to ``counts`` (C, C) int64;
    with ``use_shared`` through a per-block int32 histogram in shared
    memory (C * C <= SHARED_BINS), so global atomics happen once per bin
    and block instead of once per pixel."""
    hist = cuda.shared.array(SHARED_BINS, dtype=int32)
    C = counts.shape[0]
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    if use_shared:
        clear_hist(hist, C, tid, T)
    outer, inner = labels.shape
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv != ignore:
            if tv < 0 or tv >= C:
                raise_flag(flag, BAD_TARGET, p)
            else:
                count_pair(hist, counts, C, tv, int64(labels[o, i]), use_shared)
    if use_shared:
        flush_hist(hist, counts, C, tid, T)


@cuda.jit(cache=True)
def add_into(dst, src):
    """``dst += src`` for 2-D arrays of one shape (grid-stride)."""
    rows, cols = dst.shape
    for k in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = k // cols
        c = k - r * cols
        dst[r, c] += src[r, c]
