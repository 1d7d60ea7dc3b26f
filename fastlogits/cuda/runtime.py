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

The simulator (``NUMBA_ENABLE_CUDASIM=1``) runs this same host code down
to the launch. Its "device" memory is host memory, so the one thing that
differs, turning a device address into an array, is :func:`_array_at`
(with :func:`_interface_of` reading an address back); nothing else here
or in the ops asks :func:`simulator`. Only public numba-cuda names are
used: ``cuda.from_cuda_array_interface``, ``cuda.device_array``,
``kernel[griddim, blockdim, stream, sharedmem]``, the streams' CUDA stream
protocol (``__cuda_stream__``) and ``cuda.current_context``.
"""

import contextlib
import functools
import importlib
import warnings

import numpy as np

from fastlogits import _bfloat16
from fastlogits import _checks as chk
from fastlogits import _layout


_NUMBA_CUDA = []


def _numba_cuda():
    """``numba.cuda``, imported on first use and then held (an import
    statement in a function costs about a microsecond per call)."""
    if not _NUMBA_CUDA:
        from numba import cuda

        _NUMBA_CUDA.append(cuda)
    return _NUMBA_CUDA[0]


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
    version = version_problem()
    if version:
        return False, version
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


#: The numba-cuda releases this host code is written and tested against
#: (pyproject.toml's ``cuda`` extra pins the same range): its launch goes
#: through ``kernel[griddim, blockdim, stream, sharedmem]`` and its views
#: through ``cuda.from_cuda_array_interface``, both public, but the
#: low-occupancy warning and the stream protocol changed within 0.x.
SUPPORTED_NUMBA_CUDA = ((0, 30), (0, 31))


def numba_cuda_version():
    """The installed numba-cuda's version string, or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version("numba-cuda")
    except PackageNotFoundError:
        return None


def version_problem(installed=None):
    """Why the installed numba-cuda is outside :data:`SUPPORTED_NUMBA_CUDA`,
    or None (also None when its version cannot be read: the simulator of an
    older numba, a source checkout)."""
    installed = numba_cuda_version() if installed is None else installed
    if not installed:
        return None
    parts = []
    for piece in installed.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    lo, hi = SUPPORTED_NUMBA_CUDA
    if lo <= tuple(parts) < hi:
        return None
    return (f"numba-cuda {installed} is outside the supported range "
            f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]} (pip install -e \".[cuda]\" installs one)")


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
# Device views: the one place where the simulator differs
# --------------------------------------------------------------------------

def _array_at(ptr, shape, strides, dtype, owner):
    """A device array of ``shape``/``strides``/``dtype`` at device address
    ``ptr`` (no copy, no sync), keeping ``owner`` alive.

    The only simulator branch of the host code: there a device address is
    a host address, read as a NumPy array and wrapped as the simulator's
    device array; on a GPU numba-cuda's public
    ``from_cuda_array_interface`` builds the view."""
    cuda = _numba_cuda()
    desc = {"shape": shape, "strides": strides, "typestr": dtype.str, "data": (ptr, False),
            "version": 3}
    if simulator():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.asarray(_HostInterface(desc, owner)))
    # No "stream" key: nothing is synchronized; kernels go on the caller's stream.
    return cuda.from_cuda_array_interface(desc, owner=owner, sync=False)


class _HostInterface:
    """A ``__cuda_array_interface__`` description as ``__array_interface__``
    (simulator: the address is a host address)."""

    def __init__(self, desc, owner):
        self.__array_interface__ = dict(desc, version=3)
        self._owner = owner


def _interface_of(dev):
    """The interface of a device array this module made (or the caller's):
    ``__cuda_array_interface__``; the simulator's arrays, which lack it,
    expose the same dict as ``__array_interface__``."""
    cai = getattr(dev, "__cuda_array_interface__", None)
    return cai if cai is not None else dev.__array_interface__


def library(x, cai=None):
    """``"torch"``, ``"cupy"``, ``"numba"``, ``"cai"`` (another GPU array) or
    ``"host"`` (``cai``: x's interface when already read)."""
    if cai is None and not chk.is_gpu_array(x):
        return "host"
    root = type(x).__module__.split(".")[0]
    if root in ("torch", "cupy", "numba"):
        return root
    return "cai"


def interface(obj):
    """``__cuda_array_interface__`` of ``obj`` (a PyTorch tensor that
    requires grad refuses to export one; its data is read through a
    detached view; a bfloat16 one is described as its bits, uint16, as
    fastlogits holds bfloat16: :mod:`fastlogits._bfloat16`)."""
    if type(obj).__module__.split(".")[0] == "torch":
        obj = obj.detach()
        if chk.is_torch_bfloat16(obj):
            return _bfloat16.bits_interface(obj.__cuda_array_interface__)
    return obj.__cuda_array_interface__


def view_of(cai, owner):
    """A device array viewing the memory an interface describes."""
    dtype = np.dtype(cai["typestr"])
    shape = tuple(int(n) for n in cai["shape"])
    strides = cai.get("strides")
    strides = (contiguous_strides(shape, dtype.itemsize) if strides is None
               else tuple(int(s) for s in strides))
    return _array_at(int(cai["data"][0]), shape, strides, dtype, owner)


def as_device(obj):
    """A device array viewing ``obj``'s memory (no copy, no sync): Numba's
    own device arrays as they are, anything else through one read of its
    ``__cuda_array_interface__``."""
    if type(obj).__module__.split(".")[0] == "numba":
        return obj
    return view_of(interface(obj), obj)


def reshape(dev, shape):
    """No-copy reshape of device array ``dev`` to ``shape`` (any strides),
    or None when the strides forbid a view (NumPy's rules, applied to a
    stand-in with dev's strides; negative strides are always copied).
    One read of dev's interface; the geometry is cached (:func:`geometry`)."""
    return reshape_cai(_interface_of(dev), dev, shape)


def reshape_cai(cai, owner, shape):
    """:func:`reshape` of the array that interface ``cai`` describes (read
    once by the caller), the view keeping ``owner`` alive."""
    st = cai.get("strides")
    g = geometry(tuple(cai["shape"]), None if st is None else tuple(st), cai["typestr"],
                 tuple(shape))
    if g is None:
        return None
    dtype, new_shape, new_strides = g
    return _array_at(cai["data"][0], new_shape, new_strides, dtype, owner)


@functools.lru_cache(maxsize=4096)
def geometry(shape, strides, typestr, new_shape):
    """``(dtype, new_shape, new_strides)`` of a no-copy reshape of the array
    an interface describes (``strides`` None: C-contiguous), or None where
    its strides forbid a view or any is negative. Cached: per call, a view
    costs one dict lookup here and the pointer (the plan of issue 36)."""
    dtype = np.dtype(typestr)
    shape = tuple(int(n) for n in shape)
    new_shape = tuple(int(n) for n in new_shape)
    strides = (contiguous_strides(shape, dtype.itemsize) if strides is None
               else tuple(int(s) for s in strides))
    if any(st < 0 for st in strides):
        return None
    new = reshaped_strides(shape, strides, dtype, new_shape)
    if new is None:
        return None
    return dtype, new_shape, new


@functools.lru_cache(maxsize=1024)
def reshaped_strides(shape, strides, dtype, new_shape):
    """The strides of a no-copy reshape, or None (cached: a geometry)."""
    stand_in = np.lib.stride_tricks.as_strided(np.empty(1, dtype), shape, strides)
    v = _layout.reshape_view(stand_in, new_shape)
    return None if v is None else tuple(v.strides)


def _merged(shape, *strides_list):
    """Merge adjacent axes that are contiguous in every array (fewer
    dimensions for the copy kernel); size-1 axes go."""
    dims = [(n, sts) for n, sts in zip(shape, zip(*strides_list)) if n != 1]
    out = []
    for n, sts in dims:
        if out:
            pn, psts = out[-1]
            if all(p == s * n for p, s in zip(psts, sts)):
                out[-1] = (pn * n, sts)
                continue
        out.append((n, sts))
    return out


COPY_DIMS = 6


def copy_into(dst, src, stream):
    """``dst[...] = src`` for device arrays of one shape and dtype and any
    strides, queued on ``stream`` by :func:`fastlogits.cuda.kernels.copy.copy6`
    (both arrays seen as 6-D views; more axes after merging contiguous
    ones are walked on the host)."""
    dcai, scai = _interface_of(dst), _interface_of(src)
    dtype = np.dtype(dcai["typestr"])
    shape = tuple(int(n) for n in dcai["shape"])
    if tuple(int(n) for n in scai["shape"]) != shape or np.dtype(scai["typestr"]) != dtype:
        raise ValueError("copy_into needs arrays of one shape and dtype")
    if not all(shape):
        return
    dst_st = dcai.get("strides") or contiguous_strides(shape, dtype.itemsize)
    src_st = scai.get("strides") or contiguous_strides(shape, dtype.itemsize)
    dims = _merged(shape, dst_st, src_st) or [(1, (dtype.itemsize, dtype.itemsize))]
    _copy_dims(int(dcai["data"][0]), int(scai["data"][0]), dims, dtype, dst, src, stream)


def _copy_dims(dptr, sptr, dims, dtype, dst, src, stream):
    if len(dims) > COPY_DIMS:
        n, (dst_step, src_step) = dims[0]
        for k in range(n):
            _copy_dims(dptr + k * dst_step, sptr + k * src_step, dims[1:], dtype, dst, src,
                       stream)
        return
    pad = [(1, (dtype.itemsize, dtype.itemsize))] * (COPY_DIMS - len(dims))
    dims = pad + list(dims)
    shape = tuple(n for n, _ in dims)
    d = _array_at(dptr, shape, tuple(st[0] for _, st in dims), dtype, dst)
    s = _array_at(sptr, shape, tuple(st[1] for _, st in dims), dtype, src)
    from fastlogits.cuda.kernels import copy as kc

    total = _layout.size_of(shape)
    threads = 256
    launch(kc.copy6, max(1, min(-(-total // threads), 4096)), threads, stream, 0, s, d)


def fill_zero(dev, stream):
    """Zero a C-contiguous device array on ``stream`` (a kernel: the same
    host code under the simulator and on a GPU)."""
    cai = _interface_of(dev)  # one read: size and the flat view from it
    size = _layout.size_of(tuple(cai["shape"]))
    if not size:
        return
    from fastlogits.cuda.kernels import copy as kc

    flat = reshape_cai(cai, dev, (size,))
    threads = 256
    launch(kc.fill_zero, max(1, min(-(-size // threads), 4096)), threads, stream, 0, flat)


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

#: The torch dtype of an output of each NumPy dtype; uint16 is bfloat16's
#: bits (:mod:`fastlogits._bfloat16`), the only uint16 output the ops make.
_TORCH_DTYPES = {"float16": "float16", "float32": "float32", "float64": "float64",
                 "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
                 "uint8": "uint8", _bfloat16.BITS.name: "bfloat16"}


class Caller:
    """The library, device and stream of a call's input ``x``.

    Kernels are queued on :attr:`stream`; :meth:`empty` allocates outputs
    in the caller's library (PyTorch and CuPy: their stream-ordered
    allocators; Numba device arrays and other GPU arrays: Numba device
    arrays; host input: Numba device arrays copied back by :meth:`result`).
    """

    def __init__(self, x, cai=None):
        cuda = _numba_cuda()

        self.x = x
        # x's interface, read once (``cai``: already read by the API's checks).
        self.cai = cai if cai is not None or not chk.is_gpu_array(x) else interface(x)
        self.lib = library(x, self.cai)
        self.device_index = None
        if self.lib == "torch":
            self.device_index = x.device.index
        elif self.lib == "cupy":
            self.device_index = x.device.id
        with self.activate():
            #: The current context's key (:func:`context_key`), read once per call.
            self.ctx = context_key()
            self.stream = self._find_stream(cuda)

    def _find_stream(self, cuda):
        if self.lib == "torch":
            import torch

            return _external(cuda, torch.cuda.current_stream(self.x.device).cuda_stream, self.ctx)
        if self.lib == "cupy":
            import cupy

            return _external(cuda, cupy.cuda.get_current_stream().ptr, self.ctx)
        if self.lib == "numba":
            return self.x.stream if self.x.stream else default_stream(self.ctx)
        if self.lib == "cai":
            ptr = self.cai.get("stream")
            if ptr is None:
                return default_stream(self.ctx)
            if ptr == 2:
                return per_context(_STREAMS, ("per-thread",), cuda.per_thread_default_stream,
                                   ctx=self.ctx)
            return _external(cuda, 0 if ptr == 1 else ptr, self.ctx)
        return default_stream(self.ctx)

    @contextlib.contextmanager
    def activate(self):
        """Make the input's device current for Numba (multi-GPU; a no-op
        for the current device, the simulator's only one)."""
        if self.device_index is None:
            yield
            return
        cuda = _numba_cuda()

        with cuda.gpus[self.device_index]:
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
        or :func:`fill_zero` for Numba arrays)."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        if self.lib == "torch":
            import torch

            make = torch.zeros if zero else torch.empty
            t = make(shape, dtype=getattr(torch, _TORCH_DTYPES[dtype.name]), device=self.x.device)
            return t, as_device(t) if t.numel() else None
        if self.lib == "cupy":
            import cupy

            a = (cupy.zeros if zero else cupy.empty)(shape, dtype)
            return a, as_device(a) if a.size else None
        cuda = _numba_cuda()

        d = cuda.device_array(shape, dtype, stream=self.stream)
        if zero:
            fill_zero(d, self.stream)
        return d, d

    def to_device(self, host):
        """Copy a host array to a new (C-contiguous) device array on the stream."""
        cuda = _numba_cuda()

        return cuda.to_device(np.ascontiguousarray(host), stream=self.stream)

    def contiguous(self, dev):
        """A C-contiguous device copy of ``dev`` (allocated in the caller's library)."""
        obj, tmp = self.empty(dev.shape, dev.dtype)
        copy_into(tmp, dev, self.stream)
        return obj, tmp


_STREAMS = {}


def default_stream(ctx=None):
    """Numba's default stream, one object per context (a stable key for
    the caches of launch configurations and scratch buffers)."""
    cuda = _numba_cuda()

    return per_context(_STREAMS, ("default",), cuda.default_stream, ctx=ctx)


def stream_key(stream):
    """The raw handle of a stream, by the CUDA stream protocol
    (``__cuda_stream__``; never ``int()`` of the stream, deprecated for Numba's
    default stream); 0 for the simulator's streams, which have none."""
    proto = getattr(stream, "__cuda_stream__", None)
    return int(proto()[1]) if proto is not None else 0


_STREAM_KEYS = {}


def cached_stream_key(stream):
    """:func:`stream_key`, asked once per stream object (the entry holds
    the stream, so its id is not reused while cached)."""
    hit = _STREAM_KEYS.get(id(stream))
    if hit is not None and hit[0] is stream:
        return hit[1]
    key = stream_key(stream)
    if len(_STREAM_KEYS) >= 256:
        _STREAM_KEYS.pop(next(iter(_STREAM_KEYS)), None)
    _STREAM_KEYS[id(stream)] = (stream, key)
    return key


def _external(cuda, ptr, ctx=None):
    """A Numba stream for a raw ``cudaStream_t`` (0: the legacy default
    stream). The wrapper holds only the handle, so one is made per stream
    and context and reused: PyTorch callers name their stream every call."""
    if not ptr:
        return per_context(_STREAMS, ("legacy",), cuda.legacy_default_stream, ctx=ctx)
    return per_context(_STREAMS, (int(ptr),), lambda: cuda.external_stream(ptr), ctx=ctx)


# --------------------------------------------------------------------------
# Launches
# --------------------------------------------------------------------------

_LAUNCHERS = {}


def launcher(kernel, blocks, threads, stream, shared_bytes):
    """``kernel[blocks, threads, stream, shared_bytes]``, numba-cuda's
    documented launch configuration, made once per kernel, grid, stream
    and context and reused (building one costs more host time than a small
    kernel runs). Numba's low-occupancy warning for grids under 128 blocks
    is silenced while it is built: the ops size their grids to the work
    (one block totals the losses' partial sums; small inputs), a warning
    the caller cannot act on (docs/perf/cuda-046)."""
    # A configuration is no context's own: a stream handle names one stream
    # (the default streams mean the same in every context), and the
    # dispatcher picks the current device's compiled kernel at each call.
    key = (kernel, blocks, threads, cached_stream_key(stream), shared_bytes)
    cfg = _LAUNCHERS.get(key)
    if cfg is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*low occupancy")
            cfg = kernel[int(blocks), int(threads), stream, int(shared_bytes)]
        if cfg is kernel:
            # The simulator configures the kernel object itself (its
            # __getitem__ returns self): such a configuration is made anew
            # for every launch, never cached.
            return cfg
        if len(_LAUNCHERS) >= 512:
            _LAUNCHERS.pop(next(iter(_LAUNCHERS)), None)
        _LAUNCHERS[key] = cfg
    return cfg


def launch(kernel, blocks, threads, stream, shared_bytes, *args):
    """Queue ``kernel[blocks, threads, stream, shared_bytes](*args)``
    (:func:`launcher`), with a block too large for the kernel's registers
    reported as the ``ValueError`` of a bad ``cuda_threads_per_block``
    instead of the driver's CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (the kernels
    use 32 to 190 registers per thread; a block may hold 65536 registers)."""
    try:
        launcher(kernel, blocks, threads, stream, shared_bytes)(*args)
    except Exception as exc:
        if "OUT_OF_RESOURCES" not in str(exc):
            raise
        name = getattr(getattr(kernel, "py_func", None), "__name__", "kernel")
        raise ValueError(
            f"a block of {threads} threads needs more registers than the GPU has per block "
            f"for {name}; lower the tuning knob cuda_threads_per_block (256, the default, fits every "
            f"kernel)") from exc


def warp_shuffles():
    """Whether kernels may use warp shuffles: a GPU's, not the simulator's
    (which has none); a kernel-variant choice, not a host-path branch."""
    return not simulator()


# --------------------------------------------------------------------------
# Device constants
# --------------------------------------------------------------------------

def context_key():
    """A stable key of the current CUDA context, read once per call (by
    :class:`Caller`) for the per-context caches below and the plans.

    numba-cuda keeps one ``Context`` object per context while it is current
    (the thread's attached context): its ``id`` (the caches' device arrays
    hold the context alive, so the id is never reused under them). The
    simulator makes a new stand-in context, without a driver ``handle``, on
    every ``current_context()`` call for its one device: 0 (an ``id`` of
    those would change per call and every cache would miss: a new scratch
    buffer and a flag reset per loss call, measured in issue 36)."""
    cuda = _numba_cuda()

    ctx = cuda.current_context()
    return 0 if getattr(ctx, "handle", None) is None else id(ctx)


def per_context(cache, key, make, limit=64, ctx=None):
    """``make()``, kept in ``cache`` under the current CUDA context
    (``ctx``: its :func:`context_key`, when the caller has it) and ``key``
    (a tuple); once ``limit`` entries are held the oldest goes. For the
    device constants below, streams and launch configurations: made once,
    not per call."""
    full = ((context_key() if ctx is None else ctx),) + key
    value = cache.get(full)
    if value is None:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)), None)
        value = cache[full] = make()
    return value


_STAND_INS = {}


def stand_in(dtype, ndim, ctx=None):
    """A cached 1-element device array of ``dtype`` with ``ndim`` dims: the
    compute-dtype carrier ``cdt`` and the never-touched outputs kernels
    take in place of the ones an op does not produce."""
    cuda = _numba_cuda()

    return per_context(_STAND_INS, (np.dtype(dtype).str, ndim),
                       lambda: cuda.device_array((1,) * ndim, dtype), ctx=ctx)


_ONES = {}


def ones(dtype, n, ctx=None):
    """A cached device array of ``n`` ones of ``dtype`` (never written by a
    kernel): the class weights of a loss called without ``class_weight``,
    and the unit gradient scale, without a host-to-device copy per call."""
    cuda = _numba_cuda()

    return per_context(_ONES, (np.dtype(dtype).str, int(n)),
                       lambda: cuda.to_device(np.ones(int(n), dtype)), ctx=ctx)
