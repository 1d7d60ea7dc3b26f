"""The fused linear head on the GPU: z = W f + b per pixel, never stored.

Called by :class:`fastlogits.head.LinearHead` as ``name(head, f, fv,
**options)`` (``fv`` the validated features, arguments checked there);
paired with :mod:`fastlogits.cpu.ops.head`.

Kernel design (one design for every op):

- W and b are staged in shared memory (compute dtype) by the whole block,
  with coalesced loads. When all of W fits in ``CUDA_HEAD_SHARED_BYTES``
  it is staged once per block ("resident") and serves every tile of pixels
  the block visits; otherwise the kernels loop over chunks of ``KC``
  classes (and, for very long feature vectors, ``NC`` features) staged one
  after the other, carrying each pixel's state across chunks.
- A tile of ``blockDim.x`` pixels per block, a thread per pixel: each
  thread computes its pixel's logits CB = 8 classes at a time in
  registers (every feature value loaded once feeds 8 FMAs; the 8 weights
  come from shared memory as broadcasts: all threads of a warp read the
  same address), and folds them straight into the epilogue state
  ``(max, exp-sum, argmax)`` of :func:`fastlogits.cuda.device.fold`. The
  (..., C) logits never exist in memory; only :func:`logits` writes z.
- Features: channels-first (outer, N, inner) is read in place, consecutive
  threads reading consecutive pixels of one feature plane (coalesced).
  Channels-last (rows, N, 1) is first copied tile by tile into shared
  memory with :func:`fastlogits.cuda.device.tile_copy` (coalesced, odd row
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
instruction (tests/test_cuda_ptx.py).
"""

import math

import numpy as np
from numba import cuda, int32, int64

from fastlogits import _checks as chk
from fastlogits import _layout, tuning
from fastlogits.cuda import ops, runtime, scratch
from fastlogits.cuda.argmax import _confidence
from fastlogits.cuda.device import MAX_THREADS, WARP, block_total, fold, is_finite, tile_copy
from fastlogits.cuda.errflag import ErrorFlag, raise_flag
from fastlogits.cuda.losses import (BAD_TARGET, SHARED_BINS, _pixel_loss, clear_hist, count_pair,
                                    flush_hist, shared_histogram)
from fastlogits.cuda.softmax import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX, _logsumexp, _scale, _value

#: ``mode`` of :func:`head_expnorm` besides softmax's three: the plain logits.
LOGITS = 3

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


# --------------------------------------------------------------------------
# Host side: launch plan, parameters
# --------------------------------------------------------------------------

class HeadPlan:
    """Launch configuration of the head kernels for one call.

    Attributes: ``blocks``, ``threads`` (pixels per tile), ``shared_bytes``
    (dynamic), ``KC`` / ``NC`` (classes / features per staged W chunk),
    ``resident`` (all of W staged once per block), ``tiled`` (channels-last
    features through a shared tile), ``pitch`` (its row pitch).
    """

    def __init__(self, blocks, threads, shared_bytes, KC, NC, resident, tiled, pitch):
        self.blocks = blocks
        self.threads = threads
        self.shared_bytes = shared_bytes
        self.KC = KC
        self.NC = NC
        self.resident = resident
        self.tiled = tiled
        self.pitch = pitch

    @property
    def args(self):
        """The trailing kernel arguments."""
        return (self.KC, self.NC, self.resident, self.tiled, self.pitch)

    def __repr__(self):
        return (f"HeadPlan(blocks={self.blocks}, threads={self.threads}, "
                f"shared_bytes={self.shared_bytes}, KC={self.KC}, NC={self.NC}, "
                f"resident={self.resident}, tiled={self.tiled}, pitch={self.pitch})")


def shared_budget():
    """Bytes of dynamic shared memory per block for W, b and the
    channels-last feature tile (``tuning.current().cuda.head_shared_bytes``). With the
    static scratch of the loss (8 KiB) or confusion (16 KiB) kernels the
    default, 32 KiB, stays within the 48 KiB every GPU grants without an
    opt-in."""
    return int(tuning.current().cuda.head_shared_bytes)


def plan(shape3, C, itemsize):
    """The :class:`HeadPlan` for features (outer, N, inner) and C classes
    computed in ``itemsize``-byte floats, from the current config.

    W is resident when its KC = C rounded up to 8 rows fit; else chunks of
    as many 8-row class blocks as fit, with whole rows; else (huge N) one
    class block at a time over chunks of NC features. Channels-last
    features get a shared tile of 32 or more rows when it fits beside all
    of W, or beside one class block.
    """
    outer, N, inner = shape3
    T = ops._threads_per_block()
    E = shared_budget() // itemsize
    Cr = -(-C // CB) * CB
    Nk = max(N, 1)
    threads, tiled, pitch, FT = T, False, 1, 0
    if inner == 1 and N > 0:
        # The tile must not cost W its residency: beside all of W when W
        # fits, else beside one class block (W is chunked anyway).
        rows = Cr if Cr * (Nk + 1) <= E else CB
        P = min(T, (E - rows * (Nk + 1)) // (N | 1) // WARP * WARP)
        if P >= WARP:
            pitch = N | 1  # odd: a warp's rows start in distinct banks
            threads, tiled, FT = P, True, P * pitch
    rest = E - FT
    KC = rest // (Nk + 1) // CB * CB
    if KC >= CB:
        KC, NC = min(KC, Cr), Nk
    else:
        KC, NC = CB, min(Nk, (rest - CB) // CB)
    if NC < 1:
        raise ValueError(
            f"tuning.current().cuda.head_shared_bytes={shared_budget()} is too small for the linear head: "
            f"it must hold at least {2 * CB * itemsize} bytes")
    resident = KC >= C and NC >= N
    elems = FT + KC * NC + KC
    return HeadPlan(ops._blocks(outer * inner, threads), threads, elems * itemsize, KC, NC,
                    resident, tiled, pitch)


def _plan(fv):
    return plan(_layout.split_shape(fv.shape, fv.axis), fv.C, fv.compute_dtype.itemsize)


def _device_param(caller, a, shape, cd):
    """A C-contiguous device array of ``a`` (host or GPU) in the compute
    dtype ``cd``: a view of a GPU array that already is one, else a copy
    (C*N values: small next to the features)."""
    if runtime.library(a) == "host":
        return caller.to_device(np.ascontiguousarray(np.asarray(a), dtype=cd).reshape(shape))
    dev = runtime.as_device(a)
    if dev.dtype == cd and dev.is_c_contiguous():
        return dev
    dst = cuda.device_array(shape, cd, stream=caller.stream)
    pad = (1,) * (3 - len(shape))
    src3 = runtime.reshape(dev, pad + tuple(shape))
    if src3 is None:  # strides that forbid a view: a contiguous copy first
        _, tmp = caller.contiguous(dev)
        src3 = runtime.reshape(tmp, pad + tuple(shape))
    cast3[ops._blocks(int(np.prod(shape)), 256), 256, caller.stream](
        src3, runtime.reshape(dst, pad + tuple(shape)))
    return dst


def _params(head, caller, cd):
    """``(W, b)`` on the device in the compute dtype (b zeros without bias)."""
    C, N = head.weight_shape
    W = _device_param(caller, head.weight, (C, N), cd)
    if head.bias is None:
        b = caller.to_device(np.zeros(C, cd))
    else:
        b = _device_param(caller, head.bias, (C,), cd)
    return W, b


def _launch(kernel, p, caller, *args):
    runtime.launch(kernel, p.blocks, p.threads, caller.stream, p.shared_bytes, *args, *p.args)


# --------------------------------------------------------------------------
# Host side: the ops (arguments validated by fastlogits.head)
# --------------------------------------------------------------------------

def _expnorm(mode, head, f, fv, temperature, out):
    inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
    caller = runtime.Caller(f)
    reduces = mode == LOGSUMEXP
    shape = fv.reduced_shape if reduces else fv.class_shape
    out = ops._check_out(caller, fv, out, shape, fv.dtype, "out")
    with caller.activate():
        res = ops._Output(caller, out, shape, fv.dtype)
        if not fv.empty:
            outer, N, inner = _layout.split_shape(fv.shape, fv.axis)
            f3 = ops._input3(caller, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            if reduces:
                out3 = runtime.stand_in(fv.dtype, 3)
                red2 = res.view((outer, inner))
            else:
                out3 = res.view((outer, fv.C, inner))
                red2 = runtime.stand_in(fv.dtype, 2)
            _launch(head_expnorm, _plan(fv), caller, f3, W, b, out3, red2, ops._cdt(fv), inv_t,
                    mode)
        return ops._finish(caller, [res])[0]


def logits(head, f, fv, out=None):
    """CUDA :meth:`fastlogits.LinearHead.logits`: ``z = W f + b`` materialized.

    Parameters
    ----------
    head : LinearHead
    f : array_like or GPU array
        The features as the caller gave them.
    fv : fastlogits.head._Features
        Their validation.
    out : GPU array or ndarray, optional
        f's shape with N replaced by C, f's dtype.

    Returns
    -------
    array
        In the caller's library (NumPy for a host input).
    """
    return _expnorm(LOGITS, head, f, fv, 1.0, out)


def softmax(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.softmax` (parameters as :func:`logits`)."""
    return _expnorm(SOFTMAX, head, f, fv, temperature, out)


def log_softmax(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.log_softmax` (parameters as :func:`logits`)."""
    return _expnorm(LOG_SOFTMAX, head, f, fv, temperature, out)


def logsumexp(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.logsumexp`; ``out`` has f's shape
    without the feature axis."""
    return _expnorm(LOGSUMEXP, head, f, fv, temperature, out)


def _labels_conf(head, f, fv, temperature, labels, conf, with_conf):
    inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
    caller = runtime.Caller(f)
    labels = ops._check_out(caller, fv, labels, fv.reduced_shape, fv.C - 1,
                            "out[0] (labels)" if with_conf else "out", kind="label")
    if with_conf:
        conf = ops._check_out(caller, fv, conf, fv.reduced_shape, fv.compute_dtype,
                              "out[1] (confidence)")
        ops._check_pairwise([labels, conf], ["out[0] (labels)", "out[1] (confidence)"])
    with caller.activate():
        outputs = [ops._Output(caller, labels, fv.reduced_shape, np.int64)]
        if with_conf:
            outputs.append(ops._Output(caller, conf, fv.reduced_shape, fv.compute_dtype))
        if not fv.empty:
            outer, N, inner = _layout.split_shape(fv.shape, fv.axis)
            f3 = ops._input3(caller, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            lab2 = outputs[0].view((outer, inner))
            conf2 = (outputs[1].view((outer, inner)) if with_conf
                     else runtime.stand_in(fv.compute_dtype, 2))
            _launch(head_argmax, _plan(fv), caller, f3, W, b, lab2, conf2, ops._cdt(fv), inv_t,
                    with_conf)
        return ops._finish(caller, outputs)


def argmax(head, f, fv, out=None):
    """CUDA :meth:`fastlogits.LinearHead.argmax`: int64 labels (or ``out``)."""
    return _labels_conf(head, f, fv, 1.0, out, None, False)[0]


def classify(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.classify`: ``(labels, confidence)``."""
    labels, conf = out if out is not None else (None, None)
    return tuple(_labels_conf(head, f, fv, temperature, labels, conf, True))


def cross_entropy(head, f, fv, *, target, class_weight, ignore_index, label_smoothing,
                  reduction, return_grad):
    """CUDA :meth:`fastlogits.LinearHead.cross_entropy`.

    Returns the loss (float64 scalar for "mean" / "sum", the per-pixel
    losses in the compute dtype for "none", in the caller's library) and,
    with ``return_grad``, the gradient w.r.t. the features (f's shape and
    dtype; 0 at ignored pixels). A "mean" gradient first sums the target
    weights (one read of the targets, one sync); bad targets raise the
    CPU backend's ``ValueError`` (waits for the caller's stream).
    """
    from fastlogits.cuda import losses as kl

    caller = runtime.Caller(f)
    cd = fv.compute_dtype
    ct = cd.type
    with caller.activate():
        loss_out = (ops._Output(caller, None, fv.reduced_shape, cd)
                    if reduction == "none" else None)
        grad_out = ops._Output(caller, None, fv.shape, fv.dtype) if return_grad else None
        outputs = [o for o in (loss_out, grad_out) if o is not None]
        if fv.empty:
            total = np.float64(0.0) if reduction == "sum" else np.float64(np.nan)
            res = ops._finish(caller, outputs)
            result = res.pop(0) if reduction == "none" else total
            return (result, res[0]) if return_grad else result
        outer, N, inner = shape3 = _layout.split_shape(fv.shape, fv.axis)
        C = fv.C
        f3 = ops._input3(caller, fv)
        t2 = kl._target2(caller, target, fv)
        w, wsum = kl._weights(caller, class_weight, fv)
        cdt = ops._cdt(fv)
        flag = ErrorFlag(caller.stream)
        ws = scratch.get(caller.stream)
        gscale = 1.0
        if return_grad and reduction == "mean":
            # The gradient is scaled by 1 / sum(w[t]): known before it is written.
            T = ops._threads_per_block()
            blocks = ops._blocks(outer * inner, T)
            partial = ws.partial(cd, 1, blocks)
            runtime.launch(kl.target_weights, blocks, T, caller.stream, 0, t2, w, partial,
                           flag.array, cdt, ignore_index, C)
            kl._check_flag(flag, target, fv, ignore_index)
            total_weight = kl._host_sum(partial, caller)[0]
            gscale = math.inf if total_weight == 0 else 1.0 / total_weight
        W, b = _params(head, caller, cd)
        p = _plan(fv)
        loss2 = runtime.stand_in(cd, 2) if loss_out is None else loss_out.view((outer, inner))
        if not return_grad:
            grad3 = runtime.stand_in(cd, 3)
        elif fv.dtype == cd:
            grad3 = grad_out.view(shape3)
        else:
            # float16 features: the gradient adds up in float32, stored once.
            _, grad3 = caller.empty(shape3, cd)
        partial = ws.partial(cd, 2, p.blocks)
        eps = float(label_smoothing)
        _launch(head_xent, p, caller, f3, W, b, t2, w, loss2, grad3, partial, flag.array, cdt,
                ignore_index, ct(eps), ct(eps / C), ct(wsum), ct(gscale),
                loss_out is not None, return_grad)
        if return_grad and fv.dtype != cd and grad3.size:
            cast3[ops._blocks(grad3.size, 256), 256, caller.stream](grad3,
                                                                  grad_out.view(shape3))
        loss_sum, weight_sum = kl._wait_totals(ws, partial, flag, target, fv, ignore_index)
        res = ops._finish(caller, outputs)
    if reduction == "none":
        result = res.pop(0)
    elif reduction == "sum":
        result = np.float64(loss_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, res[0]) if return_grad else result


def confusion_matrix(head, f, fv, *, target, ignore_index, out=None):
    """CUDA :meth:`fastlogits.LinearHead.confusion_matrix`: (C, C) int64
    counts (rows the target, columns the head's label), added to ``out``
    only once the targets were found valid."""
    from fastlogits import _checks as chk
    from fastlogits.cuda import losses as kl

    C = fv.C
    caller = runtime.Caller(f)
    out = ops._check_out(caller, fv, out, (C, C), np.int64, "out")
    with caller.activate():
        counts_obj, counts = caller.empty((C, C), np.int64, zero=True)
        if not fv.empty:
            f3 = ops._input3(caller, fv)
            t2 = kl._target2(caller, target, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            flag = ErrorFlag(caller.stream)
            _launch(head_confusion, _plan(fv), caller, f3, W, b, t2, counts, flag.array,
                    ops._cdt(fv), ignore_index, shared_histogram(C))
            kl._check_flag(flag, target, fv, ignore_index)
        if out is None and caller.gpu:
            return counts_obj
        if chk.is_gpu_array(out):
            kl.add_into[ops._blocks(C * C, 256), 256, caller.stream](runtime.as_device(out),
                                                                    counts)
            return out
        host = counts.copy_to_host(stream=caller.stream)
        caller.stream.synchronize()
        if out is None:
            return host
        out += host
        return out


# --------------------------------------------------------------------------
# Signatures (for the PTX test: compile every kernel without a GPU)
# --------------------------------------------------------------------------

def kernel_signatures():
    """``[(name, kernel, argtypes, single_precision)]`` for the head kernels
    as the host side launches them: features float16/32/64 (C-contiguous)
    and float32 strided ('A') views, weights in the compute dtype."""
    from numba import types

    i64, b1 = types.int64, types.boolean
    tail = (i64, i64, b1, b1, i64)
    sigs = []
    variants = [(types.float16, "C", types.int64), (types.float32, "C", types.int64),
                (types.float64, "C", types.int64), (types.float32, "A", types.uint8)]
    for ft, layout, lt in variants:
        ct = types.float64 if ft == types.float64 else types.float32
        single = ct == types.float32

        def arr(dt, nd, lay=layout):
            return types.Array(dt, nd, lay)

        tag = f"{ft}-{layout}"
        wb = (arr(ct, 2, "C"), arr(ct, 1, "C"))
        cdt = arr(ct, 1, "C")
        sigs += [
            (f"head_expnorm[{tag}]", head_expnorm,
             (arr(ft, 3),) + wb + (arr(ft, 3), arr(ft, 2), cdt, ct, i64) + tail, single),
            (f"head_argmax[{tag}-{lt}]", head_argmax,
             (arr(ft, 3),) + wb + (arr(lt, 2), arr(ct, 2), cdt, ct, b1) + tail, single),
            (f"head_xent[{tag}-{lt}]", head_xent,
             (arr(ft, 3),) + wb + (arr(lt, 2), arr(ct, 1, "C"), arr(ct, 2), arr(ct, 3),
                                   arr(ct, 2, "C"), arr(i64, 1, "C"), cdt, i64, ct, ct, ct, ct,
                                   b1, b1) + tail, single),
            (f"head_confusion[{tag}-{lt}]", head_confusion,
             (arr(ft, 3),) + wb + (arr(lt, 2), types.Array(i64, 2, "C"), arr(i64, 1, "C"), cdt,
                                   i64, b1) + tail, single),
        ]
    for src, dst in ((types.float64, types.float32), (types.float16, types.float32),
                     (types.float32, types.float16)):
        sigs.append((f"cast3[{src}->{dst}]", cast3,
                     (types.Array(src, 3, "A"), types.Array(dst, 3, "C")),
                     types.float64 not in (src, dst)))
    return sigs
