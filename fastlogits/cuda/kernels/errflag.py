"""Error flags, the device side: what kernels call to record a
data-dependent problem (:func:`raise_flag`) or to see one an earlier
kernel recorded (:func:`block_sees_flag`), and the 1-thread kernel that
clears a flag (:func:`reset_flag`). The host side, which hands out the
flag and raises the ``ValueError``, is :class:`fastlogits.cuda.host.errflag.ErrorFlag`.

:func:`raise_flag` packs ``(index, code)`` into one int64 and keeps the
minimum with one atomic, so the report is deterministic however the
threads interleave: the first offending item (smallest index) and its own
code.
"""

import numpy as np
from numba import cuda

#: Codes are 1 .. CODES - 1; the flag holds ``index * CODES + code``.
CODES = 256

#: The flag's value while no error was found.
CLEAR = np.iinfo(np.int64).max


@cuda.jit(device=True)
def raise_flag(flag, code, index):
    """Record error ``code`` (1 .. 255) found at item ``index`` (>= 0)."""
    cuda.atomic.min(flag, 0, index * CODES + code)


@cuda.jit(device=True)
def block_sees_flag(flag, sm):
    """True when ``flag`` was raised before this block read it, the same
    answer for every thread of the block (thread 0 reads it into the shared
    1-element int64 ``sm``): a kernel that must not write once an earlier
    kernel found bad data returns early, uniformly, before any
    ``syncthreads``. Every thread of the block must call it."""
    if cuda.threadIdx.x == 0:
        sm[0] = flag[0]
    cuda.syncthreads()
    return sm[0] != CLEAR


@cuda.jit(cache=True)
def reset_flag(flag):
    # Cleared by a 1-thread kernel on the caller's stream: no host copy, no sync.
    if cuda.grid(1) == 0:
        flag[0] = CLEAR
