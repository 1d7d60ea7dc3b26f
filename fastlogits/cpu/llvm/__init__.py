"""The CPU backend's lowest layer: LLVM-IR intrinsics and bit-level helpers.

:mod:`.irutil` (IR builders), :mod:`.fastexp` and :mod:`.fastlog`
(vectorizable exp and log), :mod:`.half` (float16 <-> float32 at vector
speed), :mod:`.scores` (how kernels read float32, float64 or float16 bits),
:mod:`.prefetch` (software prefetch), :mod:`.stream` (non-temporal stores),
:mod:`.runexp` (the exponentials of a run of pixels), :mod:`.alloc` (new
arrays, allocated in the kernel's own code). Imports nothing else
of :mod:`fastlogits.cpu`.
"""
