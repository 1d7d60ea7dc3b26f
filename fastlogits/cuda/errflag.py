"""Error flags: data-dependent checks on the GPU, raised on the host.

Some input errors are only visible in the data (a target label outside
[0, C) that is not ``ignore_index``). A kernel must not crash or write out
of bounds on them, and the caller must get a ``ValueError`` naming the
problem, as on the CPU. The kernel records the problem in a small device
array and carries on safely (skipping the bad item); the host reads the
flag after the launch and raises.

Usage (the loss kernels do exactly this)::

    flag = ErrorFlag(stream)                 # zeroed on the stream
    kernel[grid, block, stream](..., flag.array)
    flag.check({1: "target holds a value outside [0, {C}) at flat index {index}"},
               C=C)

and inside the kernel::

    if bad:
        raise_flag(flag, 1, item_index)      # device function

:func:`raise_flag` packs ``(index, code)`` into one int64 and keeps the
minimum with one atomic, so the report is deterministic however the
threads interleave: the first offending item (smallest index) and its own
code. :meth:`ErrorFlag.check` copies two integers back
and synchronizes the flag's stream (that stream only, never the device):
a data-dependent error cannot be reported without waiting for the data.
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


@cuda.jit(cache=True)
def _reset(flag):
    # Cleared by a 1-thread kernel on the caller's stream: no host copy, no sync.
    if cuda.grid(1) == 0:
        flag[0] = CLEAR


class ErrorFlag:
    """A 1-element device int64 array that kernels set on bad data.

    Parameters
    ----------
    stream : numba stream
        The stream the checking kernels run on; the flag is zeroed there.
    """

    def __init__(self, stream):
        self.stream = stream
        self.array = cuda.device_array(1, np.int64, stream=stream)
        _reset[1, 1, stream](self.array)

    def read(self):
        """``(code, index)`` of the first flagged item, ``(0, None)`` if none,
        once the queued kernels finished (synchronizes the flag's stream)."""
        host = self.array.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        value = int(host[0])
        if value == CLEAR:
            return 0, None
        return value % CODES, value // CODES

    def check(self, messages, **fields):
        """Raise ``ValueError`` if a kernel set the flag.

        Parameters
        ----------
        messages : dict of int to str
            Message template per code, formatted with ``index`` (the first
            flagged item), ``code`` and ``fields``.
        **fields
            Extra values for the templates (e.g. ``C``).
        """
        code, index = self.read()
        if code == 0:
            return
        template = messages.get(code, "a GPU kernel flagged invalid input (error code {code})")
        raise ValueError(template.format(code=code, index=index, **fields))
