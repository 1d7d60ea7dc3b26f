"""GPU-array detection without a GPU: interface objects are inspected only."""

import numpy as np

from fastlogits import _checks as chk


class FakeTorchCuda:
    """Mimics a PyTorch CUDA tensor: one that requires grad refuses to
    export ``__cuda_array_interface__`` with a RuntimeError."""

    def __init__(self, requires_grad):
        self.requires_grad = requires_grad

    @property
    def __cuda_array_interface__(self):
        if self.requires_grad:
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")
        return {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}

    def detach(self):
        return FakeTorchCuda(False)


FakeTorchCuda.__module__ = "torch"


def test_requires_grad_tensor_is_a_gpu_array():
    t = FakeTorchCuda(requires_grad=True)
    assert chk.is_gpu_array(t)
    assert chk.gpu_shape_dtype(t) == ((2, 3), np.dtype(np.float32))


def test_host_arrays_are_not_gpu_arrays():
    assert not chk.is_gpu_array(np.zeros(3))
    assert not chk.is_gpu_array([1.0, 2.0])


def test_vector_width_decision_is_recorded():
    """Importing fastlogits decides on 512-bit vectors and says why."""
    from fastlogits import _vector_width

    assert _vector_width.STATUS.startswith(("on", "off", "left to"))
