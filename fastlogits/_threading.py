"""The Numba threading layer: safe under fork and under concurrent calls.

Numba's layers differ (its docs, "The Threading Layers"): GNU OpenMP
(``omp`` on Linux) kills a forked child that runs a parallel kernel after
its parent did ("fork() called from a process already using GNU OpenMP"):
multiprocessing pools, PyTorch's DataLoader workers and gunicorn fork by
default. ``workqueue`` survives fork but aborts when two threads launch
kernels at once. TBB does both, so fastlogits depends on the ``tbb``
package and asks Numba for it first; where TBB cannot load, Numba falls
back to ``workqueue`` and :func:`launch_guard` serializes the launches.

A user's own choice (``NUMBA_THREADING_LAYER`` or
``NUMBA_THREADING_LAYER_PRIORITY`` in the environment) is left alone.
"""

import os
import threading

#: The order fastlogits asks Numba to try: fork- and thread-safe first,
#: then fork-safe (guarded against concurrent launches), OpenMP last.
PRIORITY = ["tbb", "workqueue", "omp"]

#: Layers that abort or deadlock when several threads launch at once.
_THREAD_UNSAFE = frozenset({"workqueue"})

_lock = threading.Lock()


def choose():
    """Set Numba's layer priority to :data:`PRIORITY` unless the user chose
    one. Takes effect if Numba has not started its threads yet (it starts
    them at the first parallel kernel)."""
    if os.environ.get("NUMBA_THREADING_LAYER") or os.environ.get(
            "NUMBA_THREADING_LAYER_PRIORITY"):
        return
    from numba.core import config

    config.THREADING_LAYER = "default"
    config.THREADING_LAYER_PRIORITY = list(PRIORITY)


def active():
    """The threading layer Numba runs on (``numba.threading_layer()``), or
    None before its threads start."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def launch_guard():
    """A lock that parallel launches must hold on a thread-unsafe layer
    (``workqueue``), else None. Call after the threads started."""
    return _lock if active() in _THREAD_UNSAFE else None


def describe():
    """One line for ``fastlogits info``: the layer and what it is safe for."""
    layer = active()
    if layer is None:
        return "not started"
    safety = {"tbb": "fork- and thread-safe",
              "workqueue": "fork-safe; concurrent launches serialized by fastlogits",
              "omp": "thread-safe; NOT safe in children forked after a parallel call"}
    return f"{layer} ({safety.get(layer, 'unknown safety')})"
