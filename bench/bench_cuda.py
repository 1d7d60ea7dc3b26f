"""CUDA benchmark: fastlogits[cuda] beside fastlogits[cpu] and PyTorch's CUDA
kernels, kernel-only and end-to-end, against the device-to-device copy
bandwidth measured in the same run.

    FASTLOGITS_BENCH_FULL=1 python bench/bench_cuda.py --json bench/cuda.json
    python bench/bench_cuda.py                 # tiny shapes: a quick check
    python -m pytest bench/bench_cuda.py       # smoke test; skipped without a GPU

Cases (full size): a batch of 8 Cityscapes maps channels-first
(8, 19, 1024, 2048) axis 1 and channels-last (8, 1024, 2048, 19) axis -1,
and 4096 rows of a 128256-token vocabulary (4096, 128256), float32.

Modes:

- ``kernel``: data resident on the GPU, timed with CUDA events on the
  stream the work runs on (median of ``--repeat``); fastlogits writes into
  preallocated ``out=`` arrays, PyTorch allocates from its caching
  allocator (microseconds). With PyTorch present both take the same torch
  tensor, so fastlogits runs on PyTorch's current stream.
- ``e2e``: a host NumPy array in, a host NumPy result out, wall-clock:
  ``fl.op(x, backend="cuda")`` vs ``torch.from_numpy(x).cuda()`` -> op ->
  ``.cpu().numpy()`` (pageable memory both ways, so the PCIe copies
  dominate).
- ``cpu``: ``fl.op(x, backend="cpu", out=...)``, wall-clock (all cores).

Throughput counts the floor (read x once, write the outputs once):
softmax/log_softmax 2·|x|, logsumexp |x| + |x|/C, argmax |x| + 8 bytes per
pixel (int64 labels), classify |x| + 12 bytes per pixel, cross_entropy
(mean) and confusion_matrix |x| + 8 bytes per pixel (the int64 target,
10 % ignore_index), cross_entropy_grad (``return_grad=True`` into a
preallocated ``grad_out``; PyTorch through autograd) 2·|x| + 8 bytes per
pixel; confusion_matrix is skipped for C > 1024. The losses and
confusion_matrix return host results (a float64 loss; a checked target), so each call waits
for its stream, unlike PyTorch's F.cross_entropy. ``%copy`` is that GB/s
over the device-to-device copy's (bytes read + written), the goal being
>= 85 % for argmax, classify and softmax. PyTorch's classify is
``x.max(dim)`` plus ``exp(max - logsumexp)`` (two reads of x, no softmax
materialized); its confusion matrix is argmax + mask + bincount. Each case
also records the largest difference from PyTorch's result (a sanity
check, not a test).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fastlogits as fl  # noqa: E402

FULL = os.environ.get("FASTLOGITS_BENCH_FULL") == "1"

FULL_CASES = [("cityscapes-nchw", (8, 19, 1024, 2048), 1),
              ("cityscapes-nhwc", (8, 1024, 2048, 19), -1),
              ("vocab-128k", (4096, 128256), -1)]
SMALL_CASES = [("cityscapes-nchw", (2, 19, 48, 64), 1),
               ("cityscapes-nhwc", (2, 48, 64, 19), -1),
               ("vocab-128k", (16, 4099), -1)]
OPS = ("softmax", "log_softmax", "logsumexp", "argmax", "classify", "cross_entropy",
       "cross_entropy_grad", "confusion_matrix")
#: ignore_index of the targets (about 10 % of the pixels) of the losses.
IGNORE = -100
#: confusion_matrix is skipped above this many classes (a C x C matrix).
CONFUSION_MAX_C = 1024


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------

def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def gpu_available():
    """True when the CUDA backend runs on a real GPU (not the simulator)."""
    from fastlogits.cuda import runtime

    return "cuda" in fl.backends() and not runtime.simulator()


def machine():
    from importlib import metadata

    from fastlogits.cuda import runtime

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    torch = _torch_cuda()
    return {
        "gpu": runtime.describe(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numba": version("numba"), "numba-cuda": version("numba-cuda"),
        "numpy": np.__version__, "torch": torch.__version__ if torch else version("torch"),
        "fastlogits": fl.__version__,
    }


# --------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------

class GpuTimer:
    """Milliseconds per GPU call, with CUDA events on the stream the work runs
    on (PyTorch's current stream, else Numba's default stream).

    Each of ``repeat`` rounds times ``batch`` calls queued back to back, so
    the host's launch overhead (validation, views, Numba's dispatch) hides
    behind the previous call's kernel as it does in a real pipeline; the
    result is the median over rounds of the per-call time.
    """

    def __init__(self, torch, batch=1):
        self.torch = torch
        self.batch = batch

    def _events(self):
        if self.torch is not None:
            ev = self.torch.cuda.Event
            return ev(enable_timing=True), ev(enable_timing=True), None
        from numba import cuda

        return cuda.event(), cuda.event(), cuda.default_stream()

    def __call__(self, fn, repeat):
        times = []
        for _ in range(repeat):
            a, b, stream = self._events()
            a.record() if stream is None else a.record(stream)
            for _ in range(self.batch):
                fn()
            b.record() if stream is None else b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b) / self.batch)
        return float(np.median(times))


def wall_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _sync(torch):
    if torch is not None:
        torch.cuda.synchronize()
    else:
        from numba import cuda

        cuda.synchronize()


# --------------------------------------------------------------------------
# Bandwidth ceilings
# --------------------------------------------------------------------------

def warm_up(torch, seconds=2.0):
    """Keep the GPU busy for a while before timing: an idle H200 runs its
    SMs at 345 MHz, and the first timings of a run came out slow."""
    n = 1 << 28 if seconds >= 1 else 1 << 20  # 1 GiB buffers for a real warm-up
    if torch is not None:
        a = torch.empty(n, dtype=torch.float32, device="cuda")
        b = torch.empty_like(a)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(20):
                b.copy_(a)
            torch.cuda.synchronize()
        return
    from numba import cuda

    a = cuda.device_array(n, np.float32)
    b = cuda.device_array(n, np.float32)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b.copy_to_device(a)
        cuda.synchronize()


def copy_gbps(nbytes, timer, torch, repeat):
    """Device-to-device copy bandwidth, GB/s counting bytes read + written."""
    n = max(1 << 20, int(nbytes) // 4)
    if torch is not None:
        src = torch.ones(n, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)

        def run():
            dst.copy_(src)
    else:
        from numba import cuda

        src = cuda.to_device(np.ones(n, np.float32))
        dst = cuda.device_array(n, np.float32)

        def run():
            dst.copy_to_device(src)
    run()
    _sync(torch)
    ms = timer(run, max(repeat, 5))
    return 2 * 4 * n / (ms / 1e3) / 1e9


def transfer_gbps(x, torch):
    """Host-to-device and device-to-host bandwidth of pageable memory (GB/s)."""
    if torch is not None:
        t0 = time.perf_counter()
        d = torch.from_numpy(x).cuda()
        torch.cuda.synchronize()
        h2d = x.nbytes / (time.perf_counter() - t0) / 1e9
        t0 = time.perf_counter()
        d.cpu()
        d2h = x.nbytes / (time.perf_counter() - t0) / 1e9
        return h2d, d2h
    from numba import cuda

    t0 = time.perf_counter()
    d = cuda.to_device(x)
    cuda.synchronize()
    h2d = x.nbytes / (time.perf_counter() - t0) / 1e9
    t0 = time.perf_counter()
    d.copy_to_host()
    d2h = x.nbytes / (time.perf_counter() - t0) / 1e9
    return h2d, d2h


# --------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------

def floor_bytes(op, shape, axis, itemsize):
    n = int(np.prod(shape))
    pixels = n // shape[axis]
    writes = {"softmax": n * itemsize, "log_softmax": n * itemsize,
              "logsumexp": pixels * itemsize, "argmax": pixels * 8, "classify": pixels * 12,
              "cross_entropy": pixels * 8, "confusion_matrix": pixels * 8,  # target reads
              "cross_entropy_grad": n * itemsize + pixels * 8}[op]
    return n * itemsize + writes


def _outputs(op, shape, axis, empty, dtype=np.float32):
    """Preallocated outputs of ``op`` made by ``empty(shape, dtype)``."""
    red = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    if op in ("softmax", "log_softmax", "cross_entropy_grad"):
        return empty(shape, dtype)
    if op == "logsumexp":
        return empty(red, dtype)
    if op == "argmax":
        return empty(red, np.int64)
    if op == "classify":
        return (empty(red, np.int64), empty(red, dtype))
    if op == "confusion_matrix":
        C = shape[axis]
        return empty((C, C), np.int64)
    return None


def _fl_call(op, x, t, axis, out, **kw):
    """fastlogits ``op`` on x (and target t), into ``out`` where the op takes one."""
    if op == "cross_entropy_grad":
        return lambda: fl.cross_entropy(x, t, axis, ignore_index=IGNORE, return_grad=True,
                                        grad_out=out, **kw)
    fn = getattr(fl, op)
    if op == "cross_entropy":
        return lambda: fn(x, t, axis, ignore_index=IGNORE, **kw)
    if op == "confusion_matrix":
        return lambda: fn(x, t, axis, ignore_index=IGNORE, out=out, **kw)
    if out is None:
        return lambda: fn(x, axis, **kw)
    return lambda: fn(x, axis, out=out, **kw)


def _fl_device_call(op, xd, td, axis, torch):
    """fastlogits on a device-resident x with preallocated outputs."""
    if torch is not None:
        def zeros(s, dt):
            return torch.zeros(s, dtype=getattr(torch, np.dtype(dt).name), device=xd.device)
    else:
        from numba import cuda

        def zeros(s, dt):
            return cuda.to_device(np.zeros(s, dt))
    return _fl_call(op, xd, td, axis, _outputs(op, tuple(xd.shape), axis, zeros))


def _torch_call(op, xt, tt, axis):
    """PyTorch's way to compute ``op`` (target ``tt`` for the losses)."""
    torch = sys.modules["torch"]
    if op in ("cross_entropy", "cross_entropy_grad"):
        F = torch.nn.functional

        def loss(z):  # F.cross_entropy wants the classes at dim 1
            z1 = z.movedim(axis, 1) if z.ndim > 2 and axis % z.ndim != 1 else z
            return F.cross_entropy(z1, tt, ignore_index=IGNORE)
        if op == "cross_entropy":
            return lambda: loss(xt)

        def loss_grad():  # autograd: the gradient allocated by PyTorch
            z = xt.detach().requires_grad_(True)
            value = loss(z)
            return value.detach(), torch.autograd.grad(value, z)[0]
        return loss_grad
    if op == "confusion_matrix":
        C = xt.shape[axis]

        def confusion():  # the torchmetrics / MMSegmentation idiom
            pred = xt.argmax(axis)
            keep = tt != IGNORE
            return torch.bincount(tt[keep] * C + pred[keep], minlength=C * C).reshape(C, C)
        return confusion
    if op == "softmax":
        return lambda: torch.softmax(xt, axis)
    if op == "log_softmax":
        return lambda: torch.log_softmax(xt, axis)
    if op == "logsumexp":
        return lambda: torch.logsumexp(xt, axis)
    if op == "argmax":
        return lambda: torch.argmax(xt, axis)

    def classify():
        m, lab = torch.max(xt, axis)
        return lab, torch.exp(m - torch.logsumexp(xt, axis))
    return classify


def _difference(op, got, want, torch):
    """Largest |fastlogits - torch| (labels: fraction that differ)."""
    if op == "cross_entropy":
        return abs(float(got) - want.item())
    if op == "cross_entropy_grad":
        return max(abs(float(got[0]) - want[0].item()), (got[1] - want[1]).abs().max().item())
    if op == "confusion_matrix":  # fastlogits added into a zeroed out=
        return (got - want).abs().max().item()
    if op == "classify":
        lab = (got[0] != want[0]).float().mean().item()
        return max(lab, (got[1] - want[1]).abs().max().item())
    if op == "argmax":
        return (got != want).float().mean().item()
    return (got - want).abs().max().item()


def host_inputs(shape, axis, seed=0, dtype=np.float32):
    """Scores (4 x standard normal) and int64 targets (10 % ignore_index)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 4).astype(dtype)
    red = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, shape[axis], size=red)
    t[rng.random(red) < 0.1] = IGNORE
    return x, t


def to_gpu(a, torch):
    """A host array on the GPU: a PyTorch tensor with PyTorch, else Numba's."""
    if torch is not None:
        return torch.from_numpy(a).cuda()
    from numba import cuda

    return cuda.to_device(a)


def bench_case(name, shape, axis, ops, repeat, cpu=True, e2e=True, dtype=np.float32,
               log=print):
    """Time every op of one case on every implementation; returns result rows."""
    torch = _torch_cuda()
    timer = GpuTimer(torch, batch=10 if FULL else 2)
    x, t = host_inputs(shape, axis, dtype=dtype)
    C = shape[axis]
    xd, td = to_gpu(x, torch), to_gpu(t, torch)
    rows = []
    slow_repeat = 3 if FULL else 1  # wall-clock modes: seconds per call at full size
    for op in ops:
        if op == "confusion_matrix" and C > CONFUSION_MAX_C:
            continue
        nbytes = floor_bytes(op, shape, axis, x.itemsize)
        base = {"case": name, "shape": list(shape), "axis": axis, "C": C, "op": op,
                "dtype": np.dtype(dtype).name, "floor_bytes": nbytes}

        def add(impl, mode, ms, **extra):
            rows.append(dict(base, impl=impl, mode=mode, ms=ms,
                             gbps=nbytes / (ms / 1e3) / 1e9, **extra))
            log(f"  {name:16s} {op:16s} {impl:18s} {mode:6s} {ms:10.3f} ms")

        # fastlogits[cuda], kernel only (first call: compile or cache load).
        call = _fl_device_call(op, xd, td, axis, torch)
        t0 = time.perf_counter()
        got = call()
        _sync(torch)
        first = time.perf_counter() - t0
        diff = None
        if torch is not None:
            want = _torch_call(op, xd, td, axis)()
            diff = _difference(op, got, want, torch)
            del want
        del got
        add("fastlogits[cuda]", "kernel", timer(call, repeat), first_call_s=first,
            max_diff_vs_torch=diff)
        del call
        if torch is not None:
            tcall = _torch_call(op, xd, td, axis)
            tcall()
            _sync(torch)
            add("torch[cuda]", "kernel", timer(tcall, repeat))
            del tcall
        if e2e:
            fcall = _fl_call(op, x, t, axis, _outputs(op, shape, axis, np.zeros, dtype),
                             backend="cuda")
            fcall()
            add("fastlogits[cuda]", "e2e", wall_ms(fcall, slow_repeat))
            del fcall
            if torch is not None:
                def torch_e2e():
                    res = _torch_call(op, torch.from_numpy(x).cuda(),
                                      torch.from_numpy(t).cuda(), axis)()
                    if isinstance(res, tuple):
                        return tuple(r.cpu().numpy() for r in res)
                    return res.cpu().numpy()
                torch_e2e()
                add("torch[cuda]", "e2e", wall_ms(torch_e2e, slow_repeat))
        if cpu:
            ccall = _fl_call(op, x, t, axis, _outputs(op, shape, axis, np.zeros, dtype),
                             backend="cpu")
            ccall()
            add("fastlogits[cpu]", "cpu", wall_ms(ccall, slow_repeat))
            del ccall
    h2d, d2h = transfer_gbps(x, torch)
    del xd, td
    _sync(torch)
    return rows, {"h2d_pageable_gbps": h2d, "d2h_pageable_gbps": d2h}



def run(cases=None, ops=OPS, repeat=None, cpu=True, e2e=True, json_path=None, log=print,
        markdown_path=None):
    """Run the benchmark; returns the result dict (also written to
    ``json_path``, and its table to ``markdown_path``)."""
    if not gpu_available():
        raise RuntimeError(f"no usable GPU: {fl._frontend.cuda_status()[1]}")
    cases = cases or (FULL_CASES if FULL else SMALL_CASES)
    repeat = repeat or (20 if FULL else 3)
    torch = _torch_cuda()
    info = machine()
    log(f"GPU: {info['gpu'].get('name')}; torch: {info['torch']}; numba-cuda: {info['numba-cuda']}")
    warm_up(torch, 2.0 if FULL else 0.1)
    largest = max(int(np.prod(s)) * 4 for _, s, _ in cases)
    copy = copy_gbps(largest, GpuTimer(torch), torch, repeat)
    log(f"device-to-device copy: {copy:.0f} GB/s (read + write)")
    rows, transfers = [], {}
    for name, shape, axis in cases:
        log(f"{name} {shape} axis={axis}")
        r, t = bench_case(name, shape, axis, ops, repeat, cpu=cpu, e2e=e2e, log=log)
        rows += r
        transfers[name] = t
    for row in rows:
        row["fraction_of_copy"] = row["gbps"] / copy if row["mode"] == "kernel" else None
    # Speed-up against PyTorch in the same mode.
    ref = {(r["case"], r["op"], r["mode"]): r["ms"] for r in rows if r["impl"] == "torch[cuda]"}
    for row in rows:
        t = ref.get((row["case"], row["op"], row["mode"]))
        row["speedup_vs_torch"] = t / row["ms"] if t and row["impl"] != "torch[cuda]" else None
    result = {"machine": info, "full": FULL, "repeat": repeat, "copy_gbps": copy,
              "transfers": transfers, "rows": rows}
    log("")
    log(table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
        log(f"\nwrote {json_path}")
    if markdown_path:
        Path(markdown_path).write_text(table(result) + "\n")
        log(f"wrote {markdown_path}")
    return result


def table(result):
    """The results as a Markdown table."""
    lines = [f"Device: {result['machine']['gpu'].get('name')}; device-to-device copy "
             f"{result['copy_gbps']:.0f} GB/s (read + write); median of {result['repeat']}.",
             "",
             "| case | op | impl | mode | ms | GB/s | % copy | vs torch |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        frac = f"{100 * r['fraction_of_copy']:.0f} %" if r["fraction_of_copy"] else ""
        sp = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else ""
        lines.append(f"| {r['case']} | {r['op']} | {r['impl']} | {r['mode']} | {r['ms']:.3f} "
                     f"| {r['gbps']:.0f} | {frac} | {sp} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# pytest smoke test (collected with the benchmark suite)
# --------------------------------------------------------------------------

def test_bench_cuda_smoke(tmp_path):
    import pytest

    if not gpu_available():
        pytest.skip("needs a real GPU (the CUDA backend is not usable here)")
    path = tmp_path / "cuda.json"
    res = run(cases=SMALL_CASES, ops=("softmax", "classify"), repeat=2, json_path=path,
              log=lambda *a: None)
    assert path.exists() and res["copy_gbps"] > 0
    kernel = [r for r in res["rows"] if r["impl"] == "fastlogits[cuda]" and r["mode"] == "kernel"]
    assert len(kernel) == 2 * len(SMALL_CASES)
    for r in kernel:
        if r["max_diff_vs_torch"] is not None:
            assert r["max_diff_vs_torch"] < 1e-5, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--cases", nargs="+", help="case names (default: all)")
    ap.add_argument("--repeat", type=int, help="timed repetitions (default 20 full, 3 small)")
    ap.add_argument("--no-cpu", action="store_true", help="skip fastlogits[cpu]")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end timings")
    args = ap.parse_args(argv)
    cases = FULL_CASES if FULL else SMALL_CASES
    if args.cases:
        cases = [c for c in cases if c[0] in args.cases]
    try:
        run(cases, tuple(args.ops), args.repeat, cpu=not args.no_cpu, e2e=not args.no_e2e,
            json_path=args.json, markdown_path=args.markdown)
    except RuntimeError as exc:
        print(f"bench_cuda: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
