"""Applications built on fastlogits, outside the library's core.

The ``fastlogits`` command (:mod:`.cli`), the demo scene (:mod:`.demo`),
bounded-memory classification of logits files (:mod:`.tiled`), datasets
of maps in-process or on dask, resumably (:mod:`.dataset`), the PNG
writer and reader (:mod:`.png`), palettes (:mod:`.palettes`), the safe
output writer (:mod:`.files`), the benchmark harness (:mod:`.benchmark`),
the memory-bandwidth probes (:mod:`.bandwidth`) and the kernels compiled
ahead of use (:mod:`.precompile`). The library
(everything in ``fastlogits`` outside this subpackage) never imports it:
tests/tools/test_layering.py checks.
"""
