"""Public API: validation, axis/layout handling, output allocation, dispatch.

Every public function validates all of its arguments first (nothing runs
on bad input), then resolves the backend:

- ``"numpy"``: :mod:`fastlogits.reference`;
- ``"cpu"``: the Numba kernels of :mod:`fastlogits.cpu` on the canonical
  (outer, C, inner) view of x;
- ``"cuda"``: :mod:`fastlogits.cuda` (GPU arrays in place, host arrays
  copied over and back).

float16 input is computed in float32 on the CPU: read (and its float16
outputs written) as it is by the kernels (:mod:`fastlogits.cpu.scores`)
where the CPU has F16C and ``config.CPU_HALF_DIRECT`` is on, else in
float32 chunks of ``config.CPU_HALF_CHUNK_ELEMENTS``, so its extra memory
stays bounded.
"""

import functools
import os

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, config, pool, reference

ENV_BACKEND = "FASTLOGITS_BACKEND"


@functools.lru_cache(maxsize=None)
def _cuda_status():
    """``(usable, reason)`` for the CUDA backend, probed once."""
    try:
        from fastlogits.cuda import runtime
    except ImportError as exc:  # numba-cuda missing or broken
        return False, f"the CUDA backend cannot be imported ({exc})"
    return runtime.status()


def backends():
    """Names of the available backends.

    Returns
    -------
    list of str
        Always ``"numpy"`` and ``"cpu"``; ``"cuda"`` only when a usable GPU
        (or the CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``) is present.
    """
    names = ["numpy", "cpu"]
    if _cuda_status()[0]:
        names.append("cuda")
    return names


def resolve_backend(backend, x, gpu=None):
    """Turn ``backend`` (maybe ``"auto"``) into ``"numpy"``, ``"cpu"`` or ``"cuda"``
    (``gpu``: whether x is a GPU array, when already known)."""
    if gpu is None:
        gpu = chk.is_gpu_array(x)
    chk.check_backend_name(backend)
    if backend == "auto":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env:
            if env not in chk.BACKENDS:
                raise ValueError(
                    f"{ENV_BACKEND}={env!r} is not a backend; expected one of {', '.join(chk.BACKENDS)}"
                )
            backend = env
        if backend == "auto":
            backend = "cuda" if gpu else "cpu"
    if backend == "cuda":
        usable, reason = _cuda_status()
        if not usable:
            raise ValueError(f"backend='cuda' is not available: {reason}")
    elif gpu:
        raise ValueError(
            f"x is a GPU array but backend={backend!r}; use backend='cuda' (or 'auto'), "
            "or copy x to the host first"
        )
    return backend


def _cuda_ops():
    from fastlogits.cuda import ops

    return ops


class _Logits:
    """Validated logits: the array (host) or object (GPU), axis, C, shapes."""

    def __init__(self, x, axis):
        #: x's ``__cuda_array_interface__`` (None for a host array), read
        #: once here and handed to the CUDA backend (issue 36).
        self.cai = chk._interface(x)
        self.gpu = self.cai is not None
        if self.gpu:
            self.shape = tuple(int(n) for n in self.cai["shape"])
            self.dtype = np.dtype(self.cai["typestr"])
            self.array = x
        else:
            self.array = _layout.host_array(x)
            self.shape, self.dtype = self.array.shape, self.array.dtype
        chk.check_logits_dtype(self.dtype)
        self.axis = chk.normalize_axis(axis, len(self.shape))
        chk.check_classes(self.shape, self.axis)
        self.C = self.shape[self.axis]
        self.reduced_shape = _layout.reduced_shape(self.shape, self.axis)
        # float16 is computed (and its confidence returned) in float32.
        self.compute_dtype = chk.compute_dtype(self.dtype)
        self.empty = 0 in self.reduced_shape


def _check_host_out(lg, out, shape, dtype, name, kind="float"):
    """Validate a host ``out=`` (None allowed); returns it."""
    if out is None:
        return None
    chk.check_out(out, shape, dtype, name, kind)
    chk.check_no_partial_overlap(out, lg.array, name)
    return out


def _work_view(arr, shape):
    """``(view, temp)``: a no-copy reshape of ``arr`` or, if its strides
    forbid one, a temporary to copy back from after the kernel."""
    v = _layout.reshape_view(arr, shape)
    if v is not None:
        return v, None
    tmp = pool.empty(shape, arr.dtype)
    return tmp, tmp


def _run_cpu(lg, full, reduced, kernel):
    """Run ``kernel(x3, full3s, red2s)`` on canonical views of x and outputs.

    ``full``: outputs shaped like x; ``reduced``: outputs without the class
    axis. float16 x and outputs go to the kernel as their bits (uint16
    views, :mod:`fastlogits.cpu.scores`) where :func:`_half_direct`;
    else float16 data goes through float32 chunks (x and any float16
    output), bounded by ``config.CPU_HALF_CHUNK_ELEMENTS``.
    """
    outer, C, inner = shape3 = _layout.split_shape(lg.shape, lg.axis)
    x3 = _layout.canonical(lg.array, lg.axis, shape3)
    fviews = [_work_view(a, (outer, C, inner)) for a in full]
    rviews = [_work_view(a, (outer, inner)) for a in reduced]
    f3 = [v for v, _ in fviews]
    r2 = [v for v, _ in rviews]
    if lg.dtype != np.float16:
        kernel(x3, f3, r2)
    elif _half_direct():
        kernel(x3.view(np.uint16), [_bits(a) for a in f3], [_bits(a) for a in r2])
    else:
        from fastlogits.cpu.half import load, store

        scratch = ChunkScratch()
        for o0, o1, i0, i1 in _half_chunks(outer, C, inner):
            xs = load(x3, o0, o1, i0, i1, out=scratch.get("x", (o1 - o0, C, i1 - i0), np.float32))
            fs = [a[o0:o1, :, i0:i1] for a in f3]
            rs = [a[o0:o1, i0:i1] for a in r2]
            fw = [scratch.get(("full", k), a.shape, np.float32) if a.dtype == np.float16 else a
                  for k, a in enumerate(fs)]
            rw = [scratch.get(("reduced", k), a.shape, np.float32) if a.dtype == np.float16
                  else a for k, a in enumerate(rs)]
            kernel(xs, fw, rw)
            for whole, view, src in zip(f3 + r2, fs + rs, fw + rw):
                if view is not src:
                    store(whole, o0, o1, i0, i1, src)  # not NumPy's cast: slow for subnormals
    for (view, tmp), arr in zip(fviews + rviews, list(full) + list(reduced)):
        if tmp is not None:
            arr[...] = tmp.reshape(arr.shape)


def _half_direct():
    """Whether the CPU kernels take float16 as it is:
    ``config.CPU_HALF_DIRECT`` and F16C (:data:`fastlogits.cpu.half.HARDWARE`)."""
    from fastlogits.cpu.half import HARDWARE

    return config.CPU_HALF_DIRECT and HARDWARE


def _bits(a):
    """A float16 array's bits (a uint16 view); any other array as it is."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


class ChunkScratch:
    """The working arrays of a chunked loop (:func:`_half_chunks`), one
    buffer per name, allocated at the first (largest) chunk and reused by
    the others.

    A fresh array per chunk was faulted in page by page whenever glibc's
    heap had given the previous one back: float16 cross-entropy of a
    channels-first 1024 x 2048 x 19 map took 28.6 ms in such a heap
    state, against 11.6 (bench/RESULTS.md, log 54)."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        """A C-contiguous ``shape`` array of ``dtype`` on the buffer ``name``;
        its contents are undefined (a previous chunk's)."""
        size = _layout.size_of(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)


def _half_chunks(outer, C, inner):
    """Slices (o0, o1, i0, i1) of the (outer, inner) pixels, each holding at
    most ``CPU_HALF_CHUNK_ELEMENTS`` scores (at least one pixel)."""
    budget = max(1, config.CPU_HALF_CHUNK_ELEMENTS // C)
    if inner <= budget:
        step = max(1, budget // inner)
        for o0 in range(0, outer, step):
            yield o0, min(o0 + step, outer), 0, inner
    else:
        for o in range(outer):
            for i0 in range(0, inner, budget):
                yield o, o + 1, i0, min(i0 + budget, inner)


def _inv_temperature(lg, temperature):
    return chk.inv_temperature(temperature, lg.dtype)


# --------------------------------------------------------------------------
# softmax, log_softmax, logsumexp
# --------------------------------------------------------------------------

_EXPNORM_REFERENCE = {
    "softmax": reference.softmax,
    "log_softmax": reference.log_softmax,
    "logsumexp": reference.logsumexp,
}


def _expnorm(op, x, axis, temperature, out, backend):
    from fastlogits.cpu.softmax import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX

    lg = _Logits(x, axis)
    chk.check_temperature(temperature)
    reduces = op == "logsumexp"
    out_shape = lg.reduced_shape if reduces else lg.shape
    be = resolve_backend(backend, x, lg.gpu)
    if be == "cuda":
        return getattr(_cuda_ops(), op)(x, lg, temperature=temperature, out=out)
    out = _check_host_out(lg, out, out_shape, lg.dtype, "out")
    if be == "numpy":
        res = _EXPNORM_REFERENCE[op](lg.array, lg.axis, temperature=temperature)
        if out is None:
            return res
        out[...] = res
        return out
    if out is None:
        out = pool.empty(out_shape, lg.dtype, like=lg.array)
    if lg.empty:
        return out
    mode = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "logsumexp": LOGSUMEXP}[op]
    inv_t = _inv_temperature(lg, temperature)

    from fastlogits import cpu

    if reduces:
        _run_cpu(lg, [], [out], lambda x3, f, r: cpu.run_expnorm(x3, None, r[0], inv_t, mode))
    else:
        _run_cpu(lg, [out], [], lambda x3, f, r: cpu.run_expnorm(x3, f[0], None, inv_t, mode))
    return out


def softmax(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """Softmax of ``x / temperature`` along the class axis.

    Parameters
    ----------
    x : array_like or GPU array
        Logits, float16, float32 or float64, class axis at ``axis``.
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
    return _expnorm("softmax", x, axis, temperature, out, backend)


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
    return _expnorm("log_softmax", x, axis, temperature, out, backend)


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
    return _expnorm("logsumexp", x, axis, temperature, out, backend)


# --------------------------------------------------------------------------
# argmax, classify
# --------------------------------------------------------------------------

def _labels_out(lg, out, name):
    if out is None:
        return None
    return _check_host_out(lg, out, lg.reduced_shape, lg.C - 1, name, kind="label")


def argmax(x, axis=-1, *, out=None, backend="auto"):
    """Index of the largest logit along the class axis.

    Parameters
    ----------
    x : array_like or GPU array
        Logits (float16, float32 or float64).
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
    lg = _Logits(x, axis)
    be = resolve_backend(backend, x, lg.gpu)
    if be == "cuda":
        return _cuda_ops().argmax(x, lg, out=out)
    out = _labels_out(lg, out, "out")
    if be == "numpy":
        res = reference.argmax(lg.array, lg.axis)
        if out is None:
            return res
        out[...] = res
        return out
    if out is None:
        out = pool.empty(lg.reduced_shape, np.int64)
    if not lg.empty:
        from fastlogits import cpu

        one = lg.compute_dtype.type(1.0)
        _run_cpu(lg, [], [out], lambda x3, f, r: cpu.run_argmax(x3, r[0], None, one))
    return out


def classify(x, axis=-1, *, temperature=1.0, out=None, backend="auto"):
    """Labels and top-1 probability in one read of x (no softmax materialized).

    Parameters
    ----------
    x : array_like or GPU array
        Logits (float16, float32 or float64).
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
    lg = _Logits(x, axis)
    chk.check_temperature(temperature)
    be = resolve_backend(backend, x, lg.gpu)
    if out is not None and not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("out must be a tuple (labels, confidence)")
    if out is not None:
        chk.check_outputs_apart(out[0], out[1], "out[0] (labels)", "out[1] (confidence)")
    if be == "cuda":
        return _cuda_ops().classify(x, lg, temperature=temperature, out=out)
    labels, conf = out if out is not None else (None, None)
    labels = _labels_out(lg, labels, "out[0] (labels)")
    conf = _check_host_out(lg, conf, lg.reduced_shape, lg.compute_dtype, "out[1] (confidence)")
    if be == "numpy":
        res = reference.classify(lg.array, lg.axis, temperature=temperature)
        if labels is not None:
            labels[...] = res[0]
        if conf is not None:
            conf[...] = res[1]
        return (res[0] if labels is None else labels, res[1] if conf is None else conf)
    if labels is None:
        labels = pool.empty(lg.reduced_shape, np.int64)
    if conf is None:
        conf = pool.empty(lg.reduced_shape, lg.compute_dtype)
    if not lg.empty:
        from fastlogits import cpu

        inv_t = _inv_temperature(lg, temperature)
        _run_cpu(lg, [], [labels, conf], lambda x3, f, r: cpu.run_argmax(x3, r[0], r[1], inv_t))
    return labels, conf
