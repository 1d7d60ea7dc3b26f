"""cross_entropy and confusion_matrix on the GPU: the host side (called
through :mod:`fastlogits.cuda.host`, after the frontend's validation), which
plans, launches and checks the kernels of :mod:`fastlogits.cuda.kernels.losses`.

Each call waits once: the error flag and the totals come back through
pinned scratch that the stream reuses (:mod:`.scratch`).

Target values outside [0, C) that are not ``ignore_index`` set the error
flag (:mod:`.errflag`), and the host raises the same ``ValueError`` as the
CPU backend, naming the first such value and its position, before
anything is returned or added to ``out=``. That check waits for the
caller's stream (only it).
"""

import numpy as np

from fastlogits import _checks as chk
from fastlogits.cuda import runtime
from fastlogits.cuda.host import ops, scratch
from fastlogits.cuda.host.errflag import ErrorFlag
from fastlogits.cuda.kernels.losses import (SHARED_BINS, add_into, confusion_count, confusion_pixels,
                                            cross_entropy_loss_pixels, cross_entropy_pixels,
                                            cross_entropy_rows, sum_rows, target_weights)


def shared_histogram(C):
    """Whether the (C, C) confusion counts go through a per-block shared
    histogram (the kernels' ``use_shared``): C * C <= SHARED_BINS. Tests
    patch this, never SHARED_BINS, which sizes the kernels' shared array
    when they compile (a patched size would stay in the compiled kernel
    and in Numba's on-disk cache)."""
    return C * C <= SHARED_BINS


def _target2(caller, target, lg):
    """The target as an (outer, inner) device array (copied over for a
    host target; a strided GPU target that cannot be viewed is copied)."""
    outer, _, inner = ops.split_shape(lg.shape, lg.axis)
    cai = chk._interface(target)  # the target's one read
    if cai is None:
        return caller.to_device(np.asarray(target).reshape(outer, inner))
    v = runtime.reshape_cai(cai, target, (outer, inner))
    if v is None:
        _, tmp = caller.contiguous(runtime.view_of(cai, target))
        v = runtime.reshape(tmp, (outer, inner))
    return v


def _check_flag(flag, target, lg, ignore_index, fetched=False):
    """Raise the CPU backend's ValueError for the first bad target value
    (``fetched``: the flag's copy was queued and the stream waited for)."""
    code, index = flag.read(fetched)
    if code == 0:
        return
    from fastlogits._checks import target_value_error

    pos = np.unravel_index(index, lg.reduced_shape)
    if chk.is_gpu_array(target):
        value = runtime.as_device(target)[pos]
        value = np.asarray(value).item() if hasattr(value, "shape") else value
    else:
        value = np.asarray(target)[pos]
    raise target_value_error(int(value), tuple(int(k) for k in pos), lg.C, ignore_index)


def _plan(lg):
    """``ops.plan``, with the shared-tile regime served by the thread-per-pixel kernel."""
    shape3 = ops.split_shape(lg.shape, lg.axis)
    p = ops.plan(shape3, lg.dtype.itemsize)
    if p.regime == "tile":
        T = ops._threads_per_block()
        p = ops.Plan("cf", ops._blocks(shape3[0] * shape3[2], T), T)
    return p


def _queue_sums(ws, partial, scale=None, ctx=None):
    """Queue the float64 totals of ``partial``'s rows into the scratch
    ``ws.sums`` (and ``1 / sums[0]`` into ``scale``, a 1-element device
    array of partial's dtype, when given) on ``ws.stream``; nothing waits."""
    want = scale is not None
    runtime.launch(sum_rows, 1, 256, ws.stream, 0, partial, ws.sums,
                   scale if want else runtime.stand_in(partial.dtype, 1, ctx), want)


def _host_sum(partial, caller):
    """Float64 totals of the per-block partials' rows (summed on the
    device, copied back into pinned memory: syncs the stream)."""
    ws = scratch.get(caller.stream, caller.ctx)
    _queue_sums(ws, partial, ctx=caller.ctx)
    ws.fetch_sums()
    caller.stream.synchronize()
    return ws.sums_host[:partial.shape[0]].copy()


def _wait_totals(ws, partial, flag, target, lg, ignore_index, ctx=None):
    """``(loss_sum, weight_sum)``: the totals of a loss kernel's two partial
    rows, after one wait for them and the flag; raises the bad-target
    ``ValueError`` first."""
    _queue_sums(ws, partial, ctx=ctx)
    flag.fetch()
    ws.fetch_sums()
    ws.stream.synchronize()
    _check_flag(flag, target, lg, ignore_index, fetched=True)
    return float(ws.sums_host[0]), float(ws.sums_host[1])


def _weights(caller, class_weight, lg):
    """``(device weights in the compute dtype, their float64 sum)``; no
    class weights: a cached device vector of ones, no copy."""
    C = lg.C
    if class_weight is None:
        return runtime.ones(lg.compute_dtype, C, caller.ctx), float(C)
    if chk.is_gpu_array(class_weight):
        w64 = np.asarray(runtime.as_device(class_weight).copy_to_host(), np.float64)
    else:
        w64 = np.asarray(class_weight, np.float64)
    return caller.to_device(w64.astype(lg.compute_dtype)), float(w64.sum())


def cross_entropy(x, target, lg, *, class_weight, ignore_index, label_smoothing, reduction,
                  return_grad, grad_out=None):
    """CUDA cross_entropy; see :func:`fastlogits.cross_entropy` (arguments
    validated, but for ``grad_out``, checked here: a GPU array, or a NumPy
    one for a host x; x itself for in place)."""
    caller = runtime.Caller(x, lg.cai)
    ct = lg.compute_dtype.type
    given = ops._check_out(caller, lg, grad_out, lg.shape, lg.dtype, "grad_out",
                           in_place_ok=True)
    with caller.activate():
        loss_out = (ops._Output(caller, None, lg.reduced_shape, lg.compute_dtype)
                    if reduction == "none" else None)
        grad_out = ops._Output(caller, given, lg.shape, lg.dtype) if return_grad else None
        outputs = [o for o in (loss_out, grad_out) if o is not None]
        if lg.empty:
            total = np.float64(0.0) if reduction == "sum" else np.float64(np.nan)
            res = ops._finish(caller, outputs)
            result = res.pop(0) if reduction == "none" else total
            return (result, res[0]) if return_grad else result
        outer, C, inner = shape3 = ops.split_shape(lg.shape, lg.axis)
        x3 = ops._input3(caller, lg, shape3)
        t2 = _target2(caller, target, lg)
        w, wsum = _weights(caller, class_weight, lg)
        cdt = ops._cdt(lg, caller)
        flag = ErrorFlag(caller.stream, caller.ctx)
        ws = flag._ws
        p = _plan(lg)
        eps = float(label_smoothing)
        gs = runtime.ones(lg.compute_dtype, 1, caller.ctx)
        if return_grad and (reduction == "mean" or given is not None):
            # The targets first: the "mean" gradient's scale 1 / sum(w[t])
            # is computed on the device before the gradient is written, and
            # a bad target leaves the caller's grad_out untouched (the loss
            # kernel sees the flag and writes nothing). No wait here.
            partial = ws.partial(lg.compute_dtype, 1, p.blocks)
            runtime.launch(target_weights, p.blocks, p.threads, caller.stream, 0, t2, w,
                           partial, flag.array, cdt, ignore_index, C)
            if reduction == "mean":
                gs = ws.scale(lg.compute_dtype)
                _queue_sums(ws, partial, gs, caller.ctx)
        loss2 = (runtime.stand_in(lg.compute_dtype, 2, caller.ctx) if loss_out is None
                 else loss_out.view((outer, inner)))
        partial = ws.partial(lg.compute_dtype, 2, p.blocks)
        if p.regime != "rows" and eps == 0 and not return_grad:
            ops._launch(cross_entropy_loss_pixels, p, caller, x3, t2, w, loss2, partial,
                        flag.array, cdt, ignore_index, loss_out is not None)
        else:
            grad3 = (runtime.stand_in(lg.dtype, 3, caller.ctx) if grad_out is None
                     else grad_out.view(shape3))
            args = (x3, t2, w, loss2, grad3, partial, flag.array, cdt, ignore_index, ct(eps),
                    ct(eps / C), ct(wsum), gs, loss_out is not None, return_grad)
            if p.regime == "rows":
                ops._launch(cross_entropy_rows, p, caller, *args, p.group, p.shuffle)
            else:
                ops._launch(cross_entropy_pixels, p, caller, *args)
        loss_sum, weight_sum = _wait_totals(ws, partial, flag, target, lg, ignore_index,
                                            caller.ctx)
        res = ops._finish(caller, outputs)
    if reduction == "none":
        result = res.pop(0)
    elif reduction == "sum":
        result = np.float64(loss_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, res[0]) if return_grad else result


def _confusion_via_labels(caller, p, lg, x3, t2, counts, flag, ignore_index, shared):
    """confusion_matrix's count for the shared-tile and row regimes: their
    argmax kernel writes a temporary int32 label map, then
    :func:`confusion_count` reads it."""
    from fastlogits.cuda.kernels import argmax as ka

    outer, _, inner = x3.shape
    _, labels = caller.empty((outer, inner), np.int32)
    one = lg.compute_dtype.type(1)
    stand = runtime.stand_in(lg.compute_dtype, 2, caller.ctx)
    cdt = ops._cdt(lg, caller)
    if p.regime == "tile":
        ops._launch(ka.argmax_cl_tile, p, caller, x3, labels, stand, cdt, one, False, p.pitch)
    else:
        ops._launch(ka.argmax_rows, p, caller, x3, labels, stand, cdt, one, False, p.group,
                    p.shuffle)
    T = ops._threads_per_block()
    runtime.launch(confusion_count, ops._blocks(outer * inner, T), T, caller.stream, 0, labels,
                   t2, counts, flag.array, ignore_index, shared)


def confusion_matrix(x, target, lg, *, ignore_index, out=None):
    """CUDA confusion_matrix; see :func:`fastlogits.confusion_matrix`.

    ``out`` (C, C) int64, a GPU array (or NumPy for a host input), is added
    to only once the targets were found valid.
    """
    C = lg.C
    caller = runtime.Caller(x, lg.cai)
    out = ops._check_out(caller, lg, out, (C, C), np.int64, "out")
    with caller.activate():
        counts_obj, counts = caller.empty((C, C), np.int64, zero=True)
        if not lg.empty:
            outer, _, inner = shape3 = ops.split_shape(lg.shape, lg.axis)
            x3 = ops._input3(caller, lg, shape3)
            t2 = _target2(caller, target, lg)
            p = ops.plan(shape3, lg.dtype.itemsize)
            cdt = ops._cdt(lg, caller)
            flag = ErrorFlag(caller.stream, caller.ctx)
            shared = shared_histogram(C)
            if p.regime == "cf":
                ops._launch(confusion_pixels, p, caller, x3, t2, counts, flag.array, cdt,
                            ignore_index, shared)
            else:
                _confusion_via_labels(caller, p, lg, x3, t2, counts, flag, ignore_index, shared)
            _check_flag(flag, target, lg, ignore_index)
        if out is None and caller.gpu:
            return counts_obj
        if chk.is_gpu_array(out):
            runtime.launch(add_into, ops._blocks(C * C, 256), 256, caller.stream, 0,
                           runtime.as_device(out), counts)
            return out
        host = counts.copy_to_host(stream=caller.stream)
        caller.stream.synchronize()
        if out is None:
            return host
        out += host
        return out
