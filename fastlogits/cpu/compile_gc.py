"""Python's cyclic garbage collector paused while Numba compiles a kernel
of fastlogits.

A compile makes hundreds of thousands of short-lived objects (Numba's IR,
types, LLVM wrappers), and the collector's full passes over them took
0.3 s of a first cross_entropy (2.5 s) and 0.6-0.8 s of a first script of
the five ops (4.6 s; docs/perf/cpu-080); which first call pays them
depends on the counts the collector happens to be at. Paused, the
garbage of a compile is collected after it, at the next collection: a
first call of the five ops peaked 8 MB higher so (284 MB against 276).

:func:`install` registers a listener of Numba's ``numba:compile`` events:
a compile of a function from the ``fastlogits`` package that no other
compile encloses disables the collector (if it was enabled) until it
ends. Numba compiles under one lock, so the events of one thread's
compile never interleave with another's. Compiles of other packages'
functions (and cached loads, which are no compiles) are left as they
are.
"""

import gc

from numba.core import event


def _ours(ev):
    """Whether the compile event ``ev`` is of a function of fastlogits."""
    func = getattr(ev.data.get("dispatcher"), "py_func", None)
    return (getattr(func, "__module__", None) or "").startswith("fastlogits.")


class _PauseCollector(event.Listener):
    """Disables the collector from the start of an outermost compile of
    fastlogits to its end."""

    def __init__(self):
        self.depth = 0
        self.paused = False

    def on_start(self, ev):
        self.depth += 1
        if self.depth == 1 and gc.isenabled() and _ours(ev):
            gc.disable()
            self.paused = True

    def on_end(self, ev):
        self.depth -= 1
        if self.depth == 0 and self.paused:
            self.paused = False
            gc.enable()


_LISTENER = None


def install():
    """Register the listener (once per process)."""
    global _LISTENER
    if _LISTENER is None:
        _LISTENER = _PauseCollector()
        event.register("numba:compile", _LISTENER)
