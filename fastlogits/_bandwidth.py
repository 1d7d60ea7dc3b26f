"""Memory-bandwidth ceilings, measured the way our kernels use memory.

``np.sum`` or ``np.copyto`` run on one core; our kernels run on all of
them, so the ceiling they are compared with must too: :func:`read_kernel`
streams an array with every thread (a vectorized sum per block, so every
byte is loaded once and nothing is written) and :func:`copy_kernel` copies
with every thread. On a GPU, :func:`device_copy_gbps` times a device-to-
device copy. Used by ``fastlogits bench`` and the benchmark suite.
"""

import time

import numpy as np
from numba import njit, prange

from fastlogits.config import FASTMATH

__all__ = ["read_gbps", "copy_gbps", "device_copy_gbps", "read_kernel", "copy_kernel"]

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
        s = np.float32(0.0)
        for i in range(b * step, min(n, (b + 1) * step)):
            s += x[i]
        partial[b] = s
    return partial.sum()


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def copy_kernel(x, out, nblocks):
    """``out[:] = x`` for 1-D arrays, contiguous blocks on all threads."""
    n = x.size
    step = (n + nblocks - 1) // nblocks
    for b in prange(nblocks):
        for i in range(b * step, min(n, (b + 1) * step)):
            out[i] = x[i]


def _median_seconds(fn, repeat):
    fn()  # warm-up: compile or load from the cache, fault the pages in
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _buffers(nbytes, copy):
    import numba

    n = max(1024, int(nbytes) // 4)
    x = np.ones(n, np.float32)  # written, so its pages are really there
    out = np.zeros(n, np.float32) if copy else None
    return x, out, numba.get_num_threads() * _BLOCKS_PER_THREAD


def read_gbps(nbytes=256 << 20, repeat=5):
    """Read bandwidth in GB/s (1e9 bytes/s): median over ``repeat`` passes
    of :func:`read_kernel` over a float32 array of ``nbytes``."""
    x, _, nblocks = _buffers(nbytes, copy=False)
    t = _median_seconds(lambda: read_kernel(x, nblocks), repeat)
    return x.nbytes / t / 1e9


def copy_gbps(nbytes=256 << 20, repeat=5):
    """Copy bandwidth in GB/s counting bytes read plus bytes written
    (2 * ``nbytes`` per pass), as softmax's floor is counted."""
    x, out, nblocks = _buffers(nbytes, copy=True)
    t = _median_seconds(lambda: copy_kernel(x, out, nblocks), repeat)
    return 2 * x.nbytes / t / 1e9


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
