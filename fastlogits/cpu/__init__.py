"""CPU backend: Numba ``@njit(cache=True)`` kernels launched in parallel by
one ``@njit(parallel=True)`` fan-out (:mod:`.threads`), in layers.

- :mod:`.host` and :mod:`.head_host`: the host side, the ``"cpu"`` entries
  of the frontend's dispatch tables (canonical views, float16 chunks,
  outputs);
- :mod:`.plan`: the only place that chooses a kernel variant (regime,
  register blocks, tile sizes, prefetch, non-temporal writes) and the
  ``run_*`` launchers that apply the choice;
- :mod:`.threads`: the thread count of a launch, and the launch itself
  (serial, or the kernel's tasks in parallel through its address);
- :mod:`.ops`: the Numba drivers per op family (softmax, argmax, losses,
  confusion, head);
- :mod:`.blocks`: tiles and register blocks (tiles, rowblock, planeblock,
  rowvec, gather, the LinearHead micro-kernels);
- :mod:`.llvm`: LLVM-IR intrinsics and bit-level helpers (irutil, fastexp,
  fastlog, half, scores, prefetch, stream, runexp, indirect).

Each layer imports only the layers below it (host -> plan -> ops ->
blocks -> llvm).
"""
