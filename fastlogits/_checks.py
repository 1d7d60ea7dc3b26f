"""Validation of arguments, shared by every public function.

Everything here runs before any kernel, and raises a ``ValueError`` or
``TypeError`` that names the argument and the shapes or values involved.
Works on host arrays and on GPU arrays (through their shape and dtype only,
never touching the data).
"""

import functools
import math
import numbers

import numpy as np

from fastlogits.reference import temperature_scale

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32, _FLOAT64 = FLOAT_DTYPES[1:]
BACKENDS = ("auto", "numpy", "cpu", "cuda")


def _interface(x):
    """``__cuda_array_interface__`` of ``x``, or None.

    A PyTorch CUDA tensor that requires grad raises ``RuntimeError`` (not
    ``AttributeError``) on access; its detached view exports the same memory.
    """
    if type(x) is np.ndarray:  # the common case, without raising an exception
        return None
    try:
        return x.__cuda_array_interface__
    except AttributeError:
        return None
    except RuntimeError:
        if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
            return x.detach().__cuda_array_interface__
        raise


def is_torch_bfloat16(x):
    """Whether ``x`` is a torch bfloat16 tensor (no import of torch)."""
    return (type(x).__module__.split(".")[0] == "torch"
            and str(getattr(x, "dtype", "")) == "torch.bfloat16")


def is_gpu_array(x):
    """True for anything exposing ``__cuda_array_interface__``."""
    return _interface(x) is not None


def gpu_shape_dtype(x):
    """``(shape, dtype)`` of a GPU array, from its interface (no data access)."""
    cai = _interface(x)
    return tuple(int(n) for n in cai["shape"]), np.dtype(cai["typestr"])


def check_logits_dtype(dtype, name="x"):
    """Logits must be float16, float32 or float64 (bfloat16 arrives as its bits, checked apart)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must hold float16, bfloat16, float32 or float64 logits, got dtype {dtype}"
        )


def compute_dtype(dtype):
    """The dtype logits of ``dtype`` are computed in, and confidence
    returned in: float64 for float64, else float32 (float16 included)."""
    return _FLOAT64 if dtype == _FLOAT64 else _FLOAT32


def is_integer(value):
    """An integer (Python's or NumPy's), not a bool. A plain int is
    answered first: ``isinstance`` against the ``numbers`` ABCs costs
    0.3 us, on every public call."""
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, (bool, np.bool_)))


def is_real(value):
    """A real number (an integer included), not a bool; as :func:`is_integer`."""
    return type(value) in (float, int) or (isinstance(value, numbers.Real)
                                           and not isinstance(value, (bool, np.bool_)))


def normalize_axis(axis, ndim, name="axis"):
    """Return ``axis`` in ``[0, ndim)``; negative values count from the end."""
    if not is_integer(axis):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if ndim == 0:
        raise ValueError("x must have at least one dimension (the class axis), got a 0-d array")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def check_classes(shape, axis):
    """The class axis must hold at least one class."""
    if shape[axis] == 0:
        raise ValueError(f"x has no classes: its class axis {axis} has length 0 (shape {shape})")


def check_temperature(temperature):
    """Temperature must be a finite real number > 0; returns it as float."""
    if not is_real(temperature):
        raise TypeError(f"temperature must be a real number, got {temperature!r}")
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def inv_temperature(temperature, dtype):
    """The checked temperature's scale for logits of ``dtype``, as every
    backend applies it: :func:`fastlogits.reference.temperature_scale`
    (1 / T clamped to the computed dtype's normal finite range), a NumPy
    scalar of the computed dtype."""
    if type(temperature) is float:  # the common case: remembered (1 us of a small call)
        return _float_inv_temperature(temperature, dtype)
    return temperature_scale(check_temperature(temperature), dtype)


@functools.lru_cache(maxsize=256)
def _float_inv_temperature(temperature, dtype):
    """:func:`inv_temperature` of a Python float (a bad one raises each
    time: nothing is remembered of it)."""
    return temperature_scale(check_temperature(temperature), dtype)


def check_backend_name(backend):
    """``backend`` must be one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def check_out(out, shape, dtype, name="out", kind="float"):
    """Check a preallocated host output; returns it.

    ``kind="float"`` requires exactly ``dtype``; ``kind="label"`` accepts any
    integer dtype whose range holds ``dtype`` (here: the largest label,
    passed as an int).
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array (or a PyTorch CPU tensor) for a host input, "
                        f"got {type(out).__name__}")
    check_out_meta(tuple(out.shape), out.dtype, shape, dtype, name, kind)
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if overlaps_itself(out.shape, out.strides, out.itemsize):
        raise ValueError(
            f"{name} has elements that share memory (shape {out.shape}, strides "
            f"{out.strides}), as np.lib.stride_tricks.as_strided can make; pass an array "
            "whose elements are distinct")
    return out


def overlaps_itself(shape, strides, itemsize):
    """Whether two elements of an array of ``shape`` and byte ``strides``
    may share memory. Conservative: the axes sorted by stride must each
    step over everything the smaller ones reach (every array NumPy makes
    without ``as_strided`` passes); a zero-size array never overlaps."""
    if 0 in shape:
        return False
    reach = itemsize
    for step, n in sorted((abs(st), n) for n, st in zip(shape, strides) if n > 1):
        if step < reach:
            return True
        reach += step * (n - 1)
    return False


def _byte_bounds(a):
    """``[lo, hi)`` byte addresses a host or GPU array may touch (its
    array interface: no data access)."""
    cai = _interface(a)
    if cai is None:
        a = np.asarray(a)
        ptr, shape, strides, itemsize = (a.__array_interface__["data"][0], a.shape, a.strides,
                                         a.itemsize)
    else:
        shape = tuple(cai["shape"])
        itemsize = np.dtype(cai["typestr"]).itemsize
        strides = cai.get("strides") or tuple(
            itemsize * math.prod(shape[k + 1:]) for k in range(len(shape)))
        ptr = cai["data"][0]
    if 0 in shape:
        return ptr, ptr
    lo = ptr + sum(min(0, st * (n - 1)) for n, st in zip(shape, strides))
    hi = ptr + sum(max(0, st * (n - 1)) for n, st in zip(shape, strides)) + itemsize
    return lo, hi


def check_outputs_apart(a, b, name_a, name_b):
    """Two outputs of one call must not share memory (host or GPU arrays;
    None skips the check). Host arrays whose bounds meet are solved
    exactly (interleaved views are fine); GPU arrays by their bounds."""
    if a is None or b is None:
        return
    (lo_a, hi_a), (lo_b, hi_b) = _byte_bounds(a), _byte_bounds(b)
    if hi_a <= lo_b or hi_b <= lo_a:
        return
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        try:
            if not np.shares_memory(a, b, max_work=100_000):
                return
        except np.exceptions.TooHardError:
            pass
    raise ValueError(f"{name_a} and {name_b} overlap in memory; pass two separate arrays")


def check_out_meta(out_shape, out_dtype, shape, dtype, name="out", kind="float"):
    """Shape and dtype rules of :func:`check_out`, for host and GPU outputs."""
    if tuple(out_shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out_shape)}, expected {tuple(shape)}")
    if kind == "label":
        largest = dtype
        if out_dtype.kind not in "iu":
            raise TypeError(f"{name} must have an integer dtype for labels, got {out_dtype}")
        if np.iinfo(out_dtype).max < largest:
            raise ValueError(
                f"{name} dtype {out_dtype} cannot hold label {largest} (C - 1); use a wider integer type"
            )
    elif out_dtype != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {out_dtype}, expected {np.dtype(dtype)}")


def check_no_partial_overlap(out, x, name="out"):
    """``out`` may be ``x`` itself (in place) but must not partly overlap it."""
    # Apart (the common case) decided first: the array interfaces cost 1 us.
    if out is x or not np.may_share_memory(out, x):
        return
    same = (out.__array_interface__["data"][0] == x.__array_interface__["data"][0]
            and out.strides == x.strides and out.shape == x.shape and out.dtype == x.dtype)
    if not same:
        raise ValueError(f"{name} overlaps x without being x itself; pass out=x for in place")


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
