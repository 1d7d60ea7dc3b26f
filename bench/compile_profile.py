"""Where a pytest run spends its time compiling: a plugin that records
Numba's ``numba:compile`` events per dispatcher.

    python -m pytest -p bench.compile_profile -p no:xdist   # one process
    FASTLOGITS_COMPILE_PROFILE=out.txt python -m pytest -p bench.compile_profile ...

At the end it writes (default ``compile-profile.txt``) the total
top-level compilation time and, per kernel, its seconds and the number of
specializations compiled (nested compiles of called functions are counted
in their caller's time). On a cold cache this is the suite's compile
bill; on a warm one, cache loads. Then the number of specializations of
each parallel driver the run used, compiled or loaded from the cache
(the same on a warm cache as on a cold one). docs/perf/cpu-027 used it.
"""

import os
import time
from collections import defaultdict

from numba.core import event

_seconds = defaultdict(float)
_compiles = defaultdict(int)


class _Listener(event.Listener):
    def __init__(self):
        self._starts = []

    def on_start(self, ev):
        self._starts.append(time.perf_counter())

    def on_end(self, ev):
        took = time.perf_counter() - self._starts.pop()
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        name = f"{func.__module__}.{func.__qualname__}" if func else "?"
        _compiles[name] += 1
        if not self._starts:  # top level: nested compiles are in this time
            _seconds[name] += took


event.register("numba:compile", _Listener())


def _drivers_in_use():
    """``{kernel: specializations}`` of fastlogits' parallel drivers this
    process compiled or loaded from the cache (so a warm cache counts too)."""
    from fastlogits.tools.precompile import cached_dispatchers

    return {f"{d.py_func.__module__}.{d.py_func.__qualname__}": len(d.signatures)
            for d in cached_dispatchers()
            if d.targetoptions.get("parallel") and d.signatures}


def pytest_sessionfinish(session):
    path = os.environ.get("FASTLOGITS_COMPILE_PROFILE", "compile-profile.txt")
    with open(path, "w") as fh:
        fh.write(f"top-level compilation: {sum(_seconds.values()):.1f} s\n")
        for name, sec in sorted(_seconds.items(), key=lambda kv: -kv[1]):
            fh.write(f"{sec:8.1f} s {_compiles[name]:4d}  {name}\n")
        used = _drivers_in_use()
        fh.write(f"parallel drivers' specializations in use (compiled or loaded): "
                 f"{sum(used.values())}\n")
        for name, n in sorted(used.items()):
            fh.write(f"{n:4d}  {name}\n")
