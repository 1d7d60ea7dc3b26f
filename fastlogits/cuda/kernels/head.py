"""The fused linear head on the GPU: z = W f + b per pixel, never stored.

The kernels; their host side (launch plan, parameters, the ops called
through :mod:`fastlogits.cuda.host`) is :mod:`fastlogits.cuda.host.head`.
Paired with :mod:`fastlogits.cpu.ops.head`.

Kernel design (one design for every op):

- W and b are staged in shared memory (compute dtype) by the whole block,
  with coalesced loads. When all of W fits in ``cuda_head_shared_bytes``
  it is staged once per block ("resident") and serves every tile of pixels
  the block visits; otherwise the kernels loop over chunks of ``KC``
  classes (and, for very long feature vectors, ``NC`` features) staged one
  after the other, carrying each pixel's state across chunks.
- A tile of ``blockDim.x`` pixels per block, a thread per pixel: each
  thread computes its pixel's logits CB = 8 classes at a time in
  registers (every feature value loaded once feeds 8 FMAs; the 8 weights
  come from shared memory as broadcasts: all threads of a warp read the
  same address), and folds them straight into the epilogue state
  ``(max, exp-sum, argmax)`` of :func:`fastlogits.cuda.kernels.device.fold`. The
  (..., C) logits never exist in memory; only :func:`logits` writes z.
- Features: channels-first (outer, N, inner) is read in place, consecutive
  threads reading consecutive pixels of one feature plane (coalesced).
  Channels-last (rows, N, 1) is first copied tile by tile into shared
  memory with :func:`fastlogits.cuda.kernels.device.tile_copy` (coalesced, odd row
  pitch: no bank conflicts) when a tile of at least 32 rows fits beside
  W; otherwise each thread reads its own row (through L1/L2).
- Epilogues are the core ops' device functions: softmax / log_softmax
  recompute the logits in a second pass (FMAs are cheaper than writing
  and re-reading them) and write with :func:`.softmax._value`; logsumexp,
  argmax, classify reduce the fold state; cross_entropy adds the target's
  logit to the same fold and, for label smoothing or the gradient, a
  second pass forms d loss / d z per class block in registers and adds
  ``W^T (d loss / d z)`` to the pixel's feature gradient (no logits
  gradient stored either); confusion_matrix counts (target, label) pairs
  in a per-block shared-memory histogram.

Precision: logits accumulate in the compute dtype (float32 for float16 /
float32 features, float64 for float64) with the CPU's bound
(:class:`fastlogits.head.LinearHead`); float32 kernels hold no float64
instruction (tests/cuda_host/test_cuda_ptx.py).
"""

import math

import numpy as np
from numba import cuda, int32, int64

from fastlogits._modes import LOGITS, LOGSUMEXP
from fastlogits.cuda.kernels.argmax import _confidence
from fastlogits.cuda.kernels.device import MAX_THREADS, block_total, fold, is_finite, tile_copy
from fastlogits.cuda.kernels.errflag import raise_flag
from fastlogits.cuda.kernels.losses import (BAD_TARGET, SHARED_BINS, _pixel_loss, clear_hist,
                                            count_pair, flush_hist)
from fastlogits.cuda.kernels.softmax import _logsumexp, _scale, _value

#: Classes per register block (the 8 accumulators of :func:`_dot8`).
CB = 8

# --------------------------------------------------------------------------
# Device functions
# --------------------------------------------------------------------------

@cuda.jit(device=True)
def _stage(W, b, sh, woff, c0, kc, n0, nc, KC, NC, zero):
    """Copy W[c0:c0+kc, n0:n0+nc] into ``sh[woff + k*NC + j]`` and b[c0:c0+kc]
    into ``sh[woff + KC*NC + k]``; rows kc..KC are zeroed (the last class
    block's padding then contributes exact zeros). Consecutive threads copy
    consecutive features of a row: coalesced."""
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    for q in range(tid, KC * nc, T):
        k = q // nc
        j = q - k * nc
        if k < kc:
            sh[woff + k * NC + j] = W[c0 + k, n0 + j]
        else:
            sh[woff + k * NC + j] = zero
    boff = woff + KC * NC
    for k in range(tid, KC, T):
        if k < kc:
            sh[boff + k] = b[c0 + k]
        else:
            sh[boff + k] = zero


@cuda.jit(device=True)
def _chunk(W, b, sh, woff, c0, n0, KC, NC, resident, zero):
    """Stage chunk (c0, n0) of W unless W is resident; returns ``(kc, nc)``.
    Every thread of the block calls it (it holds ``syncthreads``)."""
    C, N = W.shape
    kc = min(KC, C - c0)
    nc = min(NC, N - n0)
    if not resident:
        # Readers of the previous chunk are done before it is overwritten.
        cuda.syncthreads()
        _stage(W, b, sh, woff, c0, kc, n0, nc, KC, NC, zero)
        cuda.syncthreads()
    return kc, nc


@cuda.jit(device=True)
def _stage_resident(W, b, sh, woff, KC, NC, resident, zero):
    """Stage all of W once, before the block's first tile, when it fits."""
    if resident:
        C, N = W.shape
        _stage(W, b, sh, woff, 0, C, 0, N, KC, NC, zero)
        cuda.syncthreads()


@cuda.jit(device=True)
def _load_tile(f, sh, t0, npix, tiled, pitch):
    """Channels-last tile regime: copy the tile's feature rows into
    ``sh[r*pitch + n]`` (coalesced), after the previous tile's readers."""
    if tiled:
        cuda.syncthreads()
        tile_copy(f, sh, t0, min(cuda.blockDim.x, npix - t0), f.shape[1], pitch, True)
        cuda.syncthreads()


@cuda.jit(device=True)
def _feature(f, sh, o, n, i, fbase, tiled, ct):
    if tiled:
        return sh[fbase + n]
    return ct(f[o, n, i])


@cuda.jit(device=True)
def _fma8(sh, w, NC, x, a0, a1, a2, a3, a4, a5, a6, a7):
    """``a_k += W[k, j] x`` for the block's 8 classes (``w`` = offset of W[0, j])."""
    a0 += sh[w] * x
    a1 += sh[w + NC] * x
    a2 += sh[w + 2 * NC] * x
    a3 += sh[w + 3 * NC] * x
    a4 += sh[w + 4 * NC] * x
    a5 += sh[w + 5 * NC] * x
    a6 += sh[w + 6 * NC] * x
    a7 += sh[w + 7 * NC] * x
    return a0, a1, a2, a3, a4, a5, a6, a7


@cuda.jit(device=True)
def _bias8(sh, boff):
    return (sh[boff], sh[boff + 1], sh[boff + 2], sh[boff + 3], sh[boff + 4], sh[boff + 5],
            sh[boff + 6], sh[boff + 7])


@cuda.jit(device=True)
def _dot8(f, o, i, sh, fbase, tiled, wb, NC, n0, nc, a0, a1, a2, a3, a4, a5, a6, a7, cdt):
    """Add features n0 .. n0+nc of pixel (o, i) times the staged W rows of
    a class block (row offset ``wb``) to its 8 accumulators. Four feature
    loads are issued before their FMAs (four requests in flight)."""
    ct = cdt.dtype.type
    j = 0
    while j + 3 < nc:
        x0 = _feature(f, sh, o, n0 + j, i, fbase, tiled, ct)
        x1 = _feature(f, sh, o, n0 + j + 1, i, fbase, tiled, ct)
        x2 = _feature(f, sh, o, n0 + j + 2, i, fbase, tiled, ct)
        x3 = _feature(f, sh, o, n0 + j + 3, i, fbase, tiled, ct)
        a0, a1, a2, a3, a4, a5, a6, a7 = _fma8(sh, wb + j, NC, x0, a0, a1, a2, a3, a4, a5, a6,
                                               a7)
        a0, a1, a2, a3, a4, a5, a6, a7 = _fma8(sh, wb + j + 1, NC, x1, a0, a1, a2, a3, a4, a5,
                                               a6, a7)
        a0, a1, a2, a3, a4, a5, a6, a7 = _fma8(sh, wb + j + 2, NC, x2, a0, a1, a2, a3, a4, a5,
                                               a6, a7)
        a0, a1, a2, a3, a4, a5, a6, a7 = _fma8(sh, wb + j + 3, NC, x3, a0, a1, a2, a3, a4, a5,
                                               a6, a7)
        j += 4
    while j < nc:
        x = _feature(f, sh, o, n0 + j, i, fbase, tiled, ct)
        a0, a1, a2, a3, a4, a5, a6, a7 = _fma8(sh, wb + j, NC, x, a0, a1, a2, a3, a4, a5, a6, a7)
        j += 1
    return a0, a1, a2, a3, a4, a5, a6, a7


@cuda.jit(device=True)
def _fold1(m, s, comp, idx, zt, v, c, C, tv, inv_t, one, with_sum):
    """Fold logit ``v`` of class ``c`` (ignored past C); keep it as ``zt``
    when c is the target ``tv``."""
    if c < C:
        m, s, comp, idx = fold(m, s, comp, idx, v, c, inv_t, one, with_sum)
        if c == tv:
            zt = v
    return m, s, comp, idx, zt


@cuda.jit(device=True)
def _fold_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident, tv, inv_t,
               with_sum, cdt):
    """Logits of pixel (o, i) folded class block by class block into the
    online state; returns ``(max, exp-sum, first argmax, logit of class tv)``.
    Every thread calls it (staging); only ``ok`` threads compute."""
    ct = cdt.dtype.type
    zero = ct(0)
    one = ct(1)
    C, N = W.shape
    m = ct(-np.inf)
    s = -one  # the empty state: no maximum yet (.device.fold)
    comp = zero
    idx = int64(0)
    zt = zero
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    nsteps = max(1, (N + NC - 1) // NC)
    for c0 in range(0, C, KC):
        for step in range(nsteps):
            n0 = step * NC
            kc, nc = _chunk(W, b, sh, woff, c0, n0, KC, NC, resident, zero)
            if ok:
                for cb in range(0, kc, CB):
                    if step == 0:
                        a0, a1, a2, a3, a4, a5, a6, a7 = _bias8(sh, woff + KC * NC + cb)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _dot8(
                        f, o, i, sh, fbase, tiled, woff + cb * NC, NC, n0, nc,
                        a0, a1, a2, a3, a4, a5, a6, a7, cdt)
                    if step == nsteps - 1:
                        c = c0 + cb
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a0, c, C, tv, inv_t,
                                                     one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a1, c + 1, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a2, c + 2, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a3, c + 3, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a4, c + 4, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a5, c + 5, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a6, c + 6, C, tv,
                                                     inv_t, one, with_sum)
                        m, s, comp, idx, zt = _fold1(m, s, comp, idx, zt, a7, c + 7, C, tv,
                                                     inv_t, one, with_sum)
    return m, s - comp, idx, zt


@cuda.jit(device=True)
def _write1(out, o, i, v, c, C, m, g, inv_t, mode):
    if c < C:
        if mode == LOGITS:
            out[o, c, i] = v
        else:
            out[o, c, i] = _value(v, m, g, inv_t, mode)


@cuda.jit(device=True)
def _write_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident, out, m, g, inv_t,
                mode, cdt):
    """Logits of pixel (o, i) again, written as logits, softmax or
    log_softmax (``m`` and ``g`` from the fold pass) into ``out`` (outer, C, inner)."""
    ct = cdt.dtype.type
    zero = ct(0)
    C, N = W.shape
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    nsteps = max(1, (N + NC - 1) // NC)
    for c0 in range(0, C, KC):
        for step in range(nsteps):
            n0 = step * NC
            kc, nc = _chunk(W, b, sh, woff, c0, n0, KC, NC, resident, zero)
            if ok:
                for cb in range(0, kc, CB):
                    if step == 0:
                        a0, a1, a2, a3, a4, a5, a6, a7 = _bias8(sh, woff + KC * NC + cb)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _dot8(
                        f, o, i, sh, fbase, tiled, woff + cb * NC, NC, n0, nc,
                        a0, a1, a2, a3, a4, a5, a6, a7, cdt)
                    if step == nsteps - 1:
                        c = c0 + cb
                        _write1(out, o, i, a0, c, C, m, g, inv_t, mode)
                        _write1(out, o, i, a1, c + 1, C, m, g, inv_t, mode)
                        _write1(out, o, i, a2, c + 2, C, m, g, inv_t, mode)
                        _write1(out, o, i, a3, c + 3, C, m, g, inv_t, mode)
                        _write1(out, o, i, a4, c + 4, C, m, g, inv_t, mode)
                        _write1(out, o, i, a5, c + 5, C, m, g, inv_t, mode)
                        _write1(out, o, i, a6, c + 6, C, m, g, inv_t, mode)
                        _write1(out, o, i, a7, c + 7, C, m, g, inv_t, mode)


@cuda.jit(device=True)
def _grad1(v, c, C, tv, m, a, hit, epsc, w, gscale, zw, zero):
    """d loss / d z_c of logit ``v`` (0 past C), and ``zw += w_c (z_c - m)``
    (the smoothing term, relative to the max so a common offset cancels)."""
    if c >= C:
        return zero, zw
    wc = w[c]
    zw += wc * (v - m)
    g = math.exp(v - m) * a - epsc * wc
    if c == tv:
        g -= hit
    return g * gscale, zw


@cuda.jit(device=True)
def _grad_rows(grad, o, i, sh, wb, NC, n0, nc, g0, g1, g2, g3, g4, g5, g6, g7, first):
    """``grad[o, n, i] (+)= sum_k g_k W[k, n]`` over the staged features
    n0 .. n0+nc of a class block (``first``: the pixel's first block assigns)."""
    for j in range(nc):
        w = wb + j
        acc = (g0 * sh[w] + g1 * sh[w + NC] + g2 * sh[w + 2 * NC] + g3 * sh[w + 3 * NC]
               + g4 * sh[w + 4 * NC] + g5 * sh[w + 5 * NC] + g6 * sh[w + 6 * NC]
               + g7 * sh[w + 7 * NC])
        if first:
            grad[o, n0 + j, i] = acc
        else:
            grad[o, n0 + j, i] += acc


@cuda.jit(device=True)
def _grad_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident, grad, w, tv, m, a,
               hit, epsc, gscale, with_grad, cdt):
    """Second cross-entropy pass over pixel (o, i): returns
    ``zw = sum_c w_c (z_c - m)`` and, with ``with_grad``, writes the
    features' gradient ``W^T g`` (g = d loss / d z, 8 classes at a time in
    registers) into ``grad`` (outer, N, inner)."""
    ct = cdt.dtype.type
    zero = ct(0)
    C, N = W.shape
    zw = zero
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = zero
    nsteps = max(1, (N + NC - 1) // NC)
    for c0 in range(0, C, KC):
        for step in range(nsteps):
            n0 = step * NC
            kc, nc = _chunk(W, b, sh, woff, c0, n0, KC, NC, resident, zero)
            if ok:
                for cb in range(0, kc, CB):
                    if step == 0:
                        a0, a1, a2, a3, a4, a5, a6, a7 = _bias8(sh, woff + KC * NC + cb)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _dot8(
                        f, o, i, sh, fbase, tiled, woff + cb * NC, NC, n0, nc,
                        a0, a1, a2, a3, a4, a5, a6, a7, cdt)
                    if step == nsteps - 1:
                        c = c0 + cb
                        g0, zw = _grad1(a0, c, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g1, zw = _grad1(a1, c + 1, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g2, zw = _grad1(a2, c + 2, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g3, zw = _grad1(a3, c + 3, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g4, zw = _grad1(a4, c + 4, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g5, zw = _grad1(a5, c + 5, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g6, zw = _grad1(a6, c + 6, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        g7, zw = _grad1(a7, c + 7, C, tv, m, a, hit, epsc, w, gscale, zw, zero)
                        if with_grad and nsteps == 1:
                            # The chunk holds whole W rows: W^T g right away.
                            _grad_rows(grad, o, i, sh, woff + cb * NC, NC, 0, nc, g0, g1, g2,
                                       g3, g4, g5, g6, g7, c == 0)
        if with_grad and nsteps > 1:
            # Feature chunks (then KC == CB: one class block, its g in
            # registers): stage W's chunks again for W^T g.
            for step in range(nsteps):
                n0 = step * NC
                kc, nc = _chunk(W, b, sh, woff, c0, n0, KC, NC, resident, zero)
                if ok:
                    _grad_rows(grad, o, i, sh, woff, NC, n0, nc, g0, g1, g2, g3, g4, g5, g6, g7,
                               c0 == 0)
    return zw


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------

@cuda.jit(cache=True)
def head_expnorm(f, W, b, out, red, cdt, inv_t, mode, KC, NC, resident, tiled, pitch):
    """logits (``mode`` LOGITS), softmax, log_softmax (into ``out`` (outer,
    C, inner)) or logsumexp (into ``red`` (outer, inner)) of the head on
    features ``f`` (outer, N, inner); a thread per pixel, grid-stride over
    tiles of ``blockDim.x`` pixels. Dynamic shared memory: the feature tile
    (``tiled``: blockDim.x * pitch), then KC*NC weights and KC biases."""
    ct = cdt.dtype.type
    zero = ct(0)
    one = ct(1)
    nan = ct(np.nan)
    sh = cuda.shared.array(0, dtype=cdt.dtype)
    outer, N, inner = f.shape
    npix = outer * inner
    T = cuda.blockDim.x
    tid = cuda.threadIdx.x
    woff = T * pitch if tiled else 0
    fbase = tid * pitch
    _stage_resident(W, b, sh, woff, KC, NC, resident, zero)
    for t0 in range(cuda.blockIdx.x * T, npix, cuda.gridDim.x * T):
        p = t0 + tid
        ok = p < npix
        o = p // inner
        i = p - o * inner
        _load_tile(f, sh, t0, npix, tiled, pitch)
        if mode == LOGITS:
            _write_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident, out, zero,
                        one, inv_t, mode, cdt)
        else:
            m, s, idx, zt = _fold_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC,
                                       resident, int64(-1), inv_t, True, cdt)
            if mode == LOGSUMEXP:
                if ok:
                    red[o, i] = _logsumexp(m, s, inv_t)
            else:
                _write_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident, out, m,
                            _scale(m, s, mode, one, nan), inv_t, mode, cdt)


@cuda.jit(cache=True)
def head_argmax(f, W, b, labels, conf, cdt, inv_t, with_conf, KC, NC, resident, tiled, pitch):
    """Labels (and with ``with_conf`` the top-1 probability) of the head
    into ``labels`` / ``conf`` (outer, inner); see :func:`head_expnorm`."""
    ct = cdt.dtype.type
    zero = ct(0)
    one = ct(1)
    nan = ct(np.nan)
    sh = cuda.shared.array(0, dtype=cdt.dtype)
    outer, N, inner = f.shape
    npix = outer * inner
    T = cuda.blockDim.x
    tid = cuda.threadIdx.x
    woff = T * pitch if tiled else 0
    fbase = tid * pitch
    _stage_resident(W, b, sh, woff, KC, NC, resident, zero)
    for t0 in range(cuda.blockIdx.x * T, npix, cuda.gridDim.x * T):
        p = t0 + tid
        ok = p < npix
        o = p // inner
        i = p - o * inner
        _load_tile(f, sh, t0, npix, tiled, pitch)
        m, s, idx, zt = _fold_pass(f, W, b, sh, o, i, ok, fbase, tiled, woff, KC, NC, resident,
                                   int64(-1), inv_t, with_conf, cdt)
        if ok:
            labels[o, i] = idx
            if with_conf:
                conf[o, i] = _confidence(m, s, one, nan)


@cuda.jit(cache=True)
def head_xent(f, W, b, t, w, loss, grad, partial, flag, cdt, ignore, eps, epsc, wsum, gscale,
              with_loss, with_grad, KC, NC, resident, tiled, pitch):
    """Cross-entropy of the head against targets ``t`` (outer, inner): the
    per-pixel ``loss`` (with ``with_loss``), the gradient w.r.t. the
    features into ``grad`` (outer, N, inner; compute dtype), per-block sums
    of losses and target weights into ``partial[0 / 1, block]``; bad
    targets set ``flag``. Semantics as :func:`.losses.cross_entropy_pixels`."""
    ct = cdt.dtype.type
    zero = ct(0)
    one = ct(1)
    nan = ct(np.nan)
    sh = cuda.shared.array(0, dtype=cdt.dtype)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, N, inner = f.shape
    C = W.shape[0]
    npix = outer * inner
    T = cuda.blockDim.x
    tid = cuda.threadIdx.x
    woff = T * pitch if tiled else 0
    fbase = tid * pitch
    need2 = with_grad or eps > zero
    keep = one - eps
    acc_l = zero
    acc_w = zero
    _stage_resident(W, b, sh, woff, KC, NC, resident, zero)
    for t0 in range(cuda.blockIdx.x * T, npix, cuda.gridDim.x * T):
        p = t0 + tid
        ok = p < npix
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i]) if ok else ignore
        valid = ok and tv != ignore and 0 <= tv < C
        if ok and tv != ignore and not valid:
            raise_flag(flag, BAD_TARGET, p)
        _load_tile(f, sh, t0, npix, tiled, pitch)
        m, s, idx, zt = _fold_pass(f, W, b, sh, o, i, valid, fbase, tiled, woff, KC, NC,
                                   resident, tv, one, True, cdt)
        wt = w[tv] if valid else zero
        zw = zero
        if need2:
            a = nan
            if valid and is_finite(m):
                a = (keep * wt + epsc * wsum) / (one + s)
            zw = _grad_pass(f, W, b, sh, o, i, valid, fbase, tiled, woff, KC, NC, resident, grad,
                            w, tv, m, a, keep * wt, epsc, gscale, with_grad, cdt)
        if valid:
            lp = _pixel_loss(m, s, zt, wt, zw, eps, epsc, wsum, one, zero, nan)
            if with_loss:
                loss[o, i] = lp
            acc_l += lp
            acc_w += wt
        elif ok and tv == ignore:
            if with_loss:
                loss[o, i] = zero
            if with_grad:
                for n in range(N):
                    grad[o, n, i] = zero
    tot_l = block_total(acc_l, sm)
    tot_w = block_total(acc_w, sm)
    if tid == 0:
        partial[0, cuda.blockIdx.x] = tot_l
        partial[1, cuda.blockIdx.x] = tot_w


@cuda.jit(cache=True)
def head_confusion(f, W, b, t, counts, flag, cdt, ignore, use_shared, KC, NC, resident, tiled,
                   pitch):
    """Add each pixel's (target, head label) pair to ``counts`` (C, C)
    int64, through a per-block int32 shared histogram when ``use_shared``
    (C * C <= SHARED_BINS); no label map is written."""
    ct = cdt.dtype.type
    zero = ct(0)
    one = ct(1)
    hist = cuda.shared.array(SHARED_BINS, dtype=int32)
    sh = cuda.shared.array(0, dtype=cdt.dtype)
    outer, N, inner = f.shape
    C = W.shape[0]
    npix = outer * inner
    T = cuda.blockDim.x
    tid = cuda.threadIdx.x
    woff = T * pitch if tiled else 0
    fbase = tid * pitch
    if use_shared:
        clear_hist(hist, C, tid, T)
    _stage_resident(W, b, sh, woff, KC, NC, resident, zero)
    for t0 in range(cuda.blockIdx.x * T, npix, cuda.gridDim.x * T):
        p = t0 + tid
        ok = p < npix
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i]) if ok else ignore
        valid = ok and tv != ignore and 0 <= tv < C
        if ok and tv != ignore and not valid:
            raise_flag(flag, BAD_TARGET, p)
        _load_tile(f, sh, t0, npix, tiled, pitch)
        m, s, idx, zt = _fold_pass(f, W, b, sh, o, i, valid, fbase, tiled, woff, KC, NC,
                                   resident, int64(-1), one, False, cdt)
        if valid:
            count_pair(hist, counts, C, tv, idx, use_shared)
    if use_shared:
        flush_hist(hist, counts, C, tid, T)


@cuda.jit(cache=True)
def cast3(src, dst):
    """``dst[...] = src`` converting the dtype (3-D, grid-stride)."""
    d0, d1, d2 = dst.shape
    for k in range(cuda.grid(1), d0 * d1 * d2, cuda.gridsize(1)):
        a = k // (d1 * d2)
        r = k - a * (d1 * d2)
        c = r // d2
        dst[a, c, r - c * d2] = src[a, c, r - c * d2]
