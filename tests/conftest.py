"""Shared fixtures: a reproducible random generator whose seed is printed.

Set FASTLOGITS_SEED to replay a failure. tests/cuda is collected only in a
process where the CUDA backend works (a real GPU, or NUMBA_ENABLE_CUDASIM=1
as tests/test_cuda_simulator.py arranges).
"""

import os
import random

import numpy as np
import pytest

SEED = int(os.environ.get("FASTLOGITS_SEED", random.SystemRandom().randrange(2**32)))

collect_ignore = []
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    from fastlogits.api import backends

    if "cuda" not in backends():
        collect_ignore.append("cuda")


def pytest_collection_modifyitems(session, config, items):
    """Start the CUDA simulator subprocess right after collection, so it runs
    beside the rest of the suite instead of after it."""
    if any(item.name == "test_cuda_backend_under_simulator" for item in items):
        from tests import test_cuda_simulator

        test_cuda_simulator.start()


def pytest_report_header(config):
    return f"fastlogits random seed: FASTLOGITS_SEED={SEED}"


@pytest.fixture
def rng(request):
    """A fresh generator per test, derived from the session seed and the test name."""
    name_key = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**31)
    return np.random.default_rng([SEED, name_key])
