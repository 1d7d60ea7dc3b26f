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

__all__ = ["softmax", "log_softmax", "logsumexp", "argmax", "classify"]


def _result_dtype(x):
    x = np.asarray(x)
    return np.float64 if x.dtype == np.float64 else x.dtype


def _stats(x, axis, temperature):
    """Shifted scores z - m, the max m and log of the exp-sum, in float64.

    Pixels whose max is not finite (a NaN, a +inf, or all -inf) are marked
    ``bad``; their softmax is NaN.
    """
    z = np.asarray(x, dtype=np.float64) / float(temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        has_nan = np.isnan(z).any(axis=axis, keepdims=True)
        m = np.max(np.where(np.isnan(z), -np.inf, z), axis=axis, keepdims=True)
        m = np.where(has_nan, np.nan, m)
        bad = ~np.isfinite(m)
        shifted = z - np.where(bad, 0.0, m)
        log_s = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return shifted, m, log_s, bad


def softmax(x, axis=-1, *, temperature=1.0):
    """Softmax of ``x / temperature`` along ``axis`` (float64 accumulation)."""
    shifted, _, log_s, bad = _stats(x, axis, temperature)
    p = np.where(bad, np.nan, np.exp(shifted - log_s))
    return p.astype(_result_dtype(x))


def log_softmax(x, axis=-1, *, temperature=1.0):
    """Log-softmax of ``x / temperature`` along ``axis``."""
    shifted, _, log_s, bad = _stats(x, axis, temperature)
    return np.where(bad, np.nan, shifted - log_s).astype(_result_dtype(x))


def logsumexp(x, axis=-1, *, temperature=1.0):
    """``log(sum(exp(x / temperature)))`` along ``axis``; the class axis is dropped."""
    _, m, log_s, bad = _stats(x, axis, temperature)
    lse = np.where(bad, m, m + log_s)
    return np.squeeze(lse, axis=axis).astype(_result_dtype(x))


def argmax(x, axis=-1):
    """Index of the first NaN, else of the first maximum (NumPy's rule), int64."""
    return np.argmax(np.asarray(x), axis=axis).astype(np.int64)


def classify(x, axis=-1, *, temperature=1.0):
    """``(labels, confidence)``: argmax and the top-1 probability ``1 / sum(exp(z - max))``.

    Confidence is float64 for float64 input, else float32.
    """
    _, _, log_s, bad = _stats(x, axis, temperature)
    conf = np.where(bad, np.nan, np.exp(-log_s))
    conf_dtype = np.float64 if np.asarray(x).dtype == np.float64 else np.float32
    return argmax(x, axis), np.squeeze(conf, axis=axis).astype(conf_dtype)
