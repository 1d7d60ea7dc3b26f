"""fastlogits: logits to probabilities, labels, confidences, losses and
segmentation statistics at the speed of memory (Numba CPU and CUDA kernels,
with a NumPy reference for every operation)."""

from fastlogits import _threading, _vector_width

_vector_width.enable()  # before anything imports numba
_threading.choose()  # before Numba starts its threads

from fastlogits import reference  # noqa: E402
from fastlogits.api import argmax, backends, classify, log_softmax, logsumexp, softmax  # noqa: E402
from fastlogits.losses import confusion_matrix, cross_entropy, iou  # noqa: E402
from fastlogits.head import LinearHead  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "argmax",
    "classify",
    "cross_entropy",
    "confusion_matrix",
    "iou",
    "LinearHead",
    "backends",
    "reference",
]
