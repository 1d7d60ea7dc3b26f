"""CPU backend: Numba ``@njit(parallel=True, cache=True)`` kernels.

:func:`run_expnorm` and :func:`run_argmax` take the canonical views built by
:mod:`fastlogits.api` (x as (outer, C, inner), reduced outputs as
(outer, inner)) and pick the kernel regime: channels-first tiles
(inner > 1), channels-last row kernels (contiguous rows, see
:func:`_row_view`) or channels-last tiles transposed into scratch (few
classes, or rows that are not contiguous). Nothing here validates input.

Every kernel is compiled with ``fastmath=tuning.FASTMATH`` (no ``nnan`` /
``ninf``) and ``error_model="numpy"``: a float division by zero gives
inf/NaN as in NumPy instead of raising, and without that check's branch
the per-pixel loops (``1 / s``, the vector log) vectorize.
"""

from functools import lru_cache

import numpy as np
from numba import get_num_threads, set_num_threads

from fastlogits import _threading, tuning
from fastlogits._layout import reshape_view
from fastlogits.cpu.scores import holds_half_bits


def _row_prefetch_bytes(C, itemsize):
    """The row kernels' prefetch distance for rows of C scores:
    ``cpu_prefetch_bytes``, or 0 (none) for rows longer than
    ``cpu_row_prefetch_max_bytes``."""
    return 0 if C * itemsize > tuning.current().cpu.row_prefetch_max_bytes else tuning.current().cpu.prefetch_bytes


def _tile_pixels(C, pixels=None, itemsize=4, max_scores=None):
    """Pixels per tile: ``pixels`` (default ``CPU_TILE_PIXELS``), fewer
    for large C (at most ``max_scores`` scores in a tile, default
    ``CPU_TILE_ELEMENTS``; 0: no limit); a multiple of 16 and of a 64-byte
    line of scores of ``itemsize`` bytes (at least one), so the
    channels-first tiles that start on a line (``tiles.cf_tile``) all do,
    and an image's first pixels before its first line (up to a line's
    scores less one: 31 float16 scores) fit a tile's scratch."""
    from fastlogits.cpu.prefetch import LINE_BYTES  # lazily, as the kernel modules

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


def _thread_count_calls():
    """``(get, set)``: the calling thread's Numba thread count, read and
    set by the threading layer's own C functions, which Numba binds when
    it launches its threads (0.1 and 0.3 us a call; the public
    ``get_num_threads`` / ``set_num_threads`` take a process-wide lock
    and check their argument each time: 0.7 and 1.0 us, three calls per
    serial launch). The public functions where a Numba version does not
    have them. Either way the count is thread-local, as the public
    functions document."""
    from numba.np.ufunc import parallel

    get_num_threads()  # launches the threading layer, which binds the C functions
    get_c = getattr(parallel, "_get_num_threads", None)
    set_c = getattr(parallel, "_set_num_threads", None)
    if callable(get_c) and callable(set_c):
        return get_c, set_c
    return get_num_threads, set_num_threads


_thread_count = None  # (get, set), bound at the first call of thread_count()
_guard = None  # fastlogits._threading.launch_guard(), read with _thread_count


def thread_count():
    """The calling thread's Numba thread count (``numba.get_num_threads``),
    by the fast call of :func:`_thread_count_calls`."""
    global _thread_count, _guard
    if _thread_count is None:
        calls = _thread_count_calls()  # starts Numba's threads: the layer is known
        _guard = _threading.launch_guard()
        _thread_count = calls
    return _thread_count[0]()


class launch_threads:
    """Threads for a kernel launch over ``work`` elements: ``with
    launch_threads(work) as nthreads`` gives the count to pass to the
    kernel as ``nthreads``.

    Below ``cpu_serial_below`` elements the launch uses the calling
    thread only: waking the pool costs more than the work, and on a busy
    machine a descheduled worker makes a tiny call wait a whole time slice.
    (The thread count is thread-local in Numba and restored on exit.) A
    class, not a generator-based context manager: it runs on every call,
    where microseconds count for small inputs.
    """

    __slots__ = ("_n", "_serial")

    def __init__(self, work):
        self._n = thread_count()
        self._serial = work < tuning.current().cpu.serial_below and self._n > 1

    def __enter__(self):
        if _guard is not None:  # a thread-unsafe layer (fastlogits._threading)
            _guard.acquire()
        if self._serial:
            _thread_count[1](1)
            return 1
        return self._n

    def __exit__(self, *exc):
        if self._serial:
            _thread_count[1](self._n)
        if _guard is not None:
            _guard.release()
        return False


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
    (or its bits), else x's own."""
    return np.dtype(np.float32) if x.dtype in (np.uint16, np.float16) else x.dtype


def _rows(a):
    """``(rows, C)`` view of an (outer, C, 1) array: a C-contiguous reshape
    when the strides allow (Numba then knows the layout and vectorizes),
    else a strided slice."""
    v = reshape_view(a, a.shape[:2])
    return v if v is not None else a[:, :, 0]


def _flat(a):
    """``(outer,)`` view of an (outer, 1) reduced output: contiguous when
    the strides allow (a strided slice keeps the store loop scalar)."""
    v = reshape_view(a, a.shape[:1])
    return v if v is not None else a[:, 0]


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
    register blocks of rows of :mod:`.rowblock`: from 8 classes to ``max_classes``
    (``cpu_row_block_max_classes``, or ``..._XENT_...`` for the
    loss), never above ``tiles.SUM_BLOCK`` (a block's exp-sum is not
    split)."""
    from fastlogits.cpu.tiles import SUM_BLOCK  # lazily, as the kernel modules (import time)

    return 8 <= C <= min(max_classes, SUM_BLOCK)


def _plane_blocks(C, with_sums):
    """Whether channels-first pixels of C classes go by the register blocks
    of :mod:`.planeblock`: up to ``cpu_plane_block_max_classes``
    classes for an op that sums exponentials (never above
    ``tiles.SUM_BLOCK``: a block's exp-sum is not split), up to
    ``cpu_plane_block_argmax_max_classes`` for argmax and the
    confusion matrix."""
    from fastlogits.cpu.tiles import SUM_BLOCK  # lazily, as the kernel modules (import time)

    if with_sums:
        return C <= min(tuning.current().cpu.plane_block_max_classes, SUM_BLOCK)
    return C <= tuning.current().cpu.plane_block_argmax_max_classes


def _streams(x, out):
    """Whether the channels-first kernels write the x-sized output ``out``
    by non-temporal stores (:mod:`.stream`): C-contiguous, at least
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

    float16 outputs (2-byte bits, :mod:`.scores`) are not streamed: a
    block's 16 halves are half a line, so they would go through the
    scratch, and that copy by non-temporal stores measured slower than by
    ordinary ones (docs/perf/cpu-067)."""
    from fastlogits.cpu.prefetch import LINE_BYTES as line
    from fastlogits.cpu.planeblock import LANES, WRITE_EBUF, WRITE_EBUF_STREAM, WRITE_STREAM

    if not _streams(x3, out3) or holds_half_bits(out3):
        return WRITE_EBUF
    lanes = LANES if lanes is None else lanes
    if (lanes * out3.itemsize % line == 0 and out3.itemsize == x3.itemsize
            and x3.shape[2] * x3.itemsize % line == 0
            and x3.ctypes.data % line == out3.ctypes.data % line):
        return WRITE_STREAM
    return WRITE_EBUF_STREAM


def run_expnorm(x3, out3, red2, inv_t, mode):
    """softmax / log_softmax / logsumexp (``mode`` from :mod:`.softmax`).

    ``out3`` (outer, C, inner) or None, ``red2`` (outer, inner) or None;
    x3 and the output of floats, or both of float16 bits (:mod:`.scores`).
    """
    from fastlogits.cpu import softmax as k

    outer, C, inner = x3.shape
    if red2 is None:
        red2 = _stand_in(2, x3.dtype)
    blocks = _row_blocks(C, tuning.current().cpu.row_block_expnorm_max_classes)
    x2 = _row_view(x3, 1 if blocks else tuning.current().cpu.row_min_classes, out3)
    if x2 is not None:
        # The row kernels need C-contiguous rows (out too: a copy for huge C).
        if out3 is None:
            out2 = work = np.empty((1, C), x3.dtype)
        else:
            out2 = _rows(out3)
            work = out2 if out2.flags.c_contiguous else np.empty(out2.shape, out2.dtype)
        ahead = _row_prefetch_bytes(C, x3.itemsize)
        with launch_threads(x3.size) as nthreads:
            if blocks:
                k.expnorm_cl_blocks(x2, work, _flat(red2), inv_t, mode, nthreads, ahead)
            else:
                apart = out3 is not None and not np.may_share_memory(x2, work)
                stream = out3 is not None and _streams_rows(x2, work)
                k.expnorm_cl_rows(x2, work, _flat(red2), inv_t, mode, nthreads, ahead, stream,
                                  apart)
        if work is not out2:
            out2[...] = work
        return
    if out3 is None:
        out3 = _stand_in(3, x3.dtype)
    with launch_threads(x3.size) as nthreads:
        if inner > 1:
            # Straight into out unless it may overlap x (in place) or is strided.
            direct = out3.flags.c_contiguous and not np.may_share_memory(x3, out3)
            blocks = (_plane_blocks(C, True) and x3.flags.c_contiguous
                      and out3.flags.c_contiguous)
            k.expnorm_cf(x3, out3, red2, inv_t, mode, _cf_tile_pixels(x3, True), nthreads, direct,
                         blocks, _plane_write(x3, out3), tuning.current().cpu.prefetch_plane_bytes,
                         _cf_copies_tiles(x3))
        else:
            k.expnorm_cl_tiles(_rows(x3), _rows(out3), _flat(red2), inv_t, mode, _tile_pixels(C),
                               nthreads, tuning.current().cpu.prefetch_bytes)


def run_argmax(x3, labels2, conf2, inv_t):
    """argmax (``conf2`` None) or classify into (outer, inner) outputs; x3
    of floats or float16 bits (:mod:`.scores`)."""
    from fastlogits.cpu import argmax as k

    outer, C, inner = x3.shape
    with_conf = conf2 is not None
    if conf2 is None:
        conf2 = _stand_in(2, _computed_in(x3))
    blocks = _row_blocks(C, tuning.current().cpu.row_block_max_classes)
    x2 = _row_view(x3, 1 if blocks else tuning.current().cpu.row_min_classes if with_conf
                   else tuning.current().cpu.row_argmax_min_classes)
    with launch_threads(x3.size) as nthreads:
        if inner > 1:
            k.argmax_cf(x3, labels2, conf2, inv_t, with_conf, _cf_tile_pixels(x3, with_conf),
                        nthreads,
                        _plane_blocks(C, with_conf) and x3.flags.c_contiguous,
                        tuning.current().cpu.prefetch_plane_bytes, _cf_copies_tiles(x3))
        elif x2 is not None:
            k.argmax_cl_rows(x2, _flat(labels2), _flat(conf2), inv_t, with_conf, nthreads,
                             _row_prefetch_bytes(C, x3.itemsize), blocks)
        else:
            k.argmax_cl_tiles(_rows(x3), _flat(labels2), _flat(conf2), inv_t, with_conf,
                              _tile_pixels(C), nthreads, tuning.current().cpu.prefetch_bytes)
