"""LinearHead: a classifier head ``z = W f + b`` fused with the ops on z.

A linear head is a 1×1 convolution applied to every pixel's feature vector.
:meth:`LinearHead.logits` materializes z; every other method (softmax,
log_softmax, logsumexp, argmax, classify, cross_entropy, confusion_matrix)
computes the logits of a tile of pixels into a scratch tile that stays in
cache and runs the op's epilogue on it there, so the (..., C) logits tensor
never exists: the extra memory is the outputs alone.

Backends as everywhere: ``"numpy"`` is the reference (logits in float64,
then :mod:`fastlogits.reference`), ``"cpu"`` the fused Numba kernels of
:mod:`fastlogits.cpu.ops.head`, ``"cuda"`` :mod:`fastlogits.cuda.host.head`
(functions of the same names, called as ``name(head, f, fv, **options)``
with ``fv`` the validated features).

Host-side data movement (:func:`fastlogits.cpu.head_host.run_head`): the kernels read
C-contiguous float32/float64 features as (outer, N, inner) and write
C-contiguous outputs. float16 features, non-contiguous views and outputs
that are not C-contiguous in the compute dtype go through chunks of at
most ``cpu_half_chunk_elements`` values, so their extra memory
stays bounded.
"""

from fastlogits import _frontend

__all__ = ["LinearHead"]


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
        self._weight, self._bias, self.weight_shape = _frontend.check_head_params(weight, bias)

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

    # ------------------------------------------------------------------
    # the ops (each as the module-level function of the same name)
    # ------------------------------------------------------------------

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
        return _frontend.head_expnorm(self, "logits", f, axis, 1.0, out, backend)

    def softmax(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.softmax` of the head's logits, without them.

        Parameters as :meth:`logits`, plus ``temperature`` (finite, > 0) as
        in :func:`fastlogits.softmax`.

        Returns
        -------
        ndarray
            Probabilities, f's shape with N replaced by C, f's dtype.
        """
        return _frontend.head_expnorm(self, "softmax", f, axis, temperature, out, backend)

    def log_softmax(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.log_softmax` of the head's logits, without them.

        Parameters and shape as :meth:`softmax`.

        Returns
        -------
        ndarray
            Log-probabilities, f's shape with N replaced by C, f's dtype.
        """
        return _frontend.head_expnorm(self, "log_softmax", f, axis, temperature, out, backend)

    def logsumexp(self, f, axis=-1, *, temperature=1.0, out=None, backend="auto"):
        """:func:`fastlogits.logsumexp` of the head's logits, without them.

        Parameters as :meth:`softmax`; ``out`` has f's shape without the
        feature axis and f's dtype.

        Returns
        -------
        ndarray
            f's shape without the feature axis, f's dtype.
        """
        return _frontend.head_expnorm(self, "logsumexp", f, axis, temperature, out, backend)

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
        return _frontend.head_argmax(self, f, axis, 1.0, out, backend, False)

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
        return _frontend.head_argmax(self, f, axis, temperature, out, backend, True)

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
        return _frontend.head_cross_entropy(self, f, target, axis, class_weight, ignore_index,
                                            label_smoothing, reduction, return_grad, backend)

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
        return _frontend.head_confusion_matrix(self, f, target, axis, ignore_index, out, backend)
