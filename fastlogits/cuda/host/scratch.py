"""Reusable scratch of the ops that bring a few numbers back to the host.

cross_entropy and confusion_matrix return host values (a float64 loss, a
checked target): each call needs an error flag, per-block partial sums,
their float64 total, and pinned host memory to copy those few numbers
into. Allocated per call, with pageable copies and a wait for each, they
were part of the 2.1 ms of host time a cross_entropy call took on an
H200 (1.3 ms after this module; docs/perf/cuda-046). They are
allocated once per host thread, CUDA context and stream, and reused: a
call queues its kernels, two small asynchronous copies into pinned
memory, and waits once.

Reuse is safe because every user waits for its stream before it returns
(the next call on that stream queues behind it), and a host thread never
shares its scratch with another (two threads queueing on one stream would
otherwise overwrite each other's results before either reads them).
"""

import threading

import numpy as np

from fastlogits.cuda import runtime

_LOCAL = threading.local()


def _stream_key(stream, ctx=None):
    return (runtime.context_key() if ctx is None else ctx), runtime.cached_stream_key(stream)


class Scratch:
    """Device buffers and their pinned host mirrors for one stream.

    Attributes
    ----------
    flag, flag_host : int64 (1,)
        The error flag (:mod:`.errflag`) and where it is copied back.
    flag_maybe_set : bool
        Whether :attr:`flag` needs a reset before its next use.
    sums, sums_host : float64 (2,)
        Totals of partial sums (:func:`fastlogits.cuda.kernels.losses.sum_rows`).
    """

    def __init__(self, stream):
        from numba import cuda

        self.stream = stream
        self.flag = cuda.device_array(1, np.int64)
        # False only while the flag is known to hold CLEAR (.errflag).
        self.flag_maybe_set = True
        self.flag_host = cuda.pinned_array(1, np.int64)
        self.sums = cuda.device_array(2, np.float64)
        self.sums_host = cuda.pinned_array(2, np.float64)
        self._partials = {}
        self._views = {}
        self._scales = {}

    def partial(self, dtype, rows, blocks):
        """A (rows, blocks) C-contiguous device array of ``dtype`` (rows 1
        or 2, contents undefined), a view of a buffer that grows to the
        largest grid asked for. The buffer always holds two rows of
        ``blocks``, so the one-row and two-row views of one call share it
        and it never grows (nor is freed) while a call's kernels are queued
        on it. Views are cached: building one costs more host time than the
        kernels that fill it."""
        from numba import cuda

        dtype = np.dtype(dtype)
        key = (dtype.str, rows, blocks)
        view = self._views.get(key)
        if view is not None:
            return view
        buf = self._partials.get(dtype.str)
        if buf is None or buf.size < 2 * blocks:
            buf = cuda.device_array(max(2 * blocks, 2 * 1024), dtype)
            self._partials[dtype.str] = buf
            self._views.clear()  # views of the old buffer
        if len(self._views) >= 64:  # many input sizes: keep the cache small
            self._views.clear()
        view = self._views[key] = runtime.reshape(buf[:rows * blocks], (rows, blocks))
        return view

    def scale(self, dtype):
        """A 1-element device array of ``dtype``: a scale computed on the device."""
        from numba import cuda

        dtype = np.dtype(dtype)
        arr = self._scales.get(dtype.str)
        if arr is None:
            arr = self._scales[dtype.str] = cuda.device_array(1, dtype)
        return arr

    def fetch_sums(self):
        """Queue the copy of :attr:`sums` into :attr:`sums_host` (no wait)."""
        self.sums.copy_to_host(self.sums_host, stream=self.stream)


def get(stream, ctx=None):
    """The calling thread's :class:`Scratch` for ``stream`` in the current
    context (``ctx``: its :func:`fastlogits.cuda.runtime.context_key`, when known)."""
    cache = getattr(_LOCAL, "scratch", None)
    if cache is None:
        cache = _LOCAL.scratch = {}
    key = _stream_key(stream, ctx)
    ws = cache.get(key)
    if ws is None:
        ws = cache[key] = Scratch(stream)
    ws.stream = stream
    return ws
