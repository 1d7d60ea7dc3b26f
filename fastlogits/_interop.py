"""Inputs from other libraries, and results back in the caller's library.

:func:`unwrap` is called by every op of :mod:`fastlogits._frontend` at its
entry with ``x`` (or a LinearHead's ``f``) and the ``out=`` it was given.
It returns the NumPy array the frontend reads, the ``out=`` as NumPy
views, and a function that turns the results back into ``x``'s library
(None where nothing is to be done: the plain NumPy call pays one type
check). Host inputs only; a GPU array (``__cuda_array_interface__``, a
CUDA torch tensor) is left to the CUDA backend, which answers in its
library already.

============================  ==========================  ==========================
x                             read as                     results
============================  ==========================  ==========================
torch CPU tensor              ``x.detach().numpy()``      ``torch.from_numpy`` views;
                              (no copy)                   a reduced loss a 0-d
                                                          float64 tensor
xarray.DataArray              ``x.values``                DataArrays: x's dims and
                                                          coords, the class dim
                                                          dropped where reduced
anything with ``__dlpack__``  ``np.from_dlpack`` (no      NumPy (the library is
on the CPU                    copy)                       unknown)
dask.array.Array              not read: ``back`` is       lazy dask arrays
                              :data:`LAZY` and the        (:mod:`fastlogits._dask`)
                              frontend builds a graph
anything else                 ``np.asarray`` (later)      NumPy
============================  ==========================  ==========================

An ``out=`` that is a torch CPU tensor (or a DataArray over a NumPy
array) is written through its NumPy view; every ``out=`` comes back as
the object given, whatever x's library.

Neither torch, xarray nor dask is imported here: each is recognized by
its type's module, and is in ``sys.modules`` whenever one of its objects
exists. bfloat16 (a torch bfloat16 tensor, an ml_dtypes bfloat16 array) is read
as its bits, a :class:`fastlogits._bfloat16.Bits` (x, and an ``out=``
given in bfloat16), and a bfloat16 result comes back in x's kind: a torch
bfloat16 tensor, an ml_dtypes array. This module imports nothing of
fastlogits but :mod:`fastlogits._bfloat16` (``_layout`` reads its host
arrays through :func:`to_numpy`).
"""

import sys

import numpy as np

from fastlogits import _bfloat16

_DLPACK_CPU = 1  # DLDeviceType kDLCPU


#: ``unwrap``'s ``back`` for a dask x: the frontend builds a lazy graph
#: (:mod:`fastlogits._dask`) instead of reading x.
LAZY = object()


def _library(a):
    """"torch", "xarray", "dask" or None, from the type's module (no import)."""
    module = type(a).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith("xarray") and type(a).__name__ == "DataArray":
        return "xarray"
    if module.startswith("dask.") and hasattr(a, "__dask_graph__"):
        return "dask"
    return None


def is_dask(a):
    """Whether ``a`` is a dask array (or another dask collection), without
    importing dask."""
    return _library(a) == "dask"


def _dask_out_error(name):
    return TypeError(
        f"{name} is a dask array: dask arrays cannot be written in place; pass no {name} "
        "and use the lazy result the op returns for a dask x (dask.array.store writes it)")


def _bfloat16_error(name):
    return TypeError(
        f"{name} holds bfloat16 values, which fastlogits reads as logits (and their "
        f"outputs) only: convert it first ({name}.float() for float32)")


def _torch_numpy(t, name, bfloat16=False):
    """A torch CPU tensor's NumPy view (read through ``.detach()``: no copy);
    a bfloat16 one as :class:`_bfloat16.Bits` where ``bfloat16``."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype is sys.modules["torch"].bfloat16:
        if not bfloat16:
            raise _bfloat16_error(name)
        return _bfloat16.Bits(t.view(sys.modules["torch"].int16).numpy().view(_bfloat16.BITS), t)
    if t.is_conj():
        t = t.resolve_conj()
    return t.numpy()


def _is_torch_cpu(t):
    return getattr(getattr(t, "device", None), "type", None) == "cpu" and hasattr(t, "numpy")


def _from_dlpack(a, name):
    """``a`` through DLPack if it is a CPU array that exports it, else None."""
    try:
        device = a.__dlpack_device__()
    except (AttributeError, TypeError):
        return None
    if hasattr(a, "__cuda_array_interface__") or int(device[0]) != _DLPACK_CPU:
        return None
    try:
        return np.from_dlpack(a)
    except (BufferError, TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"{name} cannot be read through DLPack ({exc}); fastlogits reads float16, float32 "
            "and float64 arrays and integer targets through DLPack (bfloat16: pass a torch "
            "tensor or an ml_dtypes array)") from exc


def to_numpy(a, name="an input", bfloat16=False):
    """A host input as a NumPy array without a copy where its library allows:
    a torch CPU tensor through ``.detach().numpy()``, a DataArray through
    ``.values``, a CPU ``__dlpack__`` array through ``np.from_dlpack``;
    anything else (lists, NumPy arrays) through ``np.asarray``. With
    ``bfloat16``, bfloat16 data (torch's, ml_dtypes') as
    :class:`_bfloat16.Bits`."""
    if isinstance(a, np.ndarray):
        bits = _bfloat16.bits_of(a) if bfloat16 else None
        return np.asarray(a) if bits is None else _bfloat16.Bits(bits, a)
    library = _library(a)
    if library == "torch" and _is_torch_cpu(a):
        return _torch_numpy(a, name, bfloat16)
    if library == "xarray":
        return to_numpy(a.variable.data, name, bfloat16)
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array_interface__"):
        v = _from_dlpack(a, name)
        if v is not None:
            return v
    return np.asarray(a)


def _is_gpu(a):
    """Left to the CUDA backend: a CUDA torch tensor, or anything exposing
    ``__cuda_array_interface__`` (a torch tensor that requires grad raises
    RuntimeError there, not AttributeError)."""
    if _library(a) == "torch":
        return getattr(getattr(a, "device", None), "type", "cpu") != "cpu"
    try:
        return a.__cuda_array_interface__ is not None
    except AttributeError:
        return False


def _out_view(o, name):
    """``(NumPy view, o)`` for an ``out=`` of another library; None where
    ``o`` is NumPy (or not ours to convert: the checks name it)."""
    if o is None:
        return None
    if type(o) is np.ndarray:
        bits = _bfloat16.bits_of(o)
        return None if bits is None else (_bfloat16.Bits(bits, o), o)
    library = _library(o)
    if library == "dask":
        raise _dask_out_error(name)
    if library == "torch" and _is_torch_cpu(o):
        if o.requires_grad:
            raise ValueError(f"{name} requires grad: fastlogits writes it outside autograd; "
                             f"pass {name}.detach() or a tensor without requires_grad")
        if o.dtype is sys.modules["torch"].bfloat16:
            return _torch_numpy(o, name, True), o
        return o.numpy(), o
    if library == "xarray" and isinstance(o.variable.data, np.ndarray):
        pair = _out_view(o.variable.data, name)
        return (o.variable.data if pair is None else pair[0]), o
    return None


def unwrap(x, out=None, name="x", out_name="out"):
    """``(x, out, back)``: x and ``out=`` (None, one array or a tuple) as the
    frontend reads them, and ``back(result, axis, kinds)`` that returns the
    result in x's library (or None: return the result as it is)."""
    if (type(x) is np.ndarray and x.dtype.kind != "V"
            and (out is None or type(out) is np.ndarray and out.dtype.kind != "V")):
        return x, out, None
    library = _library(x)
    if library == "dask":  # the frontend checks out= (refused with a lazy x)
        return x, out, LAZY
    if _is_gpu(x):
        return x, out, None
    original = x
    x = to_numpy(x, name, bfloat16=True)
    # every out comes back as the object given (a NumPy one too)
    given = out if isinstance(out, tuple) else (out,)
    outs = []
    for k, o in enumerate(given):
        pair = _out_view(o, f"{out_name}[{k}]" if isinstance(out, tuple) else out_name)
        outs.append((o, o) if pair is None else pair)
    converted = any(v is not o for v, o in outs)
    views = tuple(v for v, _ in outs)
    out = views if isinstance(out, tuple) else views[0]
    like = x.like if isinstance(x, _bfloat16.Bits) else None
    if library is None and not converted and like is None:
        return x, out, None
    return x, out, _Back(library, original, [p for p in outs if p[1] is not None], like)


class _Back:
    """The results of one call, back in x's library; an ``out=`` given in
    another library comes back as the object given."""

    __slots__ = ("library", "x", "outs", "like")

    def __init__(self, library, x, outs, like=None):
        self.library, self.x, self.outs, self.like = library, x, outs, like

    def __call__(self, result, axis, kinds):
        if isinstance(kinds, tuple):
            return tuple(self.one(r, axis, k) for r, k in zip(result, kinds))
        return self.one(result, axis, kinds)

    def one(self, r, axis, kind):
        for view, given in self.outs:
            if r is view or isinstance(view, _bfloat16.Bits) and r is view.bits:
                return given
        if self.like is not None and isinstance(r, np.ndarray) and r.dtype == _bfloat16.BITS:
            # a bfloat16 result (x's bits dtype): in x's kind, torch's or ml_dtypes'
            r = _bfloat16.as_like(r, self.like)
            if self.library != "xarray":
                return r
        if self.library == "torch":
            return sys.modules["torch"].from_numpy(np.asarray(r))
        if self.library == "xarray":
            return _data_array(self.x, np.asarray(r), axis, kind)
        return r


def _data_array(x, r, axis, kind):
    """The result ``r`` of the DataArray ``x`` (class or feature dim at
    ``axis``) as a DataArray.

    kind: "same" (x's shape: dims, coords, name and attrs), "reduced" (the
    class dim dropped, and every coord on it), "classes" (a LinearHead's
    logits: the feature dim replaced by a "class" dim without coords),
    "scalar" (a reduced loss, 0-d), "confusion" ((C, C), dims "target" and
    "prediction", the class coord on both where x's class dim has one),
    "head-confusion" (a LinearHead's: those dims, no coords).
    """
    xr = sys.modules[type(x).__module__.split(".")[0]]
    dim = x.dims[axis]
    if kind == "head-confusion":  # the dim at axis holds features, not classes
        return xr.DataArray(r, dims=("target", "prediction"))
    if kind == "same":
        return xr.DataArray(r, dims=x.dims, coords=x.coords, name=x.name, attrs=x.attrs)
    if kind == "scalar":
        return xr.DataArray(r)
    if kind == "confusion":
        coords = None
        if dim in x.coords:
            values = x.coords[dim].values
            coords = {"target": values, "prediction": values}
        return xr.DataArray(r, dims=("target", "prediction"), coords=coords)
    coords = {k: c for k, c in x.coords.items() if dim not in c.dims}
    dims = list(x.dims)
    if kind == "reduced":
        del dims[axis]
    else:  # "classes"
        dims[axis] = "class" if "class" not in dims else f"{dim}_class"
    return xr.DataArray(r, dims=tuple(dims), coords=coords)
