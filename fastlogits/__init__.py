"""fastlogits: logits to probabilities, labels, confidences, losses and
segmentation statistics at the speed of memory (Numba CPU and CUDA kernels,
with a NumPy reference for every operation)."""

from fastlogits import reference
from fastlogits.api import argmax, backends, classify, log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "argmax",
    "classify",
    "backends",
    "reference",
]
