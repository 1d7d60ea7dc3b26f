"""The CPU backend's Numba drivers, one module per op family.

:mod:`.softmax` (softmax, log_softmax, logsumexp), :mod:`.argmax` (argmax,
classify), :mod:`.losses` (cross-entropy and its gradient),
:mod:`.confusion` (confusion matrix), :mod:`.head` (the fused LinearHead).
Each holds the ``@njit(parallel=True)`` drivers of every regime; which one
runs is :mod:`fastlogits.cpu.plan`'s choice. Built on
:mod:`fastlogits.cpu.blocks` and :mod:`fastlogits.cpu.llvm`.
"""
