"""fastlogits.cpu.calls: a call from compiled code is inlined at Numba IR
level, and where it is not (``inline="never"``, kernels), a constant
argument reuses the callee's specialization for the argument's plain type."""

import numpy as np
from numba import njit

from fastlogits.cpu import calls
from fastlogits.tuning import FASTMATH


@njit
def _callee(a, i, region):
    return a[i] + region[1]


@njit
def _twice(a, k):
    # A literal 0, a literal False and a tuple of literals beside the same
    # call with plain values.
    return _callee(a, 0, (False, 0)) + _callee(a, k, (k > 5, k))


@njit(inline="never")  # as the functions on_c_planes wraps
def _callee_plain(a, i, region):
    return a[i] + region[1]


@njit(fastmath=FASTMATH, error_model="numpy")  # the kernels' flags: inlined
def _callee_inlined(a, i, region):
    return a[i] + region[1]


@njit(fastmath=FASTMATH, error_model="numpy")
def _twice_inlined(a, k):
    return _callee_inlined(a, 0, (False, 0)) + _callee_inlined(a, k, (k > 5, k))


@njit
def _kernel(task, ntasks, a):
    a[task] += ntasks


@njit
def _launches_kernel(a):
    _kernel(0, 1, a)


@njit
def _twice_plain(a, k):
    return _callee_plain(a, 0, (False, 0)) + _callee_plain(a, k, (k > 5, k))


def test_constant_arguments_share_the_callee():
    a = np.arange(4.0)
    assert _twice(a, 2) == 0.0 + 0 + 2.0 + 2
    assert len(_callee.signatures) == 2  # Numba's own typing: a literal twin
    calls.share_literal_calls(prefix=__name__)
    assert _twice_plain(a, 3) == 0.0 + 0 + 3.0 + 3
    assert len(_callee_plain.signatures) == 1
    assert "Literal" not in str(_callee_plain.signatures[0])


def test_nested_calls_are_inlined_but_kernels_are_not():
    """Typed and compiled only inside their callers: a helper has no
    specialization of its own; a kernel (``task, ntasks`` first) keeps
    its own, which the host's launches call."""
    a = np.arange(4.0)
    calls.share_literal_calls(prefix=__name__)
    assert _twice_inlined(a, 3) == 0.0 + 0 + 3.0 + 3
    assert _callee_inlined.signatures == []
    assert _callee.targetoptions.get("inline", "never") == "never"  # default flags: called
    _launches_kernel(a)
    assert a[0] == 1.0
    assert len(_kernel.signatures) == 1


def test_library_dispatchers_are_shared():
    """Once the plan is imported, every CPU kernel's dispatcher types nested
    calls by plain types."""
    from fastlogits.cpu import plan  # noqa: F401 - imports every driver and callee
    from fastlogits.cpu.blocks import tiles
    from fastlogits.cpu.llvm import fastexp, fastlog
    from fastlogits.cpu.ops import losses, softmax

    for d in (tiles.tile_max, softmax._tile, losses._tile_losses, losses._pixel_losses):
        assert getattr(d.__dict__.get("get_call_template"), "shares_literals", False), d
    # inlined: small (bounds, prefetch), or large and called from one place
    for d in (tiles.chunk_bounds, tiles.work_chunks, losses._block_losses, losses._plane_losses):
        assert d.targetoptions["inline"] == "always", d
    # inlined: large, but called once by each of the kernels that call it
    assert softmax._vector_rows.targetoptions["inline"] == "always"
    # called: large and called from several places (inlined, each copy is
    # typed again), kernels, functions called with *args
    # and functions of other floating-point flags (inlined, a body takes its
    # caller's: the exact exp and log are compiled without reassoc)
    for d in (softmax._tile, losses._tile_losses, softmax.expnorm_cl_rows, losses.ce_cf,
              losses.ce_cf_blocks, softmax._plane_tile, tiles._stream_rows_c, fastexp.exp32,
              fastexp.exp64, fastlog.log1p32, fastlog.log64):
        assert d.targetoptions.get("inline", "never") == "never", d


@njit(fastmath=FASTMATH, error_model="numpy")
def _large(a, k):
    # More bytecode than calls.SMALL_HELPER_BYTES.
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * k
        s -= a[i] / (k + 1.0)
        s *= 1.0 + a[i] * 1e-9
        s += (a[i] - k) * (a[i] + k) * 0.5
        s += a[i] if a[i] > k else -a[i]
        s += a[i] * a[i] * a[i] * 1e-3 - k * 1e-4
        s += max(a[i], k) - min(a[i], k) + abs(a[i] - 2.0 * k)
    return s


@njit
def _kernel_b(task, ntasks, a):
    a[task] = _large(a, 2.0)


def test_a_large_helper_is_inlined_only_into_kernels_calling_it_once():
    """A large helper is typed once in each kernel that names it once (as
    its own function it would cost an LLVM module of its own); named twice
    in one function, or by a helper (itself inlined in several places),
    it stays a function."""
    assert len(_large.py_func.__code__.co_code) > calls.SMALL_HELPER_BYTES
    assert calls._inlined_into_callers(_large, {_kernel: 1, _kernel_b: 1})
    assert calls._inlined_into_callers(_large, {_kernel: 1})
    assert not calls._inlined_into_callers(_large, {_kernel: 2})
    assert not calls._inlined_into_callers(_large, {_kernel: 1, _twice_inlined: 1})
