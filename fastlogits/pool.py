"""Reuse of large host output buffers between calls.

A fresh array of more than 32 MiB costs more than the kernel that fills it:
glibc gives such allocations their own ``mmap`` and unmaps them on free, so
every call faults its output's pages in again and the kernel zeroes them
first. For an x-sized float32 output of a 1024×2048×19 map that is about
8 ms on top of a 13 ms softmax (docs/perf/cpu-050). Smaller arrays are
already reused by glibc's heap.

So the CPU backend takes its large outputs from here. Each is a view of a
block that goes back to a free list when the last array (or view) using it
is gone; the next output of the same rounded size reuses the block, its
pages already mapped. The free list holds at most
``cpu_output_pool_bytes`` (oldest blocks go first); set it to 0 to
turn the reuse off. Outputs under ``cpu_output_pool_min_bytes`` are
plain ``np.empty`` arrays.

An output from here is an ordinary writeable, C-contiguous ndarray whose
data start on a 64-byte line (or where ``like``'s do in theirs); it does
not own its data (``flags.owndata`` is False, so ``ndarray.resize``
refuses it: use ``np.resize``). Its contents before the kernel writes them
are as undefined as ``np.empty``'s.
"""

import collections
import math
import os
import threading

import numpy as np

from fastlogits import tuning

#: Blocks are sized in whole huge pages, so outputs of nearly equal sizes
#: share them and NumPy's huge-page advice applies to every block.
_GRANULE = 2 << 20

#: Data start this many bytes into a line-aligned address.
_ALIGN = 64

_lock = threading.Lock()
#: Blocks whose last user is gone, appended by ``_Block.__del__`` without
#: the lock (a deque's append is atomic), moved to ``_free`` under it.
_returned = collections.deque()
#: Free blocks (1-D uint8 arrays), oldest first.
_free = []


class _Block:
    """The base object of a pooled output: holds the block while any array
    using it lives, and hands it back when the last one goes.

    NumPy keeps it as the ``base`` of the array made from its
    ``__array_interface__`` and of every view of that array. (A view of an
    ndarray would not do: NumPy points views at the array that owns the
    data, so the first array could die while views still used the block.)
    """

    __slots__ = ("__array_interface__", "_raw")

    def __init__(self, raw, offset, shape, dtype):
        self._raw = raw
        self.__array_interface__ = {
            "data": (raw.ctypes.data + offset, False),
            "shape": tuple(shape),
            "typestr": dtype.str,
            "version": 3,
        }

    def __del__(self):
        try:
            _returned.append(self._raw)
            # Never wait here: this may run inside ``empty`` (a garbage
            # collection in the thread holding the lock); the block then
            # waits in ``_returned`` for the next call.
            if _lock.acquire(blocking=False):
                try:
                    _settle(tuning.current().cpu.output_pool_bytes)
                finally:
                    _lock.release()
        except Exception:  # interpreter shutdown: module globals may be gone
            pass


def _settle(cap):
    """Move returned blocks to the free list, then drop the oldest until at
    most ``cap`` bytes are held. The caller holds the lock."""
    while _returned:
        _free.append(_returned.popleft())
    held = sum(raw.nbytes for raw in _free)  # a few blocks: the cap over 32 MiB at most
    while held > cap:
        held -= _free.pop(0).nbytes


def _after_fork_in_child():
    """A fork while another thread held the lock would leave it held in
    the child for good: the child starts with a fresh one."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _block_bytes(nbytes):
    return -(-(nbytes + _ALIGN) // _GRANULE) * _GRANULE


def empty(shape, dtype, like=None):
    """A C-contiguous array like ``np.empty(shape, dtype)``, its block reused
    from an earlier output when one of the same rounded size is free.

    Its data start on a 64-byte line or, given the array ``like``, at
    ``like``'s offset in its line: the channels-first kernels stream an
    x-sized output straight from their register blocks only when its lines
    fall where x's do (1.24x faster than through the scratch tile; docs/perf/cpu-050).
    """
    dtype = np.dtype(dtype)
    try:
        shape = tuple(map(int, shape))
    except TypeError:  # a scalar size
        shape = (int(shape),)
    # math.prod, not np.prod: this runs on every call, and np.prod on a
    # tuple cost 4 of a small softmax's 30 microseconds.
    nbytes = math.prod(shape) * dtype.itemsize
    cpu = tuning.current().cpu
    if nbytes < cpu.output_pool_min_bytes or dtype.hasobject:
        return np.empty(shape, dtype)
    cap = cpu.output_pool_bytes
    size = _block_bytes(nbytes)
    if size > cap:
        return np.empty(shape, dtype)
    raw = None
    with _lock:
        _settle(cap)
        for i in range(len(_free) - 1, -1, -1):  # the newest first
            if _free[i].nbytes == size:
                raw = _free.pop(i)
                break
    if raw is None:
        raw = np.empty(size, np.uint8)
    offset = (-raw.ctypes.data + (0 if like is None else like.ctypes.data)) % _ALIGN
    return np.asarray(_Block(raw, offset, shape, dtype))


def held_bytes():
    """Bytes of free blocks held for reuse (returned blocks included)."""
    with _lock:
        _settle(tuning.current().cpu.output_pool_bytes)
        return sum(raw.nbytes for raw in _free)


def release():
    """Give every free block back to the system now. Outputs still in use
    are not touched (their blocks return to the pool when they go)."""
    with _lock:
        _settle(0)


def describe(cap=None, least=None):
    """One line on the reuse (``fastlogits info``, ``fastlogits bench``):
    the settings given (a report's), else the current ones."""
    cap = tuning.current().cpu.output_pool_bytes if cap is None else cap
    least = tuning.current().cpu.output_pool_min_bytes if least is None else least
    if cap <= 0:
        return "off (cpu_output_pool_bytes = 0): every output on fresh pages"
    return (f"outputs of {least / 2 ** 20:g} MiB or more reuse the blocks of earlier "
            f"outputs that are gone, up to {cap / 2 ** 20:g} MiB of them kept")
