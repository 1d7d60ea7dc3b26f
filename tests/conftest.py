"""Shared fixtures: a reproducible random generator whose seed is printed.

Set FASTLOGITS_SEED to replay a failure. tests/cuda is collected only in a
process where the CUDA backend works (a real GPU, or NUMBA_ENABLE_CUDASIM=1
as tests/cuda_host/test_cuda_simulator.py arranges).
"""

import contextlib
import os
import random
import shutil
import tempfile

import numpy as np
import pytest

SEED = int(os.environ.get("FASTLOGITS_SEED", random.SystemRandom().randrange(2**32)))
# Processes started after this one (pytest-xdist's workers, the simulator
# run) draw the same seed, so the one printed in the header replays them all.
os.environ["FASTLOGITS_SEED"] = str(SEED)
# Where the simulator run of tests/cuda_host/test_cuda_simulator.py is handed over:
# one directory per session, made by its first process (xdist's controller;
# its workers inherit it).
if not os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["FASTLOGITS_SIM_DIR"] = tempfile.mkdtemp(prefix="fastlogits-sim-")

collect_ignore = []
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    from fastlogits.api import backends

    if "cuda" not in backends():
        collect_ignore.append("cuda")


def pytest_collection_modifyitems(session, config, items):
    """Start the CUDA simulator subprocess right after collection, so it runs
    beside the rest of the suite instead of after it (under pytest-xdist,
    from whichever worker collects first; see tests/cuda_host/test_cuda_simulator.py)."""
    if config.option.collectonly:
        return
    if any(item.name == "test_cuda_backend_under_simulator" for item in items):
        from tests.cuda_host import test_cuda_simulator

        test_cuda_simulator.start()


def pytest_unconfigure(config):
    """The session's process that made the simulator directory removes it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ["FASTLOGITS_SIM_DIR"], ignore_errors=True)


def pytest_report_header(config):
    return f"fastlogits random seed: FASTLOGITS_SEED={SEED}"


@pytest.fixture
def rng(request):
    """A fresh generator per test, derived from the session seed and the test name."""
    name_key = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**31)
    return np.random.default_rng([SEED, name_key])


@pytest.fixture
def tune():
    """``tune(cpu_tile_pixels=64, ...)``: :func:`fastlogits.tuning.override`
    for the rest of the test (undone at its teardown, in reverse order)."""
    from fastlogits import tuning

    with contextlib.ExitStack() as stack:
        yield lambda **knobs: stack.enter_context(tuning.override(**knobs))


@pytest.fixture
def chunk_loads(monkeypatch):
    """The list to which every float32 chunk load of two-byte float x
    (float16, bfloat16: ``fastlogits.cpu.llvm.half.load``) appends the
    shape of the array it loads from: empty where the kernels read x as
    it is."""
    from fastlogits.cpu.llvm import half

    calls = []
    load = half.load

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return load(*args, **kwargs)

    monkeypatch.setattr(half, "load", spy)
    return calls
