"""The five per-pixel ops: fastlogits (cpu) beside NumPy and PyTorch, and
the memory-bandwidth ceilings, all in one pytest-benchmark run.

    FASTLOGITS_BENCH_FULL=1 python -m pytest bench/bench_core.py \
        --benchmark-enable --benchmark-json=bench/core.json
    python bench/report.py bench/core.json      # the ratio table

Groups are named ``op|shape|layout|dtype`` so the implementations of one
case line up side by side. Without FASTLOGITS_BENCH_FULL the shapes are
tiny and each benchmark runs once as a smoke test.
"""

import numpy as np
import pytest

from bench.conftest import FULL
from fastlogits.tools import bandwidth
from fastlogits.tools.benchmark import floor_bytes, implementations, make_inputs
from fastlogits.registry import OPS

# (H, W, C) and layout: Cityscapes both ways, ADE20K-sized classes.
CASES = ([((1024, 2048, 19), "hwc"), ((1024, 2048, 19), "chw"), ((512, 512, 150), "hwc")]
         if FULL else [((37, 61, 19), "hwc"), ((37, 61, 19), "chw"), ((9, 13, 150), "hwc")])

_inputs = {}


def _case(shape, layout):
    key = (shape, layout)
    if key not in _inputs:
        _inputs.clear()  # one full-size input in memory at a time
        _inputs[key] = make_inputs(shape, layout, np.float32)
    return _inputs[key]


def _params():
    for shape, layout in CASES:
        for op in OPS:
            for impl in ("fastlogits[cpu]", "numpy", "torch"):
                yield pytest.param(op, shape, layout, impl,
                                   id=f"{op}-{'x'.join(map(str, shape))}-{layout}-{impl}")


@pytest.mark.parametrize("op,shape,layout,impl", list(_params()))
def test_op(benchmark, op, shape, layout, impl):
    inp = _case(shape, layout)
    impls = implementations(op, inp, backends=("cpu",), numpy=True, torch=True)
    if impl not in impls:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = f"{op}|{'x'.join(map(str, shape))}|{layout}|float32"
    read, write = floor_bytes(op, inp)
    benchmark.extra_info.update(floor_bytes=read + write, impl=impl)
    result = benchmark(impls[impl])
    assert result is not None


@pytest.mark.parametrize("threads", bandwidth.thread_counts())
@pytest.mark.parametrize("kind", ["read", "copy", "copy-nt"])
def test_bandwidth(benchmark, kind, threads):
    """The ceilings, measured in the same run with one thread and with all
    (bench/report.py takes the better of the two, as ``fastlogits bench``;
    for the copy, the better of ordinary and non-temporal stores,
    "copy-nt")."""
    import numba

    n = (256 << 20) // 4 if FULL else 1 << 16
    x = np.ones(n, np.float32)
    nblocks = threads * 8
    impl = kind if threads == 1 else f"{kind}[{threads} threads]"
    benchmark.group = "bandwidth"
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if kind == "read":
            benchmark.extra_info.update(floor_bytes=x.nbytes, impl=impl)
            benchmark(bandwidth.read_kernel, x, nblocks)
        else:
            out = np.empty_like(x)
            benchmark.extra_info.update(floor_bytes=2 * x.nbytes, impl=impl)
            benchmark(bandwidth.copy_kernel, x, out, nblocks, kind == "copy-nt")
    finally:
        numba.set_num_threads(saved)
