"""Tuning: typed, frozen settings per target, read once per plan.

The kernels take these values as arguments (never as globals frozen at
compile time), so changing them needs no recompilation. They are read
when a call's plan is made (``fastlogits._plan``), and plans are cached
per tuning: :func:`override` makes a new :class:`Tuning`, so calls inside
it make plans of their own and calls after it find the old ones again.

    >>> from fastlogits import tuning
    >>> with tuning.override(cpu_tile_pixels=64, cuda_threads_per_block=128):
    ...     tuning.current().cpu.tile_pixels
    64

Each knob says what it does and why in a line or two; the measurements
behind a value are in the optimization log, ``docs/perf/<id>.md``.
"""

import contextlib
import dataclasses
import threading

from fastlogits import _cpuinfo

#: Fast-math flags of every CPU kernel, fixed at compile time (not a
#: tunable; a set, as Numba takes no frozenset; never mutate it): without
#: ``nnan`` and ``ninf``, since -inf masks and NaN propagation are part of
#: the contract; ``reassoc`` lets reductions vectorize, ``contract``
#: allows FMA.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@dataclasses.dataclass(frozen=True)
class CpuTuning:
    """The CPU kernels' settings (read by ``fastlogits.cpu.plan``)."""

    #: Pixels per tile: a tile's C scores and its per-pixel scratch stay in
    #: L1/L2 while max, exp-sum and the write happen.
    tile_pixels: int = 256
    #: At most this many scores in a channels-last (transposed) or
    #: LinearHead tile: fewer pixels for large C (never under 16).
    tile_elements: int = 32 * 1024
    #: At most this many bytes of scores (at their computed precision) in a
    #: channels-first tile of an op that reads it twice; half the L2
    #: (docs/perf/cpu-068). argmax and confusion_matrix take ``tile_pixels``.
    cf_tile_bytes: int = (_cpuinfo.l2_bytes() or 1 << 20) // 2
    #: From this many classes, channels-first tiles whose class planes are
    #: a multiple of 4 KiB apart (same cache sets) are copied first and the
    #: copy read (docs/perf/cpu-068).
    cf_copy_min_classes: int = 500
    #: Pixels per tile of the cross-entropy's register-block paths
    #: (docs/perf/cpu-048: 1.09-1.25x against 256 at 19 classes).
    loss_tile_pixels: int = 1024
    #: Contiguous channels-last rows of at least this many classes go to
    #: the vector row kernels (``rowvec``) for the ops with exponentials;
    #: fewer to transposed tiles (crossover 32-96, docs/perf/cpu-021).
    row_min_classes: int = 64
    #: The same for argmax and confusion_matrix (docs/perf/cpu-021).
    row_argmax_min_classes: int = 12
    #: Contiguous rows of 8 to this many classes go by blocks of rows
    #: transposed in registers (``rowblock``) for argmax, classify and the
    #: confusion matrix (docs/perf/cpu-026, cpu-028, cpu-031).
    row_block_max_classes: int = 96
    #: The same for softmax, log_softmax and logsumexp (docs/perf/cpu-032).
    row_block_expnorm_max_classes: int = 63
    #: The same for cross_entropy without a gradient (docs/perf/cpu-028).
    row_block_xent_max_classes: int = 96
    #: Channels-first maps of up to this many classes go by blocks of pixels
    #: reduced in registers (``planeblock``) for the ops with exponentials
    #: (docs/perf/cpu-037).
    plane_block_max_classes: int = 64
    #: The same for argmax and confusion_matrix (docs/perf/cpu-037).
    plane_block_argmax_max_classes: int = 48
    #: Channels-last views with non-contiguous rows of at least this many
    #: classes are copied to contiguous rows (16 such rows overflow L2).
    row_copy_min_classes: int = 16384
    #: Software prefetch distance of the channels-last kernels, bytes; 0
    #: turns it off (docs/perf/cpu-022).
    prefetch_bytes: int = 4096
    #: Channels-last rows longer than this get no software prefetch: the
    #: hardware follows a long row; where that starts depends on the CPU
    #: (docs/perf/cpu-056 on AMD, cpu-060 on Intel).
    row_prefetch_max_bytes: int = 768 if _cpuinfo.vendor() == "amd" else 3072
    #: The channels-first blocks prefetch each class plane this many bytes
    #: ahead; 0 turns it off (docs/perf/cpu-037).
    prefetch_plane_bytes: int = 256
    #: Outputs the size of x of at least this many bytes are written by
    #: non-temporal stores (docs/perf/cpu-038).
    stream_min_bytes: int = 16 << 20
    #: Channels-last outputs are streamed too when their rows are at least
    #: this many bytes (docs/perf/cpu-058, cpu-059).
    stream_row_min_bytes: int = 2048
    #: Kernels on fewer scores run whole on the calling thread, outside the
    #: threading layer: waking the pool costs more than the work, and a
    #: parallel region costs 1 us even on one thread (docs/perf/cpu-076).
    serial_below: int = 1 << 16
    #: Upper bound on the bytes of the confusion matrix's private (C, C)
    #: int64 histograms, one per chunk of work.
    confusion_hist_bytes: int = 64 * 1024 * 1024
    #: LinearHead, channels-last: with N >= this ratio times C the logits
    #: are dot products along the features, below it a tile of features is
    #: transposed first (measured crossover N/C about 3 at C = 19).
    head_dot_min_ratio: int = 3
    #: Free output blocks kept for reuse (bytes; 0: none): reused pages are
    #: not faulted and zeroed again (docs/perf/cpu-050).
    output_pool_bytes: int = 1 << 30
    #: Outputs from this size on come from the pool; glibc already reuses
    #: smaller blocks.
    output_pool_min_bytes: int = 32 << 20
    #: float16 elements converted to float32 at a time where the kernels do
    #: not read float16 directly (bounds the extra memory).
    half_chunk_elements: int = 1 << 20
    #: The kernels read float16 (and bfloat16) as they are where the CPU
    #: converts half precision in hardware; off, every op goes through the
    #: float32 chunks (1.3-4x slower, docs/perf/cpu-065 to cpu-067).
    half_direct: bool = True


@dataclasses.dataclass(frozen=True)
class CudaTuning:
    """The CUDA kernels' settings (read by ``fastlogits.cuda.host.ops.plan`` and
    ``fastlogits.cuda.host.head.plan``)."""

    #: Threads per block, a multiple of 32. Above 256 the kernels with the
    #: most registers (LinearHead's cross_entropy: 168 per thread) do not fit.
    threads_per_block: int = 256
    #: Above this many classes, rows are reduced by a whole block.
    large_c: int = 2048
    #: Channels-last inputs of at most this many classes are read a thread
    #: per pixel by the ops that reduce the class axis (H200: argmax 0.48
    #: against 1.27 ms through the tile).
    cl_pixel_max_c: int = 32
    #: More classes than ``cl_pixel_max_c``, up to this many: a shared tile,
    #: a thread per pixel; more (below ``large_c``): a warp per row.
    tile_max_c: int = 32
    #: Shared memory per block for that tile (bytes).
    tile_shared_bytes: int = 32 * 1024
    #: Cap on the grid; the kernels grid-stride over the rest.
    max_blocks: int = 16384
    #: Channels-first inputs with C > ``large_c`` and fewer pixels than this
    #: are reduced a block per pixel.
    cf_min_pixels: int = 16384
    #: Group reductions by warp shuffles (False: the shared-memory tree the
    #: simulator always uses).
    warp_shuffle: bool = True
    #: Shared memory the LinearHead kernels may use for W and b (bytes).
    head_shared_bytes: int = 32 * 1024


@dataclasses.dataclass(frozen=True)
class DaskTuning:
    """How the ops run on dask arrays (read by ``fastlogits._dask`` when a
    graph is built, and in each task for the thread count)."""

    #: A class (or LinearHead feature) axis split into several chunks is
    #: rechunked to one chunk, with a dask ``PerformanceWarning`` naming the
    #: memory each chunk then needs; False: a ValueError instead.
    rechunk_classes: bool = True
    #: Numba threads of each chunk's kernel; 0: the cores divided by the
    #: tasks that may run at once (the worker's threads, the threaded
    #: scheduler's pool), so dask's threads times Numba's fit the cores.
    threads_per_task: int = 0


@dataclasses.dataclass(frozen=True)
class Tuning:
    """All settings: ``cpu``, ``cuda`` and ``dask``. Hashable, so plans key on it."""

    cpu: CpuTuning = CpuTuning()
    cuda: CudaTuning = CudaTuning()
    dask: DaskTuning = DaskTuning()


_current = Tuning()
_lock = threading.Lock()  # one override enters or leaves at a time


def current():
    """The settings in force (:func:`override`'s, else the defaults for
    this machine): process-wide, so worker threads see them too."""
    return _current


_TARGETS = {"cpu": CpuTuning, "cuda": CudaTuning, "dask": DaskTuning}


def _target_fields():
    """``{"cpu_tile_pixels": ("cpu", "tile_pixels"), ...}``: every knob
    by its flat name."""
    names = {}
    for target, cls in _TARGETS.items():
        for f in dataclasses.fields(cls):
            names[f"{target}_{f.name}"] = (target, f.name, f.type)
    return names


_FIELDS = _target_fields()


def replaced(tuning, **changes):
    """``tuning`` with the knobs ``changes`` (flat names, e.g.
    ``cpu_tile_pixels=64``) replaced, their types checked."""
    per_target = {target: {} for target in _TARGETS}
    for name, value in changes.items():
        if name not in _FIELDS:
            raise TypeError(f"unknown tuning knob {name!r}; known: {', '.join(sorted(_FIELDS))}")
        target, field, kind = _FIELDS[name]
        want = bool if kind in (bool, "bool") else int
        if want is bool and not isinstance(value, bool) or (
                want is int and (isinstance(value, bool) or not isinstance(value, int))):
            raise TypeError(f"{name} must be {want.__name__}, got {value!r}")
        if want is int and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        per_target[target][field] = value
    return Tuning(**{target: dataclasses.replace(getattr(tuning, target), **fields)
                     for target, fields in per_target.items()})


@contextlib.contextmanager
def override(**changes):
    """Run a block with some knobs changed, process-wide (tests,
    experiments, benchmarks); nested overrides stack, and the previous
    settings come back on exit, also after an exception. Not meant for
    threads that override different knobs at once.

    Parameters
    ----------
    **changes
        Knobs by flat name: ``cpu_<field>`` of :class:`CpuTuning`,
        ``cuda_<field>`` of :class:`CudaTuning`, ``dask_<field>`` of
        :class:`DaskTuning`.
    """
    global _current
    with _lock:
        before = _current
        _current = replaced(before, **changes)
        now = _current
    try:
        yield now
    finally:
        with _lock:
            _current = before
