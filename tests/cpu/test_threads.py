"""The thread count of a CPU kernel launch (``fastlogits.cpu.threads.launch_threads``)."""

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


def test_serial_twin_one_per_driver_and_threads():
    """Threads asking for a driver's serial twin at once get one twin: a
    dispatcher of its own name, not parallel, listed by serial_twins."""
    from fastlogits.cpu.ops import confusion
    from fastlogits.cpu.threads import serial_twin, serial_twins
    from tests.helpers import run_in_threads

    driver = confusion.confusion_cl_tiles
    got = [None] * 8

    def ask(k):
        got[k] = serial_twin(driver)

    assert run_in_threads(ask, n=8) == []
    assert all(t is got[0] for t in got)
    twin = got[0]
    assert twin.py_func.__qualname__ == driver.py_func.__qualname__ + "__serial"
    assert twin.targetoptions["parallel"] is False
    assert twin.targetoptions["fastmath"] == driver.targetoptions["fastmath"]
    assert any(t is twin for t in serial_twins())


def test_driver_for_chooses_by_work(tune):
    """Below cpu_serial_below the twin on this thread, else the driver with
    launch_threads."""
    from fastlogits.cpu.ops import argmax
    from fastlogits.cpu.threads import driver_for, serial_twin

    n = tuning.current().cpu.serial_below
    kernel, threads = driver_for(argmax.argmax_cl_rows, n - 1)
    assert kernel is serial_twin(argmax.argmax_cl_rows)
    with threads() as nthreads:
        assert nthreads == 1
    kernel, threads = driver_for(argmax.argmax_cl_rows, n)
    assert kernel is argmax.argmax_cl_rows
    with threads() as nthreads:
        assert nthreads == numba.get_num_threads()
    tune(cpu_serial_below=0)
    assert driver_for(argmax.argmax_cl_rows, 1)[0] is argmax.argmax_cl_rows
