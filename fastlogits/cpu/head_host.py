"""The CPU backend's host side for :class:`fastlogits.LinearHead`: the
fused ``W f + b`` kernels of :mod:`fastlogits.cpu.ops.head` on flat views of
the features (float16 and strided views through bounded chunks). The
``"cpu"`` entries of the frontend's LinearHead dispatch tables.
"""

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, pool
from fastlogits._modes import LOGITS, MODES
from fastlogits.cpu import host, plan
from fastlogits.cpu.host import ChunkScratch, half_chunks, work_view
from fastlogits.cpu.llvm import half
from fastlogits.cpu.ops import head as k
from fastlogits.cpu.switches import switch
from fastlogits.cpu.threads import driver_for
from fastlogits.cpu.calls import share_literal_calls

share_literal_calls()  # the LinearHead's kernels too


def host_params(head, dtype):
    """``(W, b)`` in ``dtype`` on the host: W (C*N,) flat C-contiguous,
    b (C,) (zeros without bias). Views of the given arrays when their
    dtype and layout already fit (so in-place updates of the weights
    are seen), else converted for this call (C·N values: cheap next to
    the features)."""
    if chk.is_gpu_array(head.weight) or chk.is_gpu_array(head.bias):
        raise ValueError(
            "this LinearHead holds GPU weights: use backend='cuda' (or 'auto' with GPU "
            "features), or build the head from host arrays"
        )
    W = np.ascontiguousarray(head.weight, dtype=dtype).reshape(-1)
    if head.bias is None:
        b = np.zeros(head.num_classes, dtype)
    else:
        b = np.ascontiguousarray(head.bias, dtype=dtype)
    return W, b


def run_head(head, fv, kernel, cls=(), red=(), feat=(), red_in=()):
    """Run ``kernel(f1, outer, inner, W, b, cls1, red1, feat1, red_in1)``.

    ``f1`` is flat C-contiguous features (outer, N, inner) in the compute
    dtype; ``cls1`` / ``red1`` / ``feat1`` are flat C-contiguous views of
    the outputs shaped like the logits (outer, C, inner), like the
    reduced shape (outer, inner), like the features (outer, N, inner);
    ``red_in1`` flat C-contiguous views of reduced-shaped inputs
    (targets). Everything goes straight to the kernel when it already
    has that form, else through bounded chunks (float16, strided views).
    """
    cd = fv.compute_dtype
    outer, N, inner = _layout.split_shape(fv.shape, fv.axis)
    C = fv.C
    W, b = host_params(head, cd)
    f3 = _layout.canonical(fv.array, fv.axis)

    def flat(a, shape, need_dtype=True):
        v = _layout.reshape_view(a, shape)
        if v is None or not v.flags.c_contiguous or (need_dtype and v.dtype != cd):
            return None
        return v.reshape(-1)

    direct_in = f3.flags.c_contiguous and f3.dtype == cd
    cls1 = [flat(a, (outer, C, inner)) for a in cls]
    red1 = [flat(a, (outer, inner), a.dtype.kind == "f") for a in red]
    feat1 = [flat(a, (outer, N, inner)) for a in feat]
    rin1 = [flat(a, (outer, inner), False) for a in red_in]
    if direct_in and all(v is not None for v in cls1 + red1 + feat1 + rin1):
        kernel(f3.reshape(-1), outer, inner, W, b, cls1, red1, feat1, rin1)
        return

    # Chunked: outputs through canonical work views (a full temporary
    # only when an output's strides forbid a view, as in host.run_cpu).
    from fastlogits.cpu.llvm import half

    cviews = [work_view(a, (outer, C, inner)) for a in cls]
    rviews = [work_view(a, (outer, inner)) for a in red]
    fviews = [work_view(a, (outer, N, inner)) for a in feat]
    rin2 = [np.reshape(a, (outer, inner)) for a in red_in]
    scratch = ChunkScratch()
    for o0, o1, i0, i1 in half_chunks(outer, max(N, C, 1), inner):
        no, ni = o1 - o0, i1 - i0
        fs = scratch.get("f", (no, N, ni), cd)
        if f3.dtype == np.float16 and cd == np.float32:
            half.load(f3, o0, o1, i0, i1, out=fs)
        else:
            fs[...] = f3[o0:o1, :, i0:i1]
        cw = [scratch.get(("cls", k), (no, C, ni), cd) for k in range(len(cls))]
        rw = [scratch.get(("red", k), (no, ni), v.dtype if v.dtype.kind in "iu" else cd)
              for k, (v, _) in enumerate(rviews)]
        fw = [scratch.get(("feat", k), (no, N, ni), cd) for k in range(len(feat))]
        ri = [np.ascontiguousarray(a[o0:o1, i0:i1]).reshape(-1) for a in rin2]
        kernel(fs.reshape(-1), no, ni, W, b, [a.reshape(-1) for a in cw],
               [a.reshape(-1) for a in rw], [a.reshape(-1) for a in fw], ri)
        # store: NumPy's cast is slow for float16 subnormals (cpu.llvm.half).
        for (v, _), w in zip(cviews + rviews + fviews, cw + rw + fw):
            half.store(v, o0, o1, i0, i1, w)
    for (view, tmp), arr in zip(cviews + rviews + fviews, list(cls) + list(red) + list(feat)):
        if tmp is not None:
            arr[...] = tmp.reshape(arr.shape)


def expnorm(head, op, fv, temperature, out):
    """logits, softmax, log_softmax or logsumexp (``op``) of the head on
    the validated features ``fv`` into ``out`` (checked, or None)."""
    reduces = op == "logsumexp"
    if out is None:
        out = pool.empty(fv.reduced_shape if reduces else fv.class_shape, fv.dtype)
    if fv.empty:
        return out
    mode = LOGITS if op == "logits" else MODES[op]
    inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
    dot = plan.cl_dot_form(fv.C, fv.N)
    tile = plan.tile_pixels(fv.C, fv.N, dot)
    dummy = np.empty(1, fv.compute_dtype)

    def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
        launch, threads = driver_for(k.head_expnorm, fv.work(outer * inner))
        with threads() as nthreads:
            launch(f1, outer, fv.N, inner, W, b, cls[0] if cls else dummy,
                   red[0] if red else dummy, inv_t, mode, tile, nthreads, dot)

    if reduces:
        run_head(head, fv, kernel, red=[out])
    else:
        run_head(head, fv, kernel, cls=[out])
    return out


def argmax(head, fv, temperature, out, with_conf):
    """argmax (``with_conf`` False: ``out`` the labels) or classify
    (``out`` a tuple) of the head on ``fv`` into the checked outputs
    (None: allocated)."""
    labels_out, conf_out = (out or (None, None)) if with_conf else (out, None)
    if labels_out is None:
        labels_out = pool.empty(fv.reduced_shape, np.int64)
    if with_conf and conf_out is None:
        conf_out = pool.empty(fv.reduced_shape, fv.compute_dtype)
    if not fv.empty:
        labels_into(head, fv, labels_out, conf_out if with_conf else None,
               chk.inv_temperature(temperature, fv.compute_dtype))
    return (labels_out, conf_out) if with_conf else labels_out


def labels_into(head, fv, labels, conf, inv_t):
    """The CPU argmax (``conf`` None) or classify of the head's logits
    into ``labels`` (and ``conf``), shaped like the reduced shape."""
    with_conf = conf is not None
    dot = plan.cl_dot_form(fv.C, fv.N)
    tile = plan.tile_pixels(fv.C, fv.N, dot)
    dummy = np.empty(1, fv.compute_dtype)

    def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
        launch, threads = driver_for(k.head_argmax, fv.work(outer * inner))
        with threads() as nthreads:
            launch(f1, outer, fv.N, inner, W, b, red[0], red[1] if with_conf else dummy, inv_t,
                   with_conf, tile, nthreads, dot)

    labels = host.label_view(labels)
    run_head(head, fv, kernel, red=[labels, conf] if with_conf else [labels])


def cross_entropy(head, fv, target, *, class_weight, ignore_index, label_smoothing, reduction,
                  return_grad):
    """cross_entropy of the head on ``fv`` against the host ``target``
    (checked dtype and shape); the gradient is w.r.t. the features."""
    t = host.host_target(target, fv.C, ignore_index)
    C = fv.C
    cd = fv.compute_dtype
    w64, w = host.class_weights(class_weight, C, cd)
    loss = np.zeros(fv.reduced_shape, cd) if reduction == "none" else None
    grad = pool.empty(fv.shape, fv.dtype) if return_grad else None
    if fv.empty:
        return host.empty_result(reduction, loss, grad, return_grad)
    gscale = host.grad_scale(t, w64, C, ignore_index, reduction, return_grad)

    dot = plan.cl_dot_form(C, fv.N)
    tile = plan.tile_pixels(C, fv.N, dot)
    dummy = np.empty(1, cd)
    sums = []

    def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
        launch, threads = driver_for(k.head_xent, fv.work(outer * inner))
        with threads() as nthreads:
            table = plan.chunk_table(nthreads, 3)
            launch(f1, outer, fv.N, inner, W, b, rin[0], w, w64, ignore_index, label_smoothing,
                   gscale, feat[0] if return_grad else dummy, switch(return_grad),
                   red[0] if loss is not None else dummy, loss is not None, tile, nthreads, dot,
                   table)
        sums.append(plan.table_sums(table))

    run_head(head, fv, kernel, red=[loss] if loss is not None else [],
                  feat=[grad] if return_grad else [], red_in=[t])
    return host.finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad)


def confusion_matrix(head, fv, target, *, ignore_index, out):
    """The CPU confusion matrix, added to ``out`` (None: a new one), as
    :func:`fastlogits.cpu.host.confusion_matrix`: the fused argmax and
    private histograms, or the labels first where those do not pay
    (:func:`fastlogits.cpu.plan.labels_first`)."""
    C = fv.C
    t = host.host_target(target, C, ignore_index)
    if fv.empty:
        return host.add_counts(np.zeros((C, C), np.int64), out)
    if plan.labels_first(C, fv.reduced_shape):
        labels = pool.empty(fv.reduced_shape, np.int64)  # argmax's own: one compiled kernel
        labels_into(head, fv, labels, None, fv.compute_dtype.type(1.0))
        return host.confusion_from_labels(labels, t, C, ignore_index, out)
    counts = np.zeros((C, C), np.int64)
    dot = plan.cl_dot_form(C, fv.N)
    tile = plan.tile_pixels(C, fv.N, dot)
    bad = []

    def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
        bad.append(plan.binned(k.head_confusion, (f1, outer, fv.N, inner, W, b, rin[0]),
                               ignore_index, counts, outer * inner, fv.work(outer * inner), tile,
                               dot))

    run_head(head, fv, kernel, red_in=[t])
    if sum(bad):
        chk.check_target_values(t, C, ignore_index)
    return host.add_counts(counts, out)
