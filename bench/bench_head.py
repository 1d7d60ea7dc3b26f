"""The fused linear head: LinearHead's methods beside "linear, then the op"
in NumPy (``f @ W.T + b``) and PyTorch (``F.linear``, or a 1×1
``F.conv2d`` for channels-first features), in one pytest-benchmark run,
with each implementation's peak extra memory.

    FASTLOGITS_BENCH_FULL=1 python -m pytest bench/bench_head.py \
        --benchmark-enable --benchmark-json=bench/results/<machine>-head.json
    python -m bench.bench_head bench/results/<machine>-head.json   # the ratio table

Full size: features 512×1024×256 float32 (537 MB) -> 19 classes, channels-
last (H, W, N) and channels-first (N, H, W). Without FASTLOGITS_BENCH_FULL
the shapes are tiny and each benchmark runs once as a smoke test.

Groups are ``op|shape|layout|dtype`` (shape ``HxWxN->C``). Each
benchmark's ``extra_info`` holds ``floor_bytes`` (one read of the features
and the target, one write of the outputs), ``flops`` (2·pixels·N·C) and,
in enabled runs, ``peak_extra_bytes``.

Peak memory: Numba's allocations are invisible to ``tracemalloc`` (they
come from Numba's own allocator), and so are PyTorch's. So every
implementation is measured the same way, in a child process: the kernel
is warmed up on a tiny input first (compilation, cache loading), the peak
RSS is reset (``/proc/self/clear_refs``), the op runs once on the real
input, and ``peak_extra_bytes = VmHWM - VmRSS before``. The child runs with
``MALLOC_MMAP_THRESHOLD_=65536`` so every allocation above 64 KiB is a
fresh mapping (counted when touched, returned when freed), never hidden in
memory the heap already held. The NumPy paths are also measured with
``tracemalloc`` (``traced_peak_bytes``). A fused method's peak extra memory
must be its outputs alone (plus per-thread scratch tiles of a few KiB).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.conftest import FULL

# (H, W, N) features -> C classes.
SHAPE, C = ((512, 1024, 256), 19) if FULL else ((13, 21, 32), 5)
LAYOUTS = ("hwc", "chw")
OPS = ("logits", "softmax", "logsumexp", "argmax", "classify", "cross_entropy",
       "confusion_matrix")
IMPLS = ("fastlogits[cpu]", "numpy", "torch")
#: The two channels-last product forms forced (fastlogits.cpu.plan.cl_dot_form
#: picks one by N/C through tuning.current().cpu.head_dot_min_ratio): timed side by
#: side for the labels ops so the ratio can be tuned from one run.
REGIMES = {"fastlogits[cpu,dot]": 0, "fastlogits[cpu,transposed]": 10**9}
REGIME_OPS = ("argmax", "classify", "cross_entropy")
#: Scratch allowance for the fused methods' peak-memory check (thread
#: stacks, per-thread tiles, the interpreter's own small allocations).
SLACK_BYTES = 8 << 20


class HeadCase:
    """Features ``f`` (H, W, N) with axis -1 ("hwc") or (N, H, W) with axis
    0 ("chw"), a head W (C, N), b (C,), and a target (H, W)."""

    def __init__(self, shape, C, layout, seed=0):
        H, W, N = shape
        rng = np.random.default_rng(seed)
        full = (H, W, N) if layout == "hwc" else (N, H, W)
        self.f = rng.standard_normal(full, dtype=np.float32)
        self.f *= 3.0
        self.axis = -1 if layout == "hwc" else 0
        self.layout = layout
        self.W = (rng.standard_normal((C, N)) / np.sqrt(N)).astype(np.float32)
        self.b = rng.standard_normal(C).astype(np.float32)
        self.target = rng.integers(0, C, size=(H, W), dtype=np.int64)
        self.C, self.N, self.pixels = C, N, H * W


def floor_bytes(op, case):
    """One read of the features (and target), one write of the outputs."""
    P, Cn = case.pixels, case.C
    read = case.f.nbytes
    write = {"logits": P * Cn * 4, "softmax": P * Cn * 4, "logsumexp": P * 4, "argmax": P * 8,
             "classify": P * 12, "cross_entropy": 8, "confusion_matrix": Cn * Cn * 8}[op]
    if op in ("cross_entropy", "confusion_matrix"):
        read += case.target.nbytes
    return read + write


def implementation(op, case, impl):
    """A zero-argument callable running ``op`` on ``case`` with ``impl``;
    None when that implementation is not installed."""
    from fastlogits.tools import benchmark as bm

    if impl.startswith("fastlogits[cpu"):
        import fastlogits as fl
        from fastlogits import tuning

        head = fl.LinearHead(case.W, case.b)
        fn = getattr(head, op)
        args = (case.f, case.target) if op in ("cross_entropy", "confusion_matrix") else (case.f,)
        if impl == "fastlogits[cpu]":
            return lambda: fn(*args, case.axis, backend="cpu")
        ratio = REGIMES[impl]

        def forced():
            with tuning.override(cpu_head_dot_min_ratio=ratio):
                return fn(*args, case.axis, backend="cpu")

        return forced

    if impl == "numpy":
        W, b, f = case.W, case.b, case.f

        def linear():
            if case.layout == "hwc":
                z = f @ W.T
                z += b
            else:  # (C, N) @ (N, H*W): one matmul, classes first
                z = (W @ f.reshape(case.N, -1)).reshape((case.C,) + f.shape[1:])
                z += b[:, None, None]
            return z

        if op == "logits":
            return linear

        def call():
            z = linear()
            return bm._numpy_impl(op, bm.Inputs(z, case.axis, case.layout, case.target))()

        return call

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    ft = torch.from_numpy(case.f)
    Wt, bt = torch.from_numpy(case.W), torch.from_numpy(case.b)
    Wconv = Wt[:, :, None, None].contiguous()

    def tlinear():
        with torch.no_grad():
            if case.layout == "hwc":
                return F.linear(ft, Wt, bt)
            return F.conv2d(ft[None], Wconv, bt)[0]  # a 1×1 convolution head

    if op == "logits":
        return tlinear

    def tcall():
        z = tlinear()
        return bm._torch_impl(op, bm.Inputs(z.numpy(), case.axis, case.layout, case.target))()

    return tcall


# --------------------------------------------------------------------------
# peak extra memory, in a child process
# --------------------------------------------------------------------------

def _status_kib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def _result_bytes(r):
    if isinstance(r, (tuple, list)):
        return sum(_result_bytes(v) for v in r)
    if hasattr(r, "nbytes"):
        return int(r.nbytes)
    return 8


def _memory_child(spec):
    """Child process: measure each (op, impl) of ``spec`` on one case and
    print ``{"op|impl": {...}}`` as JSON."""
    import tracemalloc

    spec = json.loads(spec)
    shape, Cn, layout = tuple(spec["shape"]), spec["C"], spec["layout"]
    tiny = HeadCase((3, 5, shape[2]), Cn, layout, seed=1)
    case = HeadCase(shape, Cn, layout)
    results = {}
    for op, impl in spec["pairs"]:
        warm = implementation(op, tiny, impl)
        fn = implementation(op, case, impl)
        if fn is None:
            continue
        warm()  # compile / load kernels, initialize libraries
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS to the current RSS
        before = _status_kib("VmRSS")
        r = fn()
        peak = _status_kib("VmHWM") - before
        out_bytes = _result_bytes(r)
        del r
        entry = {"peak_extra_bytes": peak * 1024, "output_bytes": out_bytes}
        if impl == "numpy":
            tracemalloc.start()
            r = fn()
            entry["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            del r
        results[f"{op}|{impl}"] = entry
    print(json.dumps(results))


def measure_memory(layout, pairs, shape=SHAPE, C=C):
    """``{"op|impl": {"peak_extra_bytes", "output_bytes", ...}}`` measured
    in a fresh child process (see the module docstring)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    spec = json.dumps({"shape": list(shape), "C": C, "layout": layout, "pairs": pairs})
    proc = subprocess.run([sys.executable, "-c", "import sys; from bench.bench_head import "
                           "_memory_child; _memory_child(sys.argv[1])", spec],
                          cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


_memory = {}


def _memory_for(layout):
    if layout not in _memory:
        _memory[layout] = measure_memory(layout, [[op, impl] for op in OPS for impl in IMPLS])
    return _memory[layout]


# --------------------------------------------------------------------------
# the benchmarks
# --------------------------------------------------------------------------

_cases = {}


def _case(layout):
    if layout not in _cases:
        _cases.clear()  # one full-size input in memory at a time
        _cases[layout] = HeadCase(SHAPE, C, layout)
    return _cases[layout]


def _group(op, layout):
    return f"{op}|{'x'.join(map(str, SHAPE))}->{C}|{layout}|float32"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_head(benchmark, layout, op, impl):
    case = _case(layout)
    fn = implementation(op, case, impl)
    if fn is None:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = _group(op, layout)
    benchmark.extra_info.update(impl=impl, floor_bytes=floor_bytes(op, case),
                                flops=2 * case.pixels * case.N * case.C)
    if not benchmark.disabled and sys.platform.startswith("linux"):
        benchmark.extra_info.update(_memory_for(layout).get(f"{op}|{impl}", {}))
    result = benchmark(fn)
    assert result is not None


@pytest.mark.parametrize("impl", list(REGIMES))
@pytest.mark.parametrize("op", REGIME_OPS)
def test_head_channels_last_regime(benchmark, op, impl):
    case = _case("hwc")
    benchmark.group = _group(op, "hwc")
    benchmark.extra_info.update(impl=impl, floor_bytes=floor_bytes(op, case),
                                flops=2 * case.pixels * case.N * case.C)
    assert benchmark(implementation(op, case, impl)) is not None


def test_fused_peak_memory_is_the_outputs():
    """The fused methods allocate their outputs and nothing the size of the
    logits (a smoke test at small sizes; meaningful at full size)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs /proc/self/clear_refs")
    ops = ("argmax", "classify", "cross_entropy", "confusion_matrix")
    for layout in LAYOUTS:
        mem = measure_memory(layout, [[op, "fastlogits[cpu]"] for op in ops])
        logits_bytes = SHAPE[0] * SHAPE[1] * C * 4
        for op in ops:
            m = mem[f"{op}|fastlogits[cpu]"]
            assert m["peak_extra_bytes"] <= m["output_bytes"] + SLACK_BYTES, (layout, op, m)
            if FULL:
                assert m["peak_extra_bytes"] < logits_bytes, (layout, op, m)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

def report(path):
    """Print the ratio table of a pytest-benchmark JSON file of this module
    (``bench/report.py`` makes it; ``report.py --all`` puts it in RESULTS.md)."""
    from bench.report import head_table

    with open(path) as fh:
        print("\n".join(head_table(json.load(fh))))


if __name__ == "__main__":
    report(sys.argv[1])
