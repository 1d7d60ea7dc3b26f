"""Fixtures for the CUDA backend tests: tiny launch configurations, GPU
arrays of every supported kind, and copies back to the host.

These tests run on a real GPU, or in CI under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, see tests/cuda_host/test_cuda_simulator.py). The
simulator differs from a GPU in ways the tests account for:

- it has no warp shuffles: the group reductions take the shared-memory
  tree path there (``ops.plan`` turns shuffles off); the shuffle path is
  tested only on a real GPU (tests marked ``real_gpu``);
- its device arrays (``FakeCUDAArray``) lack the ``__cuda_array_interface__``
  that real Numba device arrays have, so the API would see them as host
  arrays; :func:`_patch_simulator_arrays` adds it here (test-only) so the
  "Numba device array in, Numba device arrays out" path is exercised;
- it computes float32 arithmetic partly in float64 (Python scalars), so
  float32 rounding is only really tested on a GPU; the PTX test
  (tests/cuda_host/test_cuda_ptx.py) checks that float32 kernels hold no float64
  instructions;
- its ``cuda.shared.array`` (numba-cuda 0.30) looks up a block's array
  and creates it when missing without a lock, so two of a block's threads
  (Python threads) can each create their own "shared" array and the
  block's counts split between them (seen once: a confusion matrix two
  counts short); :func:`_patch_simulator_shared` makes the lookup atomic
  (test-only).
"""

import sys
import threading

import numpy as np
import pytest

from fastlogits import tuning
from fastlogits.cuda import runtime

SIM = runtime.simulator()

real_gpu = pytest.mark.skipif(SIM, reason="needs a real GPU (the CUDA simulator lacks this)")


def _patch_simulator_arrays():
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    if "__cuda_array_interface__" in FakeCUDAArray.__dict__:
        return

    def cai(self):
        a = self._ary
        return {"shape": a.shape, "typestr": a.dtype.str, "strides": a.strides,
                "data": (a.__array_interface__["data"][0], not a.flags.writeable),
                "version": 3, "stream": None}

    FakeCUDAArray.__cuda_array_interface__ = property(cai)


def _patch_simulator_shared():
    """Replace FakeCUDAShared.array with the same lookup under a lock: a
    block's static shared arrays are keyed by the calling line, as there."""
    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    if getattr(FakeCUDAShared, "_fastlogits_locked", False):
        return
    lock = threading.Lock()
    unlocked = FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic memory, or the error
            return unlocked(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    FakeCUDAShared.array = array
    FakeCUDAShared._fastlogits_locked = True


if SIM:
    _patch_simulator_arrays()
    _patch_simulator_shared()


#: Small launch configuration: several blocks, partial tiles and
#: grid-stride iterations on small inputs.
SMALL = {
    "cuda_threads_per_block": 64,
    "cuda_max_blocks": 2,
    "cuda_large_c": 64,
    "cuda_tile_max_c": 24,
    # The tile cases test the tile; "cl-pixel" cases raise this (test_ops).
    "cuda_cl_pixel_max_c": 0,
    "cuda_cf_min_pixels": 8,
}


@pytest.fixture(autouse=True)
def small_launch(tune):
    """Every test runs with :data:`SMALL` (tests may tune further)."""
    tune(**SMALL)


class ForeignArray:
    """A GPU array of no known library: only ``__cuda_array_interface__``.

    Wraps a Numba device array (on the simulator a host array); views are
    taken with ``[...]`` on the wrapped array. ``readonly`` marks the
    interface read-only; ``typestr`` reinterprets the memory (same itemsize).
    """

    def __init__(self, dev, readonly=False, typestr=None):
        self._dev = dev
        self._readonly = readonly
        self._typestr = typestr

    @property
    def __cuda_array_interface__(self):
        cai = dict(self._dev.__cuda_array_interface__)
        cai["data"] = (cai["data"][0], self._readonly)
        if self._typestr:
            cai["typestr"] = self._typestr
        return cai

    def __getitem__(self, key):
        return ForeignArray(self._dev[key], self._readonly)

    @property
    def T(self):
        return ForeignArray(self._dev.T, self._readonly)

    def copy_to_host(self):
        return np.asarray(self._dev.copy_to_host())


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001
        return None


KINDS = ["numba", "foreign", "torch", "cupy"]


def to_gpu(a, kind="numba"):
    """A GPU copy of host array ``a`` of library ``kind`` (skips the test
    when that library is missing)."""
    from numba import cuda

    a = np.ascontiguousarray(a)
    if kind == "numba":
        return cuda.to_device(a)
    if kind == "foreign":
        return ForeignArray(cuda.to_device(a))
    if SIM:
        pytest.skip(f"{kind} arrays need a real GPU")
    if kind == "torch":
        torch = _torch()
        if torch is None:
            pytest.skip("torch with CUDA is not installed")
        return torch.from_numpy(a).cuda()
    if kind == "cupy":
        cupy = _cupy()
        if cupy is None:
            pytest.skip("cupy is not installed")
        return cupy.asarray(a)
    raise ValueError(kind)


def to_host(obj):
    """Host NumPy copy of any array the backend returns."""
    if isinstance(obj, np.ndarray):
        return obj
    mod = type(obj).__module__.split(".")[0]
    if mod == "torch":
        return obj.detach().cpu().numpy()
    if mod == "cupy":
        return obj.get()
    return np.asarray(obj.copy_to_host())


def kind_of(obj):
    """The library of an array the backend returned."""
    if isinstance(obj, np.ndarray):
        return "numpy"
    mod = type(obj).__module__.split(".")[0]
    if mod in ("torch", "cupy"):
        return mod
    if mod == "numba":
        return "numba"
    return type(obj).__name__
