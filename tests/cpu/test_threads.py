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
