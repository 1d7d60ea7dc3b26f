"""Losses and segmentation metrics: fastlogits (cpu) beside the NumPy idioms
and PyTorch, in one pytest-benchmark run.

    FASTLOGITS_BENCH_FULL=1 python -m pytest bench/bench_losses.py bench/bench_core.py \
        --benchmark-enable --benchmark-json=bench/results/<machine>-losses.json
    python bench/report.py bench/results/<machine>-losses.json

Cases: Cityscapes-sized logits, (1024, 2048, 19) channels-last ("hwc", axis
-1) and (19, 1024, 2048) channels-first ("chw", axis 0), float32, int64
targets with about 10 % ignored pixels (ignore_index -100); tiny shapes
without FASTLOGITS_BENCH_FULL (each benchmark then runs once, as a smoke
test). Ops:

- ``cross_entropy``: reduction="mean" (floor: read x and the target);
- ``cross_entropy_grad``: the mean and its gradient (floor: read x and the
  target, write an x-sized gradient: compare with the copy bandwidth);
- ``cross_entropy_grad_out``: the same into a preallocated ``grad_out``
  (fastlogits only: NumPy and PyTorch have no such path, their figures
  are the allocating ones of ``cross_entropy_grad``);
- ``confusion_matrix``: (C, C) counts (floor: read x and the target).

Implementations: ``fastlogits[cpu]``; ``numpy``, what a NumPy user writes
(max-subtracted log-sum-exp and a gather; argmax + mask + ``t * C + pred``
+ bincount, as torchmetrics and MMSegmentation do); ``torch``,
``F.cross_entropy`` (with autograd for the gradient) and the same
argmax + bincount idiom on tensors. Groups are ``op|shape|layout|dtype``.
"""

import numpy as np
import pytest

from bench.conftest import FULL

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None

IGNORE = -100
SHAPE = (1024, 2048, 19) if FULL else (37, 61, 19)  # (H, W, C)
LAYOUTS = ("hwc", "chw")
OPS = ("cross_entropy", "cross_entropy_grad", "cross_entropy_grad_out", "confusion_matrix")
IMPLS = ("fastlogits[cpu]", "numpy", "torch")

_inputs = {}


def _case(layout):
    """(x, axis, target): one full-size input in memory at a time."""
    if layout not in _inputs:
        _inputs.clear()
        H, W, C = SHAPE
        rng = np.random.default_rng(0)
        x = rng.standard_normal((H, W, C) if layout == "hwc" else (C, H, W), dtype=np.float32)
        x *= 3.0
        t = rng.integers(0, C, size=(H, W), dtype=np.int64)
        t[rng.random((H, W)) < 0.1] = IGNORE
        _inputs[layout] = (x, -1 if layout == "hwc" else 0, t)
    return _inputs[layout]


def floor_bytes(op, x, t):
    C = SHAPE[2]
    if op == "cross_entropy":
        return x.nbytes + t.nbytes + 8
    if op in ("cross_entropy_grad", "cross_entropy_grad_out"):
        return 2 * x.nbytes + t.nbytes + 8
    return x.nbytes + t.nbytes + C * C * 8


# --------------------------------------------------------------------------
# implementations
# --------------------------------------------------------------------------

def _fastlogits(op, x, axis, t):
    import fastlogits as fl

    if op == "cross_entropy":
        return lambda: fl.cross_entropy(x, t, axis, backend="cpu")
    if op == "cross_entropy_grad":
        return lambda: fl.cross_entropy(x, t, axis, return_grad=True, backend="cpu")
    if op == "cross_entropy_grad_out":
        g = np.empty_like(x)
        return lambda: fl.cross_entropy(x, t, axis, return_grad=True, grad_out=g, backend="cpu")
    return lambda: fl.confusion_matrix(x, t, axis, backend="cpu")


def _numpy(op, x, axis, t):
    C = SHAPE[2]

    def cross_entropy():
        m = x.max(axis, keepdims=True)
        lse = np.log(np.exp(x - m).sum(axis)) + np.squeeze(m, axis)
        keep = t != IGNORE
        xt = np.squeeze(np.take_along_axis(x, np.expand_dims(np.where(keep, t, 0), axis), axis),
                        axis)
        return np.float64((lse - xt)[keep].mean(dtype=np.float64))

    def cross_entropy_grad():
        m = x.max(axis, keepdims=True)
        e = np.exp(x - m)
        e /= e.sum(axis, keepdims=True)
        keep = t != IGNORE
        n = keep.sum()
        tk = np.expand_dims(np.where(keep, t, 0), axis)
        logp_t = np.log(np.take_along_axis(e, tk, axis))
        loss = -np.float64(logp_t[np.expand_dims(keep, axis)].sum(dtype=np.float64)) / n
        onehot = np.zeros_like(e)
        np.put_along_axis(onehot, tk, 1.0, axis)
        grad = (e - onehot) * np.expand_dims(keep, axis) / np.float32(n)
        return loss, grad

    def confusion_matrix():
        pred = np.argmax(x, axis).ravel()
        tr = t.ravel()
        keep = tr != IGNORE
        return np.bincount(tr[keep] * C + pred[keep], minlength=C * C).reshape(C, C)

    return {"cross_entropy": cross_entropy, "cross_entropy_grad": cross_entropy_grad,
            "confusion_matrix": confusion_matrix}[op]


def _torch(op, x, axis, t):
    C = SHAPE[2]
    xt = torch.from_numpy(x)
    # (1, C, H, W): a channels-last view for hwc (what torch gets from HWC
    # data without a copy), contiguous for chw.
    xt = xt.permute(2, 0, 1)[None] if axis == -1 else xt[None]
    tt = torch.from_numpy(t)[None]

    def cross_entropy():
        with torch.no_grad():
            return F.cross_entropy(xt, tt, ignore_index=IGNORE)

    def cross_entropy_grad():
        xg = xt.detach().requires_grad_(True)
        loss = F.cross_entropy(xg, tt, ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(loss, xg)
        return loss.detach(), grad

    def confusion_matrix():
        pred = xt.argmax(1).reshape(-1)
        tr = tt.reshape(-1)
        keep = tr != IGNORE
        return torch.bincount(tr[keep] * C + pred[keep], minlength=C * C).reshape(C, C)

    return {"cross_entropy": cross_entropy, "cross_entropy_grad": cross_entropy_grad,
            "confusion_matrix": confusion_matrix}[op]


def _params():
    for layout in LAYOUTS:
        for op in OPS:
            for impl in IMPLS:
                if op == "cross_entropy_grad_out" and impl != "fastlogits[cpu]":
                    continue  # no preallocated-gradient path outside fastlogits
                yield pytest.param(op, layout, impl,
                                   id=f"{op}-{'x'.join(map(str, SHAPE))}-{layout}-{impl}")


@pytest.mark.parametrize("op,layout,impl", list(_params()))
def test_loss_op(benchmark, op, layout, impl):
    if impl == "torch" and torch is None:
        pytest.skip("torch is not installed")
    x, axis, t = _case(layout)
    make = {"fastlogits[cpu]": _fastlogits, "numpy": _numpy, "torch": _torch}[impl]
    fn = make(op, x, axis, t)
    benchmark.group = f"{op}|{'x'.join(map(str, SHAPE))}|{layout}|float32"
    benchmark.extra_info.update(floor_bytes=floor_bytes(op, x, t), impl=impl)
    result = benchmark(fn)
    # Every implementation computes the same thing: checked once per case
    # against fastlogits (a smoke test when benchmarks are disabled).
    if impl != "fastlogits[cpu]":
        want = _fastlogits(op, x, axis, t)()
        got = result
        if op == "confusion_matrix":
            np.testing.assert_array_equal(np.asarray(got), want)
        elif op == "cross_entropy":
            assert float(got) == pytest.approx(float(want), rel=1e-5)
        else:
            assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)
            g = np.asarray(got[1]).reshape(want[1].shape if impl == "numpy" else -1)
            w = want[1] if impl == "numpy" else (np.moveaxis(want[1], -1, 0) if axis == -1
                                                  else want[1]).reshape(-1)
            np.testing.assert_allclose(g, w, atol=1e-6)
