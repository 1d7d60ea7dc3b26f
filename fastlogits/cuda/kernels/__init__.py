"""The CUDA backend's kernels: ``@cuda.jit`` kernels and device functions at
module top level, no host code.

- :mod:`.device`: device functions shared by every kernel family (the
  online max / exp-sum / first-index update, its combine, the exp-sum
  second pass of the thread-per-pixel kernels, group reductions with warp
  shuffles or a shared-memory tree);
- :mod:`.softmax` and :mod:`.argmax`: one kernel per regime
  (channels-first, channels-last small C, rows), paired with
  :mod:`fastlogits.cpu.ops.softmax` and :mod:`fastlogits.cpu.ops.argmax`;
- :mod:`.losses`: cross_entropy and confusion_matrix;
- :mod:`.head`: the fused LinearHead (W and b staged in shared memory, the
  epilogues above fused after the matvec);
- :mod:`.errflag`: the error flag's device functions and reset kernel;
- :mod:`.copy`: device-to-device copies and zero fills.
"""
