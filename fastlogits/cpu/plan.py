"""The CPU backend's plan: the only place that chooses a kernel variant.

Every decision of the CPU backend between its kernels lives here: the
regime of a canonical (outer, C, inner) view (channels-first tiles for
inner > 1; channels-last rows, contiguous, see :func:`_row_view`, or
channels-last tiles transposed into scratch for few classes or rows that
are not contiguous), the register blocks (:func:`_row_blocks`,
:func:`_plane_blocks`), the tile sizes (:func:`_tile_pixels`,
:func:`_cf_tile_pixels`, :func:`_cf_copies_tiles`), the prefetch distance
(:func:`_row_prefetch_bytes`), the non-temporal writes (:func:`_streams`,
:func:`_streams_rows`, :func:`_plane_write`), the confusion matrix's
private histograms (:func:`private_histograms`, :func:`labels_first`),
the LinearHead's product form and tiles (:func:`cl_dot_form`,
:func:`tile_pixels`), and whether float16 and bfloat16 are read as they
are or through float32 chunks (:func:`half_direct`), each read from :mod:`fastlogits.tuning`
at call time.

The ``*_launch`` functions (:func:`expnorm_launch`, :func:`argmax_launch`,
:func:`cross_entropy_launch`) bind them once per geometry, with the kernel's
launch, serial or in parallel (:func:`fastlogits.cpu.threads.driver_for`); the
``run_*`` functions (:func:`run_expnorm`, :func:`run_argmax`,
:func:`run_cross_entropy`, :func:`run_confusion`) take the canonical views
built by :mod:`fastlogits.cpu.host` (x as (outer, C, inner), reduced
outputs as (outer, inner)) and launch the Numba drivers of
:mod:`fastlogits.cpu.ops`. Nothing here validates input.

Every kernel is compiled with ``fastmath=tuning.FASTMATH`` (no ``nnan`` /
``ninf``) and ``error_model="numpy"``: a float division by zero gives
inf/NaN as in NumPy instead of raising, and without that check's branch
the per-pixel loops (``1 / s``, the vector log) vectorize.
"""

from functools import lru_cache

import numpy as np

from fastlogits import _layout, tuning
from fastlogits._layout import reshape_view
from fastlogits.cpu.blocks.planeblock import LANES, WRITE_EBUF, WRITE_EBUF_STREAM, WRITE_STREAM
from fastlogits.cpu.blocks.rowblock import ROWS
from fastlogits.cpu.blocks.tiles import CHUNKS_PER_THREAD, SUM_BLOCK
from fastlogits.cpu.llvm import half
from fastlogits.cpu.llvm.prefetch import LINE_BYTES
from fastlogits.cpu.llvm.scores import holds_half_bits
from fastlogits.cpu.ops import argmax as ka
from fastlogits.cpu.ops import confusion as kc
from fastlogits.cpu.ops import losses as kl
from fastlogits.cpu.ops import softmax as ks
from fastlogits.cpu.threads import driver_for, thread_count
from fastlogits.cpu.switches import mode_switches, switch
from fastlogits.cpu.calls import share_literal_calls
from fastlogits.cpu import compile_gc

share_literal_calls()  # every kernel the drivers call is imported by now
compile_gc.install()  # the collector paused while a kernel compiles (docs/perf/cpu-080)


def _stand_in(ndim, dtype):
    """A one-element C-contiguous array of ``ndim`` dimensions: the stand-in
    for an output a kernel does not touch (the kernels guard every access
    to it by ``mode`` / ``with_conf`` / ``want_grad`` / ``want_loss``).

    C-contiguous, so Numba types it like the real outputs (``np.empty``)
    and softmax and logsumexp, or argmax and classify, share one compiled
    specialization each; a zero-stride stand-in of the full shape was typed
    ``'A'`` and doubled the kernels compiled (and the first-call time).
    """
    return np.empty((1,) * ndim, dtype)


def _computed_in(x):
    """The NumPy dtype x's scores are computed in: float32 for float16
    (or its bits) and bfloat16's bits, else x's own."""
    return np.dtype(np.float32) if x.dtype in (np.uint16, np.float16, np.int16) else x.dtype


def _rows(a):
    """``(rows, C)`` view of an (outer, C, 1) array: a C-contiguous reshape
    when the strides allow (Numba then knows the layout and vectorizes),
    else a strided slice."""
    if a.flags.c_contiguous:  # the common case, at a third of reshape_view's cost
        return a.reshape(a.shape[:2])
    v = reshape_view(a, a.shape[:2])
    return v if v is not None else a[:, :, 0]


def _flat(a):
    """``(outer,)`` view of an (outer, 1) reduced output: contiguous when
    the strides allow (a strided slice keeps the store loop scalar)."""
    if a.flags.c_contiguous:
        return a.reshape(a.shape[:1])
    v = reshape_view(a, a.shape[:1])
    return v if v is not None else a[:, 0]


def _row_prefetch_bytes(C, itemsize):
    """The row kernels' prefetch distance for rows of C scores:
    ``cpu_prefetch_bytes``, or 0 (none) for rows longer than
    ``cpu_row_prefetch_max_bytes``."""
    return 0 if C * itemsize > tuning.current().cpu.row_prefetch_max_bytes else tuning.current().cpu.prefetch_bytes


def _tile_pixels(C, pixels=None, itemsize=4, max_scores=None):
    """Pixels per tile: ``pixels`` (default ``cpu_tile_pixels``), fewer
    for large C (at most ``max_scores`` scores in a tile, default
    ``cpu_tile_elements``; 0: no limit); a multiple of 16 and of a 64-byte
    line of scores of ``itemsize`` bytes (at least one), so the
    channels-first tiles that start on a line (``tiles.cf_tile``) all do,
    and an image's first pixels before its first line (up to a line's
    scores less one: 31 float16 scores) fit a tile's scratch."""
    pixels = tuning.current().cpu.tile_pixels if pixels is None else pixels
    max_scores = tuning.current().cpu.tile_elements if max_scores is None else max_scores
    if max_scores > 0:
        pixels = min(pixels, max_scores // C)
    unit = max(16, LINE_BYTES // itemsize)
    return int(max(unit, pixels // unit * unit))


#: Class planes this many bytes apart (or a multiple of it) put a tile's
#: rows in the same L1 sets (:func:`_cf_copies_tiles`).
COPY_PLANE_BYTES = 4096


def _cf_copies_tiles(x3):
    """Whether the channels-first tile loops of the ops that read a tile
    more than once read a copy of it (``tiles.load_rows``): from
    ``cpu_cf_copy_min_classes`` classes, where x3's class planes
    (outer, C, inner) are a multiple of 4 KiB apart."""
    return (x3.shape[1] >= tuning.current().cpu.cf_copy_min_classes
            and abs(x3.strides[1]) % COPY_PLANE_BYTES == 0)


def _cf_tile_pixels(x3, reread, pixels=None):
    """Pixels per channels-first tile of x3 (outer, C, inner):
    :func:`_tile_pixels`, at most ``cpu_cf_tile_bytes`` of scores
    at their computed precision when the kernel reads the tile again
    (``reread``: the max, then the exp-sum), else any number (argmax and
    the confusion matrix read each score once)."""
    cap = max(1, tuning.current().cpu.cf_tile_bytes // _computed_in(x3).itemsize) if reread else 0
    return _tile_pixels(x3.shape[1], pixels, x3.itemsize, cap)


def _row_view(x3, min_classes, out3=None):
    """The C-contiguous ``(rows, C)`` view of a channels-last ``x3`` (outer,
    C, 1) for the row kernels, or None where the transposed tiles run:
    channels-first, fewer than ``min_classes`` classes, or rows that are
    not contiguous (in x3 or in ``out3``) unless C is so large that a copy
    is worth it."""
    outer, C, inner = x3.shape
    if inner != 1 or C < min_classes:
        return None
    x2 = _rows(x3)
    if C >= tuning.current().cpu.row_copy_min_classes:
        return np.ascontiguousarray(x2)
    if x2.flags.c_contiguous and (out3 is None or _rows(out3).flags.c_contiguous):
        return x2
    return None


@lru_cache(maxsize=256)
def _row_blocks(C, max_classes):
    """Whether contiguous channels-last rows of C classes go by the
    register blocks of rows of :mod:`fastlogits.cpu.blocks.rowblock`: from 8 classes to ``max_classes``
    (``cpu_row_block_max_classes``, or ``..._XENT_...`` for the
    loss), never above ``tiles.SUM_BLOCK`` (a block's exp-sum is not
    split)."""
    return 8 <= C <= min(max_classes, SUM_BLOCK)


def _plane_blocks(C, with_sums):
    """Whether channels-first pixels of C classes go by the register blocks
    of :mod:`fastlogits.cpu.blocks.planeblock`: up to ``cpu_plane_block_max_classes``
    classes for an op that sums exponentials (never above
    ``tiles.SUM_BLOCK``: a block's exp-sum is not split), up to
    ``cpu_plane_block_argmax_max_classes`` for argmax and the
    confusion matrix."""
    if with_sums:
        return C <= min(tuning.current().cpu.plane_block_max_classes, SUM_BLOCK)
    return C <= tuning.current().cpu.plane_block_argmax_max_classes


def _streams(x, out):
    """Whether the channels-first kernels write the x-sized output ``out``
    by non-temporal stores (:mod:`fastlogits.cpu.llvm.stream`): C-contiguous, at least
    ``cpu_stream_min_bytes``, and not over x. In place, the lines
    are in cache (just read): a non-temporal store must evict each first,
    and softmax in place took 2x longer so. (Channels-last outputs are
    streamed only in long rows, ``cpu_stream_row_min_bytes``; into
    fresh pages, which the kernel zeroes through the cache as it maps
    them, softmax took 1.15x longer so: docs/perf/cpu-038, cpu-058;
    large outputs now come from reused blocks, :mod:`fastlogits.pool`.)"""
    return (out.flags.c_contiguous and out.nbytes >= tuning.current().cpu.stream_min_bytes
            and not np.may_share_memory(x, out))


def _streams_rows(x2, out2):
    """Whether the channels-last row kernels write ``out2`` (rows, C) by
    non-temporal stores, row by row: as :func:`_streams`, and rows of at
    least ``cpu_stream_row_min_bytes`` (shorter rows end in too many
    partial lines; docs/perf/cpu-058)."""
    return (x2.shape[1] * x2.itemsize >= tuning.current().cpu.stream_row_min_bytes
            and _streams(x2, out2))


def _plane_write(x3, out3, lanes=None):
    """How the channels-first kernels write the x-sized output ``out3``
    (``planeblock.WRITE_*``; ``WRITE_EBUF``: not streamed, see
    :func:`_streams`): when streamed, straight from the register blocks
    by non-temporal stores where every block of out starts a 64-byte line
    as x's does (x's tiles start lines, see ``tiles.cf_tile``: a plane of
    a whole number of lines, and out on the same line offset as x; and a
    block of ``lanes`` pixels, default ``planeblock.LANES``, is whole
    lines), else through the L1 scratch tile.

    The blocks' lines: a plane's first tile runs up to its first line and
    holds a block when a block is shorter than a line (AVX2's 8 float32
    pixels, 32 bytes), which would then start off its line, and a
    non-temporal store there faults (it did: every streamed channels-first
    float32 softmax and gradient on AVX2).

    float16 outputs (2-byte bits, :mod:`fastlogits.cpu.llvm.scores`) are not streamed: a
    block's 16 halves are half a line, so they would go through the
    scratch, and that copy by non-temporal stores measured 1.03-1.23x
    slower than by ordinary ones at 19-3000 classes (docs/perf/cpu-067)."""
    if not _streams(x3, out3) or holds_half_bits(out3):
        return WRITE_EBUF
    lanes = LANES if lanes is None else lanes
    if (lanes * out3.itemsize % LINE_BYTES == 0 and out3.itemsize == x3.itemsize
            and x3.shape[2] * x3.itemsize % LINE_BYTES == 0
            and x3.ctypes.data % LINE_BYTES == out3.ctypes.data % LINE_BYTES):
        return WRITE_STREAM
    return WRITE_EBUF_STREAM


def half_direct():
    """Whether the CPU kernels take float16 and bfloat16 as they are:
    ``cpu_half_direct`` and F16C (:data:`fastlogits.cpu.llvm.half.HARDWARE`;
    bfloat16 converts by integer operations, but follows float16 so one
    knob and one condition choose the path of both)."""
    return tuning.current().cpu.half_direct and half.HARDWARE


def _choose_expnorm(x3, out3):
    """``(regime, args)`` of softmax / log_softmax / logsumexp on x3 into
    ``out3`` (None for logsumexp): ``"rows"`` (channels-last contiguous
    rows: copy x first, register blocks, prefetch, out's rows contiguous,
    whether out is large enough to stream), ``"cf"`` (channels-first
    tiles: pixels, register blocks, prefetch, copies, out C-contiguous,
    large enough to stream) or ``"tiles"`` (pixels, prefetch). What
    depends on the memory itself (out over x, its lines' offsets) is
    decided per call in :func:`run_expnorm`."""
    cpu = tuning.current().cpu
    outer, C, inner = x3.shape
    streamable = out3 is not None and out3.nbytes >= cpu.stream_min_bytes
    # (The blocks' kernel takes a chunk's last rows in a block that
    # overlaps the one before: at least a block of rows, docs/perf/cpu-079.)
    blocks = _row_blocks(C, cpu.row_block_expnorm_max_classes) and outer >= ROWS
    if inner == 1 and C >= (1 if blocks else cpu.row_min_classes):
        copy = C >= cpu.row_copy_min_classes
        out_rows = out3 is None or _rows(out3).flags.c_contiguous
        if copy or (_rows(x3).flags.c_contiguous and out_rows):
            return "rows", (copy, blocks, _row_prefetch_bytes(C, x3.itemsize), out_rows,
                            streamable and C * x3.itemsize >= cpu.stream_row_min_bytes)
    if inner > 1:
        out_c = out3 is None or out3.flags.c_contiguous
        return "cf", (_cf_tile_pixels(x3, True),
                      _plane_blocks(C, True) and x3.flags.c_contiguous and out_c,
                      cpu.prefetch_plane_bytes, _cf_copies_tiles(x3), out_c, streamable)
    return "tiles", (_tile_pixels(C), cpu.prefetch_bytes)


def expnorm_launch(x3, out3):
    """``launch(x3, out3, red2, inv_t, mode)``: softmax / log_softmax /
    logsumexp of views of x3's geometry into outputs of ``out3``'s (None
    for logsumexp, which writes ``red2``), the variant chosen once
    (:func:`_choose_expnorm`) and the kernel's launch
    (:func:`fastlogits.cpu.threads.driver_for`) with it. What depends on
    the memory itself (out over x, its lines' offsets) is decided per
    launch."""
    outer, C, inner = x3.shape
    regime, args = _choose_expnorm(x3, out3)
    red_stand_in = _shared_stand_in(2, x3.dtype)
    if regime == "rows":
        copy, blocks, ahead, out_rows, streamable = args
        kernel, threads = driver_for(ks.expnorm_cl_blocks if blocks else ks.expnorm_cl_rows,
                                     x3.size)
        # logsumexp: the row kernels' out of one row, never written
        row_stand_in = _shared_row(C, x3.dtype) if out3 is None else None
        red1_stand_in = _flat(red_stand_in)
        rows_shape = (outer, C)
        # Views of C-contiguous arrays by a plain reshape (a third of
        # _rows' cost, which asks the strides each time).
        x_c = x3.flags.c_contiguous
        out_c = out3 is not None and out3.flags.c_contiguous

        def launch(x3, out3, red2, inv_t, mode):
            x2 = x3.reshape(rows_shape) if x_c else _rows(x3)
            if copy:
                x2 = np.ascontiguousarray(x2)
            red1 = red1_stand_in if red2 is None else _flat(red2)
            # The row kernels need C-contiguous rows (out too: a temporary otherwise).
            if out3 is None:
                out2 = work = row_stand_in
            else:
                out2 = out3.reshape(rows_shape) if out_c else _rows(out3)
                work = out2 if out_rows else np.empty(out2.shape, out2.dtype)
            with threads() as nthreads:
                if blocks:
                    kernel(x2, work, red1, inv_t, *mode_switches(mode), nthreads, ahead)
                else:
                    apart = out3 is not None and not np.may_share_memory(x2, work)
                    stream = streamable and _streams_rows(x2, work)
                    kernel(x2, work, red1, inv_t, mode, nthreads, ahead, stream, apart)
            if work is not out2:
                out2[...] = work
    elif regime == "cf":
        pixels, blocks, ahead, copies, out_c, streamable = args
        # The blocks' kernel takes C-contiguous x and out only and compiles
        # no tile loops; the tiles' kernel any strides and classes (docs/perf/cpu-080).
        kernel, threads = driver_for(ks.expnorm_cf_blocks if blocks else ks.expnorm_cf, x3.size)
        out_stand_in = _shared_stand_in(3, x3.dtype)

        def launch(x3, out3, red2, inv_t, mode):
            if out3 is None:
                out3 = out_stand_in
            write = _plane_write(x3, out3) if streamable else WRITE_EBUF
            red2 = red_stand_in if red2 is None else red2
            with threads() as nthreads:
                if blocks:
                    kernel(x3, out3, red2, inv_t, *mode_switches(mode), pixels, nthreads, write,
                           ahead)
                else:
                    # Straight into out unless it may overlap x (in place) or is strided.
                    direct = out_c and not np.may_share_memory(x3, out3)
                    kernel(x3, out3, red2, inv_t, mode, pixels, nthreads, direct, write, ahead,
                           copies)
    else:
        pixels, ahead = args
        kernel, threads = driver_for(ks.expnorm_cl_tiles, x3.size)
        out_stand_in = _shared_stand_in(3, x3.dtype)

        def launch(x3, out3, red2, inv_t, mode):
            with threads() as nthreads:
                kernel(_rows(x3), _rows(out_stand_in if out3 is None else out3),
                       _flat(red_stand_in if red2 is None else red2), inv_t, mode, pixels,
                       nthreads, ahead)
    return launch


def run_expnorm(x3, out3, red2, inv_t, mode):
    """softmax / log_softmax / logsumexp (``mode`` from :mod:`fastlogits._modes`).

    ``out3`` (outer, C, inner) or None, ``red2`` (outer, inner) or None;
    x3 and the output of floats, or both of float16 bits
    (:mod:`fastlogits.cpu.llvm.scores`), by :func:`expnorm_launch`, made
    once per geometry.
    """
    out_key = None if out3 is None else (out3.strides, out3.dtype.num)
    launch = _planned(("expnorm", x3.shape, x3.strides, x3.dtype.num, out_key),
                      tuning.current(), lambda: expnorm_launch(x3, out3))
    launch(x3, out3, red2, inv_t, mode)


#: The variants chosen per key (the views' shapes, strides and dtypes, the
#: options, the tuning): a repeated call of one geometry builds its views
#: and launches, the decisions already made (the per-call cost of small
#: inputs). Bounded: cleared when full.
_PLANS = {}
_PLANS_MAX = 4096


def chunk_table(nthreads, columns):
    """Zeros for a reducing kernel's sums per chunk: a row for each chunk
    :func:`fastlogits.cpu.blocks.tiles.work_chunks` can make on ``nthreads``
    threads (rows of chunks a launch did not make stay zero)."""
    return np.zeros((1 if nthreads <= 1 else CHUNKS_PER_THREAD * nthreads, columns))


def table_sums(table):
    """The column sums of a :func:`chunk_table`, in chunk order: the one
    row of a serial launch as it is. (NumPy's, a few microseconds on a
    parallel launch, where a Numba loop cost its first call 0.3 s of
    compilation: docs/perf/cpu-078.)"""
    return table[0] if table.shape[0] == 1 else table.sum(axis=0)


def _planned(key, tuning_now, choose):
    """The plan of ``key`` under ``tuning_now`` (keyed by identity: a new
    :func:`fastlogits.tuning.override` makes new plans), made by
    ``choose()`` at the first call."""
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is tuning_now:
        return hit[1]
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    plan = choose()
    _PLANS[key] = (tuning_now, plan)
    return plan


@lru_cache(maxsize=None)
def _shared_stand_in(ndim, dtype):
    """:func:`_stand_in`, one per (ndim, dtype) for the whole process: the
    kernels never touch it (thread-safe), and a fresh one per call cost
    an allocation."""
    return _stand_in(ndim, dtype)


@lru_cache(maxsize=64)
def _shared_row(C, dtype):
    """A (1, C) stand-in for the row kernels' ``out`` where logsumexp has
    none (they take a row's shape from it; nothing is written)."""
    return np.empty((1, C), dtype)


def _choose_argmax(x3, with_conf):
    """``(regime, args)`` of argmax / classify on x3: ``"cf"`` with the
    channels-first tiles' (pixels, blocks, prefetch, copies), ``"rows"``
    with the row kernels' (copy x first, prefetch, blocks), ``"tiles"``
    with the transposed tiles' (pixels, prefetch)."""
    cpu = tuning.current().cpu
    outer, C, inner = x3.shape
    if inner > 1:
        return "cf", (_cf_tile_pixels(x3, with_conf),
                      _plane_blocks(C, with_conf) and x3.flags.c_contiguous,
                      cpu.prefetch_plane_bytes, _cf_copies_tiles(x3))
    blocks = _row_blocks(C, cpu.row_block_max_classes)
    min_classes = 1 if blocks else cpu.row_min_classes if with_conf else cpu.row_argmax_min_classes
    if C >= min_classes and (C >= cpu.row_copy_min_classes or _rows(x3).flags.c_contiguous):
        return "rows", (C >= cpu.row_copy_min_classes, _row_prefetch_bytes(C, x3.itemsize), blocks)
    return "tiles", (_tile_pixels(C), cpu.prefetch_bytes)


def argmax_launch(x3, with_conf):
    """``launch(x3, labels2, conf2, inv_t)``: argmax (``with_conf`` False,
    ``conf2`` ignored) or classify of views of x3's geometry (shape,
    strides, dtype) into (outer, inner) outputs, the variant chosen once
    (:func:`_choose_argmax`) and the kernel's launch
    (:func:`fastlogits.cpu.threads.driver_for`) with it."""
    regime, args = _choose_argmax(x3, with_conf)
    stand_in = None if with_conf else _shared_stand_in(2, _computed_in(x3))
    if regime == "cf":
        pixels, blocks, ahead, copies = args
        # The blocks' kernel takes C-contiguous x only and compiles no tile
        # loops; the tiles' kernel any strides and classes (docs/perf/cpu-080).
        kernel, threads = driver_for(ka.argmax_cf_blocks if blocks else ka.argmax_cf, x3.size)
        last = () if blocks else (copies,)

        def launch(x3, labels2, conf2, inv_t):
            with threads() as nthreads:
                kernel(x3, labels2, stand_in if stand_in is not None else conf2, inv_t,
                       with_conf, pixels, nthreads, ahead, *last)
    elif regime == "rows":
        copy, ahead, blocks = args
        kernel, threads = driver_for(ka.argmax_cl_rows, x3.size)
        conf1 = None if with_conf else _flat(stand_in)
        rows_shape, x_c = x3.shape[:2], x3.flags.c_contiguous  # as in expnorm_launch

        def launch(x3, labels2, conf2, inv_t):
            x2 = x3.reshape(rows_shape) if x_c else _rows(x3)
            if copy:
                x2 = np.ascontiguousarray(x2)
            with threads() as nthreads:
                kernel(x2, _flat(labels2), conf1 if conf1 is not None else _flat(conf2), inv_t,
                       with_conf, nthreads, ahead, blocks)
    else:
        pixels, ahead = args
        kernel, threads = driver_for(ka.argmax_cl_tiles, x3.size)
        conf1 = None if with_conf else _flat(stand_in)

        def launch(x3, labels2, conf2, inv_t):
            with threads() as nthreads:
                kernel(_rows(x3), _flat(labels2), conf1 if conf1 is not None else _flat(conf2),
                       inv_t, with_conf, pixels, nthreads, ahead)
    return launch


def run_argmax(x3, labels2, conf2, inv_t):
    """argmax (``conf2`` None) or classify into (outer, inner) outputs; x3
    of floats or float16 bits (:mod:`fastlogits.cpu.llvm.scores`), by
    :func:`argmax_launch`, made once per geometry."""
    with_conf = conf2 is not None
    launch = _planned(("argmax", x3.shape, x3.strides, x3.dtype.num, with_conf),
                      tuning.current(), lambda: argmax_launch(x3, with_conf))
    launch(x3, labels2, conf2, inv_t)


def cross_entropy_launch(x3, want_grad, want_loss):
    """``launch(x3, t2, g, lw, w, w64, ignore_index, eps, gscale)``: the
    fused cross-entropy of C-contiguous views of x3's geometry, targets
    t2 (outer, inner), the gradient into ``g`` (like x3) and the losses
    into ``lw`` (outer, inner), both C-contiguous, or None where not
    wanted (``want_grad``, ``want_loss``); the variant chosen once and the
    kernel's launch (:func:`fastlogits.cpu.threads.driver_for`) with it.
    Returns ``[loss_sum, weight_sum, bad_count]`` (float64)."""
    cpu = tuning.current().cpu
    outer, C, inner = x3.shape
    dtype = _computed_in(x3)
    grad_switch = switch(want_grad)
    if inner > 1:
        g_stand_in, lw_stand_in = _stand_in(3, dtype), _stand_in(1, dtype)
        # The blocks' kernel takes C-contiguous x and gradient only and
        # compiles no tile loops; the tiles' kernel any strides and classes
        # (docs/perf/cpu-080). (cross_entropy passes C-contiguous views.)
        blocks = _plane_blocks(C, True) and x3.flags.c_contiguous
        ahead, copies = cpu.prefetch_plane_bytes, _cf_copies_tiles(x3)
        # The blocks' switches: their fused pass (float32), no loss-only blocks
        # with the gradient (as the rows').
        unfused, loss_only = switch(dtype != np.float32), switch(not want_grad)
        kernel, threads = driver_for(kl.ce_cf_blocks if blocks else kl.ce_cf, x3.size)

        def launch(x3, t2, g, lw, w, w64, ignore_index, eps, gscale):
            g = g_stand_in if g is None else g
            # Targets and losses flat (outer * inner): a view per tile of an
            # array all threads share costs two atomic reference-count
            # updates on its one line (docs/perf/cpu-044).
            lw = lw_stand_in if lw is None else lw.reshape(-1)
            direct = not (want_grad and np.may_share_memory(x3, g))
            write = _plane_write(x3, g) if want_grad else WRITE_EBUF
            # Longer tiles for the blocks, unless the gradient goes through
            # the scratch tile (ebuf: in place, or not streamed straight),
            # which must stay in L1: in place took 1.1x longer in 1024-pixel
            # tiles (docs/perf/cpu-048).
            long_tiles = blocks and (not want_grad or write == WRITE_STREAM)
            tile = _cf_tile_pixels(x3, True, cpu.loss_tile_pixels if long_tiles else None)
            with threads() as nthreads:
                table = chunk_table(nthreads, 3)
                if blocks:
                    kernel(x3, t2.reshape(-1), w, w64, ignore_index, eps, switch(eps > 0),
                           gscale, g, grad_switch, lw, want_loss, tile, nthreads, write, ahead,
                           unfused, loss_only, table)
                else:
                    kernel(x3, t2.reshape(-1), w, w64, ignore_index, eps, gscale, g, grad_switch,
                           lw, want_loss, tile, nthreads, direct, write, ahead, copies, table)
            return table_sums(table)
        return launch
    g_stand_in, lw_stand_in = _stand_in(2, dtype), _stand_in(1, dtype)
    blocks = _row_blocks(C, cpu.row_block_xent_max_classes)
    if C < cpu.row_min_classes and not blocks:
        tile, ahead = _tile_pixels(C), cpu.prefetch_bytes
        kernel, threads = driver_for(kl.ce_cl_tiles, x3.size)

        def launch(x3, t2, g, lw, w, w64, ignore_index, eps, gscale):
            with threads() as nthreads:
                table = chunk_table(nthreads, 3)
                kernel(x3.reshape(outer, C), t2.reshape(outer), w, w64, ignore_index, eps,
                       gscale, g_stand_in if g is None else g.reshape(outer, C), grad_switch,
                       lw_stand_in if lw is None else lw.reshape(outer), want_loss, tile,
                       nthreads, ahead, table)
            return table_sums(table)
        return launch
    ahead = _row_prefetch_bytes(C, x3.itemsize)
    # The blocks' switches (their fused pass: float32 without gradient; no
    # loss-only blocks with the gradient) and tile.
    blocks_args = (switch(dtype != np.float32), switch(not want_grad),
                   _tile_pixels(C, cpu.loss_tile_pixels) // ROWS * ROWS)
    kernel, threads = driver_for(kl.ce_cl_blocks if blocks else kl.ce_cl_rows, x3.size)

    def launch(x3, t2, g, lw, w, w64, ignore_index, eps, gscale):
        x2 = x3.reshape(outer, C)
        g2 = g_stand_in if g is None else g.reshape(outer, C)
        # Or whether the rows' gradient is streamed.
        last = blocks_args if blocks else (bool(want_grad and _streams_rows(x2, g2)),)
        with threads() as nthreads:
            table = chunk_table(nthreads, 3)
            kernel(x2, t2.reshape(outer), w, w64, ignore_index, eps, switch(eps > 0),
                   gscale, g2, grad_switch,
                   lw_stand_in if lw is None else lw.reshape(outer), want_loss, nthreads, ahead,
                   *last, table)
        return table_sums(table)
    return launch


def run_cross_entropy(x3, t2, grad3, loss2, w, w64, ignore_index, eps, gscale):
    """Fused cross-entropy of the canonical views (x3 (outer, C, inner), t2
    and loss2 (outer, inner), grad3 like x3; grad3/loss2 None when not
    wanted). Returns ``[loss_sum, weight_sum, bad_count]`` (float64).

    Non-contiguous views are copied (x) or written through a temporary
    (loss, grad), so each kernel is compiled for C-contiguous arrays only.
    ``grad3`` may be ``x3`` (in place). x3 and grad3 may hold float16
    bits (:mod:`fastlogits.cpu.llvm.scores`). By
    :func:`cross_entropy_launch`, made once per geometry.
    """
    x3 = np.ascontiguousarray(x3)
    t2 = np.ascontiguousarray(t2)
    want_grad = grad3 is not None
    want_loss = loss2 is not None
    lwork = loss2
    if want_loss and not loss2.flags.c_contiguous:
        lwork = np.empty(loss2.shape, loss2.dtype)
    gwork = grad3
    if want_grad and not grad3.flags.c_contiguous:
        gwork = np.empty(grad3.shape, grad3.dtype)
    launch = _planned(("cross_entropy", x3.shape, x3.dtype.num, want_grad, want_loss),
                      tuning.current(), lambda: cross_entropy_launch(x3, want_grad, want_loss))
    res = launch(x3, t2, gwork, lwork, w, w64, ignore_index, eps, gscale)
    if lwork is not loss2:
        loss2[...] = lwork
    if gwork is not grad3:
        grad3[...] = gwork
    return res


#: Histogram cells (all threads') that cost nothing worth a second pass:
#: below this, :func:`private_histograms` keeps them whatever the pixels.
SMALL_HISTOGRAMS = 1 << 12


def private_histograms(C, pixels, nthreads):
    """Whether a call on ``pixels`` pixels of C classes should bin into
    private (C, C) histograms (:func:`run_confusion`): only if the
    threads' histograms hold fewer cells than there are pixels (or fewer
    than :data:`SMALL_HISTOGRAMS`), and fit
    ``cpu_confusion_hist_bytes``. Otherwise zeroing and merging
    them costs more than the pixels: 512 rows of 32000 classes took 7.1 s
    so (two 8 GB matrices), against 60 ms for NumPy's bincount; 256 rows
    of 1000, 39-45 ms against 0.1 by the labels (docs/perf/cpu-055)."""
    cells = C * C
    return (cells * nthreads <= max(pixels, SMALL_HISTOGRAMS)
            and cells * 8 <= tuning.current().cpu.confusion_hist_bytes)


def _chunks(C, pixels, nthreads):
    """Chunks (private histograms): a few per thread, within the memory
    bound, and fewer cells in all than pixels."""
    return max(1, min(CHUNKS_PER_THREAD * nthreads,
                      tuning.current().cpu.confusion_hist_bytes // (C * C * 8),
                      pixels // (C * C)))


def run_confusion(x3, t2, ignore_index, counts):
    """Add the confusion counts of the canonical views x3 (outer, C, inner)
    and t2 (outer, inner) into ``counts`` (C, C) int64; returns the number
    of bad targets (nothing is binned for them)."""
    outer, C, inner = x3.shape
    x3 = np.ascontiguousarray(x3)
    t2 = np.ascontiguousarray(t2)
    cpu = tuning.current().cpu
    pixels = outer * inner
    if inner > 1:
        return binned(kc.confusion_cf, (x3, t2), ignore_index, counts, pixels, x3.size,
                      _cf_tile_pixels(x3, False), _plane_blocks(C, False),
                      cpu.prefetch_plane_bytes)
    x2 = x3.reshape(outer, C)
    t1 = t2.reshape(outer)
    blocks = _row_blocks(C, cpu.row_block_max_classes)
    if C < cpu.row_argmax_min_classes and not blocks:
        return binned(kc.confusion_cl_tiles, (x2, t1), ignore_index, counts, pixels, x3.size,
                      _tile_pixels(C), cpu.prefetch_bytes)
    return binned(kc.confusion_cl_rows, (x2, t1), ignore_index, counts, pixels, x3.size,
                  _row_prefetch_bytes(C, x3.itemsize), blocks)


def binned(kernel, inputs, ignore_index, counts, pixels, work, *options):
    """Launch a confusion kernel, ``kernel(task, ntasks, *inputs,
    ignore_index, hists, bad, *options)``, over ``pixels`` pixels (``work``
    for :func:`fastlogits.cpu.threads.driver_for`), adding into ``counts``
    (C, C) int64; returns the number of bad targets. On one thread it
    bins into ``counts`` itself; on more, each chunk into a private
    histogram (:func:`_chunks` of them), merged after."""
    C = counts.shape[0]
    launch, threads = driver_for(kernel, work)
    with threads() as nthreads:
        direct = nthreads <= 1 and counts.flags.c_contiguous
        if direct:
            hists = counts[None]
        else:
            hists = np.zeros((_chunks(C, pixels, nthreads), C, C), np.int64)
        bad = np.zeros(hists.shape[0], np.int64)
        launch(*inputs, ignore_index, hists, bad, *options)
    if not direct:
        kc.merge(hists, counts)
    return int(bad.sum())


def labels_first(C, reduced_shape):
    """Whether the CPU confusion matrix of C classes over ``reduced_shape``
    pixels takes the labels first (:func:`confusion_from_labels`) rather
    than private histograms
    (:func:`fastlogits.cpu.ops.confusion.private_histograms`)."""
    return not private_histograms(C, _layout.size_of(reduced_shape), thread_count())


def cl_dot_form(C, N):
    """Whether channels-last logits use the dot form (:func:`gemm_dot`)
    rather than transpose-then-outer-product.

    Per feature value the dot form pays ``C / 16`` vector FMAs plus the
    horizontal sums of its C·P dot products (about ``8 C / N`` shuffles and
    adds, on the FMA ports); the transposed form pays the same FMAs plus
    the transpose into the scratch (vector gathers). So the dot form
    wins when N is large next to C: ``N >= tuning.current().cpu.head_dot_min_ratio *
    C`` (default 3, measured; 0 forces the dot form, a huge value the transpose).
    """
    return N >= tuning.current().cpu.head_dot_min_ratio * C


def tile_pixels(C, N, cl_dot):
    """Pixels per tile: the core ops' choice for C classes
    (:func:`fastlogits.cpu._tile_pixels`), and for the transposed
    channels-last regime also at most ``CPU_TILE_ELEMENTS // N`` (>= 16),
    so its (N, P) feature scratch stays in L2 too."""
    tile = _tile_pixels(C)
    if not cl_dot and N > 0:
        tile = min(tile, max(16, tuning.current().cpu.tile_elements // N))
    return int(tile)
