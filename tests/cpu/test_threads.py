"""CPU kernel launches (``fastlogits.cpu.threads``): the thread count, serial
launches below ``cpu_serial_below`` and the kernels' tasks fanned out above."""

import numba
import pytest

from fastlogits import tuning
from fastlogits.cpu.threads import launch_threads, thread_count


def test_thread_count_is_numbas():
    n = numba.get_num_threads()
    assert thread_count() == n
    numba.set_num_threads(1)
    try:
        assert thread_count() == 1
    finally:
        numba.set_num_threads(n)
    assert thread_count() == n


@pytest.mark.parametrize("small", [True, False])
def test_serial_below_the_threshold_and_restored(small):
    """Below ``cpu_serial_below`` elements a launch runs on the calling
    thread (its count 1 inside, Numba's own view too); the count is back
    afterwards, also when the kernel raises."""
    n = numba.get_num_threads()
    work = tuning.current().cpu.serial_below - 1 if small else tuning.current().cpu.serial_below
    want = 1 if small else n
    with launch_threads(work) as nthreads:
        assert nthreads == want
        assert numba.get_num_threads() == want
    assert numba.get_num_threads() == n
    with pytest.raises(KeyError):
        with launch_threads(work):
            raise KeyError
    assert numba.get_num_threads() == n


def test_kernel_address_one_per_types_and_threads():
    """Threads asking for a kernel's address at once get one address per
    argument types: the kernel compiled once for ``(task, ntasks, *args)``."""
    import numpy as np

    from fastlogits.cpu.ops import losses
    from fastlogits.cpu.threads import kernel_address
    from tests.helpers import run_in_threads

    kernel = losses.target_weight_sum
    args = (np.arange(10), np.ones(4), -100, 2, np.zeros((8, 2)))
    got = [None] * 8

    def ask(k):
        got[k] = kernel_address(kernel, args)

    assert run_in_threads(ask, n=8) == []
    assert all(a == got[0] for a in got) and got[0][0] > 0 and got[0][1] > 0
    other = kernel_address(kernel, (np.arange(10, dtype=np.uint8),) + args[1:])
    assert other[0] != got[0][0]
    assert sum(sig[2].dtype.name in ("int64", "uint8") for sig in kernel.signatures) >= 2


def test_a_kernel_that_returns_is_not_fanned_out():
    """The fan-out drops a kernel's result, so a kernel that returns one
    is refused (its return slot would not match the call)."""
    import numpy as np
    from numba import njit

    from fastlogits.cpu.threads import kernel_address

    @njit
    def returns(task, ntasks, x):
        return x.sum()

    with pytest.raises(TypeError, match="returns nothing"):
        kernel_address(returns, (np.ones(3),))


def test_arguments_that_cannot_be_packed_are_refused():
    """The packed arguments borrow arrays without their owner, so an array
    inside a tuple (whose owner would be stored) is refused, as is a
    buffer too small for the arguments."""
    import numpy as np
    from numba import njit

    from fastlogits.cpu.threads import kernel_address, pack

    @njit
    def kernel(task, ntasks, pair):
        pair[0][task] = 1.0

    with pytest.raises(TypeError, match="not UniTuple"):
        kernel_address(kernel, ((np.ones(3), np.ones(3)),))
    with pytest.raises(ValueError, match="too small"):
        pack(np.empty(8, np.uint8), 0, (np.ones(3), 2.5))


@pytest.mark.parametrize("nthreads", [2, 4])
def test_fanned_out_kernels_share_one_parallel_loop(nthreads):
    """Kernels of different argument types run through the one compiled
    fan-out; every task writes its own results, a kernel's error reaches
    the caller, and the arrays the tasks borrowed are intact afterwards."""
    if numba.config.NUMBA_NUM_THREADS < nthreads:
        pytest.skip(f"Numba has {numba.config.NUMBA_NUM_THREADS} threads")
    import numpy as np
    from numba import njit

    from fastlogits.cpu.threads import _FanOut, fan_out

    @njit
    def fill(task, ntasks, out, scale, shift, flag, nothing, pair):
        if task == ntasks - 1 and scale < 0:
            raise ValueError("the last task refuses a negative scale")
        v = task * scale + shift + pair[0] * pair[1]
        out[task] = v if flag and nothing is None else -v

    n = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        for dtype in (np.float64, np.float32, np.int32):
            out = np.zeros(nthreads, dtype)
            _FanOut(fill)(out, dtype(3), 1.0, True, None, (2, 5))
            assert out.tolist() == [3 * k + 11 for k in range(nthreads)]
        with pytest.raises(ValueError, match="negative scale"):
            _FanOut(fill)(np.zeros(nthreads), -1.0, 1.0, True, None, (2, 5))
    finally:
        numba.set_num_threads(n)
    assert len(fan_out.signatures) == 1
    assert out.base is None and out.flags.owndata  # not freed or resized by the tasks


@pytest.mark.parametrize("nthreads", [1, 2])
def test_fanned_out_tasks_cover_every_chunk(nthreads):
    """Every chunk of a launch runs once, whichever task it falls in: the
    tasks' per-chunk sums in one table equal the serial launch's."""
    if numba.config.NUMBA_NUM_THREADS < nthreads:
        pytest.skip(f"Numba has {numba.config.NUMBA_NUM_THREADS} threads")
    import numpy as np

    from fastlogits.cpu import plan
    from fastlogits.cpu.ops import losses
    from fastlogits.cpu.threads import _FanOut

    t = np.random.default_rng(3).integers(-1, 7, 100_003)  # -1: bad (not ignored)
    w64 = np.linspace(0.5, 2.0, 6)
    n = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        table = plan.chunk_table(nthreads, 2)
        _FanOut(losses.target_weight_sum)(t, w64, 6, nthreads, table)
    finally:
        numba.set_num_threads(n)
    kept = t[(t >= 0) & (t < 6)]
    total, nbad = plan.table_sums(table)
    assert total == pytest.approx(w64[kept].sum(), rel=1e-12)
    assert nbad == np.sum(t < 0)
    assert (table[:, 0] > 0).sum() == (1 if nthreads == 1 else 4 * nthreads)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("ntasks", [1, 2, 3, 5, 8])
def test_every_task_runs_once_and_failures_are_counted(nthreads, ntasks):
    """The threading layer splits the tasks among its threads in shares;
    each task runs exactly once with its own index and the task count, and
    each task that raises is counted, whatever the split (more or fewer
    tasks than threads)."""
    if numba.config.NUMBA_NUM_THREADS < nthreads:
        pytest.skip(f"Numba has {numba.config.NUMBA_NUM_THREADS} threads")
    import numpy as np
    from numba import njit

    from fastlogits.cpu.threads import fan_out, kernel_address, pack

    @njit
    def count(task, ntasks, runs, seen, fail_every):
        runs[task] += 1
        seen[task] = ntasks
        if fail_every and task % fail_every == fail_every - 1:
            raise ValueError("this task fails")

    n = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        for fail_every in (0, 2, 1):
            runs = np.zeros(ntasks, np.int64)
            seen = np.full(ntasks, -1, np.int64)
            args = (runs, seen, fail_every)
            addr, nbytes = kernel_address(count, args)
            buf = np.empty(nbytes, np.uint8)
            nfailed = fan_out(pack(buf, addr, args), buf, ntasks)
            assert runs.tolist() == [1] * ntasks
            assert seen.tolist() == [ntasks] * ntasks
            assert nfailed == (ntasks // fail_every if fail_every else 0)
    finally:
        numba.set_num_threads(n)


_EVERY_LAYER = """
import sys
import numba

try:
    numba.get_num_threads()
except ValueError:  # the layer cannot load here
    print("unavailable")
    sys.exit(0)
assert numba.threading_layer() == sys.argv[1], numba.threading_layer()
from tests.cpu.test_threads import test_every_task_runs_once_and_failures_are_counted as check

for ntasks in range(1, 10):
    for nthreads in (1, 2):
        check(nthreads, ntasks)
print("ok")
"""


@pytest.mark.parametrize("layer", ["tbb", "workqueue", "omp"])
def test_tasks_run_on_every_threading_layer(layer, tmp_path):
    """The fan-out calls the threading layer's own parallel_for: on each
    layer, any count of tasks (more than the threads: workqueue's pool
    has no more queues than threads) runs each task once, and each failure
    is counted (:func:`test_every_task_runs_once_and_failures_are_counted`
    in a child process started on that layer)."""
    from tests.helpers import run_python

    out = run_python(_EVERY_LAYER, layer, timeout=300, NUMBA_THREADING_LAYER=layer,
                     NUMBA_NUM_THREADS="2", NUMBA_CACHE_DIR=str(tmp_path),
                     NUMBA_THREADING_LAYER_PRIORITY=None)
    assert out.returncode == 0, out.stderr[-3000:]
    if out.stdout.strip() == "unavailable":
        pytest.skip(f"the {layer} threading layer does not load here")
    assert out.stdout.strip() == "ok"


def test_only_launched_kernels_take_task_ntasks_first():
    """``task, ntasks`` first marks a kernel the host launches
    (``is_kernel``): such a function is never inlined into its callers
    (``calls.share_literal_calls``). A helper that took them first was
    compiled on its own in every first call of its kernels (cf_chunks,
    docs/perf/cpu-081): every such function must be launched by the host,
    named in ``cpu/plan.py``, ``cpu/host.py`` or ``cpu/head_host.py``."""
    import inspect
    import sys

    from numba.core.dispatcher import Dispatcher

    from fastlogits.cpu import head_host, host, plan
    from fastlogits.cpu.threads import is_kernel

    launching = "".join(inspect.getsource(m) for m in (plan, host, head_host))
    kernels = {(name, k) for name, mod in list(sys.modules.items())
               if name.startswith("fastlogits.cpu.") and mod is not None
               for k, v in vars(mod).items()
               if isinstance(v, Dispatcher) and is_kernel(v) and v.py_func.__module__ == name}
    assert len(kernels) >= 18
    unlaunched = sorted(f"{mod}.{k}" for mod, k in kernels if k not in launching)
    assert not unlaunched, f"not launched by the host, yet taking task, ntasks first: {unlaunched}"


def test_driver_for_chooses_by_work(tune):
    """Below cpu_serial_below the kernel whole on this thread, else its
    tasks fanned out with launch_threads."""
    from fastlogits.cpu.ops import argmax
    from fastlogits.cpu.threads import _FanOut, driver_for

    n = tuning.current().cpu.serial_below
    launch, threads = driver_for(argmax.argmax_cl_rows, n - 1)
    assert launch.func is argmax.argmax_cl_rows and launch.args == (0, 1)
    with threads() as nthreads:
        assert nthreads == 1
    launch, threads = driver_for(argmax.argmax_cl_rows, n)
    assert isinstance(launch, _FanOut) and launch.kernel is argmax.argmax_cl_rows
    with threads() as nthreads:
        assert nthreads == numba.get_num_threads()
    tune(cpu_serial_below=0)
    assert isinstance(driver_for(argmax.argmax_cl_rows, 1)[0], _FanOut)


def test_every_kernel_is_serial_and_launched_by_tasks():
    """The ops' kernels take ``task, ntasks`` first and are not parallel
    themselves: the one parallel region is the fan-out's, and only their
    packing is compiled per argument types."""
    from fastlogits.cpu import ops  # noqa: F401
    from fastlogits.cpu.ops import argmax, confusion, head, losses, softmax
    from fastlogits.cpu.threads import fan_out, is_kernel, pack

    kernels = [obj for m in (argmax, confusion, head, losses, softmax)
               for obj in vars(m).values() if hasattr(obj, "py_func") and is_kernel(obj)]
    assert len(kernels) >= 18
    assert not any(k.targetoptions.get("parallel") for k in kernels)
    # No prange anywhere: the fan-out hands the tasks to the threading
    # layer itself (taskpool.run_tasks), without the GIL.
    assert not fan_out.targetoptions.get("parallel") and fan_out.targetoptions.get("nogil")
    assert not pack.targetoptions.get("parallel")
