"""The CPU backend's building blocks: tiles and register blocks.

:mod:`.tiles` (work on one tile of pixels), :mod:`.rowblock` (blocks of
channels-last rows transposed in registers), :mod:`.planeblock` (blocks of
channels-first pixels in registers), :mod:`.rowvec` (vector kernels over one
contiguous row), :mod:`.gather` (vector transposes for channels-last tiles),
:mod:`.microkernels` (the LinearHead product's register-blocked
micro-kernels). Built on :mod:`fastlogits.cpu.llvm`.
"""
