"""Confusion matrix on the CPU: fused argmax + private histograms.

Each chunk of tiles (a few per thread) owns a private (C, C) int64
histogram, ``hists[chunk]``: a tile's argmax (:func:`tile_argmax`, the tile
in L1/L2) is counted straight into it, so there are no atomics, no labels
array and no ``target * C + pred`` temporary; the host merges the
histograms at the end (:func:`merge`), or, on one thread, passes the
destination itself as the one histogram
(:func:`fastlogits.cpu.plan.binned`).
The number of chunks is bounded so the histograms stay within
``cpu_confusion_hist_bytes``.

Targets are read as they are (uint8 or int64) and checked on the way: a
value outside [0, C) that is not ``ignore_index`` is counted, not binned;
the caller raises the error (and adds nothing to ``out=``).

Private histograms pay off only when there are many more pixels than
cells: a call's histograms are zeroed and merged whatever its pixel
count, so with many classes (a classifier's 1000, a vocabulary's 32000:
an 8 GB matrix) or few pixels per call, :func:`fastlogits.cpu.plan.private_histograms` says
no and the caller takes the labels first (the argmax kernels) and bins
them into the destination in one serial pass (:func:`bin_labels`).

Drivers: :func:`confusion_cf` (channels-first: register blocks of pixels,
:mod:`fastlogits.cpu.blocks.planeblock`, and tiles for the rest),
:func:`confusion_cl_tiles` (channels-last, few classes, a tile of rows
transposed into an L1 scratch),
:func:`confusion_cl_rows` (channels-last, contiguous rows with
``cpu_row_argmax_min_classes`` classes or more: vector row kernels,
or register-transposed blocks of ``rowblock.ROWS`` rows up to
``cpu_row_block_max_classes`` classes).
Each adds into ``hists`` (a (C, C) histogram per chunk, at least one) and
counts the bad targets of each chunk in ``bad``.
"""

import numpy as np
from numba import njit

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.planeblock import LANES, planes_argmax
from fastlogits.cpu.blocks.rowblock import ROWS, blocks_end, rows_argmax
from fastlogits.cpu.blocks.rowvec import vrow_argmax
from fastlogits.cpu.blocks.tiles import (cf_tile, cf_tiles, chunk_bounds, load_transposed, next_tile_cl,
                                         tile_argmax)
from fastlogits.cpu.llvm.alloc import empty
from fastlogits.cpu.llvm.prefetch import (plane_rows_region, planes_ahead, prefetch_planes,
                                          prefetch_row, prefetch_rows, rows_ahead)
from fastlogits.cpu.llvm.scores import scratch


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _count(t, r0, P, idx, ignore, hist):
    """Bin the tile's targets ``t[r0:r0 + P]`` against its labels ``idx``;
    returns the number of bad targets."""
    r0 = max(r0, 0)  # no wraparound select (see tiles.py)
    C = hist.shape[0]
    nbad = 0
    for p in range(P):
        ti = np.int64(t[r0 + p])
        if ti != ignore:
            if 0 <= ti < C:
                hist[ti, idx[p]] += 1
            else:
                nbad += 1
    return nbad


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def merge(hists, counts):
    """``counts += sum(hists)`` over the chunks' histograms."""
    for k in range(hists.shape[0]):
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                counts[i, j] += hists[k, i, j]


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def confusion_cf(task, ntasks, x, t, ignore, hists, bad, tile, blocks, ahead_bytes):
    """Channels-first: ``x`` (outer, C, inner), ``t`` (outer, inner). With
    ``blocks``, each tile's whole blocks of ``planeblock.LANES`` pixels go
    by the register blocks (:mod:`fastlogits.cpu.blocks.planeblock`), the rest by
    the tile loop; the blocks prefetch ``ahead_bytes`` ahead in each class
    plane."""
    outer, C, inner = x.shape
    ahead = planes_ahead(x, ahead_bytes)
    per_image = cf_tiles(x, tile)
    njobs = outer * per_image
    nchunks = max(1, min(hists.shape[0], njobs))
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        m = scratch(tile, x)
        m2 = scratch(tile, x)
        idx = empty(tile, np.int32)
        j0, j1 = chunk_bounds(chunk, nchunks, njobs)
        for job in range(j0, j1):
            o, i0, P = cf_tile(x, job, per_image, tile)
            if P == 0:
                continue
            PB = P - P % LANES if blocks else 0
            start = o * C * inner + i0
            for q in range(0, PB, LANES):
                prefetch_planes(x, start + q, LANES, ahead)
                planes_argmax(x, start + q, m, idx, q)
            if PB < P:
                tile_argmax(x, o, i0 + PB, P - PB, m[PB:], m2, idx[PB:],
                            plane_rows_region(x, o, i0 + PB, P - PB, ahead))
            bad[chunk] += _count(t[o], i0, P, idx, ignore, hists[chunk])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def confusion_cl_tiles(task, ntasks, x, t, ignore, hists, bad, tile, ahead_bytes):
    """Channels-last, small C: ``x`` (rows, C), ``t`` (rows,)."""
    rows, C = x.shape
    ntiles = (rows + tile - 1) // tile
    nchunks = max(1, min(hists.shape[0], ntiles))
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        buf = scratch((1, C, tile), x)
        m = scratch(tile, x)
        m2 = scratch(tile, x)
        idx = empty(tile, np.int32)
        j0, j1 = chunk_bounds(chunk, nchunks, ntiles)
        for job in range(j0, j1):
            r0 = job * tile
            P = min(tile, rows - r0)
            load_transposed(x, r0, P, buf)
            pf = next_tile_cl(x, r0, tile, min(rows, j1 * tile), C, ahead_bytes)
            tile_argmax(buf, 0, 0, P, m, m2, idx, pf)
            bad[chunk] += _count(t, r0, P, idx, ignore, hists[chunk])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def confusion_cl_rows(task, ntasks, x, t, ignore, hists, bad, ahead_bytes, blocks):
    """Channels-last, C-contiguous ``x`` (rows, C), ``t`` (rows,): with
    ``blocks``, ``rowblock.ROWS`` rows at a time transposed in registers
    (:mod:`fastlogits.cpu.blocks.rowblock`, C >= 8), else (and for a chunk's last
    rows % ROWS) a row at a time as vectors (:mod:`fastlogits.cpu.blocks.rowvec`);
    prefetching ``ahead_bytes`` ahead."""
    rows, C = x.shape
    ahead = rows_ahead(C, x.itemsize, ahead_bytes)
    nchunks = max(1, min(hists.shape[0], rows))
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    for chunk in range(c0, c1):
        hist = hists[chunk]
        m = scratch(ROWS, x)
        idx = empty(ROWS, np.int32)
        r0, r1 = chunk_bounds(chunk, nchunks, rows)
        g1 = blocks_end(r0, r1, blocks)
        for g in range(r0, g1, ROWS):
            prefetch_rows(x, g, ROWS, ahead)
            rows_argmax(x, g, m, idx, 0)
            bad[chunk] += _count(t, g, ROWS, idx, ignore, hist)
        for r in range(g1, r1):
            prefetch_row(x, r, ahead)
            ti = np.int64(t[r])
            if ti == ignore:
                continue  # an ignored pixel's logits are not even read
            if ti < 0 or ti >= C:
                bad[chunk] += 1
                continue
            _, label = vrow_argmax(x, r)
            hist[ti, label] += 1


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def bin_labels(t, labels, ignore, counts):
    """Add each pixel's (target, label) to ``counts`` (C, C) int64: ``t``
    and ``labels`` flat, of any integer dtypes; ignored pixels skipped.
    Nothing is added if a target is bad (outside [0, C), not ``ignore``):
    returns their number (0 when binned). Serial: for the calls where
    private histograms do not pay (:func:`fastlogits.cpu.plan.private_histograms`)."""
    C = counts.shape[0]
    nbad = 0
    for p in range(t.shape[0]):
        ti = np.int64(t[p])
        nbad += np.int64((ti != ignore) & ((ti < 0) | (ti >= C)))
    if nbad:
        return nbad
    for p in range(t.shape[0]):
        ti = np.int64(t[p])
        if ti != ignore:
            counts[ti, labels[p]] += 1
    return 0
