"""LinearHead: a classifier head ``z = W f + b`` fused with the ops on z.

A linear head is a 1×1 convolution applied to every pixel's feature vector.
:meth:`LinearHead.logits` materializes z; every other method (softmax,
log_softmax, logsumexp, argmax, classify, cross_entropy, confusion_matrix)
computes the logits of a tile of pixels into a scratch tile that stays in
cache and runs the op's epilogue on it there, so the (..., C) logits tensor
never exists: the extra memory is the outputs alone.

Backends as everywhere: ``"numpy"`` is the reference (logits in float64,
then :mod:`fastlogits.reference`), ``"cpu"`` the fused Numba kernels of
:mod:`fastlogits.cpu.head`, ``"cuda"`` :mod:`fastlogits.cuda.head`
(functions of the same names, called as ``name(head, f, fv, **options)``
with ``fv`` the validated features).

Host-side data movement (:meth:`LinearHead._run_cpu`): the kernels read
C-contiguous float32/float64 features as (outer, N, inner) and write
C-contiguous outputs. float16 features, non-contiguous views and outputs
that are not C-contiguous in the compute dtype go through chunks of at
most ``config.CPU_HALF_CHUNK_ELEMENTS`` values, so their extra memory
stays bounded.
"""


import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, pool, reference
from fastlogits.api import (ChunkScratch, _check_host_out, _half_chunks, _labels_out, _work_view,
                            resolve_backend)

__all__ = ["LinearHead"]


def _shape_dtype(a):
    """``(shape, dtype)`` of a host or GPU array (GPU: from its interface)."""
    if chk.is_gpu_array(a):
        return chk.gpu_shape_dtype(a)
    a = np.asarray(a)
    return a.shape, a.dtype


class _Features:
    """Validated features: array, axis, N (features), C (classes), shapes.

    Duck-types :class:`fastlogits.api._Logits` for the shared output checks
    (``array``, ``reduced_shape``, ``C``, ``compute_dtype``), with ``C`` the
    number of classes of the head.
    """

    def __init__(self, f, axis, head):
        self.gpu = chk.is_gpu_array(f)
        if self.gpu:
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


class LinearHead:
    """A linear classifier head ``z = W f + b``, fused with the logits ops.

    Parameters
    ----------
    weight : array_like or GPU array, shape (C, N)
        C classes of N features each (float16, float32 or float64), like
        ``torch.nn.Linear.weight`` or a 1×1 convolution's weight squeezed.
    bias : array_like or GPU array, shape (C,), optional
        Added to every pixel's logits (zero when None).

    Notes
    -----
    Every method takes features ``f`` with the feature axis at ``axis``
    (default -1: channels-last (..., N); ``axis=1`` for (B, N, H, W)) and
    returns what the module-level function of the same name returns for
    the logits ``z`` (the class axis where the feature axis was). Only
    :meth:`logits` materializes z.

    Precision: float64 features are computed in float64, float16 and
    float32 features in float32 (the weights are rounded to that dtype).
    The CPU accumulates each logit in that precision, so for every class c
    ``|z_c - z_c(exact)| <= (N + 2) u (|b_c| + sum_n |W_cn f_n|)`` with
    u = 2**-24 for float32 (2**-53 for float64), to first order in u;
    the typical error is about ``sqrt(N)`` times u times that sum. Labels
    therefore equal the float64 reference's wherever its top-2 margin
    exceeds twice the bound (in practice, with logits of order 10 and N in
    the hundreds, wherever it exceeds 1e-3).

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> head = fl.LinearHead([[1, -1, 0.5], [0.8, 0.5, -0.3], [-0.5, 1.2, 1]],
    ...                      [0.2, -0.1, 0.5])
    >>> f = np.array([0.5, 0.8, 1.2])
    >>> head.logits(f).round(2)
    array([0.5 , 0.34, 2.41])
    >>> labels, confidence = head.classify(f)
    >>> int(labels), round(float(confidence), 3)
    (2, 0.785)
    """

    def __init__(self, weight, bias=None):
        if not chk.is_gpu_array(weight):
            weight = _layout.host_array(weight)
        wshape, wdtype = _shape_dtype(weight)
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
            bshape, bdtype = _shape_dtype(bias)
            if bdtype not in chk.FLOAT_DTYPES:
                raise TypeError(
                    f"bias must hold float16, float32 or float64 values, got dtype {bdtype}")
            if tuple(bshape) != (wshape[0],):
                raise ValueError(
                    f"bias has shape {tuple(bshape)}, expected ({wshape[0]},) "
                    f"to match weight of shape {tuple(wshape)}"
                )
        self._weight = weight
        self._bias = bias
        self.weight_shape = tuple(int(n) for n in wshape)

    # ------------------------------------------------------------------
    # properties
    # ------------------------------------------------------------------

    @property
    def weight(self):
        """The weight as given, (C, N)."""
        return self._weight

    @property
    def bias(self):
        """The bias as given, (C,), or None."""
        return self._bias

    @property
    def num_classes(self):
        """C, the number of classes (rows of the weight)."""
        return self.weight_shape[0]

    @property
    def num_features(self):
        """N, the number of features per pixel (columns of the weight)."""
        return self.weight_shape[1]

    def __repr__(self):
        return (f"LinearHead(num_classes={self.num_classes}, num_features={self.num_features}, "
                f"bias={self._bias is not None})")

    def _host_params(self, dtype):
        """``(W, b)`` in ``dtype`` on the host: W (C*N,) flat C-contiguous,
        b (C,) (zeros without bias). Views of the given arrays when their
        dtype and layout already fit (so in-place updates of the weights
        are seen), else converted for this call (C·N values: cheap next to
        the features)."""
        if chk.is_gpu_array(self._weight) or chk.is_gpu_array(self._bias):
            raise ValueError(
                "this LinearHead holds GPU weights: use backend='cuda' (or 'auto' with GPU "
                "features), or build the head from host arrays"
            )
        W = np.ascontiguousarray(self._weight, dtype=dtype).reshape(-1)
        if self._bias is None:
            b = np.zeros(self.num_classes, dtype)
        else:
            b = np.ascontiguousarray(self._bias, dtype=dtype)
        return W, b

    # ------------------------------------------------------------------
    # shared machinery
    # ------------------------------------------------------------------

    def _prepare(self, f, axis, backend):
        fv = _Features(f, axis, self)
        be = resolve_backend(backend, f)
        return fv, be

    def _cuda(self, name, f, fv, **options):
        try:
            from fastlogits.cuda import head as cuda_head
        except ImportError as exc:
            raise ValueError(f"backend='cuda' is not available for LinearHead: {exc}") from exc
        return getattr(cuda_head, name)(self, f, fv, **options)

    def _reference_logits(self, fv):
        """float64 logits with the class axis at ``fv.axis`` (the reference:
        ``F.linear`` in float64)."""
        W = np.asarray(self._weight, dtype=np.float64)
        f = np.moveaxis(np.asarray(fv.array, dtype=np.float64), fv.axis, -1)
        with np.errstate(invalid="ignore", over="ignore"):  # inf features: NaN/inf logits
            z = f @ W.T
            if self._bias is not None:
                z = z + np.asarray(self._bias, dtype=np.float64)
        return np.moveaxis(z, -1, fv.axis)

    def _run_cpu(self, fv, kernel, cls=(), red=(), feat=(), red_in=()):
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
        W, b = self._host_params(cd)
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
        # only when an output's strides forbid a view, as in api._run_cpu).
        from fastlogits.cpu.half import load, store

        cviews = [_work_view(a, (outer, C, inner)) for a in cls]
        rviews = [_work_view(a, (outer, inner)) for a in red]
        fviews = [_work_view(a, (outer, N, inner)) for a in feat]
        rin2 = [np.reshape(a, (outer, inner)) for a in red_in]
        scratch = ChunkScratch()
        for o0, o1, i0, i1 in _half_chunks(outer, max(N, C, 1), inner):
            no, ni = o1 - o0, i1 - i0
            fs = scratch.get("f", (no, N, ni), cd)
            if f3.dtype == np.float16 and cd == np.float32:
                load(f3, o0, o1, i0, i1, out=fs)
            else:
                fs[...] = f3[o0:o1, :, i0:i1]
            cw = [scratch.get(("cls", k), (no, C, ni), cd) for k in range(len(cls))]
            rw = [scratch.get(("red", k), (no, ni), v.dtype if v.dtype.kind in "iu" else cd)
                  for k, (v, _) in enumerate(rviews)]
            fw = [scratch.get(("feat", k), (no, N, ni), cd) for k in range(len(feat))]
            ri = [np.ascontiguousarray(a[o0:o1, i0:i1]).reshape(-1) for a in rin2]
            kernel(fs.reshape(-1), no, ni, W, b, [a.reshape(-1) for a in cw],
                   [a.reshape(-1) for a in rw], [a.reshape(-1) for a in fw], ri)
            # store: NumPy's cast is slow for float16 subnormals (cpu.half).
            for (v, _), w in zip(cviews + rviews + fviews, cw + rw + fw):
                store(v, o0, o1, i0, i1, w)
        for (view, tmp), arr in zip(cviews + rviews + fviews, list(cls) + list(red) + list(feat)):
            if tmp is not None:
                arr[...] = tmp.reshape(arr.shape)

    # ------------------------------------------------------------------
    # logits, softmax, log_softmax, logsumexp
    # ------------------------------------------------------------------

    def _expnorm(self, op, f, axis, temperature, out, backend):
        fv, be = self._prepare(f, axis, backend)
        if op != "logits":
            chk.check_temperature(temperature)
        reduces = op == "logsumexp"
        out_shape = fv.reduced_shape if reduces else fv.class_shape
        if be == "cuda":
            opts = dict(out=out) if op == "logits" else dict(temperature=temperature, out=out)
            return self._cuda(op, f, fv, **opts)
        out = _check_host_out(fv, out, out_shape, fv.dtype, "out")
        if be == "numpy":
            z = self._reference_logits(fv)
            if op == "logits":
                res = z
            else:
                res = getattr(reference, op)(z, fv.axis, temperature=temperature)
            res = np.asarray(res).astype(fv.dtype)
            if out is None:
                return res
            out[...] = res
            return out
        if out is None:
            out = pool.empty(out_shape, fv.dtype)
        if fv.empty:
            return out

        from fastlogits.cpu import head as k
        from fastlogits.cpu import launch_threads

        mode = {"logits": k.LOGITS, "softmax": k.SOFTMAX, "log_softmax": k.LOG_SOFTMAX,
                "logsumexp": k.LOGSUMEXP}[op]
        inv_t = chk.inv_temperature(temperature, fv.compute_dtype)
        dot = k.cl_dot_form(fv.C, fv.N)
        tile = k.tile_pixels(fv.C, fv.N, dot)
        dummy = np.empty(1, fv.compute_dtype)

        def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
            with launch_threads(fv.work(outer * inner)) as nthreads:
                k.head_expnorm(f1, outer, fv.N, inner, W, b, cls[0] if cls else dummy,
                               red[0] if red else dummy, inv_t, mode, tile, nthreads, dot)

        if reduces:
            self._run_cpu(fv, kernel, red=[out])
        else:
            self._run_cpu(fv, kernel, cls=[out])
        return out

    def logits(self, f, axis=-1, *, out=None, backend="auto"):
        """The logits ``z = W f + b`` of every pixel (materialized).

        Parameters
        ----------
        f : array_like or GPU array
            Features, float16, float32 or float64, N of them along ``axis``.
        axis : int, default -1
            The feature axis (-1: channels-last (..., N); 1: (B, N, H, W)).
        out : ndarray, optional
            Preallocated output: f's shape with N replaced by C, f's dtype.
        backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

        Returns
        -------
        ndarray
            f's shape with the feature axis replaced by the C classes, f's
            dtype (float16 features: computed in float32, stored in float16).
        """
        return self._expnorm("logits", f, axis, 1.0, out, backend)

    def softmax(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.softmax` of the head's logits, without them.

        Parameters as :meth:`logits`, plus ``temperature`` (finite, > 0) as
        in :func:`fastlogits.softmax`.

        Returns
        -------
        ndarray
            Probabilities, f's shape with N replaced by C, f's dtype.
        """
        return self._expnorm("softmax", f, axis, temperature, out, backend)

    def log_softmax(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.log_softmax` of the head's logits, without them.

        Parameters and shape as :meth:`softmax`.

        Returns
        -------
        ndarray
            Log-probabilities, f's shape with N replaced by C, f's dtype.
        """
        return self._expnorm("log_softmax", f, axis, temperature, out, backend)

    def logsumexp(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.logsumexp` of the head's logits, without them.

        Parameters as :meth:`softmax`; ``out`` has f's shape without the
        feature axis and f's dtype.

        Returns
        -------
        ndarray
            f's shape without the feature axis, f's dtype.
        """
        return self._expnorm("logsumexp", f, axis, temperature, out, backend)

    # ------------------------------------------------------------------
    # argmax, classify
    # ------------------------------------------------------------------

    def _argmax(self, f, axis, temperature, out, backend, with_conf):
        fv, be = self._prepare(f, axis, backend)
        if with_conf:
            chk.check_temperature(temperature)
            if out is not None and not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("out must be a tuple (labels, confidence)")
            if out is not None:
                chk.check_outputs_apart(out[0], out[1], "out[0] (labels)", "out[1] (confidence)")
        if be == "cuda":
            if with_conf:
                return self._cuda("classify", f, fv, temperature=temperature, out=out)
            return self._cuda("argmax", f, fv, out=out)
        labels, conf = (out if out is not None else (None, None)) if with_conf else (out, None)
        lname = "out[0] (labels)" if with_conf else "out"
        labels = _labels_out(fv, labels, lname)
        if with_conf:
            conf = _check_host_out(fv, conf, fv.reduced_shape, fv.compute_dtype,
                                   "out[1] (confidence)")
        if be == "numpy":
            z = self._reference_logits(fv)
            if with_conf:
                lab, cf = reference.classify(z, fv.axis, temperature=temperature)
                cf = cf.astype(fv.compute_dtype)
            else:
                lab, cf = reference.argmax(z, fv.axis), None
            if labels is not None:
                labels[...] = lab
                lab = labels
            if conf is not None:
                conf[...] = cf
                cf = conf
            return (lab, cf) if with_conf else lab
        if labels is None:
            labels = pool.empty(fv.reduced_shape, np.int64)
        if with_conf and conf is None:
            conf = pool.empty(fv.reduced_shape, fv.compute_dtype)
        if not fv.empty:
            self._labels_cpu(fv, labels, conf, chk.inv_temperature(temperature, fv.compute_dtype))
        return (labels, conf) if with_conf else labels

    def _labels_cpu(self, fv, labels, conf, inv_t):
        """The CPU argmax (``conf`` None) or classify of the head's logits
        into ``labels`` (and ``conf``), shaped like the reduced shape."""
        from fastlogits.cpu import head as k
        from fastlogits.cpu import launch_threads

        with_conf = conf is not None
        dot = k.cl_dot_form(fv.C, fv.N)
        tile = k.tile_pixels(fv.C, fv.N, dot)
        dummy = np.empty(1, fv.compute_dtype)

        def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
            with launch_threads(fv.work(outer * inner)) as nthreads:
                k.head_argmax(f1, outer, fv.N, inner, W, b, red[0],
                              red[1] if with_conf else dummy, inv_t, with_conf, tile,
                              nthreads, dot)

        self._run_cpu(fv, kernel, red=[labels, conf] if with_conf else [labels])

    def argmax(self, f, axis=-1, *, out=None, backend="auto"):
        """:func:`fastlogits.argmax` of the head's logits, without them.

        Parameters
        ----------
        f : array_like or GPU array
            Features, N of them along ``axis``.
        axis : int, default -1
            The feature axis.
        out : ndarray, optional
            Labels of f's shape without the feature axis, any integer dtype
            that holds C - 1.
        backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

        Returns
        -------
        ndarray
            int64 labels (or ``out``): the first NaN logit, else the first
            maximum, as ``np.argmax`` of the logits.
        """
        return self._argmax(f, axis, 1.0, out, backend, False)

    def classify(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.classify` of the head's logits: labels and the
        top-1 probability, without the logits or the probabilities.

        Parameters
        ----------
        f : array_like or GPU array
            Features, N of them along ``axis``.
        axis : int, default -1
            The feature axis.
        temperature : float, default 1.0
            Scales the confidence; labels do not depend on it.
        out : tuple of (ndarray, ndarray), optional
            ``(labels, confidence)``: labels of any integer dtype holding
            C - 1, confidence float32 (float64 for float64 features), both
            f's shape without the feature axis.
        backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

        Returns
        -------
        labels : ndarray
            As :meth:`argmax`.
        confidence : ndarray
            The top-1 probability; NaN where the logits hold a NaN or +inf.
        """
        return self._argmax(f, axis, temperature, out, backend, True)

    # ------------------------------------------------------------------
    # cross_entropy, confusion_matrix
    # ------------------------------------------------------------------

    def _target(self, target, fv):
        """Validate ``target`` against the features: shape first (naming
        both shapes), then dtype, as :func:`fastlogits.cross_entropy`."""
        from fastlogits import losses

        tshape, _ = _shape_dtype(target)
        if tuple(tshape) != tuple(fv.reduced_shape):
            raise ValueError(
                f"target has shape {tuple(tshape)}, expected {tuple(fv.reduced_shape)}: "
                f"the shape {tuple(fv.shape)} of f without its feature axis {fv.axis}"
            )
        return losses._check_target(target, fv)

    def cross_entropy(self, f, target, axis=-1, *, class_weight=None, ignore_index=-100,
                      label_smoothing=0.0, reduction="mean", return_grad=False, backend="auto"):
        """:func:`fastlogits.cross_entropy` of the head's logits, without them.

        Parameters
        ----------
        f : array_like or GPU array
            Features, N of them along ``axis``.
        target : array_like of int or GPU array
            Class indices, f's shape without the feature axis; each in
            [0, C) or equal to ``ignore_index``.
        axis : int, default -1
            The feature axis.
        class_weight, ignore_index, label_smoothing, reduction
            As :func:`fastlogits.cross_entropy` (PyTorch's semantics).
        return_grad : bool, default False
            Also return the gradient of the loss with respect to the
            FEATURES ``f`` (not the logits): ``W^T (d loss / d z)`` per
            pixel, computed tile by tile from the logits' gradient while it
            is in cache. For "none" it is the gradient of the summed pixel
            losses. The gradients w.r.t. W and b are not computed.
        backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

        Returns
        -------
        loss : numpy.float64 or ndarray
            As :func:`fastlogits.cross_entropy`: a float64 scalar for "mean"
            and "sum"; for "none" f's shape without the feature axis,
            float32 (float64 for float64 features).
        grad : ndarray
            Only with ``return_grad``: f's shape and dtype; 0 at ignored
            pixels.
        """
        from fastlogits import losses

        fv, be = self._prepare(f, axis, backend)
        target = self._target(target, fv)
        weight = losses._check_class_weight(class_weight, fv.C)
        ignore_index = losses._check_ignore_index(ignore_index)
        eps = losses._check_label_smoothing(label_smoothing)
        reduction = losses._check_reduction(reduction)
        return_grad = losses._check_flag(return_grad, "return_grad")
        kw = dict(class_weight=weight, ignore_index=ignore_index, label_smoothing=eps,
                  reduction=reduction, return_grad=return_grad)
        if be == "cuda":
            return self._cuda("cross_entropy", f, fv, target=target, **kw)
        if chk.is_gpu_array(target) or chk.is_gpu_array(weight):
            raise ValueError(f"target and class_weight must be host arrays for backend={be!r}")
        if be == "numpy":
            losses.check_target_values(target, fv.C, ignore_index)
            z = self._reference_logits(fv)
            res = reference.cross_entropy(z, target, fv.axis, **kw)
            if not return_grad:
                return res if reduction != "none" else res.astype(fv.compute_dtype)
            loss, gz = res
            if reduction == "none":
                loss = loss.astype(fv.compute_dtype)
            # d loss / d f = W^T d loss / d z, per pixel (float64).
            gz = np.moveaxis(gz, fv.axis, -1)
            gf = gz @ np.asarray(self._weight, dtype=np.float64)
            return loss, np.moveaxis(gf, -1, fv.axis).astype(fv.dtype)
        return self._cross_entropy_cpu(fv, losses._host_target(target, fv.C, ignore_index), **kw)

    def _cross_entropy_cpu(self, fv, t, *, class_weight, ignore_index, label_smoothing,
                           reduction, return_grad):
        from fastlogits import losses
        from fastlogits.cpu import head as k
        from fastlogits.cpu import launch_threads

        C = fv.C
        cd = fv.compute_dtype
        w64, w = losses.class_weights(class_weight, C, cd)
        loss = np.zeros(fv.reduced_shape, cd) if reduction == "none" else None
        grad = pool.empty(fv.shape, fv.dtype) if return_grad else None
        if fv.empty:
            return losses.empty_result(reduction, loss, grad, return_grad)
        gscale = losses.grad_scale(t, w64, C, ignore_index, reduction, return_grad)

        dot = k.cl_dot_form(C, fv.N)
        tile = k.tile_pixels(C, fv.N, dot)
        dummy = np.empty(1, cd)
        sums = []

        def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
            with launch_threads(fv.work(outer * inner)) as nthreads:
                sums.append(k.head_xent(
                    f1, outer, fv.N, inner, W, b, rin[0], w, w64, ignore_index, label_smoothing,
                    gscale, feat[0] if return_grad else dummy, return_grad,
                    red[0] if loss is not None else dummy, loss is not None, tile, nthreads, dot))

        self._run_cpu(fv, kernel, red=[loss] if loss is not None else [],
                      feat=[grad] if return_grad else [], red_in=[t])
        return losses.finish_loss(sums, t, C, ignore_index, reduction, loss, grad, return_grad)

    def confusion_matrix(self, f, target, axis=-1, *, ignore_index=-100, out=None,
                         backend="auto"):
        """:func:`fastlogits.confusion_matrix` of the head's labels against
        ``target``, without the logits or a labels array.

        Parameters
        ----------
        f : array_like or GPU array
            Features, N of them along ``axis``.
        target : array_like of int or GPU array
            Class indices, f's shape without the feature axis.
        axis : int, default -1
            The feature axis.
        ignore_index : int, default -100
            Pixels with this target are not counted.
        out : ndarray, optional
            A (C, C) int64 matrix the counts are ADDED to (a dataset's
            matrix builds up image by image); untouched on error.
        backend : {"auto", "cpu", "numpy", "cuda"}, default "auto"

        Returns
        -------
        ndarray
            (C, C) int64 (``out`` if given): rows the target, columns the
            head's prediction.
        """
        from fastlogits import losses

        fv, be = self._prepare(f, axis, backend)
        target = self._target(target, fv)
        ignore_index = losses._check_ignore_index(ignore_index)
        if be == "cuda":
            return self._cuda("confusion_matrix", f, fv, target=target, ignore_index=ignore_index,
                              out=out)
        if chk.is_gpu_array(target):
            raise ValueError(f"target must be a host array for backend={be!r}")
        C = fv.C
        out = _check_host_out(fv, out, (C, C), np.int64, "out")
        if be == "numpy":
            losses.check_target_values(target, C, ignore_index)
            counts = reference.confusion_matrix(self._reference_logits(fv), target, fv.axis,
                                                ignore_index=ignore_index)
        else:
            return self._confusion_cpu(fv, losses._host_target(target, C, ignore_index),
                                       ignore_index, out)
        return losses.add_counts(counts, out)

    def _confusion_cpu(self, fv, t, ignore_index, out):
        """The CPU confusion matrix, added to ``out`` (None: a new one), as
        :func:`fastlogits.losses._confusion_matrix_cpu`: the fused argmax
        and private histograms, or the labels first where those do not
        pay (:func:`fastlogits.losses.labels_first`)."""
        from fastlogits import losses
        from fastlogits.cpu import confusion as kc
        from fastlogits.cpu import head as k
        from fastlogits.cpu import launch_threads

        C = fv.C
        if fv.empty:
            return losses.add_counts(np.zeros((C, C), np.int64), out)
        if losses.labels_first(C, fv.reduced_shape):
            labels = pool.empty(fv.reduced_shape, np.int32)
            self._labels_cpu(fv, labels, None, fv.compute_dtype.type(1.0))
            return losses.confusion_from_labels(labels, t, C, ignore_index, out)
        counts = np.zeros((C, C), np.int64)
        dot = k.cl_dot_form(C, fv.N)
        tile = k.tile_pixels(C, fv.N, dot)
        bad = []

        def kernel(f1, outer, inner, W, b, cls, red, feat, rin):
            with launch_threads(fv.work(outer * inner)) as nthreads:
                bad.append(int(k.head_confusion(f1, outer, fv.N, inner, W, b, rin[0],
                                                ignore_index, counts,
                                                kc._chunks(C, outer * inner, nthreads), tile,
                                                dot)))

        self._run_cpu(fv, kernel, red_in=[t])
        if sum(bad):
            losses.check_target_values(t, C, ignore_index)
        return losses.add_counts(counts, out)
