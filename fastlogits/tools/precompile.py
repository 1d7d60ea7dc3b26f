"""``fastlogits compile``: the CPU kernels compiled ahead of use, into the
cache Numba will load them from (a Docker image's build step, a cluster
worker's start), and the count of the variants cached there.

A variant is compiled the way a real call compiles it: by calling the
public ops (:data:`fastlogits.registry.ENTRIES`) on small inputs of each
chosen dtype, layout and class count, writeable and read-only, with int64
and uint8 targets, on the CPU backend (cross_entropy also with and
without the gradient and label smoothing, each pair a kernel of its own).
So exactly the kernels real calls use are compiled, and no list of
signatures can drift from the code. The
tasks (one op, dtype, layout and class count each) run in separate
processes in parallel; then one process runs them all again on the cache,
which loads what is there and compiles only what concurrent processes
failed to record (Numba's cache index is rewritten by each process
without a lock).

The cache is Numba's: ``NUMBA_CACHE_DIR`` when set, else ``__pycache__``
next to the package's sources (or a user directory where those are not
writable). Entries are keyed by the CPU model and features: an image
built on one CPU compiles again on another.
"""

import dataclasses
import importlib
import os
import pkgutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

#: The layouts: (shape of a (pixels, C) map, class axis).
LAYOUTS = {"hwc": ("channels-last H x W x C", -1), "chw": ("channels-first N x C x H x W", 1)}
DTYPES = ("float16", "bfloat16", "float32", "float64")
TARGET_DTYPES = ("int64", "uint8")


@dataclass(frozen=True)
class Task:
    """One process's share: every registry entry of ``op`` on ``dtype``
    logits of ``classes`` classes in ``layout``."""

    op: str
    dtype: str
    layout: str
    classes: int

    def __str__(self):
        return f"{self.op} {self.dtype} {self.layout} C={self.classes}"


def op_names():
    """The ops ``--ops`` accepts: each registry entry's name up to its
    first dot past ``head.`` (``cross_entropy`` runs its three entries,
    ``head.argmax`` one)."""
    from fastlogits.registry import ENTRIES

    return sorted({_op_of(name) for name in ENTRIES})


def _op_of(entry_name):
    parts = entry_name.split(".")
    return ".".join(parts[:2]) if parts[0] == "head" else parts[0]


def tasks(ops, dtypes, layouts, classes):
    """Every :class:`Task` of the chosen ops, dtypes, layouts and classes
    (bfloat16 without the LinearHead methods: their features are never
    bfloat16)."""
    return [Task(op, dt, lay, C) for op in ops for dt in dtypes for lay in layouts for C in classes
            if not (dt == "bfloat16" and op.startswith("head."))]


def bfloat16_dtype():
    """ml_dtypes' bfloat16, the NumPy dtype bfloat16 logits come in (its
    kernels are those of torch's bfloat16 tensors too: both are read as
    their bits); a RuntimeError that says what to install without it."""
    try:
        import ml_dtypes
    except ImportError:
        raise RuntimeError("compiling the bfloat16 variants needs ml_dtypes (pip install "
                           "ml_dtypes): the NumPy dtype of bfloat16 logits") from None
    return ml_dtypes.bfloat16


def _shape(layout, C, pixels):
    """A map of about ``pixels`` pixels and C classes in ``layout``."""
    w = min(8, pixels)
    h = max(1, -(-pixels // w))
    return (h, w, C) if layout == "hwc" else (1, C, h, w)


def _pixel_counts(C):
    """The sizes each entry is called on: fewer pixels than a block of
    rows (7: softmax's register blocks need a whole one,
    docs/perf/cpu-079), a small map (on this machine's threads: the
    confusion matrix may take the labels first there), and one of at
    least C * C pixels (within 16 MiB of float32 scores), where it bins
    into private histograms on one thread
    (:func:`fastlogits.cpu.plan.private_histograms`)."""
    return sorted({7, 32, max(32, min(C * C, (4 << 20) // C))})


def _loss_switches(v, axis):
    """cross_entropy with and without the gradient, with and without label
    smoothing: the loss kernels' switches (``want_grad``, ``smoothing``)
    make each pair a kernel of its own (docs/perf/cpu-078, cpu-079)."""
    from fastlogits import losses
    from fastlogits.registry import Inputs

    for grad in (False, True):
        for eps in (0.0, 0.1):
            losses.cross_entropy(v.x, v.t, axis, ignore_index=Inputs.IGNORE, return_grad=grad,
                                 label_smoothing=eps, backend="cpu")


def run_task(task):
    """Call every registry entry of ``task.op`` on the CPU backend; returns
    the number of functions Numba compiled (not loaded from the cache)."""
    import numba
    import numpy as np
    from numba.core import event

    from fastlogits.registry import ENTRIES, Inputs, make_inputs

    compiled = []

    class _Count(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(1)

    from fastlogits import tuning

    entries = [e for name, e in ENTRIES.items() if _op_of(name) == task.op]
    rng = np.random.default_rng(0)
    axis = LAYOUTS[task.layout][1]
    threads = numba.get_num_threads()
    with event.install_listener("numba:compile", _Count()):
        for k, pixels in enumerate(_pixel_counts(task.classes)):
            # The larger map on one thread: the confusion matrix's private
            # histograms (its fused kernel) pay there from C * C pixels.
            numba.set_num_threads(threads if k == 0 else 1)
            shape = _shape(task.layout, task.classes, pixels)
            if task.dtype == "bfloat16":  # drawn in float32, rounded once
                inp = make_inputs(rng, shape, axis, "float32")
                inp = dataclasses.replace(inp, x=inp.x.astype(bfloat16_dtype()))
            else:
                inp = make_inputs(rng, shape, axis, task.dtype)
            x_ro = inp.x.copy()
            x_ro.setflags(write=False)
            variants = [inp, Inputs(x_ro, axis, inp.t, inp.w, inp.head, inp.f, inp.z)]
            if task.classes <= Inputs.IGNORE:
                variants.append(Inputs(inp.x, axis, inp.t.astype(np.uint8), inp.w, inp.head,
                                       inp.f, inp.z))
            # Launched in parallel at any size (cpu_serial_below=0): the
            # kernel a small call runs on its own thread, its packing and
            # the fan-out (compiled once for all kernels).
            with tuning.override(cpu_serial_below=0):
                for v in variants:
                    for e in entries:
                        e.call(v, "cpu")
                    if task.op == "cross_entropy":
                        _loss_switches(v, axis)
    numba.set_num_threads(threads)
    return len(compiled)


def compile_all(todo, jobs, progress=None):
    """Run the tasks ``todo`` in ``jobs`` processes, then all again in one
    process (:func:`_check`). Returns ``(compiled, recompiled, seconds)``:
    the functions compiled in the parallel pass and in the check."""
    import multiprocessing

    t0 = time.perf_counter()
    bar = progress(len(todo) + 1) if progress else None
    compiled = 0
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked Numba state
    try:
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
            futures = {pool.submit(run_task, t): t for t in todo}
            for fut in as_completed(futures):
                compiled += fut.result()
                if bar:
                    bar.set_description(f"compile {futures[fut]}")
                    bar.update(1)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            recompiled = pool.submit(_check, todo).result()
        if bar:
            bar.update(1)
    finally:
        if bar:
            bar.close()
    return compiled, recompiled, time.perf_counter() - t0


def _check(todo):
    """Every task again in one process: loads from the cache, compiling
    only what the parallel pass failed to record; returns that count."""
    return sum(run_task(t) for t in todo)


# --------------------------------------------------------------------------
# what is cached
# --------------------------------------------------------------------------

def _kernel_modules():
    """The modules of fastlogits that define Numba kernels."""
    names = ["fastlogits.tools.bandwidth"]
    for sub in ("cpu", "cuda"):
        try:
            pkg = importlib.import_module(f"fastlogits.{sub}")
        except ImportError:
            continue
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"fastlogits.{sub}.")]
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except Exception:  # noqa: BLE001 - e.g. a CUDA module without a driver
            continue
    return mods


def cached_dispatchers():
    """Every cached Numba dispatcher of fastlogits (``cache=True``), once."""
    seen, out = set(), []
    for mod in _kernel_modules():
        for obj in vars(mod).values():
            cache = getattr(obj, "_cache", None)
            if getattr(cache, "_cache_path", None) and id(obj) not in seen:
                seen.add(id(obj))
                out.append(obj)
    return out


def cache_dirs():
    """The directories the kernels' caches are in (Numba's choice per
    source file; NUMBA_CACHE_DIR, when set, holds them all)."""
    dirs = []
    for d in cached_dispatchers():
        if d._cache._cache_path not in dirs:
            dirs.append(d._cache._cache_path)
    return dirs


def cached_variants():
    """``(drivers, functions)``: the compiled variants of the library's CPU
    kernels in the cache in use that this CPU can load, of the drivers (the
    kernels the host launches, :func:`fastlogits.cpu.threads.is_kernel`, and
    what launches them in parallel, their packing and the fan-out:
    what ``fastlogits compile`` makes) and of every
    cached function (their callees included). Read from Numba's index
    files; entries of edited sources or other CPUs are not counted."""
    from numba.core.registry import cpu_target

    from fastlogits.cpu.threads import fan_out, is_kernel, pack

    magic = cpu_target.target_context.codegen().magic_tuple()
    drivers = functions = 0
    for d in cached_dispatchers():
        if not d.py_func.__module__.startswith("fastlogits.cpu."):  # the library's CPU kernels
            continue
        n = _variants(d, magic)
        functions += n
        if d is fan_out or d is pack or is_kernel(d):
            drivers += n
    return drivers, functions


def _variants(dispatcher, magic):
    """The entries of ``dispatcher``'s cache index this CPU (``magic``)
    can load."""
    try:
        index = dispatcher._cache._cache_file._load_index()  # Numba's reader: skips stale ones
    except Exception:  # noqa: BLE001 - an unreadable or foreign index counts as empty
        return 0
    return sum(1 for key in index if len(key) > 1 and key[1] == magic)
