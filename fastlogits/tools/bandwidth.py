"""Memory-bandwidth ceilings, measured the way our kernels use memory.

``np.sum`` or ``np.copyto`` run on one core; our kernels run on all of
them, so the ceiling they are compared with must too: :func:`read_kernel`
streams an array in blocks over the threads (a vectorized sum per block,
so every byte is loaded once and nothing is written) and
:func:`copy_kernel` copies the same way, with ordinary stores or with
non-temporal ones (:mod:`fastlogits.cpu.llvm.stream`, which the channels-first
kernels use for large outputs; without the read of each output line
first, 1.7x faster on AMD Zen 4). Each ceiling is the best of one
thread and all threads, and the copy's of both kinds of store: on a
shared VM either can be the faster on a given run, and a ceiling below
what the machine does flatters every kernel. On a GPU,
:func:`device_copy_gbps` times a device-to-device copy. Used by
``fastlogits bench`` and the benchmark suite.
"""

import time

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.stream import stream_copy, stream_fence

__all__ = ["read_gbps", "copy_gbps", "device_copy_gbps", "read_kernel", "copy_kernel",
           "thread_counts"]

#: Blocks per thread: enough that a straggling thread does not hold the rest.
_BLOCKS_PER_THREAD = 8


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def read_kernel(x, nblocks):
    """Sum of the 1-D array ``x`` (float32), read once by all threads.

    Each block is a contiguous range summed in one vectorized loop
    (``reassoc`` lets LLVM keep several vector accumulators), so the loop
    runs at load speed; the result is returned so nothing is optimized away.
    """
    n = x.size
    step = (n + nblocks - 1) // nblocks
    partial = np.zeros(nblocks, np.float64)
    for b in prange(nblocks):
        # Offsets clamped at 0: unless LLVM can prove an index >= 0, Numba's
        # negative-index wraparound turns the loads into scalar gathers
        # (this loop then read at a third of the bandwidth; docs/perf/cpu-023).
        lo = max(b * step, 0)
        s = np.float32(0.0)
        for i in range(min(n - lo, step)):
            s += x[lo + i]
        partial[b] = s
    return partial.sum()


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def copy_kernel(x, out, nblocks, stream=False):
    """``out[:] = x`` for 1-D arrays, contiguous blocks on all threads; with
    ``stream`` by non-temporal stores."""
    n = x.size
    step = (n + nblocks - 1) // nblocks
    for b in prange(nblocks):
        lo = max(b * step, 0)  # see read_kernel
        if stream:
            stream_copy(x, lo, out, lo, max(0, min(n - lo, step)))
            stream_fence()
            continue
        for i in range(min(n - lo, step)):
            out[lo + i] = x[lo + i]


def _median_seconds(fn, repeat):
    fn()  # warm-up: compile or load from the cache, fault the pages in
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def thread_counts():
    """The thread counts a ceiling is measured with: 1 and all of Numba's."""
    return sorted({1, get_num_threads()})


def _best_over_threads(fn, bytes_per_pass, repeat, by_threads):
    """GB/s of ``fn(nblocks)`` (``bytes_per_pass`` per call): the best over
    :func:`thread_counts`, each the median of ``repeat`` passes; the figure
    of each count goes into the dict ``by_threads`` when given
    (``set_num_threads`` is restored afterwards)."""
    n = get_num_threads()
    gbps = {}
    try:
        for k in thread_counts():
            set_num_threads(k)
            nblocks = k * _BLOCKS_PER_THREAD
            gbps[k] = bytes_per_pass / _median_seconds(lambda: fn(nblocks), repeat) / 1e9
    finally:
        set_num_threads(n)
    if by_threads is not None:
        by_threads.update(gbps)
    return max(gbps.values())


def _buffers(nbytes, copy):
    n = max(1024, int(nbytes) // 4)
    x = np.ones(n, np.float32)  # written, so its pages are really there
    out = np.zeros(n, np.float32) if copy else None
    return x, out


def read_gbps(nbytes=256 << 20, repeat=5, by_threads=None):
    """Read bandwidth in GB/s (1e9 bytes/s): the best, over one thread and
    all threads, of the median of ``repeat`` passes of :func:`read_kernel`
    over a float32 array of ``nbytes``. ``by_threads``, a dict, receives
    the figure of each thread count."""
    x, _ = _buffers(nbytes, copy=False)
    return _best_over_threads(lambda nb: read_kernel(x, nb), x.nbytes, repeat, by_threads)


def copy_gbps(nbytes=256 << 20, repeat=5, by_threads=None, by_store=None):
    """Copy bandwidth in GB/s counting bytes read plus bytes written
    (2 * ``nbytes`` per pass), as softmax's floor is counted; the best over
    one thread and all threads, like :func:`read_gbps`, and over ordinary
    and non-temporal stores. ``by_threads`` gets the better of the two for
    each thread count, ``by_store`` the best of each kind ("ordinary",
    "non-temporal")."""
    x, out = _buffers(nbytes, copy=True)
    best = {}
    for stream in (False, True):
        got = {}
        _best_over_threads(lambda nb: copy_kernel(x, out, nb, stream), 2 * x.nbytes, repeat, got)
        for k, v in got.items():
            best[k] = max(best.get(k, 0.0), v)
        if by_store is not None:
            by_store["non-temporal" if stream else "ordinary"] = max(got.values())
    if by_threads is not None:
        by_threads.update(best)
    return max(best.values())


def device_copy_gbps(nbytes=256 << 20, repeat=5):
    """GPU device-to-device copy bandwidth in GB/s (read + write), timed with
    CUDA events; None when no GPU is usable."""
    try:
        from numba import cuda

        if not cuda.is_available():
            return None
        n = max(1024, int(nbytes) // 4)
        src = cuda.to_device(np.ones(n, np.float32))
        dst = cuda.device_array(n, np.float32)
        dst.copy_to_device(src)  # warm-up
        cuda.synchronize()
        times = []
        for _ in range(max(1, repeat)):
            start, stop = cuda.event(), cuda.event()
            start.record()
            dst.copy_to_device(src)
            stop.record()
            stop.synchronize()
            times.append(cuda.event_elapsed_time(start, stop) / 1e3)
        return 2 * 4 * n / float(np.median(times)) / 1e9
    except Exception:  # no driver, simulator without events, ...: no ceiling
        return None
