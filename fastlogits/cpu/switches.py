"""Compile-time switches of the CPU kernels: arguments that are True or None.

A kernel compiled for a first call should hold the code that call runs, not
every path a later call might take. Numba prunes a branch on an
argument's None-ness (``if want_grad is not None:``) before it types the
branch, in the function and in every helper the argument is passed to, so
a switch that is None compiles a kernel without the code it guards
(docs/perf/cpu-078). A True switch prunes nothing: Numba resolves ``is
None`` only for a None (or literal) type, and True is typed a plain
boolean, so the ``else`` of ``if s is not None`` is compiled too (a
plain boolean compiles both paths and picks at run time). Code wanted
only without a feature therefore sits under a switch of its own that is
None where the feature is on: exactly one of :func:`mode_switches`'
three is True (docs/perf/cpu-080). The host passes :func:`switch`'s
value; the kernels test ``is not None``.
"""

from fastlogits._modes import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX


def switch(on):
    """The switch argument for a call that wants the code it guards
    (True) or not (None)."""
    return True if on else None


def mode_switches(mode):
    """``(exps, logs, lse)``: the switches of an exp op's ``mode``
    (:mod:`fastlogits._modes`) for the kernels compiled per op, one True
    and two None: ``exps`` for softmax (the exponentials stored and
    scaled), ``logs`` for log_softmax, ``lse`` for logsumexp (no x-sized
    output)."""
    return switch(mode == SOFTMAX), switch(mode == LOG_SOFTMAX), switch(mode == LOGSUMEXP)
