"""The CPU backend's Numba drivers, one module per op family.

:mod:`.softmax` (softmax, log_softmax, logsumexp), :mod:`.argmax` (argmax,
classify), :mod:`.losses` (cross-entropy and its gradient),
:mod:`.confusion` (confusion matrix), :mod:`.head` (the fused LinearHead).
Each holds the kernels (drivers) of every regime; which one runs is
:mod:`fastlogits.cpu.plan`'s choice. A kernel is serial code over its
chunks of work, a task at a time (its first arguments ``task, ntasks``),
and returns nothing; :func:`fastlogits.cpu.threads.driver_for` runs it
whole on the calling thread or its tasks in parallel. Built on
:mod:`fastlogits.cpu.blocks` and :mod:`fastlogits.cpu.llvm`.
"""
