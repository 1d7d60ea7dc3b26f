"""Threads of a CPU kernel launch: the calling thread's Numba thread
count (:func:`thread_count`), the count a launch over a given amount of
work gets (:class:`launch_threads`: serial below ``cpu_serial_below``
elements), and how a kernel runs (:func:`driver_for`: whole on the
calling thread below that size, in tasks on the threading layer's
threads above it, :func:`fan_out`)."""

import functools
import threading

import numpy as np
from numba import get_num_threads, njit, set_num_threads, types, typeof
from numba._dispatcher import compute_fingerprint
from numba.core.typing.typeof import Purpose

from fastlogits import _threading, tuning
from fastlogits.cpu.llvm.alloc import empty
from fastlogits.cpu.llvm.indirect import check_packable, packed_size, store_args
from fastlogits.cpu.llvm.taskpool import run_tasks


def _thread_count_calls():
    """``(get, set)``: the calling thread's Numba thread count, read and
    set by the threading layer's own C functions, which Numba binds when
    it launches its threads (0.1 and 0.3 us a call; the public
    ``get_num_threads`` / ``set_num_threads`` take a process-wide lock
    and check their argument each time: 0.7 and 1.0 us, three calls per
    serial launch). The public functions where a Numba version does not
    have them. Either way the count is thread-local, as the public
    functions document."""
    from numba.np.ufunc import parallel

    get_num_threads()  # launches the threading layer, which binds the C functions
    get_c = getattr(parallel, "_get_num_threads", None)
    set_c = getattr(parallel, "_set_num_threads", None)
    if callable(get_c) and callable(set_c):
        return get_c, set_c
    return get_num_threads, set_num_threads


_thread_count = None  # (get, set), bound at the first call of thread_count()


_guard = None  # fastlogits._threading.launch_guard(), read with _thread_count


def thread_count():
    """The calling thread's Numba thread count (``numba.get_num_threads``),
    by the fast call of :func:`_thread_count_calls`."""
    global _thread_count, _guard
    if _thread_count is None:
        calls = _thread_count_calls()  # starts Numba's threads: the layer is known
        _guard = _threading.launch_guard()
        _thread_count = calls
    return _thread_count[0]()


class launch_threads:
    """Threads for a kernel launch over ``work`` elements: ``with
    launch_threads(work) as nthreads`` gives the count to pass to the
    kernel as ``nthreads``.

    Below ``cpu_serial_below`` elements the launch uses the calling
    thread only: waking the pool costs more than the work, and on a busy
    machine a descheduled worker makes a tiny call wait a whole time slice.
    (The thread count is thread-local in Numba and restored on exit.) A
    class, not a generator-based context manager: it runs on every call,
    where microseconds count for small inputs.
    """

    __slots__ = ("_n", "_serial")

    def __init__(self, work):
        self._n = thread_count()
        self._serial = work < tuning.current().cpu.serial_below and self._n > 1

    def __enter__(self):
        if _guard is not None:  # a thread-unsafe layer (fastlogits._threading)
            _guard.acquire()
        if self._serial:
            _thread_count[1](1)
            return 1
        return self._n

    def __exit__(self, *exc):
        if self._serial:
            _thread_count[1](self._n)
        if _guard is not None:
            _guard.release()
        return False


_KERNELS = {}  # (kernel, argument fingerprints) -> (its entry address, bytes of its packed args)
_KERNELS_LOCK = threading.Lock()


def kernel_address(kernel, args):
    """``(address, nbytes)``: the address of ``kernel``'s entry (Numba's
    calling convention) for ``(task, ntasks, *args)``, and the bytes
    :func:`pack` needs for them; the kernel compiled (or loaded from the
    cache) at the first launch of these argument types, then looked up by
    the types' fingerprints (0.5 us for eight arguments)."""
    key = (kernel, tuple(map(compute_fingerprint, args)))
    found = _KERNELS.get(key)
    if found is None:
        with _KERNELS_LOCK:
            found = _KERNELS.get(key)
            if found is None:
                found = _KERNELS[key] = _compiled_address(kernel, args)
    return found


def _compiled_address(kernel, args):
    """:func:`kernel_address`'s lookup of ``kernel`` compiled for ``args``."""
    argtys = tuple(typeof(a, Purpose.argument) for a in args)
    check_packable(argtys, f"{kernel.py_func.__qualname__}, a fanned-out kernel,")
    sig = (types.int64, types.int64) + argtys
    kernel.compile(sig)
    cres = kernel.overloads[sig]
    if cres.signature.return_type != types.none:
        raise TypeError(f"{kernel.py_func.__qualname__} returns {cres.signature.return_type}:"
                        " a fanned-out kernel returns nothing (its results go to its arrays)")
    return (cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name),
            packed_size(cres.target_context, argtys))


@njit(cache=True)
def pack(buf, kernel, args):
    """Writes the kernel's address ``kernel`` (:func:`kernel_address`) and
    the tuple ``args`` into ``buf``, and returns the address of the entry
    that runs a task from them
    (:func:`fastlogits.cpu.llvm.indirect.store_args`): compiled and cached
    per argument types, a few hundredths of a second where a parallel loop
    per types took 0.25-0.35 s (docs/perf/cpu-078)."""
    return store_args(buf, kernel, args)


@njit(nogil=True, cache=True)
def fan_out(entry, buf, ntasks):
    """Run tasks ``0 .. ntasks - 1`` of the kernel whose packed entry is at
    ``entry`` (from :func:`pack`) on the threading layer's threads,
    each ``kernel(task, ntasks, *args)`` with the arguments :func:`pack`
    wrote into ``buf``; returns the number of tasks that failed. One
    compiled signature serves every kernel. Not a ``prange`` loop: the
    tasks go to the threading layer by
    :func:`fastlogits.cpu.llvm.taskpool.run_tasks`, and the function
    compiles as serial code (docs/perf/cpu-081). Numba's threads must be
    running (:func:`thread_count` starts them)."""
    failed = empty(ntasks, np.int64)
    run_tasks(entry, buf, failed)
    nfailed = 0
    for task in range(ntasks):
        nfailed += failed[task]
    return nfailed


def is_kernel(dispatcher):
    """Whether ``dispatcher`` is a kernel the host launches through
    :func:`driver_for`: its first two arguments are ``task, ntasks``."""
    return dispatcher.py_func.__code__.co_varnames[:2] == ("task", "ntasks")


class _FanOut:
    """A kernel launched in parallel: ``fanned(*args)`` runs its tasks on
    the threads (the calling thread's count) through :func:`fan_out`; on
    one thread, the kernel itself."""

    __slots__ = ("kernel",)

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, *args):
        ntasks = thread_count()
        if ntasks <= 1:
            self.kernel(0, 1, *args)
        else:
            addr, nbytes = kernel_address(self.kernel, args)
            buf = np.empty(nbytes, np.uint8)
            # The buffer borrows the arrays: args holds them until the tasks are done.
            if fan_out(pack(buf, addr, args), buf, ntasks):
                self._raise(args, ntasks)

    def _raise(self, args, ntasks):
        """Raises the error of a failed launch: the threads cannot, so the
        tasks run again on this thread, where the kernel raises its own
        exception."""
        for task in range(ntasks):
            self.kernel(task, ntasks, *args)
        raise RuntimeError(f"{self.kernel.py_func.__qualname__}: a task failed on a thread of"
                           " the threading layer, and none failed when run again")


class _OnThisThread:
    """The threads of a serial launch: the calling thread, and nothing to
    set or guard (the kernel never enters the threading layer)."""

    __slots__ = ()

    def __enter__(self):
        return 1

    def __exit__(self, *exc):
        return False


_ON_THIS_THREAD = _OnThisThread()


def _on_this_thread():
    return _ON_THIS_THREAD


def driver_for(kernel, work):
    """``(launch, threads)`` of a kernel over ``work`` elements; ``with
    threads() as nthreads`` gives the thread count to pass it, and
    ``launch(*args)`` runs ``kernel(task, ntasks, *args)`` for every task,
    returning nothing (a kernel's results are in its arrays).

    Every CPU kernel is serial code over its chunks of work, a task at a
    time: its first two arguments ``task, ntasks`` make it run the chunks
    ``chunk_bounds(task, ntasks, nchunks)``
    (:func:`fastlogits.cpu.blocks.tiles.chunk_bounds`). Below
    ``cpu_serial_below`` elements it runs whole on the calling thread
    (waking the pool costs more than the work); above, its tasks run in
    parallel through :func:`fan_out`, their arguments packed by
    :func:`pack`. One compiled kernel serves both, one compiled fan-out
    serves every kernel, where a ``prange`` driver with the kernel
    inlined cost 1.6x the kernel (docs/perf/cpu-077), a loop per kernel
    signature 0.25-0.35 s each (docs/perf/cpu-078), and the one loop
    0.18 s (docs/perf/cpu-081).

    Decided once per plan (:mod:`fastlogits.cpu.plan`): the tuning is part
    of a plan's key, the thread count is read at each launch."""
    if work < tuning.current().cpu.serial_below:
        return functools.partial(kernel, 0, 1), _on_this_thread
    return _FanOut(kernel), functools.partial(launch_threads, work)
