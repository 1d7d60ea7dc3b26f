"""Let LLVM use 512-bit vectors on AVX-512 machines.

LLVM tunes most AVX-512 CPUs with ``prefer-256-bit``: loops vectorize with
ymm registers only. Our kernels are long, branch-free elementwise loops (an
exp polynomial, compares and selects), where zmm registers measured 1.7x
faster on this project's machine (docs/perf/cpu-002). Numba reads its
target features once, from ``NUMBA_CPU_FEATURES``, when it first compiles;
so this must run before Numba is imported.

It changes nothing when the CPU lacks AVX-512F, when the user already set
``NUMBA_CPU_FEATURES``, when ``FASTLOGITS_WIDE_VECTORS=0``, or when Numba
was imported before fastlogits (then Numba's defaults stay; ``fastlogits
info`` reports which case applies). Numba's on-disk cache is keyed by the
feature string, so no stale kernels are loaded either way.
"""

import os
import platform
import sys

#: Why wide vectors are or are not in use (shown by ``fastlogits info``).
STATUS = "not checked"


def enable():
    """Set ``NUMBA_CPU_FEATURES`` to the host's features minus ``prefer-256-bit``."""
    global STATUS
    if os.environ.get("FASTLOGITS_WIDE_VECTORS", "1") == "0":
        STATUS = "off (FASTLOGITS_WIDE_VECTORS=0)"
        return
    if "NUMBA_CPU_FEATURES" in os.environ:
        STATUS = "left to NUMBA_CPU_FEATURES set by the user"
        return
    if "numba" in sys.modules:
        STATUS = "off (numba was imported before fastlogits)"
        return
    try:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features()
    except Exception as exc:  # pragma: no cover - llvmlite without host info
        STATUS = f"off (host features unknown: {exc})"
        return
    if not features.get("avx512f", False):
        STATUS = "off (no AVX-512F on this CPU)"
        return
    os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"
    STATUS = "on (512-bit vectors: AVX-512F, prefer-256-bit removed)"


def target_has(feature):
    """Whether the CPU Numba compiles for has the LLVM target ``feature``
    ("avx512f", "f16c", ...): the features in ``NUMBA_CPU_FEATURES`` when
    set (as Numba reads them), else the host's."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None:
        try:
            import llvmlite.binding as ll

            return bool(ll.get_host_cpu_features().get(feature, False))
        except Exception:  # pragma: no cover - llvmlite without host info
            return False
    return f"+{feature}" in features.split(",")


#: ``platform.machine()`` names of 64-bit ARM (Linux, macOS).
ARM64_MACHINES = ("aarch64", "arm64")


def target_converts_half(machine=None, has=target_has):
    """Whether the CPU Numba compiles for converts between float32 and
    float16 in hardware, so LLVM's ``fpext``/``fptrunc`` to half are
    instructions rather than calls to runtime routines a Numba process
    may not have: x86 with F16C (``vcvtph2ps``/``vcvtps2ph``), and every
    ARMv8 CPU (``fcvt``, part of the base AArch64 instruction set, which
    LLVM names no feature for). ``machine`` defaults to
    ``platform.machine()``, ``has`` to :func:`target_has` (tests replace
    them)."""
    machine = (platform.machine() if machine is None else machine).lower()
    if machine in ARM64_MACHINES:
        return True
    return has("f16c")


def target_has_avx512():
    """Whether the CPU Numba compiles for has AVX-512F (:func:`target_has`).

    The register-blocked micro-kernels (:mod:`fastlogits.cpu.blocks.microkernels`)
    size their blocks by this: AVX-512 has 32 vector registers of 64
    bytes, AVX2 16 of 32 bytes, and a block whose sums do not fit in the
    registers spills them to memory on every step.
    """
    return target_has("avx512f")
