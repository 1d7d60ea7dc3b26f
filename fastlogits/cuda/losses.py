"""cross_entropy and confusion_matrix on the GPU (called by
:mod:`fastlogits.losses`, whose validation has already run).

cross_entropy is fused: one pass folds each pixel's max and exp-sum
(:func:`fastlogits.cuda.device.fold`), reads the target's logit, and
(with ``label_smoothing``) the weighted logit sum; the gradient, when
asked for, is written by a second sweep over the pixel's scores while they
are still in L1/L2. Pixel losses and target weights are summed per thread
per block (a pairwise tree), then over blocks on the host in float64.
confusion_matrix runs the argmax kernels of :mod:`.argmax` into a
temporary int32 label map, then counts (target, label) pairs, in a
per-block shared-memory histogram when C * C bins fit.

Target values outside [0, C) that are not ``ignore_index`` set the error
flag (:mod:`.errflag`; the pixel is skipped, nothing is read out of
bounds), and the host raises the same ``ValueError`` as the CPU backend,
naming the first such value and its position, before anything is returned
or added to ``out=``. That check waits for the caller's stream (only it).

Regimes: a thread per pixel (channels-first, and channels-last with small
C, whose scores a thread reads from L1-resident lines) or, as
``ops.plan`` decides for larger C, a group of threads per row.
"""

import math

import numpy as np
from numba import cuda, int32, int64

from fastlogits import _checks as chk
from fastlogits import _layout
from fastlogits.cuda import ops, runtime
from fastlogits.cuda.device import (MAX_THREADS, block_total, fold_strided, group_reduce,
                                    group_sum, is_finite)
from fastlogits.cuda.errflag import ErrorFlag, raise_flag

#: Error code of a target value outside [0, C) that is not ignore_index.
BAD_TARGET = 1

#: Confusion histograms with at most this many bins (C * C) are built in
#: shared memory (int32) per block, then added to the global matrix.
SHARED_BINS = 4096


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------

@cuda.jit(device=True)
def _weighted_sum(x, o, i, c, C, step, w, m, zero, cdt):
    """``sum w[c] * (x[o, c, i] - m)`` over classes ``c, c + step, ...``:
    relative to the pixel's max, so a large common offset cancels exactly
    instead of in float32 rounding."""
    ct = cdt.dtype.type
    acc = zero
    while c < C:
        acc += w[c] * (ct(x[o, c, i]) - m)
        c += step
    return acc


@cuda.jit(device=True)
def _pixel_loss(m, s, zt, wt, zw, eps, epsc, wsum, one, zero, nan):
    """Loss of a pixel: ``w[t] * (lse - z_t)``, smoothed with
    ``eps / C * sum w_c (lse - z_c)``, all relative to the max m
    (``lse - m = log s``, ``zw = sum w_c (z_c - m)``); NaN for a
    non-finite max."""
    ls = math.log(s) if is_finite(m) else nan
    loss = wt * ((m - zt) + ls)
    if eps > zero:
        loss = (one - eps) * loss + epsc * (wsum * ls - zw)
    return loss


@cuda.jit(device=True)
def _write_grad(x, grad, w, o, i, c, C, step, tv, m, s, wt, eps, epsc, wsum, gscale, one,
                nan, cdt):
    """``(p_c ((1-eps) w_t + eps/C sum(w)) - (1-eps) w_t [c == t] - eps/C w_c) * gscale``
    for classes ``c, c + step, ...`` of pixel (o, i); NaN for a non-finite max."""
    ct = cdt.dtype.type
    a = ((one - eps) * wt + epsc * wsum) / s if is_finite(m) else nan
    hit = (one - eps) * wt
    while c < C:
        g = math.exp(ct(x[o, c, i]) - m) * a - epsc * w[c]
        if c == tv:
            g -= hit
        grad[o, c, i] = g * gscale
        c += step


@cuda.jit(device=True)
def _zero_grad(grad, o, i, c, C, step):
    while c < C:
        grad[o, c, i] = 0
        c += step


@cuda.jit(cache=True)
def cross_entropy_pixels(x, t, w, loss, grad, partial, flag, cdt, ignore, eps, epsc, wsum,
                         gscale, with_loss, with_grad):
    """A thread per pixel of ``x`` (outer, C, inner): loss (and gradient)
    of each; per-block sums of losses and target weights into
    ``partial[0, block]``, ``partial[1, block]``."""
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, C, inner = x.shape
    acc_l = zero
    acc_w = zero
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv == ignore:
            if with_loss:
                loss[o, i] = zero
            if with_grad:
                _zero_grad(grad, o, i, 0, C, 1)
        elif tv < 0 or tv >= C:
            raise_flag(flag, BAD_TARGET, p)
        else:
            m, s, comp, _ = fold_strided(x, o, i, 1, C, 1, ct(x[o, 0, i]), one, zero, 0, one,
                                         one, True, cdt)
            s = s - comp
            zw = _weighted_sum(x, o, i, 0, C, 1, w, m, zero, cdt) if eps > zero else zero
            wt = w[tv]
            lp = _pixel_loss(m, s, ct(x[o, tv, i]), wt, zw, eps, epsc, wsum, one, zero, nan)
            if with_loss:
                loss[o, i] = lp
            if with_grad:
                _write_grad(x, grad, w, o, i, 0, C, 1, tv, m, s, wt, eps, epsc, wsum, gscale,
                            one, nan, cdt)
            acc_l += lp
            acc_w += wt
    tot_l = block_total(acc_l, sm)
    tot_w = block_total(acc_w, sm)
    if cuda.threadIdx.x == 0:
        partial[0, cuda.blockIdx.x] = tot_l
        partial[1, cuda.blockIdx.x] = tot_w


@cuda.jit(cache=True)
def cross_entropy_rows(x, t, w, loss, grad, partial, flag, cdt, ignore, eps, epsc, wsum, gscale,
                       with_loss, with_grad, G, shuffle):
    """A group of ``G`` threads per pixel (row), lanes striding the classes
    (see :func:`.softmax.expnorm_rows`); partial sums as
    :func:`cross_entropy_pixels`."""
    ct = cdt.dtype.type
    one = ct(1)
    zero = ct(0)
    nan = ct(np.nan)
    ninf = ct(-np.inf)
    sm_m = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    sm_s = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    sm_i = cuda.shared.array(MAX_THREADS, dtype=int64)
    outer, C, inner = x.shape
    npix = outer * inner
    big = int64(C)
    tid = cuda.threadIdx.x
    groups = cuda.blockDim.x // G
    g = tid // G
    lane = tid - g * G
    acc_l = zero
    acc_w = zero
    for p0 in range(cuda.blockIdx.x * groups, npix, cuda.gridDim.x * groups):
        p = p0 + g
        o = p // inner
        i = p - o * inner
        # The pixel's verdict on its target is the same for all its lanes,
        # so every branch below is uniform across the group.
        tv = int64(t[o, i]) if p < npix else ignore
        valid = p < npix and tv != ignore and 0 <= tv < C
        m = ninf
        s = zero
        comp = zero
        idx = big
        # The target's logit before the group's reductions: with grad = x
        # (in place) another lane may overwrite it once they are done.
        xt = ct(x[o, tv, i]) if valid else zero
        if valid and lane < C:
            m, s, comp, idx = fold_strided(x, o, i, lane + G, C, G, ct(x[o, lane, i]), one, zero,
                                           int64(lane), one, one, True, cdt)
        m, s, idx = group_reduce(m, s - comp, idx, one, G, shuffle, sm_m, sm_s, sm_i, ninf, zero,
                                 big)
        zw = zero
        if eps > zero:
            zw = group_sum(_weighted_sum(x, o, i, lane, C, G, w, m, zero, cdt) if valid else zero,
                           G, shuffle, sm_s, zero)
        if p < npix:
            if tv == ignore:
                if with_loss and lane == 0:
                    loss[o, i] = zero
                if with_grad:
                    _zero_grad(grad, o, i, lane, C, G)
            elif not valid:
                if lane == 0:
                    raise_flag(flag, BAD_TARGET, p)
            else:
                wt = w[tv]
                lp = _pixel_loss(m, s, xt, wt, zw, eps, epsc, wsum, one, zero, nan)
                if lane == 0:
                    if with_loss:
                        loss[o, i] = lp
                    acc_l += lp
                    acc_w += wt
                if with_grad:
                    _write_grad(x, grad, w, o, i, lane, C, G, tv, m, s, wt, eps, epsc, wsum,
                                gscale, one, nan, cdt)
    tot_l = block_total(acc_l, sm_s)
    tot_w = block_total(acc_w, sm_s)
    if tid == 0:
        partial[0, cuda.blockIdx.x] = tot_l
        partial[1, cuda.blockIdx.x] = tot_w


@cuda.jit(cache=True)
def target_weights(t, w, partial, flag, cdt, ignore, C):
    """Per-block sums of ``w[t]`` over non-ignored pixels (the "mean"
    denominator, needed before a gradient can be written); flags bad targets."""
    zero = cdt.dtype.type(0)
    sm = cuda.shared.array(MAX_THREADS, dtype=cdt.dtype)
    outer, inner = t.shape
    acc = zero
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv != ignore:
            if tv < 0 or tv >= C:
                raise_flag(flag, BAD_TARGET, p)
            else:
                acc += w[tv]
    tot = block_total(acc, sm)
    if cuda.threadIdx.x == 0:
        partial[0, cuda.blockIdx.x] = tot


@cuda.jit(cache=True)
def confusion_count(labels, t, counts, flag, ignore, use_shared):
    """Add each pixel's (target, label) pair to ``counts`` (C, C) int64;
    with ``use_shared`` through a per-block int32 histogram in shared
    memory (C * C <= SHARED_BINS), so global atomics happen once per bin
    and block instead of once per pixel."""
    hist = cuda.shared.array(SHARED_BINS, dtype=int32)
    C = counts.shape[0]
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    if use_shared:
        for k in range(tid, C * C, T):
            hist[k] = 0
        cuda.syncthreads()
    outer, inner = labels.shape
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        tv = int64(t[o, i])
        if tv != ignore:
            if tv < 0 or tv >= C:
                raise_flag(flag, BAD_TARGET, p)
            elif use_shared:
                cuda.atomic.add(hist, tv * C + int64(labels[o, i]), 1)
            else:
                cuda.atomic.add(counts, (tv, int64(labels[o, i])), 1)
    if use_shared:
        cuda.syncthreads()
        for k in range(tid, C * C, T):
            n = hist[k]
            if n != 0:
                r = k // C
                cuda.atomic.add(counts, (r, k - r * C), int64(n))


@cuda.jit(cache=True)
def add_into(dst, src):
    """``dst += src`` for 2-D arrays of one shape (grid-stride)."""
    rows, cols = dst.shape
    for k in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = k // cols
        c = k - r * cols
        dst[r, c] += src[r, c]


@cuda.jit(cache=True)
def fill_zero(a):
    """``a[...] = 0`` for a 2-D array (grid-stride)."""
    rows, cols = a.shape
    for k in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = k // cols
        a[r, k - r * cols] = 0


# --------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------

def _target2(caller, target, lg):
    """The target as an (outer, inner) device array (copied over for a
    host target; a strided GPU target that cannot be viewed is copied)."""
    outer, _, inner = _layout.split_shape(lg.shape, lg.axis)
    if not chk.is_gpu_array(target):
        return caller.to_device(np.asarray(target).reshape(outer, inner))
    dev = runtime.as_device(target)
    v = runtime.reshape(dev, (outer, inner))
    if v is None:
        _, tmp = caller.contiguous(dev)
        v = runtime.reshape(tmp, (outer, inner))
    return v


def _check_flag(flag, target, lg, ignore_index):
    """Raise the CPU backend's ValueError for the first bad target value."""
    from fastlogits.losses import target_value_error

    code, index = flag.read()
    if code == 0:
        return
    pos = np.unravel_index(index, lg.reduced_shape)
    if chk.is_gpu_array(target):
        value = runtime.as_device(target)[pos]
        value = np.asarray(value).item() if hasattr(value, "shape") else value
    else:
        value = np.asarray(target)[pos]
    raise target_value_error(int(value), tuple(int(k) for k in pos), lg.C, ignore_index)


def _plan(lg):
    """``ops.plan``, with the shared-tile regime served by the thread-per-pixel kernel."""
    shape3 = _layout.split_shape(lg.shape, lg.axis)
    p = ops.plan(shape3, lg.dtype.itemsize)
    if p.regime == "tile":
        T = ops._threads_per_block()
        p = ops.Plan("cf", ops._blocks(shape3[0] * shape3[2], T), T)
    return p


def _host_sum(partial, caller):
    """Float64 sums of the per-block partials (copies them back: syncs the stream)."""
    host = partial.copy_to_host(stream=caller.stream)
    caller.stream.synchronize()
    return host.astype(np.float64).sum(axis=1)


def _weights(caller, class_weight, lg):
    """``(device weights in the compute dtype, host float64 weights)``."""
    C = lg.C
    if class_weight is None:
        w64 = np.ones(C)
    elif chk.is_gpu_array(class_weight):
        w64 = np.asarray(runtime.as_device(class_weight).copy_to_host(), np.float64)
    else:
        w64 = np.asarray(class_weight, np.float64)
    return caller.to_device(w64.astype(lg.compute_dtype)), w64


def cross_entropy(x, target, lg, *, class_weight, ignore_index, label_smoothing, reduction,
                  return_grad, grad_out=None):
    """CUDA cross_entropy; see :func:`fastlogits.cross_entropy` (arguments
    validated, but for ``grad_out``, checked here: a GPU array, or a NumPy
    one for a host x; x itself for in place)."""
    caller = runtime.Caller(x)
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
        outer, C, inner = shape3 = _layout.split_shape(lg.shape, lg.axis)
        x3 = ops._input3(caller, lg)
        t2 = _target2(caller, target, lg)
        w, w64 = _weights(caller, class_weight, lg)
        cdt = ops._cdt(lg)
        flag = ErrorFlag(caller.stream)
        p = _plan(lg)
        eps = float(label_smoothing)
        gscale = 1.0
        if return_grad and (reduction == "mean" or given is not None):
            # The gradient is scaled by 1 / sum(w[t]): known before it is
            # written; a caller's grad_out is not written if a target is bad.
            partial = cuda.device_array((1, p.blocks), lg.compute_dtype, stream=caller.stream)
            target_weights[p.blocks, p.threads, caller.stream](t2, w, partial, flag.array, cdt,
                                                              ignore_index, C)
            _check_flag(flag, target, lg, ignore_index)
            total_weight = _host_sum(partial, caller)[0]
            if reduction == "mean":
                gscale = math.inf if total_weight == 0 else 1.0 / total_weight
        loss2 = (runtime.stand_in(lg.compute_dtype, 2) if loss_out is None
                 else loss_out.view((outer, inner)))
        grad3 = runtime.stand_in(lg.dtype, 3) if grad_out is None else grad_out.view(shape3)
        partial = cuda.device_array((2, p.blocks), lg.compute_dtype, stream=caller.stream)
        args = (x3, t2, w, loss2, grad3, partial, flag.array, cdt, ignore_index, ct(eps),
                ct(eps / C), ct(w64.sum()), ct(gscale), loss_out is not None, return_grad)
        if p.regime == "rows":
            ops._launch(cross_entropy_rows, p, caller, *args, p.group, p.shuffle)
        else:
            ops._launch(cross_entropy_pixels, p, caller, *args)
        _check_flag(flag, target, lg, ignore_index)
        loss_sum, weight_sum = _host_sum(partial, caller)
        res = ops._finish(caller, outputs)
    if reduction == "none":
        result = res.pop(0)
    elif reduction == "sum":
        result = np.float64(loss_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, res[0]) if return_grad else result


def confusion_matrix(x, target, lg, *, ignore_index, out=None):
    """CUDA confusion_matrix; see :func:`fastlogits.confusion_matrix`.

    ``out`` (C, C) int64, a GPU array (or NumPy for a host input), is added
    to only once the targets were found valid.
    """
    from fastlogits.cuda import argmax as ka

    C = lg.C
    caller = runtime.Caller(x)
    out = ops._check_out(caller, lg, out, (C, C), np.int64, "out")
    with caller.activate():
        counts_obj, counts = caller.empty((C, C), np.int64)
        if C * C:
            fill_zero[ops._blocks(C * C, 256), 256, caller.stream](counts)
        if not lg.empty:
            outer, _, inner = shape3 = _layout.split_shape(lg.shape, lg.axis)
            x3 = ops._input3(caller, lg)
            t2 = _target2(caller, target, lg)
            _, labels = caller.empty((outer, inner), np.int32)
            p = ops.plan(shape3, lg.dtype.itemsize)
            cdt = ops._cdt(lg)
            one = lg.compute_dtype.type(1)
            stand = runtime.stand_in(lg.compute_dtype, 2)
            if p.regime == "cf":
                ops._launch(ka.argmax_cf, p, caller, x3, labels, stand, cdt, one, False)
            elif p.regime == "tile":
                ops._launch(ka.argmax_cl_tile, p, caller, x3, labels, stand, cdt, one, False,
                            p.pitch)
            else:
                ops._launch(ka.argmax_rows, p, caller, x3, labels, stand, cdt, one, False,
                            p.group, p.shuffle)
            flag = ErrorFlag(caller.stream)
            T = ops._threads_per_block()
            confusion_count[ops._blocks(outer * inner, T), T, caller.stream](
                labels, t2, counts, flag.array, ignore_index, C * C <= SHARED_BINS)
            _check_flag(flag, target, lg, ignore_index)
        if out is None and caller.gpu:
            return counts_obj
        if chk.is_gpu_array(out):
            add_into[ops._blocks(C * C, 256), 256, caller.stream](runtime.as_device(out), counts)
            return out
        host = counts.copy_to_host(stream=caller.stream)
        caller.stream.synchronize()
        if out is None:
            return host
        out += host
        return out
