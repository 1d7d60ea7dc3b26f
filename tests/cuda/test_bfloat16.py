"""bfloat16 logits on the CUDA backend (issue #38 item 3): the kernels
load their bits (uint16), widen them in registers and round x-shaped
results once as they store them (fastlogits.cuda.kernels.device's score
and stored). Every regime of the ops and of the losses against
fastlogits.reference, special values, the conversions themselves, out=,
and bad outputs.

Under the simulator the input is a host ml_dtypes array with
backend="cuda" (copied over, results back as ml_dtypes arrays); on a GPU
torch CUDA bfloat16 tensors too (tests marked ``real_gpu``). The PTX of
the bfloat16 kernels for sm_90: tests/cuda_host/test_cuda_ptx.py (its
uint16 variant).
"""

import numpy as np
import pytest
from conftest import real_gpu, to_gpu, to_host
from numba import cuda

import fastlogits as fl
from fastlogits import _bfloat16, reference
from fastlogits.cuda.kernels import device
from tests.helpers import assert_bfloat16_close, assert_close, specials_array, to_bfloat16

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
IGNORE = -100

# NaN/inf arithmetic on the simulator's NumPy scalars warns; a GPU does not.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

#: (shape, axis) per regime of the ops under the SMALL config (see conftest
#: and tests/cuda/test_ops.py).
CASES = {
    "tile": ((5, 29, 19), -1),
    "cl-pixel": ((5, 29, 19), -1),  # cuda_cl_pixel_max_c raised: a thread per pixel
    "cf": ((2, 5, 7, 11), 1),
    "rows-warp": ((3, 7, 40), -1),
    "rows-block": ((5, 150), -1),
    "rows-cf": ((2, 100, 3), 1),
}
#: (shape, axis) per regime of the loss kernels (tests/cuda/test_losses.py).
LOSS_CASES = {
    "pixels-cf": ((2, 5, 3, 7), 1),
    "pixels-cl": ((3, 11, 19), -1),
    "rows-warp": ((2, 5, 40), -1),
    "rows-block": ((3, 100), -1),
}


def bf16_logits(rng, shape, axis):
    return to_bfloat16(specials_array(rng, shape, axis, np.float32))


def targets(rng, shape, axis):
    t = rng.integers(0, shape[axis], np.delete(shape, axis % len(shape)))
    t.reshape(-1)[::7] = IGNORE
    return t


def as_bfloat16(r):
    """A result on the host as an ml_dtypes bfloat16 array (a torch
    bfloat16 tensor through its bits)."""
    if type(r).__module__.split(".")[0] == "torch":
        import torch

        return r.detach().cpu().view(torch.int16).numpy().view(BF16)
    return to_host(r)


def check_ops(x, xin, axis, temperature=1.0):
    """Every op on ``xin`` (the host bfloat16 ``x`` with backend="cuda", or
    a GPU copy of it) against the reference on x."""
    kw = {"backend": "cuda"}
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = as_bfloat16(getattr(fl, op)(xin, axis, temperature=temperature, **kw))
        assert_bfloat16_close(got, getattr(reference, op)(x, axis, temperature=temperature))
    labels, conf = fl.classify(xin, axis, temperature=temperature, **kw)
    want_labels, want_conf = reference.classify(x, axis, temperature=temperature)
    np.testing.assert_array_equal(to_host(labels), want_labels)
    np.testing.assert_array_equal(to_host(fl.argmax(xin, axis, **kw)), want_labels)
    assert_close(to_host(conf), want_conf, np.float16)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ops_match_the_reference(tune, rng, case):
    if case == "cl-pixel":
        tune(cuda_cl_pixel_max_c=24)
    shape, axis = CASES[case]
    x = bf16_logits(rng, shape, axis)
    check_ops(x, x, axis, temperature=0.7 if case in ("cf", "rows-warp") else 1.0)
    assert isinstance(fl.softmax(x, axis, backend="cuda"), np.ndarray)


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_losses_match_the_reference(rng, case):
    shape, axis = LOSS_CASES[case]
    x = to_bfloat16(rng.standard_normal(shape) * 4)
    t = targets(rng, shape, axis)
    w = rng.uniform(0.2, 3.0, shape[axis])
    for weight, eps, reduction in [(None, 0.0, "mean"), (w, 0.2, "none"), (w, 0.0, "sum")]:
        kw = dict(class_weight=weight, label_smoothing=eps, reduction=reduction,
                  ignore_index=IGNORE)
        loss, grad = fl.cross_entropy(x, t, axis, return_grad=True, backend="cuda", **kw)
        want, want_grad = reference.cross_entropy(x, t, axis, return_grad=True, **kw)
        np.testing.assert_allclose(loss, want, rtol=4e-6, atol=4e-6)
        assert_bfloat16_close(grad, want_grad, atol=1e-6)
        np.testing.assert_allclose(fl.cross_entropy(x, t, axis, backend="cuda", **kw), want,
                                   rtol=4e-6, atol=4e-6)
    np.testing.assert_array_equal(
        fl.confusion_matrix(x, t, axis, ignore_index=IGNORE, backend="cuda"),
        reference.confusion_matrix(x, t, axis, ignore_index=IGNORE))


def test_special_values_in_the_losses():
    """NaN where a pixel's max is not finite (NaN, +inf, all -inf), 0 where
    ignored, the gradient in bfloat16."""
    x = to_bfloat16([[np.nan, 1, 2], [np.inf, 1, 2], [-np.inf] * 3, [1, 2, -np.inf],
                     [1e-39, 3e38, -3e38], [0.5, 0.25, 0.125]])
    t = np.array([0, 1, 2, 1, 2, IGNORE])
    loss, grad = fl.cross_entropy(x, t, reduction="none", return_grad=True, backend="cuda")
    want, want_grad = reference.cross_entropy(x, t, reduction="none", return_grad=True)
    assert_close(loss, want, np.float16)
    assert_bfloat16_close(grad, want_grad, atol=1e-6)


@cuda.jit
def _convert(bits, values, wide, rounded):
    """``wide[k]`` = the value of the bfloat16 ``bits[k]`` (read as a score),
    ``rounded[k]`` = float32 ``values[k]`` stored as bfloat16 bits."""
    for k in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        wide[k] = device.score(bits[k], np.float32)
    for k in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        rounded[k] = device.stored(rounded, values[k])


def test_device_conversions(rng):
    """Every bfloat16 bit pattern widened exactly; float32 values (random
    bits, ties, the largest finite and beyond, subnormals, NaN) rounded to
    nearest even as the host rounds them, NaN kept NaN (quiet)."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = np.concatenate([
        rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.3895314e38, 3.3961e38, -3.4e38, 1e-40,
                  -1e-40, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -(1.0 + 2.0 ** -8)], np.float32)])
    wide = np.zeros(bits.size, np.float32)
    rounded = np.zeros(values.size, np.uint16)
    _convert[2, 64](bits, values, wide, rounded)
    np.testing.assert_array_equal(wide.view(np.uint32), _bfloat16.widen(bits).view(np.uint32))
    want = _bfloat16.round_bits(values)
    nan = np.isnan(values)
    np.testing.assert_array_equal(rounded[~nan], want[~nan])
    assert np.isnan(_bfloat16.widen(rounded[nan])).all() and (rounded[nan] & 0x0040).all()


def test_out_and_empty(rng):
    """bfloat16 ``out=`` (host, with backend="cuda"), in place, and empty
    inputs."""
    x = bf16_logits(rng, (4, 6, 19), -1)
    out = np.zeros(x.shape, BF16)
    assert fl.softmax(x, out=out, backend="cuda") is out
    assert_bfloat16_close(out, reference.softmax(x))
    y = x.copy()
    assert fl.log_softmax(y, out=y, backend="cuda") is y
    assert_bfloat16_close(y, reference.log_softmax(x))
    t = targets(rng, x.shape, -1)
    grad = np.zeros(x.shape, BF16)
    loss, g = fl.cross_entropy(x, t, ignore_index=IGNORE, return_grad=True, grad_out=grad,
                               backend="cuda")
    assert g is grad
    assert_bfloat16_close(grad, reference.cross_entropy(x, t, ignore_index=IGNORE,
                                                        return_grad=True)[1], atol=1e-6)
    e = np.zeros((0, 5), BF16)
    assert fl.softmax(e, backend="cuda").dtype == BF16
    loss, g = fl.cross_entropy(e, np.zeros(0, np.int64), reduction="none", return_grad=True,
                               backend="cuda")
    assert g.shape == (0, 5) and g.dtype == BF16


def test_bad_outputs(rng):
    """bfloat16 outputs only where x's dtype goes, and only bfloat16 there:
    host and GPU outputs alike."""
    x = bf16_logits(rng, (4, 5), -1)
    with pytest.raises(TypeError, match="out has dtype uint16, expected bfloat16"):
        fl.softmax(x, out=cuda.device_array((4, 5), np.uint16), backend="cuda")
    with pytest.raises(TypeError, match="out has dtype float32, expected bfloat16"):
        fl.softmax(x, out=np.empty((4, 5), np.float32), backend="cuda")
    with pytest.raises(TypeError, match="grad_out has dtype uint16, expected bfloat16"):
        fl.cross_entropy(x, np.zeros(4, np.int64), return_grad=True, backend="cuda",
                         grad_out=np.empty((4, 5), np.uint16))
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected an integer dtype"):
        fl.argmax(x, out=np.empty(4, BF16), backend="cuda")
    with pytest.raises(TypeError, match=r"out\[1\] \(confidence\) has dtype bfloat16, expected "
                                        "float32"):
        fl.classify(x, out=(np.empty(4, np.int64), np.empty(4, BF16)), backend="cuda")
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected float32"):
        fl.softmax(x.astype(np.float32), out=np.empty((4, 5), BF16), backend="cuda")


# --------------------------------------------------------------------------
# torch CUDA tensors (a real GPU)
# --------------------------------------------------------------------------

def _torch_bfloat16(x):
    """A torch CUDA bfloat16 tensor of the ml_dtypes array ``x``."""
    torch = pytest.importorskip("torch")
    return to_gpu(x.view(np.int16), "torch").view(torch.bfloat16)


@real_gpu
@pytest.mark.parametrize("case", ["tile", "cf", "rows-block"])
def test_torch_tensors(rng, case):
    import torch

    shape, axis = CASES[case]
    x = bf16_logits(rng, shape, axis)
    xt = _torch_bfloat16(x)
    check_ops(x, xt, axis)
    p = fl.softmax(xt, axis)
    assert isinstance(p, torch.Tensor) and p.dtype == torch.bfloat16 and p.is_cuda
    out = torch.empty_like(xt)
    assert fl.log_softmax(xt, axis, out=out) is out
    assert_bfloat16_close(as_bfloat16(out), reference.log_softmax(x, axis))
    assert fl.softmax(xt, axis, out=xt) is xt  # in place
    assert_bfloat16_close(as_bfloat16(xt), reference.softmax(x, axis))
    y = to_bfloat16(rng.standard_normal(shape) * 4)
    t = targets(rng, shape, axis)
    loss, grad = fl.cross_entropy(_torch_bfloat16(y), to_gpu(t, "torch"), axis,
                                  ignore_index=IGNORE, return_grad=True)
    want, want_grad = reference.cross_entropy(y, t, axis, ignore_index=IGNORE, return_grad=True)
    assert grad.dtype == torch.bfloat16
    np.testing.assert_allclose(loss, want, rtol=4e-6)
    assert_bfloat16_close(as_bfloat16(grad), want_grad, atol=1e-6)


@real_gpu
def test_torch_strided_and_bad_outputs(rng):
    import torch

    big = bf16_logits(rng, (6, 10, 19), -1)
    xt = _torch_bfloat16(big)[:, ::2]  # not foldable: copied through a temporary
    check_ops(big[:, ::2], xt, -1)
    with pytest.raises(TypeError, match="out has dtype float32, expected bfloat16"):
        fl.softmax(xt, out=torch.empty(xt.shape, dtype=torch.float32, device=xt.device))
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected float32"):
        fl.softmax(xt.float(), out=torch.empty(xt.shape, dtype=torch.bfloat16,
                                               device=xt.device))
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected an integer dtype"):
        fl.argmax(xt, out=torch.empty(xt.shape[:-1], dtype=torch.bfloat16, device=xt.device))
