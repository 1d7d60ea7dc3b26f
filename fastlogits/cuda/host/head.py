"""The fused linear head on the GPU: the host side (launch plan, parameters,
and the ops called through :mod:`fastlogits.cuda.host` as ``name(head, f,
fv, **options)``, ``fv`` the validated features, arguments checked by the
frontend), launching the kernels of :mod:`fastlogits.cuda.kernels.head`
(whose docstring gives the kernel design).
"""

import math

import numpy as np
from numba import cuda

from fastlogits import _checks as chk
from fastlogits import _layout, tuning
from fastlogits._modes import LOG_SOFTMAX, LOGITS, LOGSUMEXP, SOFTMAX
from fastlogits.cuda import runtime
from fastlogits.cuda.host import losses as kl
from fastlogits.cuda.host import ops, scratch
from fastlogits.cuda.host.errflag import ErrorFlag
from fastlogits.cuda.host.losses import shared_histogram
from fastlogits.cuda.kernels.device import WARP
from fastlogits.cuda.kernels.head import (CB, cast3, head_argmax, head_confusion, head_expnorm,
                                          head_xent)
from fastlogits.cuda.kernels.losses import add_into, target_weights


class HeadPlan:
    """Launch configuration of the head kernels for one call.

    Attributes: ``blocks``, ``threads`` (pixels per tile), ``shared_bytes``
    (dynamic), ``KC`` / ``NC`` (classes / features per staged W chunk),
    ``resident`` (all of W staged once per block), ``tiled`` (channels-last
    features through a shared tile), ``pitch`` (its row pitch).
    """

    def __init__(self, blocks, threads, shared_bytes, KC, NC, resident, tiled, pitch):
        self.blocks = blocks
        self.threads = threads
        self.shared_bytes = shared_bytes
        self.KC = KC
        self.NC = NC
        self.resident = resident
        self.tiled = tiled
        self.pitch = pitch

    @property
    def args(self):
        """The trailing kernel arguments."""
        return (self.KC, self.NC, self.resident, self.tiled, self.pitch)

    def __repr__(self):
        return (f"HeadPlan(blocks={self.blocks}, threads={self.threads}, "
                f"shared_bytes={self.shared_bytes}, KC={self.KC}, NC={self.NC}, "
                f"resident={self.resident}, tiled={self.tiled}, pitch={self.pitch})")


def shared_budget():
    """Bytes of dynamic shared memory per block for W, b and the
    channels-last feature tile (``cuda_head_shared_bytes``). With the
    static scratch of the loss (8 KiB) or confusion (16 KiB) kernels the
    default, 32 KiB, stays within the 48 KiB every GPU grants without an
    opt-in."""
    return int(tuning.current().cuda.head_shared_bytes)


def plan(shape3, C, itemsize):
    """The :class:`HeadPlan` for features (outer, N, inner) and C classes
    computed in ``itemsize``-byte floats, from the current config.

    W is resident when its KC = C rounded up to 8 rows fit; else chunks of
    as many 8-row class blocks as fit, with whole rows; else (huge N) one
    class block at a time over chunks of NC features. Channels-last
    features get a shared tile of 32 or more rows when it fits beside all
    of W, or beside one class block.
    """
    outer, N, inner = shape3
    T = ops._threads_per_block()
    E = shared_budget() // itemsize
    Cr = -(-C // CB) * CB
    Nk = max(N, 1)
    threads, tiled, pitch, FT = T, False, 1, 0
    if inner == 1 and N > 0:
        # The tile must not cost W its residency: beside all of W when W
        # fits, else beside one class block (W is chunked anyway).
        rows = Cr if Cr * (Nk + 1) <= E else CB
        P = min(T, (E - rows * (Nk + 1)) // (N | 1) // WARP * WARP)
        if P >= WARP:
            pitch = N | 1  # odd: a warp's rows start in distinct banks
            threads, tiled, FT = P, True, P * pitch
    rest = E - FT
    KC = rest // (Nk + 1) // CB * CB
    if KC >= CB:
        KC, NC = min(KC, Cr), Nk
    else:
        KC, NC = CB, min(Nk, (rest - CB) // CB)
    if NC < 1:
        raise ValueError(
            f"tuning knob cuda_head_shared_bytes={shared_budget()} is too small for the linear head: "
            f"it must hold at least {2 * CB * itemsize} bytes")
    resident = KC >= C and NC >= N
    elems = FT + KC * NC + KC
    return HeadPlan(ops._blocks(outer * inner, threads), threads, elems * itemsize, KC, NC,
                    resident, tiled, pitch)


def _plan(fv):
    return plan(_layout.split_shape(fv.shape, fv.axis), fv.C, fv.compute_dtype.itemsize)


def _device_param(caller, a, shape, cd):
    """A C-contiguous device array of ``a`` (host or GPU) in the compute
    dtype ``cd``: a view of a GPU array that already is one, else a copy
    (C*N values: small next to the features)."""
    if runtime.library(a) == "host":
        return caller.to_device(np.ascontiguousarray(np.asarray(a), dtype=cd).reshape(shape))
    dev = runtime.as_device(a)
    if dev.dtype == cd and dev.is_c_contiguous():
        return dev
    dst = cuda.device_array(shape, cd, stream=caller.stream)
    pad = (1,) * (3 - len(shape))
    src3 = runtime.reshape(dev, pad + tuple(shape))
    if src3 is None:  # strides that forbid a view: a contiguous copy first
        _, tmp = caller.contiguous(dev)
        src3 = runtime.reshape(tmp, pad + tuple(shape))
    cast3[ops._blocks(int(np.prod(shape)), 256), 256, caller.stream](
        src3, runtime.reshape(dst, pad + tuple(shape)))
    return dst


def _params(head, caller, cd):
    """``(W, b)`` on the device in the compute dtype (b zeros without bias)."""
    C, N = head.weight_shape
    W = _device_param(caller, head.weight, (C, N), cd)
    if head.bias is None:
        b = caller.to_device(np.zeros(C, cd))
    else:
        b = _device_param(caller, head.bias, (C,), cd)
    return W, b


def _launch(kernel, p, caller, *args):
    runtime.launch(kernel, p.blocks, p.threads, caller.stream, p.shared_bytes, *args, *p.args)


# --------------------------------------------------------------------------
# The ops (arguments validated by the frontend)
# --------------------------------------------------------------------------

def _expnorm(mode, head, f, fv, temperature, out):
    inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
    caller = runtime.Caller(f)
    reduces = mode == LOGSUMEXP
    shape = fv.reduced_shape if reduces else fv.class_shape
    out = ops._check_out(caller, fv, out, shape, fv.dtype, "out")
    with caller.activate():
        res = ops._Output(caller, out, shape, fv.dtype)
        if not fv.empty:
            outer, N, inner = _layout.split_shape(fv.shape, fv.axis)
            f3 = ops._input3(caller, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            if reduces:
                out3 = runtime.stand_in(fv.dtype, 3)
                red2 = res.view((outer, inner))
            else:
                out3 = res.view((outer, fv.C, inner))
                red2 = runtime.stand_in(fv.dtype, 2)
            _launch(head_expnorm, _plan(fv), caller, f3, W, b, out3, red2, ops._cdt(fv), inv_t,
                    mode)
        return ops._finish(caller, [res])[0]


def logits(head, f, fv, out=None):
    """CUDA :meth:`fastlogits.LinearHead.logits`: ``z = W f + b`` materialized.

    Parameters
    ----------
    head : LinearHead
    f : array_like or GPU array
        The features as the caller gave them.
    fv : fastlogits.head._Features
        Their validation.
    out : GPU array or ndarray, optional
        f's shape with N replaced by C, f's dtype.

    Returns
    -------
    array
        In the caller's library (NumPy for a host input).
    """
    return _expnorm(LOGITS, head, f, fv, 1.0, out)


def softmax(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.softmax` (parameters as :func:`logits`)."""
    return _expnorm(SOFTMAX, head, f, fv, temperature, out)


def log_softmax(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.log_softmax` (parameters as :func:`logits`)."""
    return _expnorm(LOG_SOFTMAX, head, f, fv, temperature, out)


def logsumexp(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.logsumexp`; ``out`` has f's shape
    without the feature axis."""
    return _expnorm(LOGSUMEXP, head, f, fv, temperature, out)


def _labels_conf(head, f, fv, temperature, labels, conf, with_conf):
    inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
    caller = runtime.Caller(f)
    labels = ops._check_out(caller, fv, labels, fv.reduced_shape, fv.C - 1,
                            "out[0] (labels)" if with_conf else "out", kind="label")
    if with_conf:
        conf = ops._check_out(caller, fv, conf, fv.reduced_shape, fv.compute_dtype,
                              "out[1] (confidence)")
        ops._check_pairwise([labels, conf], ["out[0] (labels)", "out[1] (confidence)"])
    with caller.activate():
        outputs = [ops._Output(caller, labels, fv.reduced_shape, np.int64)]
        if with_conf:
            outputs.append(ops._Output(caller, conf, fv.reduced_shape, fv.compute_dtype))
        if not fv.empty:
            outer, N, inner = _layout.split_shape(fv.shape, fv.axis)
            f3 = ops._input3(caller, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            lab2 = outputs[0].view((outer, inner))
            conf2 = (outputs[1].view((outer, inner)) if with_conf
                     else runtime.stand_in(fv.compute_dtype, 2))
            _launch(head_argmax, _plan(fv), caller, f3, W, b, lab2, conf2, ops._cdt(fv), inv_t,
                    with_conf)
        return ops._finish(caller, outputs)


def argmax(head, f, fv, out=None):
    """CUDA :meth:`fastlogits.LinearHead.argmax`: int64 labels (or ``out``)."""
    return _labels_conf(head, f, fv, 1.0, out, None, False)[0]


def classify(head, f, fv, temperature=1.0, out=None):
    """CUDA :meth:`fastlogits.LinearHead.classify`: ``(labels, confidence)``."""
    labels, conf = out if out is not None else (None, None)
    return tuple(_labels_conf(head, f, fv, temperature, labels, conf, True))


def cross_entropy(head, f, fv, *, target, class_weight, ignore_index, label_smoothing,
                  reduction, return_grad):
    """CUDA :meth:`fastlogits.LinearHead.cross_entropy`.

    Returns the loss (float64 scalar for "mean" / "sum", the per-pixel
    losses in the compute dtype for "none", in the caller's library) and,
    with ``return_grad``, the gradient w.r.t. the features (f's shape and
    dtype; 0 at ignored pixels). A "mean" gradient first sums the target
    weights (one read of the targets, one sync); bad targets raise the
    CPU backend's ``ValueError`` (waits for the caller's stream).
    """

    caller = runtime.Caller(f)
    cd = fv.compute_dtype
    ct = cd.type
    with caller.activate():
        loss_out = (ops._Output(caller, None, fv.reduced_shape, cd)
                    if reduction == "none" else None)
        grad_out = ops._Output(caller, None, fv.shape, fv.dtype) if return_grad else None
        outputs = [o for o in (loss_out, grad_out) if o is not None]
        if fv.empty:
            total = np.float64(0.0) if reduction == "sum" else np.float64(np.nan)
            res = ops._finish(caller, outputs)
            result = res.pop(0) if reduction == "none" else total
            return (result, res[0]) if return_grad else result
        outer, N, inner = shape3 = _layout.split_shape(fv.shape, fv.axis)
        C = fv.C
        f3 = ops._input3(caller, fv)
        t2 = kl._target2(caller, target, fv)
        w, wsum = kl._weights(caller, class_weight, fv)
        cdt = ops._cdt(fv)
        flag = ErrorFlag(caller.stream)
        ws = scratch.get(caller.stream)
        gscale = 1.0
        if return_grad and reduction == "mean":
            # The gradient is scaled by 1 / sum(w[t]): known before it is written.
            T = ops._threads_per_block()
            blocks = ops._blocks(outer * inner, T)
            partial = ws.partial(cd, 1, blocks)
            runtime.launch(target_weights, blocks, T, caller.stream, 0, t2, w, partial,
                           flag.array, cdt, ignore_index, C)
            kl._check_flag(flag, target, fv, ignore_index)
            total_weight = kl._host_sum(partial, caller)[0]
            gscale = math.inf if total_weight == 0 else 1.0 / total_weight
        W, b = _params(head, caller, cd)
        p = _plan(fv)
        loss2 = runtime.stand_in(cd, 2) if loss_out is None else loss_out.view((outer, inner))
        if not return_grad:
            grad3 = runtime.stand_in(cd, 3)
        elif fv.dtype == cd:
            grad3 = grad_out.view(shape3)
        else:
            # float16 features: the gradient adds up in float32, stored once.
            _, grad3 = caller.empty(shape3, cd)
        partial = ws.partial(cd, 2, p.blocks)
        eps = float(label_smoothing)
        _launch(head_xent, p, caller, f3, W, b, t2, w, loss2, grad3, partial, flag.array, cdt,
                ignore_index, ct(eps), ct(eps / C), ct(wsum), ct(gscale),
                loss_out is not None, return_grad)
        if return_grad and fv.dtype != cd and grad3.size:
            cast3[ops._blocks(grad3.size, 256), 256, caller.stream](grad3,
                                                                  grad_out.view(shape3))
        loss_sum, weight_sum = kl._wait_totals(ws, partial, flag, target, fv, ignore_index)
        res = ops._finish(caller, outputs)
    if reduction == "none":
        result = res.pop(0)
    elif reduction == "sum":
        result = np.float64(loss_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, res[0]) if return_grad else result


def confusion_matrix(head, f, fv, *, target, ignore_index, out=None):
    """CUDA :meth:`fastlogits.LinearHead.confusion_matrix`: (C, C) int64
    counts (rows the target, columns the head's label), added to ``out``
    only once the targets were found valid."""

    C = fv.C
    caller = runtime.Caller(f)
    out = ops._check_out(caller, fv, out, (C, C), np.int64, "out")
    with caller.activate():
        counts_obj, counts = caller.empty((C, C), np.int64, zero=True)
        if not fv.empty:
            f3 = ops._input3(caller, fv)
            t2 = kl._target2(caller, target, fv)
            W, b = _params(head, caller, fv.compute_dtype)
            flag = ErrorFlag(caller.stream)
            _launch(head_confusion, _plan(fv), caller, f3, W, b, t2, counts, flag.array,
                    ops._cdt(fv), ignore_index, shared_histogram(C))
            kl._check_flag(flag, target, fv, ignore_index)
        if out is None and caller.gpu:
            return counts_obj
        if chk.is_gpu_array(out):
            add_into[ops._blocks(C * C, 256), 256, caller.stream](runtime.as_device(out),
                                                                 counts)
            return out
        host = counts.copy_to_host(stream=caller.stream)
        caller.stream.synchronize()
        if out is None:
            return host
        out += host
        return out
