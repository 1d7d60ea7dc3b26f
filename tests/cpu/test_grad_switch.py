"""The loss kernels' ``want_grad`` is True, or None for the loss alone
(docs/perf/cpu-078): Numba prunes the gradient's branches on an
argument's None-ness, so a loss-only call must reach every loss kernel
with None (a False would compile, and run, the gradient's code), and a
call with the gradient with True; the register blocks' kernels take
its complement too, ``loss_only`` (docs/perf/cpu-080). Their
``smoothing`` likewise (docs/perf/cpu-079)."""

import inspect

import numpy as np
import pytest
from numba import types

import fastlogits as fl
from fastlogits import reference as ref


def _want_grad_types(kernel, name="want_grad"):
    at = list(inspect.signature(kernel.py_func).parameters).index(name)
    return {sig[at] for sig in kernel.signatures}


@pytest.mark.parametrize("shape, axis, kernel", [
    ((7, 9, 19), -1, "ce_cl_blocks"),  # register blocks (the last rows padded)
    ((7, 9, 130), -1, "ce_cl_rows"),  # many classes: rows
    ((7, 9, 5), -1, "ce_cl_tiles"),  # few classes: transposed tiles
    ((2, 19, 5, 7), 1, "ce_cf_blocks"),  # channels-first: register blocks
    ((2, 70, 5, 7), 1, "ce_cf"),  # channels-first, many classes: tiles
])
def test_loss_kernels_get_none_without_gradient(rng, shape, axis, kernel):
    from fastlogits.cpu.ops import losses

    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    C = shape[axis]
    t = rng.integers(0, C, tuple(s for i, s in enumerate(shape) if i != axis % len(shape)))
    loss = fl.cross_entropy(x, t, axis=axis)
    np.testing.assert_allclose(loss, ref.cross_entropy(x, t, axis=axis), rtol=1e-5)
    k = getattr(losses, kernel)
    assert types.none in _want_grad_types(k)
    loss2, grad = fl.cross_entropy(x, t, axis=axis, return_grad=True)
    want_loss, want_grad = ref.cross_entropy(x, t, axis=axis, return_grad=True)
    assert loss2 == pytest.approx(float(want_loss), rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=2e-6)
    assert _want_grad_types(k) <= {types.none, types.boolean}
    assert types.boolean in _want_grad_types(k)
    if "loss_only" in inspect.signature(k.py_func).parameters:
        # its complement: a kernel with the gradient compiles no loss-only
        # blocks (a True prunes nothing; fastlogits.cpu.switches)
        names = list(inspect.signature(k.py_func).parameters)
        pairs = {(sig[names.index("want_grad")], sig[names.index("loss_only")])
                 for sig in k.signatures}
        assert pairs == {(types.none, types.boolean), (types.boolean, types.none)}


def test_head_loss_kernel_gets_none_without_gradient(rng):
    from fastlogits.cpu.ops import head as head_ops

    W = rng.standard_normal((5, 3))
    head = fl.LinearHead(W, rng.standard_normal(5))
    f = rng.standard_normal((4, 6, 3)).astype(np.float32)
    t = rng.integers(0, 5, (4, 6))
    head.cross_entropy(f, t, axis=-1)
    assert types.none in _want_grad_types(head_ops.head_xent)
    head.cross_entropy(f, t, axis=-1, return_grad=True)
    assert _want_grad_types(head_ops.head_xent) <= {types.none, types.boolean}


@pytest.mark.parametrize("shape, axis, kernel", [((7, 9, 19), -1, "ce_cl_blocks"),
                                                 ((7, 9, 130), -1, "ce_cl_rows"),
                                                 ((2, 19, 5, 7), 1, "ce_cf_blocks")])
def test_loss_kernels_get_none_without_smoothing(rng, shape, axis, kernel):
    from fastlogits.cpu.ops import losses

    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    t = rng.integers(0, shape[axis], tuple(s for i, s in enumerate(shape) if i != axis % len(shape)))
    k = getattr(losses, kernel)
    for grad in (False, True):
        got = fl.cross_entropy(x, t, axis=axis, return_grad=grad)
        want = ref.cross_entropy(x, t, axis=axis, return_grad=grad)
        np.testing.assert_allclose(got[0] if grad else got, want[0] if grad else want, rtol=1e-5)
    assert types.none in _want_grad_types(k, "smoothing")
    for grad in (False, True):
        got = fl.cross_entropy(x, t, axis=axis, label_smoothing=0.2, return_grad=grad)
        want = ref.cross_entropy(x, t, axis=axis, label_smoothing=0.2, return_grad=grad)
        np.testing.assert_allclose(got[0] if grad else got, want[0] if grad else want, rtol=1e-5)
        if grad:
            np.testing.assert_allclose(got[1], want[1], atol=2e-6)
    assert _want_grad_types(k, "smoothing") == {types.none, types.boolean}  # never False
