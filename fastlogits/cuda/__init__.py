"""CUDA backend: Numba ``@cuda.jit`` kernels, launch configuration and
device-array interop, in two layers over the runtime.

Nothing here compiles or touches the GPU at import.

- :mod:`.runtime`: availability (:func:`.runtime.status`), the caller's
  library and stream, device views of any ``__cuda_array_interface__``
  object, output allocation in the caller's library, the launch;
- :mod:`.kernels`: the ``@cuda.jit`` kernels and device functions, one
  module per family (:mod:`.kernels.softmax`, :mod:`.kernels.argmax`,
  :mod:`.kernels.losses`, :mod:`.kernels.head`), the shared device
  functions (:mod:`.kernels.device`), the error flag's device side
  (:mod:`.kernels.errflag`) and the copy kernels (:mod:`.kernels.copy`);
- :mod:`.host`: the host side: the ``"cuda"`` entries of the frontend's
  dispatch tables (the package itself), the logits ops (:mod:`.host.ops`:
  ``out=`` validation, regime choice, launch, results in the caller's
  library), the losses (:mod:`.host.losses`), the LinearHead
  (:mod:`.host.head`), the error flag raised on the host
  (:mod:`.host.errflag`), the reused scratch (:mod:`.host.scratch`) and the
  kernels' launch signatures for the PTX test (:mod:`.host.signatures`).

The simulator (``NUMBA_ENABLE_CUDASIM=1``) runs the same host code as a GPU.
"""
