"""The CPU backend's host side: what runs between the frontend's checks
and the Numba kernels, for the logits ops and the losses.

:func:`run_cpu` hands a kernel the canonical (outer, C, inner) view of x
and of its outputs (float16 and bfloat16 as their bits, or through
bounded float32 chunks); the op functions take the frontend's validated
:class:`fastlogits._frontend.Logits` and host outputs, and are the
``"cpu"`` entries of its dispatch tables. The ``*_plan`` functions make
the frontend's plans of repeated calls (:func:`fastlogits._frontend.planned_call`):
a call's outputs and launch bound once per geometry. Nothing here
validates input (except the target values, which the kernels flag).
"""

import functools
import math

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, pool, tuning
from fastlogits._modes import MODES
from fastlogits.cpu import plan
from fastlogits.cpu.llvm import half
from fastlogits.cpu.ops import confusion as kc
from fastlogits.cpu.ops import losses as kl
from fastlogits.cpu.plan import run_argmax, run_expnorm
from fastlogits.cpu.threads import driver_for, thread_count

_NATIVE_TARGET_DTYPES = (np.dtype(np.uint8), np.dtype(np.int64))
_FLOAT64 = np.dtype(np.float64)


# --------------------------------------------------------------------------
# canonical views, float16 chunks
# --------------------------------------------------------------------------


def work_view(arr, shape):
    """``(view, temp)``: a no-copy reshape of ``arr`` or, if its strides
    forbid one, a temporary to copy back from after the kernel."""
    if arr.flags.c_contiguous:  # every output fastlogits allocates: a view
        return arr.reshape(shape), None
    v = _layout.reshape_view(arr, shape)
    if v is not None:
        return v, None
    tmp = pool.empty(shape, arr.dtype)
    return tmp, tmp


def run_cpu(lg, full, reduced, kernel, reduced_like_x=False):
    """Run ``kernel(x3, full3s, red2s)`` on canonical views of x and outputs.

    ``full``: outputs shaped like x, of x's dtype; ``reduced``: outputs
    without the class axis (of x's dtype where ``reduced_like_x``, else of
    their own). Two-byte float x, float16 or bfloat16 (``lg.bfloat16``: x
    and its outputs of x's dtype are bfloat16 bits, uint16), goes to the
    kernel with its outputs of x's dtype as their bits, each format in its
    own integer dtype (float16 as uint16, bfloat16 as int16:
    :mod:`fastlogits.cpu.llvm.scores`) where
    :func:`fastlogits.cpu.plan.half_direct`; else through float32 chunks
    (x and any such output), bounded by ``cpu_half_chunk_elements``.
    """
    outer, C, inner = shape3 = lg.shape3
    x3 = lg.array.reshape(shape3)  # a view where the strides allow, else a C-order copy
    fviews = [work_view(a, shape3) for a in full]
    rviews = [work_view(a, (outer, inner)) for a in reduced]
    f3 = [v for v, _ in fviews]
    r2 = [v for v, _ in rviews]
    bf16 = getattr(lg, "bfloat16", False)
    if lg.dtype != np.float16 and not bf16:
        kernel(x3, f3, r2)
    else:
        # Which outputs hold x's two-byte format (all of x's shape do).
        halves = [True] * len(f3) + [reduced_like_x if bf16 else a.dtype == np.float16
                                     for a in r2]
        if plan.half_direct():
            kbits = np.int16 if bf16 else np.uint16
            outs = [a.view(kbits) if h else a for a, h in zip(f3 + r2, halves)]
            kernel(x3.view(kbits), outs[:len(f3)], outs[len(f3):])
        else:
            _run_chunked(x3, f3, r2, halves, bf16, kernel)
    for (view, tmp), arr in zip(fviews + rviews, list(full) + list(reduced)):
        if tmp is not None:
            arr[...] = tmp.reshape(arr.shape)


#: The one integer dtype of each width the label kernels are compiled for.
#: Labels are in [0, C) and an ``out=`` must hold C - 1, so a signed and
#: an unsigned label of one width have the same bits: a view of the other
#: type costs nothing and saves a compile of the whole driver per dtype.
_LABEL_KERNEL_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.int32),
                        8: np.dtype(np.int64)}


def label_view(a):
    """Labels ``a`` (any integer dtype holding C - 1) as the kernels take
    them: a view of the one dtype compiled for its width
    (:data:`_LABEL_KERNEL_DTYPES`); the same array where it has it."""
    kernel_dtype = _LABEL_KERNEL_DTYPES[a.dtype.itemsize]
    return a if a.dtype == kernel_dtype else a.view(kernel_dtype)


def _run_chunked(x3, f3, r2, halves, bf16, kernel):
    """:func:`run_cpu` through float32 chunks: x's chunk converted into
    float32 scratch, the outputs of x's format (``halves``) computed in
    float32 scratch and rounded into place once."""
    outer, C, inner = x3.shape
    scratch = ChunkScratch()
    for o0, o1, i0, i1 in half_chunks(outer, C, inner):
        xs = half.load(x3, o0, o1, i0, i1, bfloat16=bf16,
                       out=scratch.get("x", (o1 - o0, C, i1 - i0), np.float32))
        views = [a[o0:o1, :, i0:i1] for a in f3] + [a[o0:o1, i0:i1] for a in r2]
        work = [scratch.get(k, a.shape, np.float32) if h else a
                for k, (a, h) in enumerate(zip(views, halves))]
        kernel(xs, work[:len(f3)], work[len(f3):])
        for whole, view, src in zip(f3 + r2, views, work):
            if view is not src:  # not NumPy's cast: slow for subnormals
                half.store(whole, o0, o1, i0, i1, src, bfloat16=bf16)


class ChunkScratch:
    """The working arrays of a chunked loop (:func:`half_chunks`), one
    buffer per name, allocated at the first (largest) chunk and reused by
    the others.

    A fresh array per chunk was faulted in page by page whenever glibc's
    heap had given the previous one back: float16 cross-entropy of a
    channels-first 1024 x 2048 x 19 map took 28.6 ms in such a heap
    state, against 11.6 (docs/perf/cpu-054)."""

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


def half_chunks(outer, C, inner):
    """Slices (o0, o1, i0, i1) of the (outer, inner) pixels, each holding at
    most ``cpu_half_chunk_elements`` scores (at least one pixel)."""
    budget = max(1, tuning.current().cpu.half_chunk_elements // C)
    if inner <= budget:
        step = max(1, budget // inner)
        for o0 in range(0, outer, step):
            yield o0, min(o0 + step, outer), 0, inner
    else:
        for o in range(outer):
            for i0 in range(0, inner, budget):
                yield o, o + 1, i0, min(i0 + budget, inner)


# --------------------------------------------------------------------------
# softmax, log_softmax, logsumexp, argmax, classify
# --------------------------------------------------------------------------

#: The kernels' mode of each exp op.


def expnorm(op, lg, temperature, out):
    """softmax, log_softmax or logsumexp (``op``) of the validated logits
    ``lg`` into ``out`` (a checked host output, or None: allocated)."""
    reduces = op == "logsumexp"
    if out is None:
        out = pool.empty(lg.reduced_shape if reduces else lg.shape, lg.dtype, like=lg.array)
    if lg.empty:
        return out
    mode = MODES[op]
    inv_t = chk.inv_temperature(temperature, lg.dtype)
    if reduces:
        run_cpu(lg, [], [out], lambda x3, f, r: run_expnorm(x3, None, r[0], inv_t, mode),
                reduced_like_x=True)
    else:
        run_cpu(lg, [out], [], lambda x3, f, r: run_expnorm(x3, f[0], None, inv_t, mode))
    return out


def argmax(lg, out):
    """Labels of the validated logits ``lg`` into ``out`` (or new int64)."""
    if out is None:
        out = pool.empty(lg.reduced_shape, np.int64)
    if not lg.empty:
        one = lg.compute_dtype.type(1.0)
        run_cpu(lg, [], [label_view(out)], lambda x3, f, r: run_argmax(x3, r[0], None, one))
    return out


def classify(lg, temperature, out):
    """``(labels, confidence)`` of ``lg`` into ``out``, a tuple of checked
    outputs (None, or either None: allocated)."""
    labels, conf = out or (None, None)
    if labels is None:
        labels = pool.empty(lg.reduced_shape, np.int64)
    if conf is None:
        conf = pool.empty(lg.reduced_shape, lg.compute_dtype)
    if not lg.empty:
        inv_t = chk.inv_temperature(temperature, lg.dtype)
        run_cpu(lg, [], [label_view(labels), conf],
                lambda x3, f, r: run_argmax(x3, r[0], r[1], inv_t))
    return labels, conf


# --------------------------------------------------------------------------
# cross_entropy, confusion_matrix
# --------------------------------------------------------------------------


def host_target(t, C, ignore_index):
    """The host target as a C-contiguous array of a dtype the CPU kernels
    read directly (uint8 or int64; other integer dtypes are converted)."""
    if t.dtype in _NATIVE_TARGET_DTYPES:
        return np.ascontiguousarray(t)
    if t.dtype == np.uint64:  # values above int64's range would wrap when cast
        chk.check_target_values(t, C, ignore_index)
    return t.astype(np.int64)


@functools.lru_cache(maxsize=16)
def _unit_weights(C, dtype):
    return np.ones(C, dtype)


def class_weights(class_weight, C, dtype):
    """``(w64, w)``: the class weights (a checked float64 array, or None:
    C ones) in float64 and in the computed ``dtype``. The ones are made
    once per (C, dtype) and shared by the calls (the kernels only read
    them): at 128000 classes a fresh pair cost more than a loss over a
    few rows."""
    if class_weight is None:
        return _unit_weights(C, _FLOAT64), _unit_weights(C, np.dtype(dtype))
    # class_weight is already the float64 copy the frontend's check made.
    return class_weight, class_weight.astype(dtype, copy=False)


def empty_result(reduction, loss, grad, return_grad):
    """cross_entropy's result on an input with no pixels (PyTorch's: a
    "mean" over nothing is NaN, a "sum" 0)."""
    if grad is not None:
        grad[...] = 0
    total = np.float64(0.0) if reduction == "sum" else np.float64(np.nan)
    result = loss if reduction == "none" else total
    return (result, grad) if return_grad else result


def grad_scale(t, w64, C, ignore_index, reduction, return_grad, check=False):
    """The factor of the gradient: 1, or 1 / sum(w[t]) for a "mean" gradient.

    That sum must be known before the pass that writes the gradient, so it
    costs one read of the targets first, which also checks their values;
    with ``check`` that read is made for any reduction (a caller's
    ``grad_out`` must not be written when a target is bad).
    """
    if not (return_grad and (reduction == "mean" or check)):
        return 1.0
    kernel, threads = driver_for(kl.target_weight_sum, t.size)
    with threads() as nthreads:
        table = plan.chunk_table(nthreads, 2)
        kernel(t.reshape(-1), w64, ignore_index, nthreads, table)
    total_weight, nbad = plan.table_sums(table)
    if nbad:
        chk.check_target_values(t, C, ignore_index)
    if reduction != "mean":
        return 1.0
    return math.inf if total_weight == 0 else 1.0 / total_weight


def cross_entropy(lg, target, *, grad_out=None, **options):
    """cross_entropy of ``lg`` against the host ``target`` (checked dtype
    and shape; its values are checked by the kernels' flag) with the
    frontend's checked ``options``, the gradient into ``grad_out``
    (checked) or a new array."""
    t = host_target(target, lg.C, options["ignore_index"])
    return _cross_entropy(lg, t, grad_out=grad_out, **options)


def _cross_entropy(lg, t, *, class_weight, ignore_index, label_smoothing, reduction,
                   return_grad, grad_out=None):
    C = lg.C
    w64, w = class_weights(class_weight, C, lg.compute_dtype)
    loss = np.zeros(lg.reduced_shape, lg.compute_dtype) if reduction == "none" else None
    grad = grad_out if grad_out is not None else (
        pool.empty(lg.shape, lg.dtype, like=lg.array) if return_grad else None)
    if lg.empty:
        return empty_result(reduction, loss, grad, return_grad)
    gscale = grad_scale(t, w64, C, ignore_index, reduction, return_grad,
                        check=grad_out is not None)

    sums = []

    def kernel(x3, full, red):
        sums.append(plan.run_cross_entropy(
            x3, red[0], full[0] if return_grad else None, red[1] if loss is not None else None,
            w, w64, ignore_index, label_smoothing, gscale))

    run_cpu(lg, [grad] if return_grad else [], [t] + ([loss] if loss is not None else []),
             kernel)
    return finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad)


def finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad):
    """cross_entropy's result from the kernels' ``[loss_sum, weight_sum,
    bad_count]`` of each call (one per float16 chunk): a bad target
    raises; else the "none" losses, the "sum", or the "mean" (NaN or
    +-inf where the weights sum to 0, as PyTorch's, without NumPy's
    warning)."""
    # Python floats, not NumPy's sum (2.6 us on a small input); the sum of
    # several starts from -0.0, the identity of addition, as NumPy's does.
    if len(sums) == 1:
        loss_sum, weight_sum, nbad = sums[0].tolist()
    else:
        loss_sum, weight_sum, nbad = (sum((float(r[k]) for r in sums), -0.0) for k in range(3))
    if nbad:
        chk.check_target_values(t, C, ignore_index)
    if reduction == "none":
        result = loss
    elif reduction == "sum":
        result = np.float64(loss_sum)
    elif 0 < abs(weight_sum) < math.inf:
        result = np.float64(loss_sum) / np.float64(weight_sum)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.float64(loss_sum) / np.float64(weight_sum)
    return (result, grad) if return_grad else result


def add_counts(counts, out):
    """``counts``, or ``out`` with ``counts`` added (``out`` not None)."""
    if out is None:
        return counts
    out += counts
    return out


def confusion_from_labels(labels, t, C, ignore_index, out):
    """The (C, C) counts of ``labels`` against the targets ``t`` (same
    shape) added to ``out`` (None: a new matrix) in one serial pass; a bad
    target raises, ``out`` untouched."""
    dest = np.zeros((C, C), np.int64) if out is None else out
    if kc.bin_labels(np.ravel(t), labels.reshape(-1), ignore_index, dest):
        chk.check_target_values(t, C, ignore_index)
    return dest


def confusion_matrix(lg, target, *, ignore_index, out):
    """The (C, C) counts of ``lg``'s labels against the host ``target``,
    added to ``out`` (checked) or a new matrix; ``out`` is untouched when
    a target value is bad."""
    return _confusion_matrix(lg, host_target(target, lg.C, ignore_index), ignore_index, out)


def _confusion_matrix(lg, t, ignore_index, out):
    """The CPU confusion matrix, added to ``out`` (None: a new one): by the
    fused argmax and private histograms or, where those do not pay
    (:func:`fastlogits.cpu.plan.labels_first`), the labels first."""
    C = lg.C
    if lg.empty:
        return add_counts(np.zeros((C, C), np.int64), out)
    if plan.labels_first(C, lg.reduced_shape):
        # int64, argmax's own labels: one compiled kernel for both (int32
        # labels saved 4 bytes a pixel where x has C >= 64 scores each).
        labels = pool.empty(lg.reduced_shape, np.int64)
        one = lg.compute_dtype.type(1.0)
        run_cpu(lg, [], [labels], lambda x3, f, r: run_argmax(x3, r[0], None, one))
        return confusion_from_labels(labels, t, C, ignore_index, out)
    counts = np.zeros((C, C), np.int64)
    bad = []

    def kernel(x3, full, red):
        bad.append(plan.run_confusion(x3, red[0], ignore_index, counts))

    run_cpu(lg, [], [t], kernel)
    if sum(bad):
        chk.check_target_values(t, C, ignore_index)
    return add_counts(counts, out)


# --------------------------------------------------------------------------
# plans of repeated calls (the frontend's plan cache)
# --------------------------------------------------------------------------


def _plannable(lg):
    """Whether calls of ``lg``'s geometry have a plan: float32 or float64
    scores and at least one pixel (two-byte floats go by :func:`run_cpu`'s
    bits or chunks, read per call)."""
    return not lg.empty and lg.dtype in (np.float32, np.float64)


def _allocator(shape, dtype):
    """``new(like)``: a plan's output of ``shape`` and ``dtype``, from
    :func:`fastlogits.pool.empty` where the pool would take it (its
    threshold read now: the tuning is part of a plan's key), else a plain
    ``np.empty``; ``like`` as the pool's."""
    nbytes = _layout.size_of(shape) * np.dtype(dtype).itemsize
    if nbytes < tuning.current().cpu.output_pool_min_bytes:
        return lambda like: np.empty(shape, dtype)
    return lambda like: pool.empty(shape, dtype, like=like)


def expnorm_plan(op, lg, out=None):
    """``run(x, temperature, out=None)``: :func:`expnorm` of a NumPy x of
    ``lg``'s shape, strides and dtype into ``out`` (checked by the caller;
    of the given ``out``'s geometry) or a new output, every decision made
    now (the kernel's by :func:`fastlogits.cpu.plan.expnorm_launch`); None
    where such calls have no plan (:func:`_plannable`, or an ``out`` that
    is not C-contiguous)."""
    if not _plannable(lg) or not (out is None or out.flags.c_contiguous):
        return None
    outer, C, inner = shape3 = lg.shape3
    reduces = op == "logsumexp"
    shape = lg.reduced_shape if reduces else lg.shape
    new = _allocator(shape, lg.dtype)
    template = None if reduces else np.empty(shape, lg.dtype).reshape(shape3)
    launch = plan.expnorm_launch(lg.array.reshape(shape3), template)
    mode, dtype = MODES[op], lg.dtype

    def run(x, temperature, out=None):
        inv_t = chk.inv_temperature(temperature, dtype)
        if out is None:
            out = new(x)
        if reduces:
            launch(x.reshape(shape3), None, out.reshape(outer, inner), inv_t, mode)
        else:
            launch(x.reshape(shape3), out.reshape(shape3), None, inv_t, mode)
        return out
    return run


def argmax_plan(lg, out=None):
    """``run(x, out=None)``: :func:`argmax` of a NumPy x of ``lg``'s
    geometry into ``out`` (labels of the given ``out``'s geometry and
    dtype) or new int64 labels, as :func:`expnorm_plan`."""
    if not _plannable(lg) or not (out is None or out.flags.c_contiguous):
        return None
    outer, C, inner = shape3 = lg.shape3
    reduced = lg.reduced_shape
    new = _allocator(reduced, np.int64)
    launch = plan.argmax_launch(lg.array.reshape(shape3), False)
    one = lg.compute_dtype.type(1.0)

    def run(x, out=None):
        if out is None:
            out = new(x)
        launch(x.reshape(shape3), label_view(out).reshape(outer, inner), None, one)
        return out
    return run


def classify_plan(lg):
    """``run(x, temperature)``: :func:`classify` of a NumPy x of ``lg``'s
    geometry into new outputs, as :func:`expnorm_plan`."""
    if not _plannable(lg):
        return None
    outer, C, inner = shape3 = lg.shape3
    reduced, dtype, cdt = lg.reduced_shape, lg.dtype, lg.compute_dtype
    new_labels, new_conf = _allocator(reduced, np.int64), _allocator(reduced, cdt)
    launch = plan.argmax_launch(lg.array.reshape(shape3), True)

    def run(x, temperature):
        inv_t = chk.inv_temperature(temperature, dtype)
        labels, conf = new_labels(x), new_conf(x)
        launch(x.reshape(shape3), labels.reshape(outer, inner), conf.reshape(outer, inner),
               inv_t)
        return labels, conf
    return run


def cross_entropy_plan(lg, *, class_weight, ignore_index, label_smoothing, reduction,
                       return_grad):
    """``run(x, target)``: :func:`cross_entropy` of a NumPy x of ``lg``'s
    geometry against a host target (checked dtype and shape; its values
    checked by the kernels' flag) with these checked options (no class
    weights), the gradient into a new array; as :func:`expnorm_plan`."""
    if not _plannable(lg) or class_weight is not None:
        return None
    outer, C, inner = shape3 = lg.shape3
    shape, reduced, dtype, cdt = lg.shape, lg.reduced_shape, lg.dtype, lg.compute_dtype
    w64, w = class_weights(None, C, cdt)
    want_loss = reduction == "none"
    new_grad = _allocator(shape, dtype)
    launch = plan.cross_entropy_launch(np.ascontiguousarray(lg.array.reshape(shape3)),
                                       return_grad, want_loss)

    def run(x, target):
        t = host_target(target, C, ignore_index)
        loss = np.zeros(reduced, cdt) if want_loss else None
        grad = new_grad(x) if return_grad else None
        gscale = grad_scale(t, w64, C, ignore_index, reduction, return_grad)
        sums = [launch(np.ascontiguousarray(x.reshape(shape3)), t.reshape(outer, inner),
                       None if grad is None else grad.reshape(shape3),
                       None if loss is None else loss.reshape(outer, inner), w, w64,
                       ignore_index, label_smoothing, gscale)]
        return finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad)
    return run
