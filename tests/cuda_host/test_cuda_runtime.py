"""The CUDA backend's toolchain check, with no GPU: a numba-cuda that cannot
load its NumPy support (numba-cuda 0.30.4 under NumPy 2.5, seen on an H200
machine) makes the backend unavailable with a reason, instead of failing
inside the first kernel compilation."""

import sys

import pytest

runtime = pytest.importorskip("fastlogits.cuda.runtime")


@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
    (tmp_path / "fl_fake_ok.py").write_text("VALUE = 1\n")
    (tmp_path / "fl_fake_broken.py").write_text(
        "import numpy\nnumpy.this_was_removed_in_numpy_9\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("fl_fake_ok", "fl_fake_broken"):
        sys.modules.pop(name, None)
    runtime.toolchain_problem.cache_clear()


def test_loadable_module_is_no_problem(fake_modules):
    assert runtime.toolchain_problem("fl_fake_ok") is None


def test_missing_module_is_given_the_benefit_of_the_doubt(fake_modules):
    assert runtime.toolchain_problem("fl_fake_no_such_module") is None


def test_broken_module_is_reported(fake_modules):
    problem = runtime.toolchain_problem("fl_fake_broken")
    assert "numba-cuda cannot load its NumPy support" in problem
    assert "this_was_removed_in_numpy_9" in problem and "AttributeError" in problem


def test_this_machines_numba_cuda_loads():
    """The pinned numba-cuda and NumPy of this install work together."""
    pytest.importorskip("numba.cuda")
    assert runtime.toolchain_problem() is None
