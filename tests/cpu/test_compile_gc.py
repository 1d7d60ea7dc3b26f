"""fastlogits.cpu.compile_gc: the garbage collector is paused while a
kernel of fastlogits compiles, and only then (docs/perf/cpu-080)."""

import gc
from types import SimpleNamespace

import numpy as np
import pytest
from numba import njit
from numba.core import event

import fastlogits as fl
from fastlogits.cpu import compile_gc


def _event(module):
    func = SimpleNamespace(__module__=module)
    return SimpleNamespace(data={"dispatcher": SimpleNamespace(py_func=func)})


@pytest.fixture
def collector_state():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_for_an_outermost_compile_of_fastlogits(collector_state):
    gc.enable()
    pause = compile_gc._PauseCollector()
    pause.on_start(_event("fastlogits.cpu.ops.losses"))
    assert not gc.isenabled()
    pause.on_start(_event("numba.cpython.builtins"))  # a nested overload
    pause.on_end(None)
    assert not gc.isenabled()
    pause.on_end(None)
    assert gc.isenabled()


def test_other_compiles_and_a_disabled_collector_are_left_alone(collector_state):
    gc.enable()
    pause = compile_gc._PauseCollector()
    pause.on_start(_event("__main__"))  # a user's function, enclosing one of ours
    pause.on_start(_event("fastlogits.cpu.ops.losses"))
    assert gc.isenabled()
    pause.on_end(None)
    pause.on_end(None)
    assert gc.isenabled()
    gc.disable()  # the user's choice stays
    pause.on_start(_event("fastlogits.cpu.ops.losses"))
    pause.on_end(None)
    assert not gc.isenabled()


def test_a_real_compile_runs_paused(collector_state):
    """A listener registered after fastlogits' sees the collector disabled
    at the start of a compile of a function of fastlogits (one made here,
    of a module named so: never cached) and enabled after; a compile of a
    function of this module runs with it enabled."""
    fl.softmax(np.ones((3, 5), np.float32))  # fastlogits.cpu.plan installs the pause
    gc.enable()
    seen = []

    class Watch(event.Listener):
        def on_start(self, ev):
            seen.append((compile_gc._ours(ev), gc.isenabled()))

        def on_end(self, ev):
            pass

    def twice(a):
        return 2 * a

    def thrice(a):
        return 3 * a

    twice.__module__ = "fastlogits.probe"
    twice, thrice = njit(twice), njit(thrice)
    with event.install_listener("numba:compile", Watch()):
        assert twice(2) == 4 and thrice(2) == 6
    assert seen == [(True, False), (False, True)]
    assert gc.isenabled()
