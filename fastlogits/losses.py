"""Losses and segmentation metrics: cross_entropy, confusion_matrix, iou.

Validation, then dispatch (as :mod:`fastlogits.api` does for the other ops):

- ``"numpy"``: :mod:`fastlogits.reference`, after the target values are
  checked with NumPy;
- ``"cpu"``: the fused kernels of :mod:`fastlogits.cpu.losses` and
  :mod:`fastlogits.cpu.confusion`, which also check the target values on
  the way (a bad value is counted; the error is raised before anything is
  returned or added to ``out=``);
- ``"cuda"``: :mod:`fastlogits.cuda.losses`.

Everything about the arguments (dtypes, shapes, options) is checked before
any kernel runs.
"""

import functools
import math
import os

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, pool, reference
from fastlogits.api import _check_host_out, _Logits, _run_cpu, resolve_backend

REDUCTIONS = ("mean", "sum", "none")

#: Target dtypes the CPU kernels read as they are; any other integer dtype
#: is converted to int64 first (one extra pass over the targets).
_NATIVE_TARGET_DTYPES = (np.dtype(np.uint8), np.dtype(np.int64))

_FLOAT64 = np.dtype(np.float64)
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

def _check_ignore_index(ignore_index):
    if not chk.is_integer(ignore_index):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        raise ValueError(f"ignore_index={ignore_index} does not fit in int64")
    return int(ignore_index)


def _check_target(target, lg):
    """Target dtype (integer) and shape (x's shape without the class axis).

    Returns the host array (or the GPU object untouched).
    """
    if chk.is_gpu_array(target):
        shape, dtype = chk.gpu_shape_dtype(target)
    else:
        target = _layout.host_array(target)
        shape, dtype = target.shape, target.dtype
    if dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {dtype}")
    if tuple(shape) != tuple(lg.reduced_shape):
        raise ValueError(
            f"target has shape {tuple(shape)}, expected {tuple(lg.reduced_shape)}: "
            f"x's shape {tuple(lg.shape)} without its class axis {lg.axis}"
        )
    return target


def _check_class_weight(class_weight, C):
    """None, or C real weights (returned as float64 for a host array)."""
    if class_weight is None:
        return None
    if chk.is_gpu_array(class_weight):
        shape, dtype = chk.gpu_shape_dtype(class_weight)
        w = class_weight
    else:
        w = _layout.host_array(class_weight)
        shape, dtype = w.shape, w.dtype
    if dtype.kind not in "fiu":
        raise TypeError(f"class_weight must hold real numbers, got dtype {dtype}")
    if tuple(shape) != (C,):
        raise ValueError(
            f"class_weight has shape {tuple(shape)}, expected ({C},): one weight per class"
        )
    return w if chk.is_gpu_array(w) else w.astype(np.float64)


def _check_label_smoothing(label_smoothing):
    eps = label_smoothing
    if not chk.is_real(eps):
        raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )
    return reduction


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def target_value_error(value, position, C, ignore_index):
    """The ``ValueError`` for a target value outside [0, C) that is not
    ``ignore_index`` (shared by every backend)."""
    return ValueError(
        f"target holds {value} at position {tuple(position)}, outside [0, {C}) "
        f"and not ignore_index={ignore_index}"
    )


def check_target_values(t, C, ignore_index):
    """Raise :func:`target_value_error` for the first (C order) bad value of
    the host array ``t``; return None if every value is fine."""
    t = np.asarray(t)
    if t.size == 0:
        return
    # Compare without casting: a uint64 target may hold values beyond int64.
    if t.dtype.kind == "u":
        bad = t >= C
        if 0 <= ignore_index:
            bad &= t != ignore_index
    else:
        bad = ((t < 0) | (t >= C)) & (t != ignore_index)
    if bad.any():
        flat = int(np.argmax(bad.ravel()))
        pos = tuple(int(i) for i in np.unravel_index(flat, t.shape))
        raise target_value_error(t[pos].item(), pos, C, ignore_index)


def _host_target(t, C, ignore_index):
    """The host target as a C-contiguous array of a dtype the CPU kernels
    read directly (uint8 or int64; other integer dtypes are converted)."""
    if t.dtype in _NATIVE_TARGET_DTYPES:
        return np.ascontiguousarray(t)
    if t.dtype == np.uint64:  # values above int64's range would wrap when cast
        check_target_values(t, C, ignore_index)
    return t.astype(np.int64)


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------

def cross_entropy(x, target, axis=-1, *, class_weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", return_grad=False,
                  grad_out=None, backend="auto"):
    """Cross-entropy of logits against class indices, fused in one read of x.

    The semantics of ``torch.nn.functional.cross_entropy`` for every
    combination of options. Per pixel, with ``logp = log_softmax(x)``,
    weights ``w`` (ones when ``class_weight`` is None) and ``eps =
    label_smoothing``::

        loss = (1 - eps) * w[t] * -logp[t] + eps / C * sum_c w[c] * -logp[c]

    Parameters
    ----------
    x : array_like or GPU array
        Logits, float16, float32 or float64, class axis at ``axis``.
    target : array_like of int or GPU array
        Class indices of any integer dtype, x's shape without the class
        axis; each in [0, C) or equal to ``ignore_index``.
    axis : int, default -1
        The class axis (-1: channels-last H×W×C; 1: N×C×H×W).
    class_weight : array_like, optional
        C real weights, one per class.
    ignore_index : int, default -100
        Pixels with this target add nothing to the loss, to the "mean"
        denominator or to the gradient (their loss and gradient are 0).
    label_smoothing : float, default 0.0
        In [0, 1]: the target distribution is ``(1 - eps) * onehot + eps / C``.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed losses by ``sum(w[t])`` over the
        non-ignored pixels (NaN when all are ignored, as in PyTorch); "sum"
        adds them; "none" returns one loss per pixel.
    return_grad : bool, default False
        Also return d loss / d x (for "none": of the summed pixel losses),
        computed in the same pass.
    grad_out : ndarray or GPU array, optional
        With ``return_grad``: x's shape and dtype, the gradient is written
        there (no allocation; x itself for in place) and returned. Targets
        are checked before it is written, so a bad target leaves it
        untouched.
    backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

    Returns
    -------
    loss : numpy.float64 or ndarray
        A NumPy float64 scalar for "mean" and "sum" (float32 losses are
        accumulated in float64). For "none": x's shape without the class
        axis, float32 (float64 for float64 x), 0 at ignored pixels.
    grad : ndarray
        Only with ``return_grad``: x's shape and dtype, ``(softmax(x) *
        ((1 - eps) w[t] + eps / C * sum(w)) - (1 - eps) w[t] onehot(t) -
        eps / C * w) / denominator``; 0 at ignored pixels.

    Raises
    ------
    TypeError
        Non-float logits, non-integer target or class_weight of a wrong kind.
    ValueError
        A target or class_weight of the wrong shape, a target value outside
        [0, C) that is not ``ignore_index`` (naming the first such value
        and its index), label_smoothing outside [0, 1], an unknown
        reduction; ``grad_out`` without ``return_grad``, of the wrong shape,
        read-only, or overlapping x without being x.

    Notes
    -----
    A non-ignored pixel whose logits hold a NaN or +inf, or are all -inf,
    has a NaN loss (so a NaN mean) and a NaN gradient, as in PyTorch; a
    -inf logit among finite ones is a probability of 0 (an infinite loss if
    it is the target's).

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> x = np.array([[0.5, 0.34, 2.41], [2.0, 0.0, -1.0]], np.float32)
    >>> round(float(fl.cross_entropy(x, np.array([2, 0]))), 4)
    0.2061
    """
    lg = _Logits(x, axis)
    target = _check_target(target, lg)
    weight = _check_class_weight(class_weight, lg.C)
    ignore_index = _check_ignore_index(ignore_index)
    eps = _check_label_smoothing(label_smoothing)
    reduction = _check_reduction(reduction)
    return_grad = _check_flag(return_grad, "return_grad")
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is given but return_grad is False")
    be = resolve_backend(backend, x, lg.gpu)
    kw = dict(class_weight=weight, ignore_index=ignore_index, label_smoothing=eps,
              reduction=reduction, return_grad=return_grad)
    if be == "cuda":
        from fastlogits.cuda import losses as cuda_losses

        return cuda_losses.cross_entropy(x, target, lg, grad_out=grad_out, **kw)
    if chk.is_gpu_array(target) or chk.is_gpu_array(weight):
        raise ValueError(f"target and class_weight must be host arrays for backend={be!r}")
    grad_out = _check_host_out(lg, grad_out, lg.shape, lg.dtype, "grad_out")
    if be == "numpy":
        check_target_values(target, lg.C, ignore_index)
        res = reference.cross_entropy(lg.array, target, lg.axis, **kw)
        if grad_out is None:
            return res
        grad_out[...] = res[1]
        return res[0], grad_out
    return _cross_entropy_cpu(lg, _host_target(target, lg.C, ignore_index), grad_out=grad_out,
                              **kw)


@functools.lru_cache(maxsize=16)
def _unit_weights(C, dtype):
    return np.ones(C, dtype)


def class_weights(class_weight, C, dtype):
    """``(w64, w)``: the class weights (a checked float64 array, or None:
    C ones) in float64 and in the computed ``dtype``. The ones are made
    once per (C, dtype) and shared by the calls (the kernels only read
    them): at 128000 classes a fresh pair cost more than a loss over a
    few rows."""
    if class_weight is None:
        return _unit_weights(C, _FLOAT64), _unit_weights(C, np.dtype(dtype))
    # class_weight is already the float64 copy _check_class_weight made.
    return class_weight, class_weight.astype(dtype, copy=False)


def empty_result(reduction, loss, grad, return_grad):
    """cross_entropy's result on an input with no pixels (PyTorch's: a
    "mean" over nothing is NaN, a "sum" 0)."""
    if grad is not None:
        grad[...] = 0
    total = np.float64(0.0) if reduction == "sum" else np.float64(np.nan)
    result = loss if reduction == "none" else total
    return (result, grad) if return_grad else result


def grad_scale(t, w64, C, ignore_index, reduction, return_grad, check=False):
    """The factor of the gradient: 1, or 1 / sum(w[t]) for a "mean" gradient.

    That sum must be known before the pass that writes the gradient, so it
    costs one read of the targets first, which also checks their values;
    with ``check`` that read is made for any reduction (a caller's
    ``grad_out`` must not be written when a target is bad).
    """
    if not (return_grad and (reduction == "mean" or check)):
        return 1.0
    from fastlogits.cpu import launch_threads
    from fastlogits.cpu import losses as k

    with launch_threads(t.size) as nthreads:
        total_weight, nbad = k.target_weight_sum(t.reshape(-1), w64, ignore_index, nthreads)
    if nbad:
        check_target_values(t, C, ignore_index)
    if reduction != "mean":
        return 1.0
    return math.inf if total_weight == 0 else 1.0 / total_weight


def _cross_entropy_cpu(lg, t, *, class_weight, ignore_index, label_smoothing, reduction,
                       return_grad, grad_out=None):
    from fastlogits.cpu import losses as k

    C = lg.C
    w64, w = class_weights(class_weight, C, lg.compute_dtype)
    loss = np.zeros(lg.reduced_shape, lg.compute_dtype) if reduction == "none" else None
    grad = grad_out if grad_out is not None else (
        pool.empty(lg.shape, lg.dtype, like=lg.array) if return_grad else None)
    if lg.empty:
        return empty_result(reduction, loss, grad, return_grad)
    gscale = grad_scale(t, w64, C, ignore_index, reduction, return_grad,
                        check=grad_out is not None)

    sums = []

    def kernel(x3, full, red):
        sums.append(k.run_cross_entropy(
            x3, red[0], full[0] if return_grad else None, red[1] if loss is not None else None,
            w, w64, ignore_index, label_smoothing, gscale))

    _run_cpu(lg, [grad] if return_grad else [], [t] + ([loss] if loss is not None else []),
             kernel)
    return finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad)


def finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad):
    """cross_entropy's result from the kernels' ``[loss_sum, weight_sum,
    bad_count]`` of each call (one per float16 chunk): a bad target
    raises; else the "none" losses, the "sum", or the "mean" (NaN or
    +-inf where the weights sum to 0, as PyTorch's, without NumPy's
    warning)."""
    # Python floats, not NumPy's sum (2.6 us on a small input); the sum of
    # several starts from -0.0, the identity of addition, as NumPy's does.
    if len(sums) == 1:
        loss_sum, weight_sum, nbad = sums[0].tolist()
    else:
        loss_sum, weight_sum, nbad = (sum((float(r[k]) for r in sums), -0.0) for k in range(3))
    if nbad:
        check_target_values(t, C, ignore_index)
    if reduction == "none":
        result = loss
    elif reduction == "sum":
        result = np.float64(loss_sum)
    elif 0 < abs(weight_sum) < math.inf:
        result = np.float64(loss_sum) / np.float64(weight_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, grad) if return_grad else result


# --------------------------------------------------------------------------
# confusion_matrix, iou
# --------------------------------------------------------------------------

def confusion_matrix(x, target, axis=-1, *, ignore_index=-100, out=None, backend="auto"):
    """Confusion matrix of ``argmax(x)`` against ``target``, in one read of x.

    Parameters
    ----------
    x : array_like or GPU array
        Logits, float16, float32 or float64, class axis at ``axis``.
    target : array_like of int or GPU array
        Class indices of any integer dtype, x's shape without the class
        axis; each in [0, C) or equal to ``ignore_index``.
    axis : int, default -1
        The class axis.
    ignore_index : int, default -100
        Pixels with this target are not counted.
    out : ndarray, optional
        A (C, C) int64 matrix the counts are ADDED to, so a dataset's
        matrix builds up image by image. Left untouched if an error is raised.
    backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

    Returns
    -------
    ndarray
        (C, C) int64 (``out`` if given): entry [i, j] counts the pixels of
        target i predicted as j (the prediction is :func:`fastlogits.argmax`:
        the first NaN, else the first maximum).

    Raises
    ------
    TypeError, ValueError
        As :func:`cross_entropy` for x and target; an ``out`` of the wrong
        shape or dtype, or read-only.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> cm = np.zeros((19, 19), np.int64)
    >>> for logits, labels in dataset:                      # doctest: +SKIP
    ...     fl.confusion_matrix(logits, labels, ignore_index=255, out=cm)
    >>> miou = np.nanmean(fl.iou(cm))                        # doctest: +SKIP
    """
    lg = _Logits(x, axis)
    target = _check_target(target, lg)
    ignore_index = _check_ignore_index(ignore_index)
    be = resolve_backend(backend, x, lg.gpu)
    if be == "cuda":
        from fastlogits.cuda import losses as cuda_losses

        return cuda_losses.confusion_matrix(x, target, lg, ignore_index=ignore_index, out=out)
    if chk.is_gpu_array(target):
        raise ValueError(f"target must be a host array for backend={be!r}")
    C = lg.C
    out = _check_host_out(lg, out, (C, C), np.int64, "out")
    _check_matrix_fits(C)
    if be == "numpy":
        check_target_values(target, C, ignore_index)
        counts = reference.confusion_matrix(lg.array, target, lg.axis, ignore_index=ignore_index)
    else:
        return _confusion_matrix_cpu(lg, _host_target(target, C, ignore_index), ignore_index,
                                     out)
    return add_counts(counts, out)


def _physical_memory():
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_matrix_fits(C):
    """A (C, C) int64 matrix (the result, and the kernels' partial counts)
    must fit in the machine's memory: a clear ValueError before any work,
    not a MemoryError from deep inside."""
    need = 8 * C * C
    total = _physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"confusion_matrix of C={C} classes needs a ({C}, {C}) int64 matrix of "
            f"{need / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB of memory")


def add_counts(counts, out):
    """``counts``, or ``out`` with ``counts`` added (``out`` not None)."""
    if out is None:
        return counts
    out += counts
    return out


def labels_first(C, reduced_shape):
    """Whether the CPU confusion matrix of C classes over ``reduced_shape``
    pixels takes the labels first (:func:`confusion_from_labels`) rather
    than private histograms
    (:func:`fastlogits.cpu.confusion.private_histograms`)."""
    from fastlogits.cpu import confusion as k
    from fastlogits.cpu import thread_count

    return not k.private_histograms(C, _layout.size_of(reduced_shape), thread_count())


def confusion_from_labels(labels, t, C, ignore_index, out):
    """The (C, C) counts of ``labels`` against the targets ``t`` (same
    shape) added to ``out`` (None: a new matrix) in one serial pass; a bad
    target raises, ``out`` untouched."""
    from fastlogits.cpu import confusion as k

    dest = np.zeros((C, C), np.int64) if out is None else out
    if k.bin_labels(np.ravel(t), labels.reshape(-1), ignore_index, dest):
        check_target_values(t, C, ignore_index)
    return dest


def _confusion_matrix_cpu(lg, t, ignore_index, out):
    """The CPU confusion matrix, added to ``out`` (None: a new one): by the
    fused argmax and private histograms or, where those do not pay
    (:func:`labels_first`), the labels first."""
    from fastlogits import cpu
    from fastlogits.cpu import confusion as k

    C = lg.C
    if lg.empty:
        return add_counts(np.zeros((C, C), np.int64), out)
    if labels_first(C, lg.reduced_shape):
        labels = pool.empty(lg.reduced_shape, np.int32)
        one = lg.compute_dtype.type(1.0)
        _run_cpu(lg, [], [labels], lambda x3, f, r: cpu.run_argmax(x3, r[0], None, one))
        return confusion_from_labels(labels, t, C, ignore_index, out)
    counts = np.zeros((C, C), np.int64)
    bad = []

    def kernel(x3, full, red):
        bad.append(k.run_confusion(x3, red[0], ignore_index, counts))

    _run_cpu(lg, [], [t], kernel)
    if sum(bad):
        check_target_values(t, C, ignore_index)
    return add_counts(counts, out)


def iou(confusion):
    """Per-class intersection over union of a confusion matrix.

    Parameters
    ----------
    confusion : array_like
        (C, C) counts, rows = target, columns = prediction, as
        :func:`confusion_matrix` returns (a GPU array is copied to the host).

    Returns
    -------
    ndarray
        (C,) float64: ``cm[c, c] / (cm[c, :].sum() + cm[:, c].sum() - cm[c, c])``,
        NaN for a class absent from both targets and predictions. The mean
        IoU (mIoU) over the classes present is ``np.nanmean(fl.iou(cm))``.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    >>> fl.iou(cm)
    array([0.75      , 0.66666667,        nan])
    >>> float(np.nanmean(fl.iou(cm)))
    0.7083333333333333
    """
    if chk.is_gpu_array(confusion):
        from numba import cuda

        confusion = cuda.as_cuda_array(confusion).copy_to_host()
    cm = np.asarray(confusion)
    if cm.dtype.kind not in "iuf":
        raise TypeError(f"confusion must hold real counts, got dtype {cm.dtype}")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {cm.shape}")
    return reference.iou(cm)


__all__ = ["cross_entropy", "confusion_matrix", "iou"]
