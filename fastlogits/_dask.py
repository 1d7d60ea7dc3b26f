"""Lazy ops over dask arrays: each chunk runs the op's backend kernel.

The frontend's op functions come here when x (or a LinearHead's f) is a
dask array, after their checks (on shapes and dtypes: nothing is read).
This module builds the graph; dask's own schedulers run it (threads,
processes, a ``dask.distributed`` cluster). Each task calls the
frontend's op function (handed over as ``fn``) on its chunk, so a NumPy
chunk runs the CPU kernel (or the backend asked for) and a CuPy chunk
the CUDA kernel, exactly as a call on that chunk would.

- The class axis (a LinearHead's feature axis) is one chunk: a split one
  is rechunked, with a dask ``PerformanceWarning`` naming the memory a
  chunk then needs, or refused (``tuning`` ``dask_rechunk_classes``).
- Several results of one op (classify's labels and confidence, a loss
  and its gradient) come from ONE task per chunk, which returns them as
  a tuple; a cheap pick layer per result selects its part (dask computes
  the shared layer once when the results are computed together).
- Reductions are tree reductions (dask's ``sum``) of exact per-chunk
  partials: a loss's ``(loss sum, weight sum)``, divided at the end (never
  a mean of means); a confusion matrix's int64 counts.
- Numba threads: each task runs its kernel with ``max(1, cores // tasks
  at once)`` threads (:func:`threads_per_task`; Numba's count is
  thread-local), so dask's threads times Numba's fit the cores.

Imported by the frontend at the first dask call only: ``import
fastlogits`` imports no dask. Imports nothing of the frontend (it gets
the op functions as arguments).
"""

import math
import sys
import threading
import warnings

import numpy as np
import dask.array as da
from dask.array.core import PerformanceWarning
from dask.array.utils import meta_from_array

from fastlogits import tuning

_FLOAT64 = np.dtype(np.float64)


# --------------------------------------------------------------------------
# threads: dask's tasks times Numba's threads fit the cores
# --------------------------------------------------------------------------

def _tasks_at_once():
    """How many dask tasks may run at once on this machine: the threads of
    the ``dask.distributed`` workers on this worker's host, the threaded scheduler's pool
    size (the pool whose thread runs this task), else 1 (the synchronous
    scheduler, or a call outside dask)."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            worker = distributed.get_worker()
        except (ValueError, AttributeError):
            worker = None
        if worker is not None:
            return _host_threads(worker)
    threaded = sys.modules.get("dask.threaded")
    if threaded is not None:
        me = threading.current_thread()
        try:
            pools = [threaded.default_pool] + [p for per in list(threaded.pools.values())
                                               for p in list(per.values())]
            prefix = me.name.rpartition("_")[0]
            for pool in pools:
                # A concurrent.futures pool names its threads "<prefix>_<n>"
                # (and lists them in _threads, but only after a thread's
                # start: its first task may run before).
                if pool is not None and (prefix == getattr(pool, "_thread_name_prefix", None)
                                         or me in getattr(pool, "_threads", ())):
                    return max(1, int(pool._max_workers))
        except (AttributeError, RuntimeError, TypeError):  # another dask: not known
            pass
    return 1


_HOST_THREADS = {}


def _host_threads(worker):
    """The dask threads of every worker on this worker's host (several
    worker processes on one machine share its cores), asked of the
    scheduler once per worker; the worker's own threads where that fails."""
    key = worker.address
    if key not in _HOST_THREADS:
        own = max(1, int(worker.state.nthreads))
        try:
            import distributed

            workers = distributed.get_client().scheduler_info(n_workers=-1)["workers"]
            host = workers[key]["host"]
            _HOST_THREADS[key] = max(own, sum(int(w["nthreads"]) for w in workers.values()
                                              if w.get("host") == host))
        except Exception:  # no scheduler information (an older distributed): own threads
            _HOST_THREADS[key] = own
    return _HOST_THREADS[key]


def threads_per_task(fixed=0):
    """The Numba threads of one task's kernel: ``fixed`` if > 0 (the
    ``dask_threads_per_task`` setting when the graph was built), else
    Numba's pool size (all cores, or ``NUMBA_NUM_THREADS``) divided by the
    tasks that may run at once, at least 1."""
    from numba import config

    cores = int(config.NUMBA_NUM_THREADS)
    if fixed > 0:
        return min(fixed, cores)
    return max(1, cores // _tasks_at_once())


class _numba_threads:
    """The calling thread's Numba thread count set to ``n`` for a block,
    and restored (the count is thread-local: other tasks keep theirs)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba

        self.before = numba.get_num_threads()
        numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self.before)
        return False


def _block(b):
    """A chunk as a task receives it: an axis the output drops (the class
    axis, one chunk) comes as a list of one block."""
    while isinstance(b, list):
        b = b[0]
    return b


class Call:
    """One chunk's op: ``fn(*before, x, [target,] *after)`` with ``x`` (and
    the target) the task's blocks; on the CPU backend with
    :func:`threads_per_task` Numba threads. Picklable (``fn`` is a module
    function) for process and distributed schedulers."""

    def __init__(self, fn, before, after, backend):
        self.fn, self.before, self.after = fn, tuple(before), tuple(after)
        self.threads = tuning.current().dask.threads_per_task if backend == "cpu" else None
        #: the layer's name in dask's graph: the op ("softmax", "head_argmax", ...)
        self.label = before[-1] if before and isinstance(before[-1], str) else fn.__name__

    def __dask_tokenize__(self):
        return (self.fn.__module__, self.fn.__qualname__, self.before, self.after, self.threads)

    def __call__(self, *blocks):
        blocks = [_block(b) for b in blocks]
        if self.threads is None:
            return self.fn(*self.before, *blocks, *self.after)
        with _numba_threads(threads_per_task(self.threads)):
            return self.fn(*self.before, *blocks, *self.after)


# --------------------------------------------------------------------------
# the class axis in one chunk
# --------------------------------------------------------------------------

def _user_stacklevel():
    """The stack level of the first frame outside fastlogits (a warning
    points at the caller's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fastlogits"):
        frame, level = frame.f_back, level + 1
    return level


def _size(nbytes):
    """Bytes as a reader takes them in: "640 B", "12.5 KiB", "3.0 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def whole_axis(x, axis, name, what):
    """``x`` with ``axis`` in one chunk: as it is, rechunked with a
    ``PerformanceWarning`` (once per call), or a ValueError when the
    ``dask_rechunk_classes`` setting is off. ``name``: "x" or "f";
    ``what``: "class" or "feature"."""
    splits = x.chunks[axis]
    if len(splits) == 1:
        return x
    others = math.prod(max(c, default=0) for k, c in enumerate(x.chunks) if k != axis)
    need = others * x.shape[axis] * x.dtype.itemsize
    if not tuning.current().dask.rechunk_classes:
        raise ValueError(
            f"{name} has its {what} axis {axis} split into {len(splits)} chunks {splits}; "
            f"fastlogits never computes a {what} axis per chunk. Rechunk it to one chunk "
            f"({name}.rechunk({{{axis}: -1}}): up to {_size(need)} a chunk), or let "
            "fastlogits do so (tuning.override(dask_rechunk_classes=True), the default)")
    warnings.warn(
        f"{name} has its {what} axis {axis} split into {len(splits)} chunks; fastlogits "
        f"rechunks it to one chunk ({name}.rechunk({{{axis}: -1}})): each chunk then holds "
        f"up to {_size(need)} of {name}. Chunk the other axes smaller if that is "
        "too much", PerformanceWarning, stacklevel=_user_stacklevel())
    return x.rechunk({axis: -1})


# --------------------------------------------------------------------------
# the graph: one task per chunk, then a pick per result
# --------------------------------------------------------------------------

def _letters(n):
    return "".join(chr(ord("a") + k) for k in range(n))


class Out:
    """One result of a chunk's task: ``kind`` "same" (x's shape, the class
    axis ``size`` long), "reduced" (the class axis dropped) or "parts" (one
    block of ``shape`` per chunk, to be summed: the chunk's axes are 1
    long, ``shape``'s axes follow); ``dtype`` its dtype."""

    def __init__(self, kind, dtype, size=None, shape=()):
        self.kind, self.dtype, self.size, self.shape = kind, np.dtype(dtype), size, tuple(shape)


def _layout_of(out, ind, cls):
    """``(index, adjust_chunks, new_axes)`` of a result in blockwise terms."""
    red = ind.replace(cls, "")
    if out.kind == "same":
        return ind, {cls: out.size}, {}
    if out.kind == "reduced":
        return red, {}, {}
    new = "".join(chr(ord("A") + k) for k in range(len(out.shape)))
    return red + new, {c: 1 for c in red}, dict(zip(new, out.shape))


class _Pick:
    """The ``k``-th result of a task's tuple (a pick layer)."""

    def __init__(self, k):
        self.k = k

    def __dask_tokenize__(self):
        return ("fastlogits._dask._Pick", self.k)

    def __call__(self, results):
        return _block(results)[self.k]


def blockwise(call, x, axis, outputs, target=None, scalars=()):
    """The results (a list of dask arrays, one per :class:`Out`) of
    ``call`` on each chunk of ``x`` (class axis ``axis`` in one chunk) and
    of ``target`` (x's chunks without the class axis), with the 0-d dask
    arrays ``scalars`` as further arguments. One layer of tasks; with
    several results, one pick layer per result on top of it."""
    ind = _letters(x.ndim)
    cls = ind[axis]
    args = [x, ind]
    if target is not None:
        args += [target, ind.replace(cls, "")]
    for s in scalars:
        args += [s, ""]
    metas = [meta_from_array(x, ndim=len(_layout_of(o, ind, cls)[0]), dtype=o.dtype)
             for o in outputs]
    if len(outputs) == 1:
        out_ind, adjust, new = _layout_of(outputs[0], ind, cls)
        return [da.blockwise(call, out_ind, *args, adjust_chunks=adjust, new_axes=new,
                             meta=metas[0], concatenate=False, token=f"fastlogits-{call.label}")]
    # One task per chunk returns the tuple; its declared meta is never
    # computed (only the picks are returned).
    core = da.blockwise(call, ind, *args, meta=meta_from_array(x), concatenate=False,
                        token=f"fastlogits-{call.label}")
    picks = []
    for k, (out, meta) in enumerate(zip(outputs, metas)):
        out_ind, adjust, new = _layout_of(out, ind, cls)
        picks.append(da.blockwise(_Pick(k), out_ind, core, ind, adjust_chunks=adjust,
                                  new_axes=new, meta=meta, concatenate=False,
                                  token=f"fastlogits-{call.label}-{k}"))
    return picks


def as_target(target, x, axis):
    """The target as a dask array chunked as ``x`` without its class axis."""
    chunks = tuple(c for k, c in enumerate(x.chunks) if k != axis)
    if isinstance(target, da.Array):
        return target.rechunk(chunks)
    return da.from_array(target, chunks=chunks)


def total(parts, trailing):
    """The sum over the chunks of per-chunk partials (the leading axes; the
    ``trailing`` ones are a partial's): a tree reduction, dask's ``sum``."""
    return parts.sum(axis=tuple(range(parts.ndim - trailing)), dtype=parts.dtype)


# --------------------------------------------------------------------------
# losses: (loss sum, weight sum) per chunk
# --------------------------------------------------------------------------

def weight_sum(t, class_weight, C, ignore_index):
    """``sum(w[t])`` over the chunk's targets ``t`` that are not
    ``ignore_index`` (values already checked by the loss call): the
    denominator of a "mean" (exact counts, then one dot product with the
    weights)."""
    t = np.asarray(t.get() if hasattr(t, "get") and not isinstance(t, np.ndarray) else t)
    kept = t[t != ignore_index].astype(np.int64, copy=False)
    if class_weight is None:
        return float(kept.size)
    return float(np.bincount(kept.ravel(), minlength=C) @ class_weight)


class LossParts:
    """A loss chunk's task: ``call`` (the op with reduction="sum") on x
    and the targets, its loss sum and the targets' weight sum as a
    ``(1, ..., 1, 2)`` float64 block; with a gradient, also the gradient
    (of the sum, times ``scale`` when given: a "mean" gradient's 1 / sum
    of all the weights)."""

    def __init__(self, call, class_weight, C, ignore_index, axis, ndim, grad):
        self.call, self.class_weight, self.C = call, class_weight, C
        self.label = call.label
        self.ignore_index, self.axis, self.ndim, self.grad = ignore_index, axis, ndim, grad

    def __dask_tokenize__(self):
        return ("LossParts", self.call.__dask_tokenize__(), self.class_weight, self.C,
                self.ignore_index, self.axis, self.ndim, self.grad)

    def __call__(self, x, t, scale=None):
        t = _block(t)
        r = self.call(x, t)
        loss_sum, grad = r if self.grad else (r, None)
        parts = np.array([float(loss_sum), weight_sum(t, self.class_weight, self.C,
                                                      self.ignore_index)])
        parts = parts.reshape((1,) * (self.ndim - 1) + (2,))
        if grad is None:
            return parts
        if scale is not None:
            _scale_grad(grad, float(scale), t, self.ignore_index, self.axis)
        return parts, grad


def _scale_grad(grad, scale, t, ignore_index, axis):
    """The gradient of a sum scaled to that of the mean, in place; an
    infinite scale (all weights 0) keeps ignored pixels at 0, as the op."""
    if math.isfinite(scale):
        # Two-byte gradients (float16, bfloat16) scaled in float32, rounded once more:
        # the scale itself rounded to bfloat16 would be off by up to 2**-9.
        grad *= grad.dtype.type(scale) if grad.dtype.itemsize > 2 else np.float32(scale)
        return
    keep = np.expand_dims(np.asarray(t) != ignore_index, axis)
    with np.errstate(invalid="ignore"):
        grad[...] = np.where(keep, grad * np.float32(scale), 0)


class _TargetWeights:
    """A targets-only task: their weight sum as a ``(1, ..., 1)`` block."""

    def __init__(self, class_weight, C, ignore_index):
        self.class_weight, self.C, self.ignore_index = class_weight, C, ignore_index

    def __dask_tokenize__(self):
        return ("TargetWeights", self.class_weight, self.C, self.ignore_index)

    def __call__(self, t):
        return np.full((1,) * t.ndim, weight_sum(t, self.class_weight, self.C,
                                                 self.ignore_index))


def _inverse(w):
    with np.errstate(divide="ignore"):
        return np.float64(1.0) / np.float64(w)


def _finish(parts, reduction):
    """The reduced loss from the summed ``(loss sum, weight sum)``: the sum,
    or their quotient (NaN when every pixel is ignored, without NumPy's
    warning), a float64 scalar."""
    loss_sum, weights = (np.float64(v) for v in np.asarray(parts).reshape(2))
    if reduction == "sum":
        return loss_sum
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss_sum / weights


def loss(call_sum, x, axis, target, *, class_weight, C, ignore_index, reduction, return_grad,
         grad_dtype):
    """A "mean" or "sum" loss (a lazy 0-d float64) from ``call_sum`` (the op
    with reduction="sum") per chunk, and with ``return_grad`` the gradient
    (x's chunks; ``grad_dtype``)."""
    t = as_target(target, x, axis)
    parts = LossParts(call_sum, class_weight, C, ignore_index, axis, x.ndim, return_grad)
    outputs = [Out("parts", _FLOAT64, shape=(2,))]
    if return_grad:
        outputs.append(Out("same", grad_dtype, size=x.shape[axis]))
    scalars = ()
    if return_grad and reduction == "mean":
        # The mean gradient's scale, 1 / sum of the weights, from the targets
        # alone (a read of the targets first, as the in-memory op makes).
        w = da.blockwise(_TargetWeights(class_weight, C, ignore_index), _letters(t.ndim), t,
                         _letters(t.ndim), adjust_chunks={c: 1 for c in _letters(t.ndim)},
                         meta=np.empty((0,) * t.ndim, _FLOAT64), token="fastlogits-weights")
        scalars = (w.sum().map_blocks(_inverse, meta=np.empty((), _FLOAT64)),)
    results = blockwise(parts, x, axis, outputs, t, scalars)
    value = total(results[0], 1).map_blocks(_finish, reduction, drop_axis=0,
                                         meta=np.empty((), _FLOAT64))
    return (value, results[1]) if return_grad else value


def counts(call, x, axis, target, C):
    """The (C, C) int64 confusion matrix: ``call`` per chunk, summed."""
    t = as_target(target, x, axis)
    blocks = blockwise(_Counts(call, x.ndim), x, axis, [Out("parts", np.int64, shape=(C, C))], t)
    return total(blocks[0], 2)


class _Counts:
    """A confusion chunk's task: its (C, C) counts as a (1, ..., 1, C, C) block."""

    def __init__(self, call, ndim):
        self.call, self.ndim, self.label = call, ndim, call.label

    def __dask_tokenize__(self):
        return ("Counts", self.call.__dask_tokenize__(), self.ndim)

    def __call__(self, x, t):
        m = self.call(x, t)
        return m.reshape((1,) * (self.ndim - 1) + m.shape)


def iou(fn, confusion):
    """``fn`` (the in-memory iou) of a lazy (C, C) matrix: a lazy (C,)."""
    cm = confusion.rechunk(-1)
    return cm.map_blocks(fn, drop_axis=1, meta=np.empty((0,), _FLOAT64))
