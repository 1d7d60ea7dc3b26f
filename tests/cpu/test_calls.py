"""fastlogits.cpu.calls: a call from compiled code with a constant argument
reuses the callee's specialization for the argument's plain type."""

import numpy as np
from numba import njit

from fastlogits.cpu import calls


@njit
def _callee(a, i, region):
    return a[i] + region[1]


@njit
def _twice(a, k):
    # A literal 0, a literal False and a tuple of literals beside the same
    # call with plain values.
    return _callee(a, 0, (False, 0)) + _callee(a, k, (k > 5, k))


@njit
def _callee_plain(a, i, region):
    return a[i] + region[1]


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


def test_library_dispatchers_are_shared():
    """Once the plan is imported, every CPU kernel's dispatcher types nested
    calls by plain types."""
    from fastlogits.cpu import plan  # noqa: F401 - imports every driver and callee
    from fastlogits.cpu.blocks import tiles
    from fastlogits.cpu.ops import losses, softmax

    for d in (tiles.tile_max, softmax._tile, losses._tile_losses, losses._pixel_losses):
        assert getattr(d.__dict__.get("get_call_template"), "shares_literals", False), d
