"""Where CUDA work runs: availability, the caller's library and stream,
zero-copy device views, and outputs allocated in the caller's library.

Nothing here compiles a kernel. :func:`status` is what
:func:`fastlogits.backends` asks; :class:`Caller` is what every op builds
first: it recognises the input (a PyTorch CUDA tensor, a CuPy array, a
Numba device array, any other ``__cuda_array_interface__`` object, or a
host array), finds the stream the caller's library is working on (PyTorch's
or CuPy's current stream, the array's own stream), and allocates outputs
with the caller's library so they come back as its own type, on its own
stream-ordered allocator, with no device-wide synchronization.

Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) "device" memory is
host memory: a ``__cuda_array_interface__`` pointer is read as a host
address and views are NumPy views wrapped as simulator arrays.
"""

import contextlib
import functools
import importlib

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout


def simulator():
    """True when Numba runs CUDA kernels in its simulator."""
    try:
        from numba.cuda.core import config  # numba-cuda >= 0.2x
    except ImportError:
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def status():
    """``(usable, reason)``: can the CUDA backend run here, and why (not).

    Cheap and never raises: imports numba-cuda and asks the driver for the
    current device; compiles nothing.
    """
    try:
        from numba import cuda
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return False, f"numba-cuda cannot be imported ({exc})"
    try:
        if simulator():
            return True, "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        if not cuda.is_available():
            return False, _unavailable_reason(cuda)
        dev = cuda.get_current_device()
        problem = toolchain_problem()
        if problem:
            return False, problem
        major, minor = dev.compute_capability
        return True, f"{_name(dev)} (compute capability {major}.{minor})"
    except Exception as exc:  # noqa: BLE001
        return False, " ".join(f"the CUDA driver failed: {exc}".split())


#: The module of numba-cuda that the first kernel compilation loads and
#: that breaks on an incompatible NumPy (numba-cuda 0.30.4 registers
#: ``np.row_stack``, which NumPy 2.5 removed; seen on an H200 machine).
_NUMPY_SUPPORT = "numba.cuda.np.arrayobj"


@functools.lru_cache(maxsize=None)
def toolchain_problem(module=_NUMPY_SUPPORT):
    """Why the installed numba-cuda cannot compile kernels with this NumPy,
    or None. Loads ``module`` as the first compilation would; a numba-cuda
    without that module is given the benefit of the doubt."""
    try:
        importlib.import_module(module)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - any failure here breaks every kernel
        return (f"numba-cuda cannot load its NumPy support with NumPy {np.__version__} "
                f"({type(exc).__name__}: {exc}); install a NumPy it supports (numba's own "
                f"pins do) or a newer numba-cuda")
    return None


def _unavailable_reason(cuda):
    try:
        cuda.get_current_device()
    except Exception as exc:  # noqa: BLE001
        return " ".join(str(exc).replace(":", " ").split()) or type(exc).__name__
    return "no CUDA GPU was found"


def _name(dev):
    name = dev.name
    return name.decode() if isinstance(name, bytes) else str(name)


def describe():
    """A dict describing the CUDA device, for ``fastlogits info``.

    Keys: ``usable``, ``reason``, and when usable ``name``,
    ``compute_capability``, ``multiprocessors``, ``memory_bytes`` (None
    where unknown), ``simulator``.
    """
    usable, reason = status()
    info = {"usable": usable, "reason": reason, "simulator": False}
    if not usable:
        return info
    if simulator():
        info.update(simulator=True, name="CUDA simulator", compute_capability=None,
                    multiprocessors=None, memory_bytes=None)
        return info
    try:
        from numba import cuda

        dev = cuda.get_current_device()
        free_total = cuda.current_context().get_memory_info()
        info.update(name=_name(dev), compute_capability=tuple(dev.compute_capability),
                    multiprocessors=int(dev.MULTIPROCESSOR_COUNT),
                    memory_bytes=int(free_total[1]))
    except Exception as exc:  # noqa: BLE001
        info.update(name=None, error=str(exc))
    return info


# --------------------------------------------------------------------------
# Device views
# --------------------------------------------------------------------------

class _HostInterface:
    """Exposes a ``__cuda_array_interface__`` as ``__array_interface__``
    (simulator only: there the pointer is a host address)."""

    def __init__(self, cai, owner):
        self.__array_interface__ = {
            "shape": tuple(cai["shape"]),
            "typestr": cai["typestr"],
            "data": (cai["data"][0], False),
            "strides": cai.get("strides"),
            "version": 3,
        }
        self._owner = owner


def _fake_array(ary):
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return FakeCUDAArray(ary)


def library(x):
    """``"torch"``, ``"cupy"``, ``"numba"``, ``"cai"`` (another GPU array) or ``"host"``."""
    if not chk.is_gpu_array(x):
        return "host"
    root = type(x).__module__.split(".")[0]
    if root in ("torch", "cupy"):
        return root
    if getattr(x, "__cuda_ndarray__", False):
        return "numba"
    return "cai"


def interface(obj):
    """``__cuda_array_interface__`` of ``obj`` (a PyTorch tensor that
    requires grad refuses to export one; its data is read through a
    detached view)."""
    if type(obj).__module__.split(".")[0] == "torch":
        obj = obj.detach()
    return obj.__cuda_array_interface__


def as_device(obj):
    """A Numba device array viewing ``obj``'s memory (no copy, no sync)."""
    from numba import cuda

    if simulator():
        if getattr(obj, "__cuda_ndarray__", False):
            return obj
        return _fake_array(np.asarray(_HostInterface(interface(obj), obj)))
    if getattr(obj, "__cuda_ndarray__", False):
        return obj
    if type(obj).__module__.split(".")[0] == "torch":
        obj = obj.detach()
    # sync=False: kernels are queued on the stream that produced obj.
    return cuda.as_cuda_array(obj, sync=False)


def reshape(dev, shape):
    """No-copy reshape of device array ``dev`` to ``shape`` (any strides),
    or None when the strides forbid a view."""
    shape = tuple(int(n) for n in shape)
    if simulator():
        v = _layout.reshape_view(np.asarray(dev), shape)
        return None if v is None else _fake_array(v)
    if any(st < 0 for st in dev.strides):
        return None
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    # NumPy's no-copy reshape rules, applied to a stand-in with dev's strides.
    stand_in = np.lib.stride_tricks.as_strided(np.empty(1, dev.dtype), dev.shape, dev.strides)
    v = _layout.reshape_view(stand_in, shape)
    if v is None:
        return None
    return DeviceNDArray(shape, v.strides, dev.dtype, stream=dev.stream, gpu_data=dev.gpu_data)


def copy_into(dst, src, stream):
    """``dst[...] = src`` for device arrays of one shape and any strides,
    queued on ``stream``."""
    if simulator():
        np.copyto(np.asarray(dst), np.asarray(src))
        return
    dst.setitem(Ellipsis, src, stream=stream)


def byte_range(cai):
    """``(lo, hi)`` device addresses spanned by an interface (hi exclusive)."""
    shape = tuple(cai["shape"])
    itemsize = np.dtype(cai["typestr"]).itemsize
    ptr = cai["data"][0]
    if any(n == 0 for n in shape):
        return ptr, ptr
    strides = cai.get("strides")
    if strides is None:
        strides = contiguous_strides(shape, itemsize)
    lo = hi = ptr
    for n, st in zip(shape, strides):
        if st > 0:
            hi += (n - 1) * st
        else:
            lo += (n - 1) * st
    return lo, hi + itemsize


def contiguous_strides(shape, itemsize):
    strides = []
    acc = itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


# --------------------------------------------------------------------------
# The caller: library, device, stream, allocation
# --------------------------------------------------------------------------

_TORCH_DTYPES = {"float16": "float16", "float32": "float32", "float64": "float64",
                 "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
                 "uint8": "uint8"}


class Caller:
    """The library, device and stream of a call's input ``x``.

    Kernels are queued on :attr:`stream`; :meth:`empty` allocates outputs
    in the caller's library (PyTorch and CuPy: their stream-ordered
    allocators; Numba device arrays and other GPU arrays: Numba device
    arrays; host input: Numba device arrays copied back by :meth:`result`).
    """

    def __init__(self, x):
        from numba import cuda

        self.x = x
        self.lib = library(x)
        self.device_index = None
        if self.lib == "torch":
            self.device_index = x.device.index
        elif self.lib == "cupy":
            self.device_index = x.device.id
        with self.activate():
            self.stream = self._find_stream(cuda)

    def _find_stream(self, cuda):
        if simulator():
            return cuda.default_stream()
        if self.lib == "torch":
            import torch

            return _external(cuda, torch.cuda.current_stream(self.x.device).cuda_stream)
        if self.lib == "cupy":
            import cupy

            return _external(cuda, cupy.cuda.get_current_stream().ptr)
        if self.lib == "numba":
            return self.x.stream if self.x.stream else cuda.default_stream()
        if self.lib == "cai":
            ptr = interface(self.x).get("stream")
            if ptr is None:
                return cuda.default_stream()
            if ptr == 2:
                return cuda.per_thread_default_stream()
            return _external(cuda, 0 if ptr == 1 else ptr)
        return cuda.default_stream()

    @contextlib.contextmanager
    def activate(self):
        """Make the input's device current for Numba (multi-GPU), and keep
        its context attached for the whole op (:func:`_attached_context`)."""
        if simulator():
            yield
            return
        from numba import cuda

        device = (contextlib.nullcontext() if self.device_index is None
                  else cuda.gpus[self.device_index])
        with device, _attached_context():
            if self.lib == "cupy":
                with self.x.device:
                    yield
            else:
                yield

    @property
    def gpu(self):
        return self.lib != "host"

    def empty(self, shape, dtype, zero=False):
        """``(obj, dev)``: a new array in the caller's library and its device
        view (None for an empty PyTorch or CuPy array: nothing to view);
        with ``zero``, zero-filled on the stream (the library's own memset,
        or the driver's for Numba arrays)."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        if self.lib == "torch" and not simulator():
            import torch

            make = torch.zeros if zero else torch.empty
            t = make(shape, dtype=getattr(torch, _TORCH_DTYPES[dtype.name]), device=self.x.device)
            return t, as_device(t) if t.numel() else None
        if self.lib == "cupy" and not simulator():
            import cupy

            a = (cupy.zeros if zero else cupy.empty)(shape, dtype)
            return a, as_device(a) if a.size else None
        from numba import cuda

        d = cuda.device_array(shape, dtype, stream=self.stream)
        if zero and d.size:
            if simulator():
                np.asarray(d)[...] = 0
            else:
                from numba.cuda.cudadrv import driver

                driver.device_memset(d, 0, d.nbytes, stream=self.stream)
        return d, d

    def to_device(self, host):
        """Copy a host array to a new (C-contiguous) device array on the stream."""
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(host), stream=self.stream)

    def contiguous(self, dev):
        """A C-contiguous device copy of ``dev`` (allocated in the caller's library)."""
        obj, tmp = self.empty(dev.shape, dev.dtype)
        copy_into(tmp, dev, self.stream)
        return obj, tmp


def _attached_context():
    """Numba's ``ensure_context``: the current CUDA context looked up once
    and attached to the thread while an op runs. Without it every Numba
    call that needs the context (each allocation, copy, launch and
    ``current_context()``) asks the driver again: 16 such lookups per
    cross_entropy call on an H200 machine (bench/RESULTS.md, log 46).
    A Numba without it gets a no-op."""
    from numba.cuda.cudadrv import devices

    ensure = getattr(getattr(devices, "_runtime", None), "ensure_context", None)
    return ensure() if ensure is not None else contextlib.nullcontext()


_EXTERNAL = {}


def _external(cuda, ptr):
    """A Numba stream for a raw ``cudaStream_t`` (0: the legacy default
    stream). The wrapper holds only the handle, so one is made per stream
    and context and reused: PyTorch callers name their stream every call."""
    if not ptr:
        return cuda.legacy_default_stream()
    return per_context(_EXTERNAL, (int(ptr),), lambda: cuda.external_stream(ptr))


# --------------------------------------------------------------------------
# Launches
# --------------------------------------------------------------------------

def launch(kernel, blocks, threads, stream, shared_bytes, *args):
    """``kernel[blocks, threads, stream, shared_bytes](*args)``, with a block
    too large for the kernel's registers reported as the ``ValueError`` of
    a bad ``config.CUDA_THREADS_PER_BLOCK`` instead of the driver's
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (the kernels use 32 to 190 registers
    per thread; a block may hold 65536 registers).

    On a GPU the dispatcher's ``call`` is invoked with the normalized 1-D
    dimensions, which is what ``kernel[...]`` does after building a launch
    configuration; that object also builds Numba's low-occupancy warning
    for every grid under 128 blocks, which the ops launch on purpose (one
    block totals the losses' partial sums; small inputs), at a measured
    cost of more than the H200's kernel time per small launch (RESULTS,
    CUDA log 46) and a warning the caller cannot act on.
    """
    call = None if simulator() else getattr(kernel, "call", None)
    try:
        if call is None:
            kernel[blocks, threads, stream, shared_bytes](*args)
        else:
            call(args, (int(blocks), 1, 1), (int(threads), 1, 1), stream, int(shared_bytes))
    except Exception as exc:
        if "OUT_OF_RESOURCES" not in str(exc):
            raise
        name = getattr(getattr(kernel, "py_func", None), "__name__", "kernel")
        raise ValueError(
            f"a block of {threads} threads needs more registers than the GPU has per block "
            f"for {name}; lower config.CUDA_THREADS_PER_BLOCK (256, the default, fits every "
            f"kernel)") from exc


# --------------------------------------------------------------------------
# Device constants
# --------------------------------------------------------------------------

def per_context(cache, key, make, limit=64):
    """``make()``, kept in ``cache`` under the current CUDA context and
    ``key`` (a tuple); once ``limit`` entries are held the oldest goes. For
    the device constants below and the wrappers of other libraries'
    streams: made once, not per call."""
    from numba import cuda

    full = (None if simulator() else id(cuda.current_context()),) + key
    value = cache.get(full)
    if value is None:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)), None)
        value = cache[full] = make()
    return value


_STAND_INS = {}


def stand_in(dtype, ndim):
    """A cached 1-element device array of ``dtype`` with ``ndim`` dims: the
    compute-dtype carrier ``cdt`` and the never-touched outputs kernels
    take in place of the ones an op does not produce."""
    from numba import cuda

    return per_context(_STAND_INS, (np.dtype(dtype).str, ndim),
                       lambda: cuda.device_array((1,) * ndim, dtype))


_ONES = {}


def ones(dtype, n):
    """A cached device array of ``n`` ones of ``dtype`` (never written by a
    kernel): the class weights of a loss called without ``class_weight``,
    and the unit gradient scale, without a host-to-device copy per call."""
    from numba import cuda

    return per_context(_ONES, (np.dtype(dtype).str, int(n)),
                       lambda: cuda.to_device(np.ones(int(n), dtype)))
