"""Bad input: a clear ValueError/TypeError naming the argument, before any kernel runs."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits.registry import OPS

NAMES = list(OPS)


def call(name, x, *args, **kw):
    op = OPS[name]
    if not op.tempered:
        kw.pop("temperature", None)
    return op.public(x, *args, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_axis_out_of_range(name):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"axis=2 is out of range.*2 dimension"):
        call(name, x, 2)
    with pytest.raises(ValueError, match="axis=-3"):
        call(name, x, -3)
    with pytest.raises(TypeError, match="axis must be an integer"):
        call(name, x, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_zero_classes_and_zero_dim(name):
    with pytest.raises(ValueError, match=r"no classes.*\(4, 0\)"):
        call(name, np.ones((4, 0), np.float32))
    with pytest.raises(ValueError, match="0-d"):
        call(name, np.float32(1.0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.complex64, np.bool_])
def test_non_float_logits(name, dtype):
    with pytest.raises(TypeError, match=f"float16, float32 or float64.*{np.dtype(dtype)}"):
        call(name, np.ones((2, 3), dtype))


@pytest.mark.parametrize("name", [n for n, op in OPS.items() if op.tempered])
@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(name, t):
    with pytest.raises(ValueError, match="temperature"):
        call(name, np.ones((2, 3), np.float32), temperature=t)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_backend(name):
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        call(name, np.ones((2, 3), np.float32), backend="gpu")


def test_cuda_without_gpu_is_clear():
    if "cuda" in fl.backends():
        pytest.skip("a CUDA device (or the simulator) is available in this process")
    with pytest.raises(ValueError, match="backend='cuda' is not available"):
        fl.softmax(np.ones((2, 3), np.float32), backend="cuda")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_bad_float_out(name):
    x = np.ones((4, 3), np.float32)
    shape = (4,) if name == "logsumexp" else (4, 3)
    with pytest.raises(ValueError, match=r"out has shape \(5,.*expected"):
        call(name, x, out=np.empty((5,) + shape[1:], np.float32))
    with pytest.raises(TypeError, match="out has dtype float64, expected float32"):
        call(name, x, out=np.empty(shape, np.float64))
    ro = np.empty(shape, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(name, x, out=ro)
    with pytest.raises(TypeError, match="NumPy array"):
        call(name, x, out=[0.0] * 4)


def test_partial_overlap_rejected():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="overlaps x"):
        fl.softmax(x[:, :3], out=x[:, 3:])


def test_bad_label_out():
    x = np.ones((4, 300), np.float32)
    with pytest.raises(ValueError, match="uint8 cannot hold label 299"):
        fl.argmax(x, out=np.empty(4, np.uint8))
    with pytest.raises(TypeError, match="integer dtype"):
        fl.argmax(x, out=np.empty(4, np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(5,\), expected \(4,\)"):
        fl.argmax(x, out=np.empty(5, np.int64))


def test_bad_classify_out():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="tuple"):
        fl.classify(x, out=np.empty(4, np.int64))
    with pytest.raises(TypeError, match=r"out\[1\] \(confidence\) has dtype float64, expected float32"):
        fl.classify(x, out=(np.empty(4, np.int64), np.empty(4, np.float64)))


def test_errors_before_any_write():
    """A bad argument anywhere leaves a given out untouched."""
    x = np.ones((4, 3), np.float32)
    out = np.full((4, 3), 7.0, np.float32)
    with pytest.raises(ValueError):
        fl.softmax(x, out=out, temperature=-1.0)
    with pytest.raises(ValueError):
        fl.softmax(x, out=out, backend="nope")
    assert (out == 7.0).all()
