"""This machine as fastlogits sees it: the CPU, its L2 cache, the vector
width Numba compiles for, the threading layer.

For reports (``fastlogits info``, the benchmark's machine description);
the library reads the same facts itself when it chooses its settings
(:mod:`fastlogits.tuning`). Each function calls the one implementation the
library uses (:mod:`fastlogits._cpuinfo`, :mod:`fastlogits._vector_width`,
:mod:`fastlogits._threading`). On systems without /proc/cpuinfo or sysfs
(not Linux) the CPU's facts are empty or 0.
"""

from fastlogits import _cpuinfo, _threading, _vector_width

__all__ = ["cpu_model", "cpu_vendor", "l2_bytes", "wide_vectors", "threading_layer"]


def cpu_model():
    """The CPU's model name, as /proc/cpuinfo gives it.

    Returns
    -------
    str
        E.g. ``"AMD EPYC 7B13"``; ``""`` where unknown.
    """
    return _cpuinfo.field("model name")


def cpu_vendor():
    """The CPU's vendor, as :mod:`fastlogits.tuning` chooses its defaults by.

    Returns
    -------
    str
        ``"amd"``, ``"intel"``, or ``""`` (another vendor, or unknown).
    """
    return _cpuinfo.vendor()


def l2_bytes():
    """The size of CPU 0's L2 cache (data or unified).

    Returns
    -------
    int
        Bytes; 0 where unknown.
    """
    return _cpuinfo.l2_bytes()


def wide_vectors():
    """Whether LLVM may use 512-bit vectors in the CPU kernels, and why.

    Decided once, when fastlogits is imported (before Numba is).

    Returns
    -------
    str
        One line, e.g. ``"on (512-bit vectors: AVX-512F, prefer-256-bit
        removed)"`` or ``"off (no AVX-512F on this CPU)"``.
    """
    return _vector_width.STATUS


def threading_layer():
    """Numba's threading layer and what it is safe for.

    Returns
    -------
    str
        One line, e.g. ``"tbb (fork- and thread-safe)"``; ``"not started"``
        before the first parallel kernel has run.
    """
    return _threading.describe()
