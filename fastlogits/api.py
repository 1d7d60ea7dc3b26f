"""Public API: the logits ops (softmax, log_softmax, logsumexp, argmax,
classify) and ``backends()``.

Each function checks every argument before anything runs, then calls its
backend's implementation through :mod:`fastlogits._frontend`'s dispatch
tables: ``"numpy"`` the reference, ``"cpu"`` the Numba kernels on the
canonical (outer, C, inner) view of x, ``"cuda"`` the GPU kernels (GPU
arrays in place, host arrays copied over and back).

Results come back in x's library: torch tensors for a PyTorch CPU
tensor, DataArrays for an xarray.DataArray, NumPy otherwise (every
``out=`` as given; :mod:`fastlogits._interop`, README "Inputs from other
libraries").

dask arrays
-----------
A dask x gives lazy dask arrays, one task per chunk running this op on
the chunk (:mod:`fastlogits._dask`, README "dask arrays"): the class axis
is one chunk (a split one is rechunked with a ``PerformanceWarning``, or
refused with ``tuning`` ``dask_rechunk_classes=False``), ``out=`` is a
TypeError, and each task's Numba threads fit the scheduler's threads.
"""

from fastlogits import _frontend

__all__ = ["softmax", "log_softmax", "logsumexp", "argmax", "classify", "backends"]


def backends():
    """Names of the available backends.

    Returns
    -------
    list of str
        Always ``"numpy"`` and ``"cpu"``; ``"cuda"`` only when a usable GPU
        (or the CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``) is present.
    """
    return _frontend.available_backends()


def softmax(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """Softmax of ``x / temperature`` along the class axis.

    Parameters
    ----------
    x : array_like or GPU array
        Logits, float16, bfloat16, float32 or float64, class axis at ``axis``.
    axis : int, default -1
        The class axis (-1: channels-last H×W×C; 1: N×C×H×W).
    temperature : float, default 1.0
        Scores are ``x / temperature``; must be finite and > 0.
    out : ndarray, optional
        Preallocated output of x's shape and dtype; ``out=x`` works in place.
    backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

    Returns
    -------
    ndarray
        Probabilities, x's shape and dtype. A pixel holding a NaN or +inf,
        or all -inf, is NaN in every class.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> fl.softmax(np.array([0.5, 0.34, 2.41], np.float32)).round(3)
    array([0.116, 0.099, 0.785], dtype=float32)
    """
    return _frontend.expnorm("softmax", x, axis, temperature, out, backend)


def log_softmax(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """Log-softmax of ``x / temperature`` along the class axis.

    Parameters and special values as :func:`softmax`; the result is
    ``z - max(z) - log(sum(exp(z - max(z))))`` with ``z = x / temperature``
    (-inf where a logit is -inf among finite ones).

    Returns
    -------
    ndarray
        Log-probabilities, x's shape and dtype.
    """
    return _frontend.expnorm("log_softmax", x, axis, temperature, out, backend)


def logsumexp(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """``log(sum(exp(x / temperature)))`` along the class axis.

    Parameters as :func:`softmax`; ``out`` has x's shape without the class
    axis and x's dtype.

    Returns
    -------
    ndarray
        x's shape without the class axis. NaN where a pixel holds a NaN,
        else +inf where it holds +inf, else -inf where all are -inf.
    """
    return _frontend.expnorm("logsumexp", x, axis, temperature, out, backend)


def argmax(x, axis=-1, *, out=None, backend="auto"):
    """Index of the largest logit along the class axis.

    Parameters
    ----------
    x : array_like or GPU array
        Logits (float16, bfloat16, float32 or float64).
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        Preallocated labels, x's shape without the class axis, of any
        integer dtype that holds C - 1 (e.g. uint8 for C <= 256).
    backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

    Returns
    -------
    ndarray
        int64 labels (or ``out``): the first NaN if a pixel holds one,
        else the first maximum, exactly as ``np.argmax``.
    """
    return _frontend.argmax(x, axis, out, backend)


def classify(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """Labels and top-1 probability in one read of x (no softmax materialized).

    Parameters
    ----------
    x : array_like or GPU array
        Logits (float16, bfloat16, float32 or float64).
    axis : int, default -1
        The class axis.
    temperature : float, default 1.0
        Scales the confidence (``x / temperature``); labels do not depend on it.
    out : tuple of (ndarray, ndarray), optional
        ``(labels, confidence)``: labels of any integer dtype holding C - 1,
        confidence float32 (float64 for float64 x), both x's shape without
        the class axis.
    backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

    Returns
    -------
    labels : ndarray
        As :func:`argmax`.
    confidence : ndarray
        ``1 / sum(exp((x - max) / T))``, the top-1 probability; NaN where a
        pixel holds a NaN or +inf, or is all -inf.
    """
    return _frontend.classify(x, axis, temperature, out, backend)
