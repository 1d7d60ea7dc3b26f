"""Fixtures of the CPU backend's tests."""

import numba
import pytest


@pytest.fixture(params=["whole", "parallel"])
def launch(request, tune):
    """The kernels run whole on the calling thread, or fanned out in
    chunks on two threads (``cpu_serial_below=0``)."""
    if request.param == "parallel":
        tune(cpu_serial_below=0)
        n = numba.get_num_threads()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        yield request.param
        numba.set_num_threads(n)
    else:
        yield request.param
