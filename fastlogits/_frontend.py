"""The frontend: everything between the public functions and the backends.

Argument checks, the validated view of the logits (or LinearHead
features), host ``out=`` checks, backend resolution, one dispatch table
per op and the plan cache. :mod:`fastlogits.api`, :mod:`fastlogits.losses`
and :mod:`fastlogits.head` hold the public functions only and call the
op functions here; this module imports no public module.

A backend's op function takes the validated logits (:class:`Logits`) or
features (:class:`Features`) and, on the host, outputs already checked:

============  =======================  =======================  ====================
op            ``"numpy"``              ``"cpu"``                ``"cuda"``
============  =======================  =======================  ====================
logits ops    ``_numpy_backend``       ``cpu.host``             ``cuda.host``
LinearHead    ``_numpy_backend.head_*``  ``cpu.head_host``      ``cuda.host.head_*``
============  =======================  =======================  ====================

(:data:`DISPATCH` names them; a backend's modules are imported at its
first call, so importing fastlogits imports no CUDA.)

Every op reads x (or f) and its ``out=`` through :func:`_interop.unwrap`
at its entry and hands its results to the ``back`` it returns at its exit:
a torch tensor, DataArray or DLPack array in, the results in its library
(nothing to do, and one type check, for NumPy). A dask x (``back`` is
:data:`_interop.LAZY`) is checked on its shape and dtype alone, and
:mod:`fastlogits._dask` builds the lazy graph whose tasks call the same
op function here on each chunk.
"""

import functools
import importlib
import math
import os

import numpy as np

from fastlogits import _bfloat16
from fastlogits import _checks as chk
from fastlogits import _interop, _layout, reference, tuning

ENV_BACKEND = "FASTLOGITS_BACKEND"
REDUCTIONS = ("mean", "sum", "none")
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


# --------------------------------------------------------------------------
# backends and the dispatch tables
# --------------------------------------------------------------------------

#: Per op, the function of each backend, as ``"module:function"``.
DISPATCH = {
    **{op: {"numpy": "fastlogits._numpy_backend:expnorm", "cpu": "fastlogits.cpu.host:expnorm",
            "cuda": "fastlogits.cuda.host:expnorm"}
       for op in ("softmax", "log_softmax", "logsumexp")},
    **{op: {"numpy": f"fastlogits._numpy_backend:{op}", "cpu": f"fastlogits.cpu.host:{op}",
            "cuda": f"fastlogits.cuda.host:{op}"}
       for op in ("argmax", "classify", "cross_entropy", "confusion_matrix")},
    **{f"head.{op}": {"numpy": f"fastlogits._numpy_backend:head_{fn}",
                      "cpu": f"fastlogits.cpu.head_host:{fn}",
                      "cuda": f"fastlogits.cuda.host:head_{fn}"}
       for op, fn in (("logits", "expnorm"), ("softmax", "expnorm"),
                      ("log_softmax", "expnorm"), ("logsumexp", "expnorm"),
                      ("argmax", "argmax"), ("classify", "argmax"),
                      ("cross_entropy", "cross_entropy"),
                      ("confusion_matrix", "confusion_matrix"))},
    # The plan cache's builders (:func:`planned_call`): the CPU backend's
    # function that makes the ``run`` of a repeated call.
    **{f"plan.{op}": {"cpu": f"fastlogits.cpu.host:{fn}_plan"}
       for op, fn in (("expnorm", "expnorm"), ("argmax", "argmax"), ("classify", "classify"),
                      ("cross_entropy", "cross_entropy"))},
}


@functools.lru_cache(maxsize=None)
def implementation(op, backend):
    """The function of ``backend`` for ``op`` (:data:`DISPATCH`), imported
    at its first use."""
    module, name = DISPATCH[op][backend].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:  # numba-cuda missing or broken: a clear error
        raise ValueError(f"backend={backend!r} is not available: {exc}") from exc


@functools.lru_cache(maxsize=None)
def cuda_status():
    """``(usable, reason)`` for the CUDA backend, probed once."""
    try:
        from fastlogits.cuda import runtime
    except ImportError as exc:  # numba-cuda missing or broken
        return False, f"the CUDA backend cannot be imported ({exc})"
    return runtime.status()


def available_backends():
    """``fastlogits.backends()``: "numpy", "cpu", and "cuda" where usable."""
    names = ["numpy", "cpu"]
    if cuda_status()[0]:
        names.append("cuda")
    return names


# os.environ's own mapping of encoded names, which its setters keep
# current: a lookup there cost 0.05 us, ``os.environ.get`` 0.55 us (it
# encodes the name each time), a fifth of a small call (docs/perf/cpu-076).
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(ENV_BACKEND) if _ENVIRON is not None else None


def _env_backend():
    """``FASTLOGITS_BACKEND`` (None if unset), read from :mod:`os.environ`
    at each call."""
    if _ENVIRON is None:
        return os.environ.get(ENV_BACKEND)
    value = _ENVIRON.get(_ENV_KEY)
    return None if value is None else os.environ.decodevalue(value)


def resolve_backend(backend, x, gpu=None):
    """Turn ``backend`` (maybe ``"auto"``) into ``"numpy"``, ``"cpu"`` or ``"cuda"``
    (``gpu``: whether x is a GPU array, when already known)."""
    if gpu is None:
        gpu = chk.is_gpu_array(x)
    chk.check_backend_name(backend)
    if backend == "auto":
        env = (_env_backend() or "").strip()
        if env:
            if env not in chk.BACKENDS:
                raise ValueError(
                    f"{ENV_BACKEND}={env!r} is not a backend; expected one of {', '.join(chk.BACKENDS)}"
                )
            backend = env
        if backend == "auto":
            backend = "cuda" if gpu else "cpu"
    if backend == "cuda":
        usable, reason = cuda_status()
        if not usable:
            raise ValueError(f"backend='cuda' is not available: {reason}")
    elif gpu:
        raise ValueError(
            f"x is a GPU array but backend={backend!r}; use backend='cuda' (or 'auto'), "
            "or copy x to the host first"
        )
    return backend


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def _geometry(shape, dtype, axis, bfloat16=False):
    """``(axis, C, reduced_shape, compute_dtype, empty, shape3)`` of logits
    of ``shape`` and ``dtype`` (``bfloat16``: the dtype is bfloat16's bits)
    with the class axis ``axis`` (``shape3`` the canonical (outer, C,
    inner)), checked (:func:`_cached_geometry` remembers it per shape,
    dtype and axis)."""
    if not bfloat16:
        chk.check_logits_dtype(dtype)
    ax = chk.normalize_axis(axis, len(shape))
    chk.check_classes(shape, ax)
    reduced = _layout.reduced_shape(shape, ax)
    # float16 and bfloat16 are computed (and their confidence returned) in float32.
    return (ax, shape[ax], reduced, chk.compute_dtype(dtype), 0 in reduced,
            _layout.split_shape(shape, ax))


_cached_geometry = functools.lru_cache(maxsize=1024)(_geometry)


class Logits:
    """Validated logits: the array (host) or object (GPU), axis, C, shapes.

    bfloat16 logits (``bfloat16`` True) are held as their bits: ``dtype``
    is :data:`fastlogits._bfloat16.BITS`, the host ``array`` a uint16 view,
    a GPU one's ``cai`` that of its uint16 view; outputs of x's dtype are
    made of it too (bfloat16 bits), and the caller gets them back as
    bfloat16 (:mod:`fastlogits._interop`).

    The checks of a shape, dtype and axis run once: a repeated call finds
    their result in a cache (the per-call cost of small inputs)."""

    __slots__ = ("cai", "gpu", "shape", "dtype", "array", "axis", "C", "reduced_shape",
                 "compute_dtype", "empty", "shape3", "bfloat16")

    def __init__(self, x, axis):
        self.bfloat16 = isinstance(x, _bfloat16.Bits)
        if self.bfloat16:
            x = x.bits
        #: x's ``__cuda_array_interface__`` (None for a host array), read
        #: once here and handed to the CUDA backend (issue 36).
        self.cai = chk._interface(x)
        self.gpu = self.cai is not None
        if self.gpu:
            if chk.is_torch_bfloat16(x):  # torch exports bfloat16 as "<V2": read its bits
                self.cai = _bfloat16.bits_interface(self.cai)
                self.bfloat16 = True
            self.shape = tuple(int(n) for n in self.cai["shape"])
            self.dtype = np.dtype(self.cai["typestr"])
            self.array = x
        else:
            self.array = _layout.host_array(x)
            self.shape, self.dtype = self.array.shape, self.array.dtype
        geometry = _cached_geometry if type(axis) is int else _geometry  # hashable, and exact
        (self.axis, self.C, self.reduced_shape, self.compute_dtype, self.empty,
         self.shape3) = geometry(self.shape, self.dtype, axis, self.bfloat16)

    @classmethod
    def lazy(cls, x, axis):
        """The logits of a dask ``x``, checked on its shape and dtype
        (nothing is read); ``array`` is x."""
        lg = cls.__new__(cls)
        lg.cai, lg.gpu, lg.array = None, False, x
        lg.shape, lg.dtype = known_shape(x, "x"), np.dtype(x.dtype)
        # ml_dtypes' bfloat16 chunks: the results' dtypes follow it (softmax-like
        # outputs bfloat16), each chunk is read as its bits by the eager op.
        lg.bfloat16 = _bfloat16.is_bfloat16(lg.dtype)
        (lg.axis, lg.C, lg.reduced_shape, lg.compute_dtype, lg.empty,
         lg.shape3) = _geometry(lg.shape, lg.dtype, axis, lg.bfloat16)
        return lg


def known_shape(a, name):
    """A dask array's shape, which must be known (no NaN chunk sizes)."""
    if any(isinstance(n, float) and math.isnan(n) for n in a.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {a.shape}): call "
                         f"{name}.compute_chunk_sizes() first")
    return tuple(int(n) for n in a.shape)


def shape_dtype(a):
    """``(shape, dtype)`` of a host or GPU array (GPU: from its interface)."""
    if chk.is_gpu_array(a):
        return chk.gpu_shape_dtype(a)
    a = np.asarray(a)
    return a.shape, a.dtype


class Features:
    """Validated features: array, axis, N (features), C (classes), shapes.

    Duck-types :class:`Logits` for the shared output checks
    (``array``, ``reduced_shape``, ``C``, ``compute_dtype``), with ``C`` the
    number of classes of the head.
    """

    def __init__(self, f, axis, head, lazy=False):
        if isinstance(f, _bfloat16.Bits) or chk.is_torch_bfloat16(f):
            raise TypeError("f must hold float16, float32 or float64 features, got dtype "
                            "bfloat16 (bfloat16 is read as logits only)")
        self.gpu = not lazy and chk.is_gpu_array(f)
        if lazy:  # a dask f: its shape and dtype (nothing is read)
            self.shape, self.dtype = known_shape(f, "f"), np.dtype(f.dtype)
            self.array = f
        elif self.gpu:
            self.shape, self.dtype = chk.gpu_shape_dtype(f)
            self.array = f
        else:
            self.array = _layout.host_array(f)
            self.shape, self.dtype = self.array.shape, self.array.dtype
        if self.dtype not in chk.FLOAT_DTYPES:
            raise TypeError(
                f"f must hold float16, float32 or float64 features, got dtype {self.dtype}")
        if len(self.shape) == 0:
            raise ValueError(
                "f must have at least one dimension (the feature axis), got a 0-d array")
        self.axis = chk.normalize_axis(axis, len(self.shape))
        self.N = self.shape[self.axis]
        self.C = head.num_classes
        if self.N != head.num_features:
            raise ValueError(
                f"f has shape {tuple(self.shape)}: {self.N} features along axis {self.axis}, "
                f"but weight has shape {head.weight_shape}: {head.num_features} features per class"
            )
        self.reduced_shape = _layout.reduced_shape(self.shape, self.axis)
        self.class_shape = self.shape[:self.axis] + (self.C,) + self.shape[self.axis + 1:]
        # float16 is computed (and its confidence returned) in float32.
        self.compute_dtype = chk.compute_dtype(self.dtype)
        self.empty = _layout.size_of(self.reduced_shape) == 0

    def work(self, pixels):
        """The work of ``pixels`` pixels in units of the core ops' elements
        (for ``launch_threads``): N·C multiply-adds, 16 to a vector, plus
        the epilogue's C scores."""
        return pixels * (self.N * self.C // 16 + self.C)


def check_head_params(weight, bias):
    """A LinearHead's ``(weight, bias)``: host arrays as :func:`_layout.host_array`
    reads them (GPU arrays untouched), checked; returns them and the
    weight's (C, N) shape."""
    if not chk.is_gpu_array(weight):
        weight = _layout.host_array(weight)
    wshape, wdtype = shape_dtype(weight)
    if wdtype not in chk.FLOAT_DTYPES:
        raise TypeError(
            f"weight must hold float16, float32 or float64 values, got dtype {wdtype}")
    if len(wshape) != 2:
        raise ValueError(
            f"weight has shape {tuple(wshape)}, expected 2-D (C, N): classes x features")
    if wshape[0] == 0:
        raise ValueError(f"weight has shape {tuple(wshape)}: no classes (C = 0)")
    if bias is not None:
        if not chk.is_gpu_array(bias):
            bias = _layout.host_array(bias)
        bshape, bdtype = shape_dtype(bias)
        if bdtype not in chk.FLOAT_DTYPES:
            raise TypeError(
                f"bias must hold float16, float32 or float64 values, got dtype {bdtype}")
        if tuple(bshape) != (wshape[0],):
            raise ValueError(
                f"bias has shape {tuple(bshape)}, expected ({wshape[0]},) "
                f"to match weight of shape {tuple(wshape)}"
            )
    return weight, bias, tuple(int(n) for n in wshape)


def check_ignore_index(ignore_index):
    if not chk.is_integer(ignore_index):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        raise ValueError(f"ignore_index={ignore_index} does not fit in int64")
    return int(ignore_index)


def check_target(target, lg):
    """Target dtype (integer) and shape (x's shape without the class axis).

    Returns the host array (or the GPU object untouched).
    """
    if chk.is_torch_bfloat16(target):
        raise TypeError("target must hold integer class indices, got dtype bfloat16")
    if chk.is_gpu_array(target):
        shape, dtype = chk.gpu_shape_dtype(target)
    else:
        target = _layout.host_array(target)
        shape, dtype = target.shape, target.dtype
    _check_target_meta(shape, dtype, lg)
    return target


def _check_target_meta(shape, dtype, lg):
    """The target's dtype (integer) and shape (x's without the class axis)."""
    if dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {dtype}")
    if tuple(shape) != tuple(lg.reduced_shape):
        raise ValueError(
            f"target has shape {tuple(shape)}, expected {tuple(lg.reduced_shape)}: "
            f"x's shape {tuple(lg.shape)} without its class axis {lg.axis}"
        )


def check_class_weight(class_weight, C):
    """None, or C real weights (returned as float64 for a host array)."""
    if class_weight is None:
        return None
    if chk.is_torch_bfloat16(class_weight):  # (its values would be widened exactly; rare)
        class_weight = class_weight.float()
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


def check_label_smoothing(label_smoothing):
    eps = label_smoothing
    if not chk.is_real(eps):
        raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )
    return reduction


def check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _physical_memory():
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_matrix_fits(C):
    """A (C, C) int64 matrix (the result, and the kernels' partial counts)
    must fit in the machine's memory: a clear ValueError before any work,
    not a MemoryError from deep inside."""
    need = 8 * C * C
    total = _physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"confusion_matrix of C={C} classes needs a ({C}, {C}) int64 matrix of "
            f"{need / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB of memory")


def check_head_target(target, fv):
    """Validate ``target`` against the features: shape first (naming
    both shapes), then dtype, as :func:`fastlogits.cross_entropy`."""
    _check_head_target_shape(shape_dtype(target)[0], fv)
    return check_target(target, fv)


def _check_head_target_shape(shape, fv):
    if tuple(shape) != tuple(fv.reduced_shape):
        raise ValueError(
            f"target has shape {tuple(shape)}, expected {tuple(fv.reduced_shape)}: "
            f"the shape {tuple(fv.shape)} of f without its feature axis {fv.axis}"
        )


def loss_kinds(options):
    """What cross_entropy returns, for :func:`_interop.unwrap`'s ``back``: the
    loss ("scalar", or "reduced" for reduction="none"), and the gradient
    (x's shape) with ``return_grad``."""
    loss = "reduced" if options["reduction"] == "none" else "scalar"
    return (loss, "same") if options["return_grad"] else loss


def loss_options(lg, class_weight, ignore_index, label_smoothing, reduction, return_grad):
    """cross_entropy's options, checked, as the backends take them."""
    return dict(class_weight=check_class_weight(class_weight, lg.C),
                ignore_index=check_ignore_index(ignore_index),
                label_smoothing=check_label_smoothing(label_smoothing),
                reduction=check_reduction(reduction),
                return_grad=check_flag(return_grad, "return_grad"))


# --------------------------------------------------------------------------
# host outputs
# --------------------------------------------------------------------------

def out_bits(lg, out, dtype, name, kind="float"):
    """``out=`` with a bfloat16 one as its bits (a host one,
    :class:`fastlogits._bfloat16.Bits`; a torch CUDA tensor as it is, the
    CUDA backend reads its bits), which only an output of bfloat16 logits'
    own dtype may be; such an output must be bfloat16 (not any uint16
    array, host or GPU)."""
    x_bits = getattr(lg, "bfloat16", False) and kind == "float" and dtype is lg.dtype
    if isinstance(out, _bfloat16.Bits) or chk.is_torch_bfloat16(out):
        if not x_bits:
            expected = "an integer dtype" if kind == "label" else np.dtype(dtype)
            raise TypeError(f"{name} has dtype bfloat16, expected {expected}")
        return getattr(out, "bits", out)
    if x_bits and isinstance(out, np.ndarray):
        raise TypeError(f"{name} has dtype {out.dtype}, expected bfloat16")
    if x_bits and chk.is_gpu_array(out):
        raise TypeError(f"{name} has dtype {chk.gpu_shape_dtype(out)[1]}, expected bfloat16")
    return out


def check_host_out(lg, out, shape, dtype, name, kind="float"):
    """Validate a host ``out=`` (None allowed); returns it (a bfloat16 one
    as its bits, :func:`out_bits`)."""
    if out is None:
        return None
    out = out_bits(lg, out, dtype, name, kind)
    chk.check_out(out, shape, dtype, name, kind)
    chk.check_no_partial_overlap(out, lg.array, name)
    return out


def labels_out(lg, out, name):
    if out is None:
        return None
    return check_host_out(lg, out, lg.reduced_shape, lg.C - 1, name, kind="label")


def check_pair_out(lg, out, be):
    """classify's ``out``: None or a tuple (labels, confidence) of outputs
    that do not overlap; checked here for the host backends (the CUDA
    backend checks its own)."""
    if out is None:
        return None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("out must be a tuple (labels, confidence)")
    chk.check_outputs_apart(out[0], out[1], "out[0] (labels)", "out[1] (confidence)")
    if be == "cuda":  # bfloat16 refused where it is not x's (host outputs as their bits)
        return (out_bits(lg, out[0], lg.C - 1, "out[0] (labels)", "label"),
                out_bits(lg, out[1], lg.compute_dtype, "out[1] (confidence)"))
    return (labels_out(lg, out[0], "out[0] (labels)"),
            check_host_out(lg, out[1], lg.reduced_shape, lg.compute_dtype,
                           "out[1] (confidence)"))


def _host_only(be, **arrays):
    """Targets and weights must be host arrays for the host backends."""
    if be == "cuda":
        return
    if any(chk.is_gpu_array(a) for a in arrays.values()):
        what = " and ".join(arrays)
        raise ValueError(f"{what} must be {'host arrays' if len(arrays) > 1 else 'a host array'} "
                         f"for backend={be!r}")


# --------------------------------------------------------------------------
# dask arrays: the same checks, on shapes and dtypes; then a lazy graph whose
# tasks call the op functions below on each chunk (fastlogits._dask)
# --------------------------------------------------------------------------

def _lazy():
    """:mod:`fastlogits._dask`, imported at the first dask call: ``import
    fastlogits`` imports no dask."""
    from fastlogits import _dask

    return _dask


def _refuse_lazy_out(out, name):
    """``out=`` with a dask x: a TypeError (dask arrays are not written in place)."""
    if out is not None:
        raise TypeError(
            f"{name}= cannot be given with a dask x: the results of a dask input are lazy dask "
            "arrays; compute them, or write them where you want with dask.array.store")


def lazy_logits(x, axis, out, backend, out_name="out"):
    """The logits of a dask x, checked (:meth:`Logits.lazy`), and the
    backend its chunks run on (resolved from the chunks' type: NumPy
    chunks "cpu", CuPy chunks "cuda")."""
    _refuse_lazy_out(out, out_name)
    lg = Logits.lazy(x, axis)
    return lg, resolve_backend(backend, x._meta)


def lazy_features(head, f, axis, out, backend):
    """:func:`lazy_logits` for a LinearHead's dask features."""
    _refuse_lazy_out(out, "out")
    fv = Features(f, axis, head, lazy=True)
    return fv, resolve_backend(backend, f._meta)


def lazy_target(target, v, head=False):
    """The target of a dask x (or f): a dask target checked on its shape
    and dtype, any other as :func:`check_target` (:func:`check_head_target`)."""
    if not _interop.is_dask(target):
        return check_head_target(target, v) if head else check_target(target, v)
    shape = known_shape(target, "target")
    if head:
        _check_head_target_shape(shape, v)
    _check_target_meta(shape, np.dtype(target.dtype), v)
    return target


def _whole_axis(v):
    """The dask array of ``v`` (logits or features) with its class (or
    feature) axis in one chunk (:func:`fastlogits._dask.whole_axis`)."""
    name, what = ("f", "feature") if isinstance(v, Features) else ("x", "class")
    return _lazy().whole_axis(v.array, v.axis, name, what)


def lazy_pixels(fn, before, after, v, be, outputs, target=None):
    """The lazy results of ``fn(*before, chunk, [target chunk,] v.axis,
    *after)`` on every chunk of the dask x (or f) of ``v``; ``outputs``:
    ``(kind, dtype[, class axis size])`` per result (a tuple of results
    for several)."""
    dk = _lazy()
    x = _whole_axis(v)
    t = None if target is None else dk.as_target(target, x, v.axis)
    r = dk.blockwise(dk.Call(fn, before, (v.axis,) + tuple(after), be), x, v.axis,
                     [dk.Out(*o) for o in outputs], t)
    return r[0] if len(r) == 1 else tuple(r)


def lazy_loss(fn, before, tail, v, be, target, options):
    """cross_entropy of a dask x (or f): "none" chunk by chunk; "mean" and
    "sum" from the per-chunk (loss sum, weight sum), a lazy 0-d float64.
    ``tail``: ``fn``'s arguments after ``return_grad``."""
    o = options

    def after(reduction):
        return (o["class_weight"], o["ignore_index"], o["label_smoothing"], reduction,
                o["return_grad"]) + tail

    grad = [("same", v.dtype, v.shape[v.axis])] if o["return_grad"] else []
    if o["reduction"] == "none":
        return lazy_pixels(fn, before, after("none"), v, be,
                           [("reduced", v.compute_dtype)] + grad, target)
    dk = _lazy()
    x = _whole_axis(v)
    return dk.loss(dk.Call(fn, before, (v.axis,) + after("sum"), be), x, v.axis, target,
                   class_weight=o["class_weight"], C=v.C, ignore_index=o["ignore_index"],
                   reduction=o["reduction"], return_grad=o["return_grad"], grad_dtype=v.dtype)


def lazy_confusion(fn, before, tail, v, be, target):
    """The lazy (C, C) int64 confusion matrix: per-chunk counts, summed."""
    dk = _lazy()
    x = _whole_axis(v)
    return dk.counts(dk.Call(fn, before, (v.axis,) + tail, be), x, v.axis, target, v.C)


# --------------------------------------------------------------------------
# the plan cache: repeated host calls
# --------------------------------------------------------------------------

#: The plans of repeated calls on NumPy arrays: per call key (the op, x's
#: shape, strides and dtype, the axis, the backend argument, the op's
#: options, an ``out=`` array's shape, strides and dtype), ``(run, tuning,
#: env)``: the CPU backend's function that runs such a call with every
#: check and decision already made (outputs
#: allocated, the kernel launched), the tuning it was made under, and
#: the ``FASTLOGITS_BACKEND`` it saw (for ``backend="auto"``). A call of a
#: known key checks only what the key does not hold: x writeable (a
#: read-only x is read through an alias, :func:`_layout.host_array`), the
#: same tuning and environment, its per-call arguments (temperature,
#: target values), and an ``out=`` array's memory (writeable, x itself or
#: apart from it). Bounded: cleared when full (docs/perf/cpu-076).
_CALL_PLANS = {}
_CALL_PLANS_MAX = 1024



def planned_call(key, x, backend):
    """The ``run`` of a repeated call ``key`` on the NumPy ``x``, or None
    (a first call, or one its plan does not cover: the full path)."""
    entry = _CALL_PLANS.get(key)
    if entry is None:
        return None
    run, tuning_then, env = entry
    if tuning_then is not tuning.current() or not x.flags.writeable:
        return None
    if backend == "auto" and _env_backend() != env:
        return None
    return run


def new_plan(key, x0, lg, be, backend, op, *args, **options):
    """The ``run`` of calls like this checked one (``key``; ``x0`` the x
    given, ``lg`` its logits, ``be`` the backend chosen), remembered; None
    where such calls have no plan: another backend than the CPU, x not a
    NumPy array the kernels read as it is, or the CPU backend's
    ``plan.<op>`` builder declining (two-byte floats, no pixels)."""
    if be != "cpu" or lg.array is not x0:
        return None
    run = implementation(f"plan.{op}", "cpu")(*args, lg, **options)
    if run is not None:
        if len(_CALL_PLANS) >= _CALL_PLANS_MAX:
            _CALL_PLANS.clear()
        _CALL_PLANS[key] = (run, tuning.current(), _env_backend() if backend == "auto" else None)
    return run


# --------------------------------------------------------------------------
# the ops: every argument checked, the backend resolved, its function called
# --------------------------------------------------------------------------

def _plain(axis, backend):
    """Whether ``axis`` and ``backend`` are of the types a plan's key may
    hold (an int, a str: ``True`` or ``1.0`` would hash as ``1``)."""
    return type(axis) is int and type(backend) is str


def _out_key(out):
    """The part of a plan's key an ``out=`` array makes (None: none given)."""
    return None if out is None else (out.shape, out.strides, out.dtype)


def _planned_out(out, x):
    """Whether a planned call may write ``out`` (None, or an array of the
    plan's geometry and dtype): it must be writeable (else the full path
    says so), and may be x itself but not overlap it otherwise (raises
    as the full path does)."""
    if out is None:
        return True
    if not out.flags.writeable:
        return False
    chk.check_no_partial_overlap(out, x, "out")
    return True


def expnorm(op, x, axis, temperature, out, backend):
    """softmax, log_softmax or logsumexp (``op``)."""
    planned = (type(x) is np.ndarray and (out is None or type(out) is np.ndarray)
               and _plain(axis, backend))
    if planned:
        key = (op, x.shape, x.strides, x.dtype, axis, backend, _out_key(out))
        run = planned_call(key, x, backend)
        if run is not None:
            if out is not None:
                chk.check_temperature(temperature)  # the full path's order of checks
            if _planned_out(out, x):
                return run(x, temperature, out)
    x0 = x
    x, out, back = _interop.unwrap(x, out)
    if back is _interop.LAZY:
        lg, be = lazy_logits(x, axis, out, backend)
        chk.check_temperature(temperature)
        kind = "reduced" if op == "logsumexp" else "same"
        return lazy_pixels(expnorm, (op,), (temperature, None, be), lg, be,
                           [(kind, lg.dtype, lg.C)])
    lg = Logits(x, axis)
    chk.check_temperature(temperature)
    be = resolve_backend(backend, x, lg.gpu)
    if be != "cuda":
        shape = lg.reduced_shape if op == "logsumexp" else lg.shape
        out = check_host_out(lg, out, shape, lg.dtype, "out")
    elif out is not None:
        out = out_bits(lg, out, lg.dtype, "out")
    run = planned and new_plan(key, x0, lg, be, backend, "expnorm", op, out=out)
    if run:
        return run(x, temperature, out)
    r = implementation(op, be)(op, lg, temperature, out)
    return r if back is None else back(r, lg.axis, "reduced" if op == "logsumexp" else "same")


def argmax(x, axis, out, backend):
    planned = (type(x) is np.ndarray and (out is None or type(out) is np.ndarray)
               and _plain(axis, backend))
    if planned:
        key = ("argmax", x.shape, x.strides, x.dtype, axis, backend, _out_key(out))
        run = planned_call(key, x, backend)
        if run is not None and _planned_out(out, x):
            return run(x, out)
    x0 = x
    x, out, back = _interop.unwrap(x, out)
    if back is _interop.LAZY:
        lg, be = lazy_logits(x, axis, out, backend)
        return lazy_pixels(argmax, (), (None, be), lg, be, [("reduced", np.int64)])
    lg = Logits(x, axis)
    be = resolve_backend(backend, x, lg.gpu)
    if be != "cuda":
        out = labels_out(lg, out, "out")
    elif out is not None:
        out = out_bits(lg, out, lg.C - 1, "out", "label")
    run = planned and new_plan(key, x0, lg, be, backend, "argmax", out=out)
    if run:
        return run(x, out)
    r = implementation("argmax", be)(lg, out)
    return r if back is None else back(r, lg.axis, "reduced")


def classify(x, axis, temperature, out, backend):
    planned = out is None and type(x) is np.ndarray and _plain(axis, backend)
    if planned:
        key = ("classify", x.shape, x.strides, x.dtype, axis, backend)
        run = planned_call(key, x, backend)
        if run is not None:
            return run(x, temperature)
    x0 = x
    x, out, back = _interop.unwrap(x, out)
    if back is _interop.LAZY:
        lg, be = lazy_logits(x, axis, out, backend)
        chk.check_temperature(temperature)
        return lazy_pixels(classify, (), (temperature, None, be), lg, be,
                           [("reduced", np.int64), ("reduced", lg.compute_dtype)])
    lg = Logits(x, axis)
    chk.check_temperature(temperature)
    be = resolve_backend(backend, x, lg.gpu)
    out = check_pair_out(lg, out, be)
    run = planned and new_plan(key, x0, lg, be, backend, "classify")
    if run:
        return run(x, temperature)
    r = implementation("classify", be)(lg, temperature, out)
    return r if back is None else back(r, lg.axis, ("reduced", "reduced"))


def cross_entropy(x, target, axis, class_weight, ignore_index, label_smoothing, reduction,
                  return_grad, grad_out, backend):
    planned = (grad_out is None and class_weight is None and type(x) is np.ndarray
               and type(target) is np.ndarray and _plain(axis, backend)
               and type(ignore_index) is int and type(label_smoothing) is float
               and type(reduction) is str and type(return_grad) is bool)
    if planned:
        key = ("cross_entropy", x.shape, x.strides, x.dtype, axis, backend, target.shape,
               target.dtype, ignore_index, label_smoothing, reduction, return_grad)
        run = planned_call(key, x, backend)
        if run is not None and target.flags.writeable:
            return run(x, target)
    x0, target0 = x, target
    x, grad_out, back = _interop.unwrap(x, grad_out, out_name="grad_out")
    if back is _interop.LAZY:
        lg, be = lazy_logits(x, axis, grad_out, backend, "grad_out")
        target = lazy_target(target, lg)
        options = loss_options(lg, class_weight, ignore_index, label_smoothing, reduction,
                               return_grad)
        _host_only(be, target=target, class_weight=options["class_weight"])
        return lazy_loss(cross_entropy, (), (None, be), lg, be, target, options)
    lg = Logits(x, axis)
    target = check_target(target, lg)
    options = loss_options(lg, class_weight, ignore_index, label_smoothing, reduction,
                           return_grad)
    if grad_out is not None and not options["return_grad"]:
        raise ValueError("grad_out is given but return_grad is False")
    be = resolve_backend(backend, x, lg.gpu)
    if be != "cuda":
        _host_only(be, target=target, class_weight=options["class_weight"])
        grad_out = check_host_out(lg, grad_out, lg.shape, lg.dtype, "grad_out")
    elif grad_out is not None:
        grad_out = out_bits(lg, grad_out, lg.dtype, "grad_out")
    run = planned and target is target0 and new_plan(key, x0, lg, be, backend,
                                                      "cross_entropy", **options)
    if run:
        return run(x, target)
    r = implementation("cross_entropy", be)(lg, target, grad_out=grad_out, **options)
    return r if back is None else back(r, lg.axis, loss_kinds(options))


def confusion_matrix(x, target, axis, ignore_index, out, backend):
    x, out, back = _interop.unwrap(x, out)
    if back is _interop.LAZY:
        lg, be = lazy_logits(x, axis, out, backend)
        target = lazy_target(target, lg)
        ignore_index = check_ignore_index(ignore_index)
        _host_only(be, target=target)
        check_matrix_fits(lg.C)
        return lazy_confusion(confusion_matrix, (), (ignore_index, None, be), lg, be, target)
    lg = Logits(x, axis)
    target = check_target(target, lg)
    ignore_index = check_ignore_index(ignore_index)
    be = resolve_backend(backend, x, lg.gpu)
    if be != "cuda":
        _host_only(be, target=target)
        out = check_host_out(lg, out, (lg.C, lg.C), np.int64, "out")
        check_matrix_fits(lg.C)
    elif out is not None:
        out = out_bits(lg, out, np.int64, "out")
    r = implementation("confusion_matrix", be)(lg, target, ignore_index=ignore_index, out=out)
    return r if back is None else back(r, lg.axis, "confusion")


def head_expnorm(head, op, f, axis, temperature, out, backend):
    """A LinearHead's logits, softmax, log_softmax or logsumexp (``op``)."""
    f, out, back = _interop.unwrap(f, out, "f")
    if back is _interop.LAZY:
        fv, be = lazy_features(head, f, axis, out, backend)
        if op != "logits":
            chk.check_temperature(temperature)
        kind = "reduced" if op == "logsumexp" else "same"
        return lazy_pixels(head_expnorm, (head, op), (temperature, None, be), fv, be,
                           [(kind, fv.dtype, fv.C)])
    fv = Features(f, axis, head)
    be = resolve_backend(backend, f, fv.gpu)
    if op != "logits":
        chk.check_temperature(temperature)
    if be != "cuda":
        shape = fv.reduced_shape if op == "logsumexp" else fv.class_shape
        out = check_host_out(fv, out, shape, fv.dtype, "out")
    r = implementation("head." + op, be)(head, op, fv, temperature, out)
    return r if back is None else back(r, fv.axis, "reduced" if op == "logsumexp" else "classes")


def head_argmax(head, f, axis, temperature, out, backend, with_conf):
    """A LinearHead's argmax, or classify (``with_conf``)."""
    f, out, back = _interop.unwrap(f, out, "f")
    if back is _interop.LAZY:
        fv, be = lazy_features(head, f, axis, out, backend)
        outputs = [("reduced", np.int64)]
        if with_conf:
            chk.check_temperature(temperature)
            outputs.append(("reduced", fv.compute_dtype))
        return lazy_pixels(head_argmax, (head,), (temperature, None, be, with_conf), fv, be,
                           outputs)
    fv = Features(f, axis, head)
    be = resolve_backend(backend, f, fv.gpu)
    if with_conf:
        chk.check_temperature(temperature)
        out = check_pair_out(fv, out, be)
    elif be != "cuda":
        out = labels_out(fv, out, "out")
    op = "head.classify" if with_conf else "head.argmax"
    r = implementation(op, be)(head, fv, temperature, out, with_conf)
    return r if back is None else back(r, fv.axis, ("reduced", "reduced") if with_conf else "reduced")


def head_cross_entropy(head, f, target, axis, class_weight, ignore_index, label_smoothing,
                       reduction, return_grad, backend):
    f, _, back = _interop.unwrap(f, None, "f")
    if back is _interop.LAZY:
        fv, be = lazy_features(head, f, axis, None, backend)
        target = lazy_target(target, fv, head=True)
        options = loss_options(fv, class_weight, ignore_index, label_smoothing, reduction,
                               return_grad)
        _host_only(be, target=target, class_weight=options["class_weight"])
        return lazy_loss(head_cross_entropy, (head,), (be,), fv, be, target, options)
    fv = Features(f, axis, head)
    be = resolve_backend(backend, f, fv.gpu)
    target = check_head_target(target, fv)
    options = loss_options(fv, class_weight, ignore_index, label_smoothing, reduction,
                           return_grad)
    _host_only(be, target=target, class_weight=options["class_weight"])
    r = implementation("head.cross_entropy", be)(head, fv, target, **options)
    return r if back is None else back(r, fv.axis, loss_kinds(options))


def head_confusion_matrix(head, f, target, axis, ignore_index, out, backend):
    f, out, back = _interop.unwrap(f, out, "f")
    if back is _interop.LAZY:
        fv, be = lazy_features(head, f, axis, out, backend)
        target = lazy_target(target, fv, head=True)
        ignore_index = check_ignore_index(ignore_index)
        _host_only(be, target=target)
        check_matrix_fits(fv.C)
        return lazy_confusion(head_confusion_matrix, (head,), (ignore_index, None, be), fv, be,
                              target)
    fv = Features(f, axis, head)
    be = resolve_backend(backend, f, fv.gpu)
    target = check_head_target(target, fv)
    ignore_index = check_ignore_index(ignore_index)
    if be != "cuda":
        _host_only(be, target=target)
        out = check_host_out(fv, out, (fv.C, fv.C), np.int64, "out")
        check_matrix_fits(fv.C)
    r = implementation("head.confusion_matrix", be)(head, fv, target,
                                                    ignore_index=ignore_index, out=out)
    return r if back is None else back(r, fv.axis, "head-confusion")


def iou(confusion):
    """Per-class IoU of a (C, C) confusion matrix (host, GPU, or dask: lazy)."""
    if _interop.is_dask(confusion):
        _check_confusion(known_shape(confusion, "confusion"), np.dtype(confusion.dtype))
        return _lazy().iou(iou, confusion)
    if chk.is_gpu_array(confusion):
        from numba import cuda

        confusion = cuda.as_cuda_array(confusion).copy_to_host()
    cm = np.asarray(confusion)
    _check_confusion(cm.shape, cm.dtype)
    return reference.iou(cm)


def _check_confusion(shape, dtype):
    """A confusion matrix's dtype (real counts) and shape (square, 2-d)."""
    if dtype.kind not in "iuf":
        raise TypeError(f"confusion must hold real counts, got dtype {dtype}")
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {tuple(shape)}")
