"""NumPy reference implementations: the ground truth every backend matches.

Plain, float64-accumulating code a reader can check by eye. Same signatures
as the public functions of :mod:`fastlogits`, without ``backend`` (and
without ``out=``, where the reference always allocates). Special values
follow DESIGN.md: a pixel holding a NaN or a +inf, or all -inf, has NaN
probabilities and confidence; its logsumexp is NaN if it holds a NaN, else
+inf if it holds a +inf, else -inf. argmax is the first NaN if any, else
the first maximum.
"""

import numpy as np

from fastlogits import _bfloat16

__all__ = ["softmax", "log_softmax", "logsumexp", "argmax", "classify",
           "cross_entropy", "confusion_matrix", "iou"]


def _bfloat16_bits(x):
    """The bits of bfloat16 logits (an ml_dtypes bfloat16 array, or
    :class:`fastlogits._bfloat16.Bits`), else None."""
    if isinstance(x, _bfloat16.Bits):
        return x.bits
    return _bfloat16.bits_of(x)


def _native(x):
    """x as an array in native byte order (big-endian data converted;
    bfloat16 widened to float32, exactly)."""
    bits = _bfloat16_bits(x)
    if bits is not None:
        return _bfloat16.widen(bits)
    x = np.asarray(x)
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def _as_input_dtype(values, x):
    """``values`` (float64) in x's dtype, in native byte order; for
    bfloat16 x rounded once to bfloat16 (an ml_dtypes array, or bits for
    :class:`~fastlogits._bfloat16.Bits`)."""
    bits = _bfloat16_bits(x)
    if bits is None:
        return values.astype(_native(x).dtype)
    r = _bfloat16.round_bits(values)
    return r if isinstance(x, _bfloat16.Bits) else r.view(x.dtype)


def temperature_scale(temperature, dtype):
    """The factor ``1 / temperature`` every backend applies to the scores of
    logits of ``dtype``: the reciprocal taken in float64, clamped to the
    normal finite range of the dtype the scores are computed in (float64
    for float64 logits, else float32) and rounded to it.

    Scores are ``(z - max z) * scale``: the shifted logits are <= 0, so
    the clamp at the largest finite value keeps a tiny temperature's
    limit (a one-hot softmax) instead of overflowing to inf * 0 = NaN, and
    the clamp at the smallest normal value keeps a huge temperature's -inf
    logits at probability 0 (a subnormal or zero factor would be flushed
    or give -inf * 0). Only the logsumexp ``max z * scale + log s`` can
    overflow, to +-inf, where its true value is out of range.
    """
    ct = np.float64 if np.dtype(dtype).newbyteorder("=") == np.float64 else np.float32
    info = np.finfo(ct)
    inv = 1.0 / float(temperature)  # inf for a subnormal temperature, never an error
    return ct(min(max(inv, float(info.tiny)), float(info.max)))


def _stats(x, axis, temperature):
    """Shifted scores ``(z - m) * scale``, the max m (unscaled), ``log s``
    and the pixels that are ``bad``, in float64.

    ``scale`` is :func:`temperature_scale`. ``log s`` is SciPy's
    ``log1p`` of the sum of the non-maximal terms (the first maximum's
    exp(0) = 1 left out), so a logsumexp or log-probability near 0 keeps
    its relative precision. Pixels whose max is not finite (a NaN, a +inf,
    or all -inf) are marked ``bad``; their softmax is NaN.
    """
    z = _native(x)
    scale = float(temperature_scale(temperature, z.dtype))
    z = z.astype(np.float64)
    with np.errstate(all="ignore"):
        has_nan = np.isnan(z).any(axis=axis, keepdims=True)
        m = np.max(np.where(np.isnan(z), -np.inf, z), axis=axis, keepdims=True)
        m = np.where(has_nan, np.nan, m)
        bad = ~np.isfinite(m)
        shifted = (z - np.where(bad, 0.0, m)) * scale
        terms = np.exp(shifted)
        first_max = np.argmax(np.where(np.isnan(shifted), -np.inf, shifted), axis=axis)
        np.put_along_axis(terms, np.expand_dims(first_max, axis), 0.0, axis=axis)
        log_s = np.log1p(np.sum(terms, axis=axis, keepdims=True))
        m = m * scale
    return shifted, m, log_s, bad


def softmax(x, axis=-1, *, temperature=1.0):
    """Softmax of ``x / temperature`` along ``axis`` (float64 accumulation)."""
    shifted, _, log_s, bad = _stats(x, axis, temperature)
    with np.errstate(all="ignore"):
        p = np.where(bad, np.nan, np.exp(shifted - log_s))
    return _as_input_dtype(p, x)


def log_softmax(x, axis=-1, *, temperature=1.0):
    """Log-softmax of ``x / temperature`` along ``axis``."""
    shifted, _, log_s, bad = _stats(x, axis, temperature)
    with np.errstate(all="ignore"):
        return _as_input_dtype(np.where(bad, np.nan, shifted - log_s), x)


def logsumexp(x, axis=-1, *, temperature=1.0):
    """``log(sum(exp(x / temperature)))`` along ``axis``; the class axis is dropped."""
    _, m, log_s, bad = _stats(x, axis, temperature)
    with np.errstate(all="ignore"):  # m * scale may overflow to +-inf, as in float32
        lse = np.where(bad, m, m + log_s)
        return _as_input_dtype(np.squeeze(lse, axis=axis), x)


def argmax(x, axis=-1):
    """Index of the first NaN, else of the first maximum (NumPy's rule), int64."""
    return np.argmax(_native(x), axis=axis).astype(np.int64)


def classify(x, axis=-1, *, temperature=1.0):
    """``(labels, confidence)``: argmax and the top-1 probability ``1 / sum(exp(z - max))``.

    Confidence is float64 for float64 input, else float32.
    """
    _, _, log_s, bad = _stats(x, axis, temperature)
    conf = np.where(bad, np.nan, np.exp(-log_s))
    conf_dtype = np.float64 if _native(x).dtype == np.float64 else np.float32
    return argmax(x, axis), np.squeeze(conf, axis=axis).astype(conf_dtype)


# --------------------------------------------------------------------------
# Losses and segmentation metrics. Inputs are assumed valid here (targets of
# x's shape without the class axis, in [0, C) or equal to ignore_index);
# ``fastlogits.cross_entropy(..., backend="numpy")`` checks them first.
# --------------------------------------------------------------------------

def cross_entropy(x, target, axis=-1, *, class_weight=None, ignore_index=-100,
                  label_smoothing=0.0, reduction="mean", return_grad=False):
    """Cross-entropy of logits ``x`` against class indices ``target``, as
    ``torch.nn.functional.cross_entropy`` computes it, in float64.

    Per pixel with log-probabilities ``logp``, class weights ``w`` (ones by
    default), smoothing ``eps`` and target ``t`` (0 where ``t`` is
    ``ignore_index``)::

        loss = (1 - eps) * w[t] * -logp[t] + eps / C * sum_c w[c] * -logp[c]

    (only the first term when ``eps == 0``). "sum" adds the pixel losses,
    "mean" divides that sum by ``sum(w[t])`` over the non-ignored pixels
    (NaN when every pixel is ignored), "none" returns them (float32, or
    float64 for float64 x). ``return_grad`` also returns d loss / d x (of
    the summed pixel losses for "none"), x's shape and dtype, 0 at ignored
    pixels.
    """
    given, x = x, _native(x)
    with np.errstate(divide="ignore", invalid="ignore"):  # NaN/inf pixels give NaN
        logp = np.moveaxis(log_softmax(x.astype(np.float64), axis), axis, -1)  # (..., C)
    C = logp.shape[-1]
    t = np.asarray(target).astype(np.int64)
    w = np.ones(C) if class_weight is None else np.asarray(class_weight, dtype=np.float64)
    eps = float(label_smoothing)

    keep = t != ignore_index
    t_safe = np.where(keep, t, 0)
    w_t = np.where(keep, w[t_safe], 0.0)
    logp_t = np.take_along_axis(logp, t_safe[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):  # 0 * -inf is NaN, as in PyTorch
        loss = w[t_safe] * -logp_t
        if eps > 0:
            loss = (1 - eps) * loss + eps / C * np.sum(w * -logp, axis=-1)
    loss = np.where(keep, loss, 0.0)
    total_weight = np.sum(w_t)

    if reduction == "none":
        result = loss.astype(np.float64 if x.dtype == np.float64 else np.float32)
        scale = 1.0
    elif reduction == "sum":
        result = np.float64(np.sum(loss))
        scale = 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(np.sum(loss)) / total_weight
            scale = np.float64(1.0) / total_weight
    if not return_grad:
        return result

    # d loss / d x_c = p_c * ((1 - eps) w[t] + eps / C * sum(w))
    #                  - (1 - eps) w[t] [c == t] - eps / C * w[c]
    p = np.exp(logp)
    onehot = np.arange(C) == t_safe[..., None]
    with np.errstate(invalid="ignore"):
        grad = (p * ((1 - eps) * w_t + eps / C * np.sum(w))[..., None]
                - (1 - eps) * w_t[..., None] * onehot - eps / C * w)
        grad = np.where(keep[..., None], grad * scale, 0.0)
    return result, _as_input_dtype(np.moveaxis(grad, -1, axis), given)


def confusion_matrix(x, target, axis=-1, *, ignore_index=-100):
    """(C, C) int64 counts of pixels: rows the target, columns ``argmax(x)``.

    Pixels whose target is ``ignore_index`` are not counted.
    """
    x = _native(x)
    C = x.shape[axis]
    pred = argmax(x, axis).ravel()
    t = np.asarray(target).astype(np.int64).ravel()
    keep = t != ignore_index
    counts = np.bincount(t[keep] * C + pred[keep], minlength=C * C)
    return counts.reshape(C, C).astype(np.int64)


def iou(confusion):
    """Per-class intersection over union of a confusion matrix, float64.

    ``iou[c] = cm[c, c] / (sum(cm[c, :]) + sum(cm[:, c]) - cm[c, c])``; NaN
    for a class absent from both targets and predictions. The mean IoU is
    ``np.nanmean(iou(cm))``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(axis=1) + cm.sum(axis=0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)
