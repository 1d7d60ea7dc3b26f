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

and inside the kernel (:mod:`fastlogits.cuda.kernels.errflag`)::

    if bad:
        raise_flag(flag, 1, item_index)      # device function

:func:`raise_flag` packs ``(index, code)`` into one int64 and keeps the
minimum with one atomic, so the report is deterministic however the
threads interleave: the first offending item (smallest index) and its own
code. :meth:`ErrorFlag.check` copies one integer back (into pinned memory)
and synchronizes the flag's stream (that stream only, never the device):
a data-dependent error cannot be reported without waiting for the data.
Ops that also bring sums back queue both copies and wait once
(:meth:`ErrorFlag.fetch`, then ``read(fetched=True)``).
"""

from fastlogits.cuda import runtime
from fastlogits.cuda.host import scratch
from fastlogits.cuda.kernels.errflag import CLEAR, CODES, reset_flag


class ErrorFlag:
    """A 1-element device int64 array that kernels set on bad data.

    The array and its pinned host mirror are the calling thread's scratch
    for the stream (:mod:`.scratch`), reused by every call: nothing is
    allocated, and the reset kernel is queued only when the flag may be
    set (new, raised, or handed out and never read back: a call that
    stopped between its launch and its check). A flag read back clear
    stays clear, since kernels only ever raise it.

    Parameters
    ----------
    stream : numba stream
        The stream the checking kernels run on; the flag is reset there.
    """

    def __init__(self, stream, ctx=None):
        ws = scratch.get(stream, ctx)
        self.stream = stream
        self.array = ws.flag
        self._host = ws.flag_host
        self._ws = ws
        if ws.flag_maybe_set:
            runtime.launch(reset_flag, 1, 1, stream, 0, self.array)
        # Until read back clear: the kernels about to get it may raise it.
        ws.flag_maybe_set = True

    def fetch(self):
        """Queue the flag's copy to pinned host memory (no wait); then
        synchronize the stream and call ``read(fetched=True)``."""
        self.array.copy_to_host(self._host, stream=self.stream)

    def read(self, fetched=False):
        """``(code, index)`` of the first flagged item, ``(0, None)`` if none,
        once the queued kernels finished. Unless ``fetched`` (the caller
        queued :meth:`fetch` and waited), copies the flag back and
        synchronizes the flag's stream."""
        if not fetched:
            self.fetch()
            self.stream.synchronize()
        value = int(self._host[0])
        if value == CLEAR:
            self._ws.flag_maybe_set = False
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
