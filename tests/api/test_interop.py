"""Inputs from other libraries come back as what they were (issue 38, item 2).

A PyTorch CPU tensor gives torch tensors (views of the NumPy results), an
``out=`` tensor is written through its NumPy view and returned as given,
a tensor that requires grad is read through ``.detach()``, bfloat16 other
than logits is a clear TypeError; a CPU ``__dlpack__`` array is read without a copy and
gives NumPy; an xarray.DataArray gives DataArrays with its dims and
coords. Every op and LinearHead method, on the "numpy" and "cpu" backends.

torch and xarray are optional: their tests skip where they are missing.
"""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _interop

BACKENDS = ("numpy", "cpu")
DTYPES = ("float16", "float32", "float64")
C = 5


# --------------------------------------------------------------------------
# helpers: every op as a call on x (and its targets), with what it returns
# --------------------------------------------------------------------------

def _ops(target, axis, backend):
    """``name -> f(x)`` for every logits op."""
    kw = dict(backend=backend)
    return {
        "softmax": lambda x: fl.softmax(x, axis=axis, temperature=1.5, **kw),
        "log_softmax": lambda x: fl.log_softmax(x, axis=axis, **kw),
        "logsumexp": lambda x: fl.logsumexp(x, axis=axis, **kw),
        "argmax": lambda x: fl.argmax(x, axis=axis, **kw),
        "classify": lambda x: fl.classify(x, axis=axis, **kw),
        "cross_entropy": lambda x: fl.cross_entropy(x, target, axis=axis, **kw),
        "cross_entropy_sum_grad": lambda x: fl.cross_entropy(
            x, target, axis=axis, reduction="sum", return_grad=True, **kw),
        "cross_entropy_none": lambda x: fl.cross_entropy(
            x, target, axis=axis, reduction="none", label_smoothing=0.1, **kw),
        "confusion_matrix": lambda x: fl.confusion_matrix(x, target, axis=axis, **kw),
    }



def _head_ops(head, target, axis, backend):
    kw = dict(axis=axis, backend=backend)
    return {
        "logits": lambda f: head.logits(f, **kw),
        "softmax": lambda f: head.softmax(f, **kw),
        "log_softmax": lambda f: head.log_softmax(f, temperature=2.0, **kw),
        "logsumexp": lambda f: head.logsumexp(f, **kw),
        "argmax": lambda f: head.argmax(f, **kw),
        "classify": lambda f: head.classify(f, **kw),
        "cross_entropy": lambda f: head.cross_entropy(f, target, **kw),
        "cross_entropy_none_grad": lambda f: head.cross_entropy(
            f, target, reduction="none", return_grad=True, **kw),
        "confusion_matrix": lambda f: head.confusion_matrix(f, target, **kw),
    }


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def _equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _logits(rng, layout, dtype, n=C):
    """(x, axis): channels-last (3, 4, n) or channels-first (2, n, 3, 4)."""
    if layout == "cl":
        return (rng.standard_normal((3, 4, n)) * 3).astype(dtype), -1
    return (rng.standard_normal((2, n, 3, 4)) * 3).astype(dtype), 1


def _target(rng, x, axis):
    shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    t = rng.integers(0, C, shape)
    t.flat[0] = -100  # one ignored pixel
    return t


class DLPackOnly:
    """An array of an unknown library: ``__dlpack__`` and nothing else."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


# --------------------------------------------------------------------------
# plain NumPy: nothing to do
# --------------------------------------------------------------------------

def test_numpy_inputs_take_the_fast_path():
    x, out = np.zeros((2, 3)), np.zeros((2, 3))
    assert _interop.unwrap(x, out) == (x, out, None)
    assert _interop.unwrap(x)[2] is None
    # a NumPy x with a NumPy pair of outs: nothing to convert either
    assert _interop.unwrap(x, (out, out))[2] is None


def test_gpu_arrays_are_left_to_the_cuda_backend():
    class Gpu:
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False),
                                    "version": 3}

        def __dlpack_device__(self):
            return (2, 0)

    g = Gpu()
    assert _interop.unwrap(g, "anything") == (g, "anything", None)


def test_fastlogits_imports_neither_torch_nor_xarray():
    import subprocess
    import sys

    code = ("import sys, numpy as np, fastlogits as fl; fl.softmax(np.ones(3), backend='numpy'); "
            "print('torch' in sys.modules, 'xarray' in sys.modules)")
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == [
        "False", "False"]


# --------------------------------------------------------------------------
# PyTorch CPU tensors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["cl", "cf"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_tensors_give_torch_tensors(rng, backend, layout, dtype):
    torch = pytest.importorskip("torch")
    x, axis = _logits(rng, layout, dtype)
    t = _target(rng, x, axis)
    tt = torch.from_numpy(x)
    for name, op in _ops(torch.from_numpy(t), axis, backend).items():
        got, want = _as_tuple(op(tt)), _as_tuple(_ops(t, axis, backend)[name](x))
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            assert type(g) is torch.Tensor, name
            _equal(g.numpy(), w)
            assert g.numpy().dtype == np.asarray(w).dtype, name
    loss = fl.cross_entropy(tt, torch.from_numpy(t), axis=axis, backend=backend)
    # a reduced loss is a 0-d float64 tensor, as PyTorch's
    assert loss.shape == () and loss.dtype == torch.float64


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["cl", "cf"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_features_give_torch_tensors(rng, backend, layout, dtype):
    torch = pytest.importorskip("torch")
    N = 6
    f, axis = _logits(rng, layout, dtype, n=N)
    t = _target(rng, f, axis)
    w, b = rng.standard_normal((C, N)).astype(dtype), rng.standard_normal(C).astype(dtype)
    head = fl.LinearHead(w, b)
    # the weights may be tensors too (read through .detach(): no copy)
    thead = fl.LinearHead(torch.from_numpy(w).requires_grad_(dtype != "float16"),
                          torch.from_numpy(b))
    for name, op in _head_ops(thead, torch.from_numpy(t), axis, backend).items():
        got = _as_tuple(op(torch.from_numpy(f)))
        want = _as_tuple(_head_ops(head, t, axis, backend)[name](f))
        for g, w_ in zip(got, want):
            assert type(g) is torch.Tensor, name
            _equal(g.numpy(), w_)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_out_is_written_through_and_returned(rng, backend):
    torch = pytest.importorskip("torch")
    x, _ = _logits(rng, "cf", "float32")
    t = _target(rng, x, 1)
    tx = torch.from_numpy(x.copy())

    out = torch.empty(x.shape)
    r = fl.softmax(tx, axis=1, out=out, backend=backend)
    assert r is out
    _equal(out.numpy(), fl.softmax(x, axis=1, backend=backend))

    lse = torch.empty(t.shape)  # a NumPy x with a torch out: the out comes back
    assert fl.logsumexp(x, axis=1, out=lse, backend=backend) is lse
    _equal(lse, fl.logsumexp(x, axis=1, backend=backend))

    labels = torch.empty(t.shape, dtype=torch.uint8)
    assert fl.argmax(tx, axis=1, out=labels, backend=backend) is labels
    _equal(labels, fl.argmax(x, axis=1, backend=backend))

    pair = (torch.empty(t.shape, dtype=torch.int16), torch.empty(t.shape))
    got = fl.classify(tx, axis=1, out=pair, backend=backend)
    assert got[0] is pair[0] and got[1] is pair[1]
    for g, w in zip(got, fl.classify(x, axis=1, backend=backend)):
        _equal(g, w)
    # one out in NumPy, one in torch: each comes back as given
    mixed = (np.empty(t.shape, np.int64), torch.empty(t.shape))
    got = fl.classify(tx, axis=1, out=mixed, backend=backend)
    assert got[0] is mixed[0] and got[1] is mixed[1]

    cm = torch.zeros((C, C), dtype=torch.int64)
    for _ in range(2):  # counts are added
        assert fl.confusion_matrix(tx, torch.from_numpy(t), axis=1, out=cm,
                                   backend=backend) is cm
    _equal(cm, 2 * fl.confusion_matrix(x, t, axis=1, backend=backend))

    grad = torch.empty(x.shape)
    loss, g = fl.cross_entropy(tx, t, axis=1, return_grad=True, grad_out=grad, backend=backend)
    assert g is grad and type(loss) is torch.Tensor and loss.shape == ()
    _equal(grad, fl.cross_entropy(x, t, axis=1, return_grad=True, backend=backend)[1])

    # in place: out=x
    assert fl.log_softmax(tx, axis=1, out=tx, backend=backend) is tx
    _equal(tx, fl.log_softmax(x, axis=1, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_out_of_a_linear_head(rng, backend):
    torch = pytest.importorskip("torch")
    N = 4
    f = rng.standard_normal((3, 5, N)).astype(np.float32)
    t = rng.integers(0, C, (3, 5))
    head = fl.LinearHead(rng.standard_normal((C, N)).astype(np.float32))
    out = torch.empty((3, 5, C))
    assert head.softmax(torch.from_numpy(f), out=out, backend=backend) is out
    _equal(out, head.softmax(f, backend=backend))
    pair = (torch.empty((3, 5), dtype=torch.uint8), torch.empty((3, 5)))
    got = head.classify(torch.from_numpy(f), out=pair, backend=backend)
    assert got[0] is pair[0] and got[1] is pair[1]
    labels = torch.empty((3, 5), dtype=torch.int32)
    assert head.argmax(f, out=labels, backend=backend) is labels
    cm = torch.zeros((C, C), dtype=torch.int64)
    assert head.confusion_matrix(torch.from_numpy(f), t, out=cm, backend=backend) is cm
    _equal(cm, head.confusion_matrix(f, t, backend=backend))


def test_torch_results_are_views_of_the_numpy_results(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 6, C)).astype(np.float32)
    out = np.empty_like(x)
    r = fl.softmax(torch.from_numpy(x), out=out)  # a NumPy out: it comes back as given
    assert r is out
    tout = torch.empty(x.shape)
    r = fl.softmax(torch.from_numpy(x), out=tout)
    assert np.shares_memory(r.numpy(), tout.numpy())
    # the input is read without a copy
    tx = torch.from_numpy(x)
    assert np.shares_memory(_interop.unwrap(tx)[0], x)
    # a result tensor shares the NumPy result's memory: torch.from_numpy
    back = _interop.unwrap(tx)[2]
    res = np.ones(3)
    assert np.shares_memory(back(res, -1, "same").numpy(), res)


def test_torch_requires_grad_is_read_through_detach(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 6, C)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    assert np.shares_memory(_interop.unwrap(tx)[0], x)
    p = fl.softmax(tx)
    assert type(p) is torch.Tensor and not p.requires_grad
    _equal(p, fl.softmax(x))
    t = rng.integers(0, C, (4, 6))
    loss, grad = fl.cross_entropy(tx, torch.from_numpy(t), return_grad=True)
    # the gradient is return_grad's, and it is torch's
    loss_t = torch.nn.functional.cross_entropy(tx.reshape(-1, C), torch.from_numpy(t).reshape(-1))
    loss_t.backward()
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="out requires grad"):
        fl.softmax(tx, out=torch.empty(x.shape, requires_grad=True))
    with pytest.raises(ValueError, match="grad_out requires grad"):
        fl.cross_entropy(tx, t, return_grad=True, grad_out=torch.empty(x.shape, requires_grad=True))


def test_torch_targets_and_weights(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 6, C)).astype(np.float32)
    t = rng.integers(0, C, (4, 6)).astype(np.int32)
    w = rng.random(C)
    got = fl.cross_entropy(x, torch.from_numpy(t), class_weight=torch.from_numpy(w))
    assert isinstance(got, np.float64)  # follows x, a NumPy array
    assert got == fl.cross_entropy(x, t, class_weight=w)


def test_torch_out_errors(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((4, 6, C)).astype(np.float32))
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        fl.softmax(x, out=torch.empty(x.shape, dtype=torch.float64))
    base = torch.zeros(4 * 6 * C + 1)
    with pytest.raises(ValueError, match="overlaps x"):
        fl.softmax(base[:-1].view(4, 6, C), out=base[1:].view(4, 6, C))
    with pytest.raises(ValueError, match="share memory"):
        fl.softmax(x, out=torch.zeros(C).expand(x.shape))


def test_bfloat16_outside_logits_is_a_clear_type_error(rng):
    """bfloat16 logits are read (tests/api/test_bfloat16.py); bfloat16
    features, weights, targets, a bfloat16 out= for float32 logits and
    bfloat16 through DLPack alone are clear TypeErrors."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((4, C)).astype(np.float32))
    xb = x.to(torch.bfloat16)
    for call in (lambda: fl.cross_entropy(x, xb[:, 0]),
                 lambda: fl.LinearHead(torch.ones((C, 3))).argmax(xb[:, :3]),
                 lambda: fl.LinearHead(xb),
                 lambda: fl.softmax(x, out=torch.empty((4, C), dtype=torch.bfloat16)),
                 lambda: fl.softmax(DLPackOnly(xb))):
        with pytest.raises(TypeError, match="bfloat16"):
            call()


# --------------------------------------------------------------------------
# DLPack
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_dlpack_arrays_are_read_without_a_copy(rng, backend):
    x, _ = _logits(rng, "cl", "float32")
    t = _target(rng, x, -1)
    sources = [x, np.broadcast_to(x, x.shape)]  # a read-only array too
    torch = None
    try:
        import torch
    except ImportError:
        pass
    if torch is not None:
        sources.append(torch.from_numpy(x))
    for src in sources:
        d = DLPackOnly(src)
        assert np.shares_memory(_interop.to_numpy(d), x)
        for name, op in _ops(DLPackOnly(t), -1, backend).items():
            got, want = _as_tuple(op(DLPackOnly(src))), _as_tuple(_ops(t, -1, backend)[name](x))
            for g, w in zip(got, want):
                # an unknown library's results are NumPy
                assert isinstance(g, (np.ndarray, np.float64)), name
                _equal(g, w)
    head = fl.LinearHead(DLPackOnly(np.eye(C, dtype=np.float32)))
    _equal(head.logits(DLPackOnly(x), backend=backend), x)


# --------------------------------------------------------------------------
# xarray
# --------------------------------------------------------------------------

def _data_array(xr, x, axis, class_coords=True):
    """x as a DataArray with named dims, a class coord, a coord along y,
    a non-index coord on (y, x), a scalar coord, attrs and a name."""
    dims = ("y", "x", "class") if axis == -1 else ("batch", "class", "y", "x")
    sizes = dict(zip(dims, x.shape))
    coords = {"y": np.arange(sizes["y"]) * 10, "time": 3.5,
              "mask": (("y", "x"), np.ones((sizes["y"], sizes["x"]), bool))}
    if class_coords:
        coords["class"] = [f"c{k}" for k in range(sizes["class"])]
        coords["weight"] = ("class", np.arange(sizes["class"], dtype=float))
    return xr.DataArray(x, dims=dims, coords=coords, name="logits", attrs={"units": "nats"})


def _check_reduced(r, da, want, cls="class"):
    assert r.dims == tuple(d for d in da.dims if d != cls)
    assert set(r.coords) == {k for k, c in da.coords.items() if cls not in c.dims}
    for k in r.coords:
        _equal(r.coords[k], da.coords[k])
    assert r.attrs == {}
    _equal(r.values, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["cl", "cf"])
def test_data_arrays_give_data_arrays(rng, backend, layout):
    xr = pytest.importorskip("xarray")
    x, axis = _logits(rng, layout, "float32")
    t = _target(rng, x, axis)
    da = _data_array(xr, x, axis)
    kw = dict(axis=axis, backend=backend)

    for op in (fl.softmax, fl.log_softmax):
        r = op(da, **kw)
        assert isinstance(r, xr.DataArray)
        assert r.dims == da.dims and r.attrs == da.attrs and r.name == da.name
        xr.testing.assert_identical(r.coords.to_dataset(), da.coords.to_dataset())
        _equal(r.values, op(x, **kw))
    _check_reduced(fl.logsumexp(da, **kw), da, fl.logsumexp(x, **kw))
    _check_reduced(fl.argmax(da, **kw), da, fl.argmax(x, **kw))
    for r, w in zip(fl.classify(da, **kw), fl.classify(x, **kw)):
        _check_reduced(r, da, w)
    ta = xr.DataArray(t, dims=tuple(d for d in da.dims if d != "class"))  # a DataArray target
    _check_reduced(fl.cross_entropy(da, ta, reduction="none", **kw), da,
                   fl.cross_entropy(x, t, reduction="none", **kw))
    loss, grad = fl.cross_entropy(da, t, return_grad=True, **kw)
    want_loss, want_grad = fl.cross_entropy(x, t, return_grad=True, **kw)
    assert isinstance(loss, xr.DataArray) and loss.dims == () and loss.dtype == np.float64
    assert float(loss) == want_loss
    assert grad.dims == da.dims and grad.attrs == da.attrs
    _equal(grad.values, want_grad)

    cm = fl.confusion_matrix(da, t, **kw)
    assert cm.dims == ("target", "prediction")
    assert list(cm.coords["target"].values) == list(da.coords["class"].values)
    assert list(cm.coords["prediction"].values) == list(da.coords["class"].values)
    _equal(cm.values, fl.confusion_matrix(x, t, **kw))
    # no class coord: no coords on the matrix
    cm = fl.confusion_matrix(_data_array(xr, x, axis, class_coords=False), t, **kw)
    assert cm.dims == ("target", "prediction") and not cm.coords


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_array_features_give_data_arrays(rng, backend):
    xr = pytest.importorskip("xarray")
    N = 6
    f = rng.standard_normal((2, N, 3, 4)).astype(np.float32)
    t = rng.integers(0, C, (2, 3, 4))
    da = xr.DataArray(f, dims=("batch", "feature", "y", "x"),
                      coords={"feature": np.arange(N), "y": [1, 2, 3]}, attrs={"a": 1})
    head = fl.LinearHead(rng.standard_normal((C, N)).astype(np.float32))
    kw = dict(axis=1, backend=backend)
    for m in ("logits", "softmax", "log_softmax"):
        r = getattr(head, m)(da, **kw)
        assert r.dims == ("batch", "class", "y", "x") and set(r.coords) == {"y"}
        _equal(r.values, getattr(head, m)(f, **kw))
    for m in ("logsumexp", "argmax"):
        _check_reduced(getattr(head, m)(da, **kw), da, getattr(head, m)(f, **kw), "feature")
    for r, w in zip(head.classify(da, **kw), head.classify(f, **kw)):
        _check_reduced(r, da, w, "feature")
    loss, grad = head.cross_entropy(da, t, reduction="none", return_grad=True, **kw)
    want_loss, want_grad = head.cross_entropy(f, t, reduction="none", return_grad=True, **kw)
    _check_reduced(loss, da, want_loss, "feature")
    assert grad.dims == da.dims and grad.attrs == da.attrs and "feature" in grad.coords
    _equal(grad.values, want_grad)
    loss = head.cross_entropy(da, t, **kw)
    assert isinstance(loss, xr.DataArray) and loss.dims == ()
    cm = head.confusion_matrix(da, t, **kw)
    assert cm.dims == ("target", "prediction") and not cm.coords  # features are not classes
    _equal(cm.values, head.confusion_matrix(f, t, **kw))


def test_data_array_out(rng):
    xr = pytest.importorskip("xarray")
    x = rng.standard_normal((3, 4, C)).astype(np.float32)
    da = _data_array(xr, x, -1)
    out = xr.zeros_like(da)
    assert fl.softmax(da, out=out) is out
    _equal(out.values, fl.softmax(x))
    assert fl.softmax(da, out=da) is da  # in place
    _equal(da.values, out.values)
