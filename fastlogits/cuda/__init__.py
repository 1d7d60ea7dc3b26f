"""CUDA backend: Numba ``@cuda.jit`` kernels, launch configuration and
device-array interop.

Modules (nothing here compiles or touches the GPU at import):

- :mod:`.runtime`: availability (:func:`.runtime.status`), the caller's
  library and stream, device views of any ``__cuda_array_interface__``
  object, output allocation in the caller's library;
- :mod:`.errflag`: the error flag kernels set for data-dependent checks,
  turned into ``ValueError`` on the host;
- :mod:`.scratch`: the per-thread, per-stream device buffers and pinned
  host mirrors that the ops returning host values reuse (flag, partial
  sums, totals), so each of their calls waits once and allocates nothing;
- :mod:`.device`: device functions shared by every kernel family (the
  online max / exp-sum / first-index update, its combine, the exp-sum
  second pass of the thread-per-pixel kernels, group reductions with warp
  shuffles or a shared-memory tree);
- :mod:`.softmax` and :mod:`.argmax`: the kernels, one per regime
  (channels-first, channels-last small C, rows), paired with
  :mod:`fastlogits.cpu.ops.softmax` and :mod:`fastlogits.cpu.ops.argmax`;
- :mod:`.ops`: the host side called by :mod:`fastlogits.api` (``out=``
  validation, regime choice, launch, results in the caller's library);
- :mod:`.losses`: cross_entropy and confusion_matrix (kernels and host
  side), called by :mod:`fastlogits.losses`;
- :mod:`.head`: the fused LinearHead (W and b staged in shared memory, the
  epilogues above fused after the matvec), called by :mod:`fastlogits.head`.
"""
