"""The fused linear head on the CPU: z = W f + b per pixel, never stored.

Per tile of P pixels the matvec goes into a (1, C, P) scratch ``z`` (C
logits of P pixels, pixels contiguous, in L1/L2), and the same tile
epilogues as the core ops run on it (softmax's, argmax's, the losses' and
the confusion matrix's tile functions). The (..., C) logits tensor never
exists; the extra memory is a few scratch tiles per thread.

The matmul micro-kernels are register-blocked so each value loaded feeds
several FMAs; the Numba ones index C-contiguous flat arrays with explicit
offsets (sliced 'A'-layout views do not vectorize in Numba) and clamp
every row offset with ``max(offset, 0)``: Numba wraps negative
indices, and only an index LLVM can prove non-negative lets it drop that
select and vectorize the loop (``x[i0 + p]`` with an unknown-sign ``i0``
stays scalar).

- Outer-product form, channels-first features ``f (outer, N, inner)``: a
  feature row of the tile is contiguous, so ``z[c, p] += W[c, n] f[n, p]``
  runs across pixels with no copy, in panels of K_PANEL features that
  stay in L1 while every class block uses them (:func:`_gemm_panels`).
  Blocks of OUTER_CLASSES x OUTER_PIXELS (10 x 32 with AVX-512, 6 x 16
  with AVX2) go through the LLVM-IR micro-kernel
  :func:`fastlogits.cpu.blocks.microkernels.outer_block` (20 or 12 vector sums
  held in registers over the panel); the pixels left over, through
  :func:`gemm_rows`: ``out[m, :] += A[m, k] B[k, :]``, the inner loop
  elementwise along contiguous rows (which also turns the logits'
  gradient g (C, P) into the features' gradient W^T g, for both layouts).
- :func:`gemm_dot` (dot form): channels-last features ``f (rows, N)``:
  a pixel's N features are contiguous, as are W's rows, so
  ``z[c, p] = sum_n W[c, n] f[p, n]`` is a dot product along n,
  DOT_CLASSES x DOT_PIXELS at once (4 x 4 with AVX-512, 4 x 2 with AVX2;
  :func:`fastlogits.cpu.blocks.microkernels.dot_block`: 16 vector sums and 8
  loads per 16 FMAs, or 8 and 6 per 8, then one transpose-add tree).
  When N is a multiple of one vector, W is copied to the feature rows'
  offset in a 64-byte line (:func:`dot_weights`) so every load of the
  main loop is aligned (``dot_block_aligned``).
- Channels-last with N small next to C (:func:`fastlogits.cpu.plan.cl_dot_form`): the tile's
  rows are transposed into an (N, P) scratch (:func:`load_transposed`) and
  the outer-product form runs on it.

Accuracy: sums run in the compute precision (float32 for float16/float32
features, float64 for float64), so ``|z - z_exact| <= (N + 2) u
(|b_c| + sum_n |W_cn f_n|)`` to first order, with u = 2**-24 (float32) or
2**-53 (float64): the standard bound of a length-N dot product in any
summation order (+1 for the bias, +1 for rounding float64 weights to
float32); the typical error is about ``sqrt(N) u`` times that sum.

The product is sized for segmentation heads, whose W fits in L1/L2 (C·N·4
bytes up to a few hundred KiB, e.g. 150 x 512): every tile reads all of W.
Much larger heads (a vocabulary of 32k classes) stay correct but re-read W
from L3 or memory for every tile.

Drivers (called from :mod:`fastlogits.head` with validated, flat,
C-contiguous arrays; features with dims ``(outer, N, inner)``, ``inner ==
1`` being channels-last): :func:`head_expnorm` (logits, softmax,
log_softmax, logsumexp), :func:`head_argmax` (argmax, classify),
:func:`head_xent` (cross-entropy and its gradient w.r.t. the features),
:func:`head_confusion`.
"""

import numpy as np
from numba import njit

from fastlogits._modes import LOGITS, LOGSUMEXP
from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.microkernels import (DOT_CLASSES, DOT_PIXELS, OUTER_CLASSES, OUTER_PIXELS,
                                                VECTOR_BYTES, address_of, dot_block, dot_block_aligned,
                                                outer_block)
from fastlogits.cpu.blocks.tiles import chunk_bounds, load_transposed, tile_argmax, work_chunks
from fastlogits.cpu.llvm.alloc import empty, zeros
from fastlogits.cpu.llvm.prefetch import no_region, prefetch
from fastlogits.cpu.ops.argmax import _tile as _argmax_tile
from fastlogits.cpu.ops.confusion import _count
from fastlogits.cpu.ops.losses import _scratch as _loss_scratch
from fastlogits.cpu.ops.losses import put_row
from fastlogits.cpu.ops.losses import _tile_grad, _tile_losses, loss_coefs
from fastlogits.cpu.ops.softmax import _lse
from fastlogits.cpu.ops.softmax import _tile as _expnorm_tile

#: ``init`` of :func:`gemm_rows`.
INIT_ADD = 0
INIT_BIAS = 1
INIT_ZERO = 2

#: Features per panel of the channels-first product: the panel's K_PANEL
#: feature rows of the tile stay in L1 while every class block uses them
#: (with the (C, P) logits tile beside them), so each feature value comes
#: from memory once and from L1 after that.
K_PANEL = 16

#: Channels-last product: the features of the pixels this far ahead are
#: prefetched while the current block of 4 is computed.
PREFETCH_PIXELS = 8

#: Channels-last dot form: W is copied to match the features' alignment
#: (:func:`dot_weights`) up to this many weights (4 MiB of float32); a
#: larger head is read from L3 or memory anyway.
DOT_ALIGN_MAX_WEIGHTS = 1 << 20


# --------------------------------------------------------------------------
# matmul micro-kernels
# --------------------------------------------------------------------------

@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def gemm_rows(A, a0, sam, sak, M, K, B, b0, sbk, out, o0, som, J, init, bias):
    """``out[o0 + m*som + j] (+)= sum_k A[a0 + m*sam + k*sak] * B[b0 + k*sbk + j]``
    for m < M, j < J. ``init``: ``INIT_ADD`` adds to out, ``INIT_BIAS``
    starts from ``bias[m]``, ``INIT_ZERO`` from 0.

    A, B, out: flat C-contiguous arrays. Blocks of 4 rows m x 4 terms k:
    16 scalars of A stay in registers while the loop over j (contiguous in
    B and out) runs 4 loads of B, 4 load-adds-stores of out and 16 FMAs per
    vector. The 4 rows of out being updated stay in L1.
    """
    zero = out.dtype.type(0.0)
    M4 = M - M % 4
    K4 = K - K % 4
    for m0 in range(0, M4, 4):
        oo0 = max(o0 + m0 * som, 0)
        oo1 = max(oo0 + som, 0)
        oo2 = max(oo1 + som, 0)
        oo3 = max(oo2 + som, 0)
        ao0 = a0 + m0 * sam
        ao1 = ao0 + sam
        ao2 = ao1 + sam
        ao3 = ao2 + sam
        if init != INIT_ADD:
            c0 = bias[m0] if init == INIT_BIAS else zero
            c1 = bias[m0 + 1] if init == INIT_BIAS else zero
            c2 = bias[m0 + 2] if init == INIT_BIAS else zero
            c3 = bias[m0 + 3] if init == INIT_BIAS else zero
            for j in range(J):
                out[oo0 + j] = c0
                out[oo1 + j] = c1
                out[oo2 + j] = c2
                out[oo3 + j] = c3
        for k0 in range(0, K4, 4):
            ka = k0 * sak
            w00 = A[ao0 + ka]
            w01 = A[ao0 + ka + sak]
            w02 = A[ao0 + ka + 2 * sak]
            w03 = A[ao0 + ka + 3 * sak]
            w10 = A[ao1 + ka]
            w11 = A[ao1 + ka + sak]
            w12 = A[ao1 + ka + 2 * sak]
            w13 = A[ao1 + ka + 3 * sak]
            w20 = A[ao2 + ka]
            w21 = A[ao2 + ka + sak]
            w22 = A[ao2 + ka + 2 * sak]
            w23 = A[ao2 + ka + 3 * sak]
            w30 = A[ao3 + ka]
            w31 = A[ao3 + ka + sak]
            w32 = A[ao3 + ka + 2 * sak]
            w33 = A[ao3 + ka + 3 * sak]
            bo0 = max(b0 + k0 * sbk, 0)
            bo1 = max(bo0 + sbk, 0)
            bo2 = max(bo1 + sbk, 0)
            bo3 = max(bo2 + sbk, 0)
            for j in range(J):
                x0 = B[bo0 + j]
                x1 = B[bo1 + j]
                x2 = B[bo2 + j]
                x3 = B[bo3 + j]
                out[oo0 + j] += w00 * x0 + w01 * x1 + w02 * x2 + w03 * x3
                out[oo1 + j] += w10 * x0 + w11 * x1 + w12 * x2 + w13 * x3
                out[oo2 + j] += w20 * x0 + w21 * x1 + w22 * x2 + w23 * x3
                out[oo3 + j] += w30 * x0 + w31 * x1 + w32 * x2 + w33 * x3
        for k in range(K4, K):
            ka = k * sak
            w0 = A[ao0 + ka]
            w1 = A[ao1 + ka]
            w2 = A[ao2 + ka]
            w3 = A[ao3 + ka]
            bo = max(b0 + k * sbk, 0)
            for j in range(J):
                x = B[bo + j]
                out[oo0 + j] += w0 * x
                out[oo1 + j] += w1 * x
                out[oo2 + j] += w2 * x
                out[oo3 + j] += w3 * x
    for m in range(M4, M):
        oo = max(o0 + m * som, 0)
        ao = a0 + m * sam
        if init != INIT_ADD:
            c = bias[m] if init == INIT_BIAS else zero
            for j in range(J):
                out[oo + j] = c
        for k0 in range(0, K4, 4):
            ka = k0 * sak
            w0 = A[ao + ka]
            w1 = A[ao + ka + sak]
            w2 = A[ao + ka + 2 * sak]
            w3 = A[ao + ka + 3 * sak]
            bo0 = max(b0 + k0 * sbk, 0)
            bo1 = max(bo0 + sbk, 0)
            bo2 = max(bo1 + sbk, 0)
            bo3 = max(bo2 + sbk, 0)
            for j in range(J):
                out[oo + j] += w0 * B[bo0 + j] + w1 * B[bo1 + j] + w2 * B[bo2 + j] + w3 * B[bo3 + j]
        for k in range(K4, K):
            w = A[ao + k * sak]
            bo = max(b0 + k * sbk, 0)
            for j in range(J):
                out[oo + j] += w * B[bo + j]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def gemm_dot(W, b, C, N, f, f0, P, z, zs, Wd, wd0, n0):
    """``z[c*zs + p] = b[c] + sum_n W[c*N + n] * f[f0 + p*N + n]`` for c < C, p < P.

    Channels-last logits of P pixels: dot products along the contiguous
    feature axis, DOT_CLASSES x DOT_PIXELS per micro-kernel (one vector
    sum each, one transpose-add tree at the end; the pixels' feature rows
    and W stay in L1). The last class block is full too: its missing
    classes repeat class C - 1 and are not stored. With ``n0 >= 0`` the
    aligned micro-kernel runs on the copy ``Wd[wd0:]`` of W from
    :func:`dot_weights`.
    """
    zero = z.dtype.type(0.0)
    P4 = P - P % DOT_PIXELS
    line = 64 // f.itemsize
    # The feature rows of the block PREFETCH_PIXELS pixels ahead are
    # prefetched a share at a time, before each class block: issued in one
    # burst they fill the line-fill buffers and stall the loads of the
    # running block (see prefetch.py).
    nblocks = (C + DOT_CLASSES - 1) // DOT_CLASSES
    pf_step = line * max((DOT_PIXELS * N + line * nblocks - 1) // (line * nblocks), 1)
    for p0 in range(0, P4, DOT_PIXELS):
        pf = f0 + (p0 + PREFETCH_PIXELS) * N
        pf_end = pf + DOT_PIXELS * N
        for c0 in range(0, C, DOT_CLASSES):
            for q in range(pf, min(pf + pf_step, pf_end), line):
                prefetch(f, q)
            pf += pf_step
            nc = min(DOT_CLASSES, C - c0)
            if n0 >= 0:
                dot_block_aligned(Wd, wd0, c0, nc, f, f0 + p0 * N, N, n0, b, z, c0 * zs + p0, zs)
            else:
                dot_block(W, 0, c0, nc, f, f0 + p0 * N, N, 0, b, z, c0 * zs + p0, zs)
    for p in range(P4, P):
        fo = max(f0 + p * N, 0)
        for c in range(C):
            wo = max(c * N, 0)
            s = zero
            for n in range(N):
                s += W[wo + n] * f[fo + n]
            z[c * zs + p] = s + b[c]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def dot_weights(W, C, N, f, use):
    """``(Wd, wd0, n0)`` for :func:`gemm_dot` on the flat channels-last
    features ``f``: when every feature row starts at the same offset in a
    vector of ``microkernels.VECTOR_BYTES`` (64 bytes with AVX-512, 32
    with AVX2; N a multiple of its lanes L) and ``use``, a copy of W
    placed at that same offset, ``Wd[wd0:wd0 + C*N]``, and ``n0``, a
    row's first element on a vector boundary; otherwise a dummy and ``n0
    = -1`` (the unaligned micro-kernel on W itself). NumPy places large
    arrays 16 bytes past a page boundary, so without the copy every
    64-byte load of f and W spans two lines.

    The alignment is the kernel's vector, not the cache line: with AVX2's
    32-byte vectors, an ``n0`` counted in 64-byte lines (up to 15 float32
    elements, past the kernel's 8 lanes) left a row's first elements out
    of its sums, and every AVX2 channels-last dot-form result was wrong.
    """
    size = f.itemsize
    L = VECTOR_BYTES // size
    fa = address_of(f, 0)
    if not (use and N >= L and N % L == 0 and fa % size == 0
            and C * N <= DOT_ALIGN_MAX_WEIGHTS):
        return empty(1, W.dtype), 0, -1
    Wd = empty(C * N + L, W.dtype)
    wd0 = ((fa - address_of(Wd, 0)) % VECTOR_BYTES) // size
    Wd[wd0:wd0 + C * N] = W
    return Wd, wd0, ((-fa) % VECTOR_BYTES) // size


# --------------------------------------------------------------------------
# one tile of logits, and writing class-shaped tiles back
# --------------------------------------------------------------------------

@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def transposed_weights(W, b, C, N):
    """W transposed for :func:`fastlogits.cpu.blocks.microkernels.outer_block`: flat
    (N + 1, Cp), ``Wt[n*Cp + c] = W[c*N + n]``, row N the bias, Cp = C
    rounded up to whole class blocks (the extra columns 0)."""
    Cp = (C + OUTER_CLASSES - 1) // OUTER_CLASSES * OUTER_CLASSES
    Wt = zeros((N + 1) * Cp, W.dtype)
    for c in range(C):
        for n in range(N):
            Wt[n * Cp + c] = W[c * N + n]
        Wt[N * Cp + c] = b[c]
    return Wt


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _gemm_panels(W, b, Wt, C, N, B, b0, sbk, P, z, zs):
    """``z[c*zs + p] = b[c] + sum_n W[c, n] B[b0 + n*sbk + p]`` in panels of
    K_PANEL feature rows (each panel stays in L1 while every class uses
    it): blocks of OUTER_CLASSES x OUTER_PIXELS by the register-blocked
    :func:`fastlogits.cpu.blocks.microkernels.outer_block` (``Wt`` from
    :func:`transposed_weights`), the last P % OUTER_PIXELS pixels by
    :func:`gemm_rows`."""
    if N == 0:
        gemm_rows(W, 0, N, 1, C, 0, B, b0, sbk, z, 0, zs, P, INIT_BIAS, b)
    Cp = Wt.shape[0] // (N + 1)
    PB = P - P % OUTER_PIXELS
    for k0 in range(0, N, K_PANEL):
        kn = min(K_PANEL, N - k0)
        first = 1 if k0 == 0 else 0
        bk = b0 + k0 * sbk
        for p0 in range(0, PB, OUTER_PIXELS):
            for c0 in range(0, C, OUTER_CLASSES):
                outer_block(Wt, k0 * Cp + c0, Cp, N * Cp + c0, B, bk + p0, sbk, kn,
                            z, c0 * zs + p0, zs, min(OUTER_CLASSES, C - c0), first)
        if PB < P:
            gemm_rows(W, k0, N, 1, C, kn, B, bk + PB, sbk, z, PB, zs, P - PB,
                      INIT_BIAS if first else INIT_ADD, b)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_logits(f, W, b, Wt, N, inner, o, i0, P, z, zs, cl_dot, ft, Wd, wd0, n0):
    """Logits of the tile's P pixels into ``z[c*zs + p]``.

    ``inner > 1``: channels-first, pixels ``i0 .. i0+P`` of plane ``o`` of
    ``f`` (outer, N, inner), read in place (outer-product form).
    ``inner == 1``: channels-last, the pixels are rows ``i0 .. i0+P`` of
    ``f`` (rows, N): with ``cl_dot`` as dot products (:func:`gemm_dot`),
    else transposed into the (N, zs) scratch ``ft`` first and then in the
    outer-product form (better when N is small next to C: see
    :func:`fastlogits.cpu.plan.cl_dot_form`). ``Wd, wd0, n0``: from
    :func:`dot_weights`.
    """
    C = b.shape[0]
    if inner > 1:
        _gemm_panels(W, b, Wt, C, N, f, o * N * inner + i0, inner, P, z, zs)
    elif cl_dot or N == 0:
        gemm_dot(W, b, C, N, f, i0 * N, P, z, zs, Wd, wd0, n0)
    else:
        load_transposed(f.reshape((f.shape[0] // N, N)), i0, P, ft.reshape((1, N, zs)))
        _gemm_panels(W, b, Wt, C, N, ft, 0, zs, P, z, zs)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def feature_grad(W, C, N, inner, o, i0, P, g, gs, grad):
    """``grad[pixel, n] = sum_c W[c, n] g[c*gs + p]``: the gradient w.r.t.
    the features from the logits' gradient tile ``g``, written where the
    tile's features are (layouts as :func:`tile_logits`). Each output row
    stays in L1 while all C classes add to it, and is written once."""
    if inner == 1:
        # A pixel's feature row is contiguous: rows of W scaled by g.
        gemm_rows(g, 0, 1, gs, P, C, W, 0, N, grad, i0 * N, N, N, INIT_ZERO, W)
    else:
        # A feature row of the tile is contiguous: rows of g scaled by W^T.
        gemm_rows(W, 0, 1, N, N, C, g, 0, gs, grad, o * N * inner + i0, inner, P, INIT_ZERO, W)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def store_tile(out, src, C, inner, o, i0, P, zs):
    """Copy a (C, P) tile ``src[c*zs + p]`` into ``out`` (flat, laid out like
    the features with N replaced by C). Channels-first rows are contiguous
    across pixels; channels-last rows across classes."""
    if inner == 1:
        for p in range(P):
            oo = max((i0 + p) * C, 0)
            for c in range(C):
                out[oo + c] = src[c * zs + p]
        return
    for c in range(C):
        oo = max((o * C + c) * inner + i0, 0)
        so = max(c * zs, 0)
        for p in range(P):
            out[oo + p] = src[so + p]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def head_weights(W, b, C, N, f, inner, cl_dot):
    """The weights in the forms the drivers' :func:`tile_logits` takes:
    ``(Wt, Wd, wd0, n0)``, Wt from :func:`transposed_weights`, the rest from
    :func:`dot_weights` (used by the channels-last dot form only)."""
    Wd, wd0, n0 = dot_weights(W, C, N, f, inner == 1 and cl_dot)
    return transposed_weights(W, b, C, N), Wd, wd0, n0


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _transpose_scratch(N, inner, tile, cl_dot, dtype):
    """The (N, tile) scratch of the transposed channels-last regime (a
    one-element stand-in otherwise)."""
    n = N * tile if (inner == 1 and not cl_dot and N > 0) else 1
    return empty(n, dtype)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _tiling(outer, inner, tile, nthreads):
    """``(npix, ntiles, njobs, nchunks)``: channels-first tiles never cross
    a plane of ``inner`` pixels; channels-last pixels are the ``outer`` rows."""
    npix = inner if inner > 1 else outer
    planes = outer if inner > 1 else 1
    ntiles = (npix + tile - 1) // tile
    njobs = planes * ntiles
    return npix, ntiles, njobs, work_chunks(njobs, nthreads)


# --------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------

@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def head_expnorm(task, ntasks, f, outer, N, inner, W, b, out, red, inv_t, mode, tile, nthreads, cl_dot):
    """logits / softmax / log_softmax (into ``out``, class-shaped) or
    logsumexp (into ``red``, (outer, inner)) of the head; all flat
    C-contiguous. The unused output may be any 1-D array of that type.

    Per tile: the logits into an L1/L2 scratch (C, P), softmax's own tile
    epilogue on it (max, exp-sum, result into a second scratch), then one
    write of the result.
    """
    C = b.shape[0]
    npix, ntiles, njobs, nchunks = _tiling(outer, inner, tile, nthreads)
    Wt, Wd, wd0, n0 = head_weights(W, b, C, N, f, inner, cl_dot)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        z = empty(C * tile, b.dtype)
        z3 = z.reshape((1, C, tile))
        ft = _transpose_scratch(N, inner, tile, cl_dot, b.dtype)
        e = empty(C * tile, b.dtype)
        e3 = e.reshape((1, C, tile))
        m = empty(tile, b.dtype)
        g = empty(tile, b.dtype)
        part = empty(2 * tile, b.dtype)
        s = empty(2 * tile, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, npix - i0)
            tile_logits(f, W, b, Wt, N, inner, o, i0, P, z, tile, cl_dot, ft, Wd, wd0, n0)
            if mode == LOGITS:
                store_tile(out, z, C, inner, o, i0, P, tile)
                continue
            _expnorm_tile(z3, 0, 0, P, inv_t, mode, m, g, s, part, e3, 0, 0, no_region(z3))
            if mode == LOGSUMEXP:
                _lse(P, m, s, inv_t, red, o * npix + i0)
            else:
                store_tile(out, e, C, inner, o, i0, P, tile)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def head_argmax(task, ntasks, f, outer, N, inner, W, b, labels, conf, inv_t, with_conf, tile, nthreads,
                cl_dot):
    """Labels (and with ``with_conf`` the top-1 probability) of the head into
    flat (outer, inner) ``labels`` / ``conf``; argmax's own tile epilogue
    runs on the logits scratch."""
    C = b.shape[0]
    npix, ntiles, njobs, nchunks = _tiling(outer, inner, tile, nthreads)
    Wt, Wd, wd0, n0 = head_weights(W, b, C, N, f, inner, cl_dot)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        z = empty(C * tile, b.dtype)
        z3 = z.reshape((1, C, tile))
        ft = _transpose_scratch(N, inner, tile, cl_dot, b.dtype)
        m = empty(tile, b.dtype)
        part = empty(2 * tile, b.dtype)
        idx = empty(tile, np.int32)
        s = empty(2 * tile, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, npix - i0)
            tile_logits(f, W, b, Wt, N, inner, o, i0, P, z, tile, cl_dot, ft, Wd, wd0, n0)
            _argmax_tile(z3, 0, 0, P, labels, conf, o * npix + i0, inv_t, with_conf, m, idx, s,
                         part, no_region(z3))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def head_xent(task, ntasks, f, outer, N, inner, W, b, t, w, w64, ignore, eps, gscale, grad,
              want_grad, loss, want_loss, tile, nthreads, cl_dot, table):
    """Cross-entropy of the head against flat targets ``t`` (outer, inner):
    per-pixel ``loss`` (with ``want_loss``), the gradient w.r.t. the
    features into ``grad`` (flat, like f) unless ``want_grad`` is None
    (True or None, as :mod:`fastlogits.cpu.ops.losses`' drivers take it:
    None compiles the gradient's code out);
    ``[loss_sum, weight_sum, bad_count]`` of each chunk into a row of
    ``table``.

    Per tile: logits into the scratch, the loss epilogue of
    :mod:`fastlogits.cpu.ops.losses` on it (the exponentials replace the
    logits), the logits' gradient formed in place, then W^T times it
    straight into ``grad``.
    """
    C = b.shape[0]
    bc, coef, ls = loss_coefs(w, w64, eps, gscale)
    npix, ntiles, njobs, nchunks = _tiling(outer, inner, tile, nthreads)
    Wt, Wd, wd0, n0 = head_weights(W, b, C, N, f, inner, cl_dot)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        z = empty(C * tile, b.dtype)
        z3 = z.reshape((1, C, tile))
        ft = _transpose_scratch(N, inner, tile, cl_dot, b.dtype)
        e = empty(C * tile, b.dtype) if want_grad is not None else z
        e3 = e.reshape((1, C, tile))
        m, part, a, s, sm, xt, wt, d, tt, keep = _loss_scratch(tile, w)
        acc = zeros(3, np.float64)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, npix - i0)
            q0 = o * npix + i0
            tile_logits(f, W, b, Wt, N, inner, o, i0, P, z, tile, cl_dot, ft, Wd, wd0, n0)
            pf = no_region(z3)  # z is scratch in cache
            _tile_losses(z3, 0, 0, P, t, q0, w, ignore, eps, ls, coef, e3, 0, 0,
                         want_grad, loss, want_loss, m, s, part, sm, tt, xt, wt, keep, a, d, acc, pf)
            if want_grad is not None:
                # d loss / d z of the tile, in place over the exponentials.
                _tile_grad(e3, 0, 0, P, a, bc, keep, tt, d)
                feature_grad(W, C, N, inner, o, i0, P, e, tile, grad)
        put_row(table, chunk, acc)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def head_confusion(task, ntasks, f, outer, N, inner, W, b, t, ignore, hists, bad, tile, cl_dot):
    """Add the confusion counts of the head's argmax against flat targets
    ``t`` into the private per-chunk histograms ``hists`` (nchunks, C, C)
    int64, the number of bad targets of each chunk into ``bad``."""
    C = b.shape[0]
    npix, ntiles, njobs, _ = _tiling(outer, inner, tile, 1)
    Wt, Wd, wd0, n0 = head_weights(W, b, C, N, f, inner, cl_dot)
    nchunks = max(1, min(hists.shape[0], njobs))
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        z = empty(C * tile, b.dtype)
        z3 = z.reshape((1, C, tile))
        ft = _transpose_scratch(N, inner, tile, cl_dot, b.dtype)
        m = empty(tile, b.dtype)
        m2 = empty(tile, b.dtype)
        idx = empty(tile, np.int32)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o = job // ntiles
            i0 = (job - o * ntiles) * tile
            P = min(tile, npix - i0)
            tile_logits(f, W, b, Wt, N, inner, o, i0, P, z, tile, cl_dot, ft, Wd, wd0, n0)
            tile_argmax(z3, 0, 0, P, m, m2, idx, no_region(z3))
            bad[chunk] += _count(t, o * npix + i0, P, idx, ignore, hists[chunk])
