"""Threads of a CPU kernel launch: the calling thread's Numba thread
count (:func:`thread_count`), the count a launch over a given amount of
work gets (:class:`launch_threads`: serial below ``cpu_serial_below``
elements), and the driver that runs it (:func:`driver_for`: below that
size a parallel driver's serial twin, :func:`serial_twin`)."""

import functools
import threading
import types

from numba import get_num_threads, njit, set_num_threads

from fastlogits import _threading, tuning


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


_TWINS = {}  # driver -> its serial twin, made once (under _TWINS_LOCK)
_TWINS_LOCK = threading.Lock()


def serial_twins():
    """The serial twins made so far in this process (their dispatchers)."""
    return list(_TWINS.values())


def serial_twin(driver):
    """The serial twin of a parallel Numba ``driver``: its Python function
    compiled with the same options but ``parallel=False`` (``prange`` runs
    as ``range``), cached on disk under its own name.

    A parallel driver's launch costs about 1 us more than its twin's even
    on one thread (the parallel region is still scheduled through the
    threading layer), and the launch must set the thread count to 1 and
    back (0.7 us): most of a small call (docs/perf/cpu-076). The twin is
    compiled at the first small call of its signature. Numba's on-disk
    cache keys a function by its module, qualified name and line, not by
    its options, so the twin is a copy of the function under the name
    ``<name>__serial``: it never loads the parallel driver's machine code.
    """
    twin = _TWINS.get(driver)
    if twin is not None:
        return twin
    with _TWINS_LOCK:
        twin = _TWINS.get(driver)
        if twin is None:
            twin = _TWINS[driver] = _make_twin(driver)
    return twin


def _make_twin(driver):
    """:func:`serial_twin`'s dispatcher for ``driver``, new."""
    f = driver.py_func
    twin = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "__serial",
                              f.__defaults__, f.__closure__)
    twin.__qualname__ = f.__qualname__ + "__serial"
    twin.__module__ = f.__module__
    twin.__doc__ = f.__doc__
    options = dict(driver.targetoptions)
    options["parallel"] = False
    options.pop("nopython", None)
    return njit(cache=True, **options)(twin)  # as every driver of the backend


class _OnThisThread:
    """The threads of a serial twin's launch: the calling thread, and
    nothing to set or guard (the twin never enters the threading layer)."""

    __slots__ = ()

    def __enter__(self):
        return 1

    def __exit__(self, *exc):
        return False


_ON_THIS_THREAD = _OnThisThread()


def _on_this_thread():
    return _ON_THIS_THREAD


def driver_for(driver, work):
    """``(kernel, threads)`` of a launch of the parallel ``driver`` over
    ``work`` elements: below ``cpu_serial_below`` its :func:`serial_twin`,
    else the driver itself; ``with threads() as nthreads`` gives the
    thread count to pass it (:class:`launch_threads` for the driver).

    Decided once per plan (:mod:`fastlogits.cpu.plan`): the tuning is part
    of a plan's key, the thread count is read at each launch."""
    if work < tuning.current().cpu.serial_below:
        return serial_twin(driver), _on_this_thread
    return driver, functools.partial(launch_threads, work)
