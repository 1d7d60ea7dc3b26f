"""Losses and segmentation metrics: cross_entropy, confusion_matrix, iou.

Each function checks every argument, then dispatches through
:mod:`fastlogits._frontend` (as :mod:`fastlogits.api` does for the other ops):

- ``"numpy"``: :mod:`fastlogits.reference`, after the target values are
  checked with NumPy;
- ``"cpu"``: the fused kernels of :mod:`fastlogits.cpu.ops.losses` and
  :mod:`fastlogits.cpu.ops.confusion`, which also check the target values on
  the way (a bad value is counted; the error is raised before anything is
  returned or added to ``out=``);
- ``"cuda"``: :mod:`fastlogits.cuda.host.losses`.

Everything about the arguments (dtypes, shapes, options) is checked before
any kernel runs.

dask arrays
-----------
A dask x gives lazy results (:mod:`fastlogits._dask`): "none" losses and
gradients chunk by chunk; "mean" and "sum" a 0-d float64 dask array from
the per-chunk (loss sum, weight sum) pairs, summed by a tree reduction and
divided once (never a mean of means); the confusion matrix a (C, C) int64
dask array, the sum of per-chunk counts; ``iou`` of it a lazy (C,). All
equal the in-memory results for any chunking. Target values are checked
by each chunk's kernel, so a bad one raises at compute time.
"""

from fastlogits import _frontend

__all__ = ["cross_entropy", "confusion_matrix", "iou"]


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
        Logits, float16, bfloat16, float32 or float64, class axis at ``axis``.
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
        accumulated in float64; a 0-d float64 tensor for a PyTorch x, a
        0-d DataArray for an xarray one). For "none": x's shape without
        the class axis, float32 (float64 for float64 x), 0 at ignored pixels.
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
    return _frontend.cross_entropy(x, target, axis, class_weight, ignore_index, label_smoothing,
                                   reduction, return_grad, grad_out, backend)


def confusion_matrix(x, target, axis=-1, *, ignore_index=-100, out=None, backend="auto"):
    """Confusion matrix of ``argmax(x)`` against ``target``, in one read of x.

    Parameters
    ----------
    x : array_like or GPU array
        Logits, float16, bfloat16, float32 or float64, class axis at ``axis``.
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
    return _frontend.confusion_matrix(x, target, axis, ignore_index, out, backend)


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
    return _frontend.iou(confusion)
