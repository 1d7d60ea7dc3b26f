"""CUDA launch-setting sweep and LinearHead timing, for a lent GPU.

    python bench/cuda_sweep.py --json sweep.json            # full sizes
    python bench/cuda_sweep.py --small                      # a quick check

For each case of :mod:`bench.bench_cuda` (full sizes) and each setting of
``fastlogits.tuning``'s ``cuda_*`` knobs in :data:`SETTINGS` (changed in
this process between timings: they are read at call time and none of them
recompiles a kernel), times fastlogits' kernels on device-resident data
(CUDA events, median), as bench_cuda's ``kernel`` mode, and prints the
fraction of the device-to-device copy bandwidth measured in the same run.
Every result is checked against the default setting's (labels equal,
values within 1e-5), so a setting that breaks a kernel shows as a
mismatch, not as a fast time. With ``--head`` it also times
``LinearHead`` (channels-first features, the Cityscapes head shape)
against PyTorch's einsum + op.

Inputs are PyTorch CUDA tensors when PyTorch has CUDA (else Numba device
arrays); ``--head`` needs PyTorch.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fastlogits as fl  # noqa: E402
from bench import bench_cuda as bc  # noqa: E402
from fastlogits import tuning  # noqa: E402

#: (name, overrides of fastlogits.tuning knobs (upper case: lowered), cases it applies to or None for all).
SETTINGS = [
    ("default", {}, None),
    ("threads128", {"CUDA_THREADS_PER_BLOCK": 128}, None),
    ("threads512", {"CUDA_THREADS_PER_BLOCK": 512}, None),
    ("threads1024", {"CUDA_THREADS_PER_BLOCK": 1024}, None),
    ("blocks2048", {"CUDA_MAX_BLOCKS": 2048}, None),
    ("blocks65536", {"CUDA_MAX_BLOCKS": 65536}, None),
    ("tile_cl", {"CUDA_CL_PIXEL_MAX_C": 0}, ("cityscapes-nhwc",)),
    ("tile16k", {"CUDA_CL_PIXEL_MAX_C": 0, "CUDA_TILE_SHARED_BYTES": 16 * 1024},
     ("cityscapes-nhwc",)),
    ("tile_off_warp_rows", {"CUDA_CL_PIXEL_MAX_C": 0, "CUDA_TILE_MAX_C": 0},
     ("cityscapes-nhwc",)),
    ("warp_per_row", {"CUDA_LARGE_C": 1 << 30}, ("vocab-128k",)),
    ("no_shuffle", {"CUDA_WARP_SHUFFLE": False}, ("vocab-128k",)),
    # The first setting again: how far the timings drift within one run.
    ("default_again", {}, None),
]
OPS = ("argmax", "classify", "softmax", "logsumexp", "cross_entropy", "cross_entropy_grad",
       "confusion_matrix")


def _inputs(torch, shape, axis, seed):
    """Scores (float32, 4 x standard normal) and int64 targets (10 % ignored)
    on the GPU: PyTorch tensors drawn there when PyTorch has CUDA (the same
    for a seed in every process), else Numba arrays drawn on the host."""
    if torch is not None:
        C = shape[axis]
        red = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(shape, generator=g, device="cuda") * 4
        t = torch.randint(0, C, red, generator=g, device="cuda")
        t[torch.rand(red, generator=g, device="cuda") < 0.1] = bc.IGNORE
        return x, t
    x, t = bc.host_inputs(shape, axis, seed)
    return bc.to_gpu(x, None), bc.to_gpu(t, None)


def _host(res):
    """A result as NumPy arrays (tuples flattened), for comparison."""
    if isinstance(res, tuple):
        return [a for r in res for a in _host(r)]
    if hasattr(res, "detach"):  # every 101st value: a full-size copy takes seconds
        return [res.detach().reshape(-1)[::101].cpu().numpy()]
    if hasattr(res, "copy_to_host"):
        return [res.copy_to_host()]
    return [np.asarray(res)]


def _same(a, b):
    for u, v in zip(a, b):
        if u.dtype.kind in "iu":
            if not np.array_equal(u, v):
                return False
        elif not np.allclose(u, v, rtol=1e-5, atol=1e-6, equal_nan=True):
            return False
    return True


def sweep(cases, ops, repeat, settings=None, log=print):
    torch = bc._torch_cuda()
    bc.warm_up(torch)
    timer = bc.GpuTimer(torch, batch=10)
    largest = max(int(np.prod(s)) * 4 for _, s, _ in cases)
    copy = bc.copy_gbps(largest, bc.GpuTimer(torch), torch, repeat)
    log(f"device-to-device copy: {copy:.0f} GB/s (read + write)")
    rows = []
    for ci, (name, shape, axis) in enumerate(cases):
        x, t = _inputs(torch, shape, axis, ci)
        C = shape[axis]
        want = {}
        for sname, overrides, only in SETTINGS:
            if (only is not None and name not in only) or (settings and sname not in settings):
                continue
            with tuning.override(**{k.lower(): v for k, v in overrides.items()}):
                for op in ops:
                    if op == "confusion_matrix" and C > bc.CONFUSION_MAX_C:
                        continue
                    call = bc._fl_device_call(op, x, t, axis, torch)
                    got = _host(call())
                    ok = _same(got, want[op]) if op in want else True
                    want.setdefault(op, got)
                    if op == "confusion_matrix":
                        # out= accumulates: compare one call's counts only.
                        call = bc._fl_device_call(op, x, t, axis, torch)
                    ms = timer(call, repeat)
                    nbytes = bc.floor_bytes(op, shape, axis, 4)
                    frac = nbytes / (ms / 1e3) / 1e9 / copy
                    rows.append({"case": name, "op": op, "setting": sname, "ms": ms,
                                 "fraction_of_copy": frac, "matches_default": ok})
                    log(f"  {name:16s} {op:18s} {sname:18s} {ms:8.3f} ms {100 * frac:5.1f} %"
                        + ("" if ok else "  MISMATCH"))
                    del call
        del x, t
        if torch is not None:
            torch.cuda.empty_cache()
    return copy, rows


def profile(cases, ops, calls=5, log=print):
    """GPU time per call of each kernel and copy an op queues (PyTorch's
    profiler, CUPTI), beside the call's wall-clock time: where the time of
    an op that waits for its results (the losses) goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch = bc._torch_cuda()
    rows = []
    for ci, (name, shape, axis) in enumerate(cases):
        x, t = _inputs(torch, shape, axis, ci)
        for op in ops:
            if op == "confusion_matrix" and shape[axis] > bc.CONFUSION_MAX_C:
                continue
            call = bc._fl_device_call(op, x, t, axis, torch)
            call()
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                t0 = time.perf_counter()
                for _ in range(calls):
                    call()
                torch.cuda.synchronize()
                wall = (time.perf_counter() - t0) / calls * 1e3
            gpu = {}
            for e in prof.key_averages():
                us = getattr(e, "self_device_time_total", None)
                if us is None:
                    us = getattr(e, "self_cuda_time_total", 0)
                if us:
                    gpu[e.key[:60]] = us / calls / 1e3
            total = sum(gpu.values())
            rows.append({"case": name, "op": op, "wall_ms": wall, "gpu_ms": total, "items": gpu})
            top = ", ".join(f"{k} {v:.3f}" for k, v in sorted(gpu.items(), key=lambda kv: -kv[1])[:4])
            log(f"  profile {name:16s} {op:18s} wall {wall:7.3f} ms  gpu {total:7.3f} ms  [{top}]")
            del call
        del x, t
        torch.cuda.empty_cache()
    return rows


def host_profile(cases, ops, calls=20, log=print):
    """cProfile of ``calls`` calls of each op on the first case: where the
    host's time per call goes (validation, allocation, launches, waits)."""
    import cProfile
    import io
    import pstats

    torch = bc._torch_cuda()
    name, shape, axis = cases[0]
    x, t = _inputs(torch, shape, axis, 0)
    for op in ops:
        call = bc._fl_device_call(op, x, t, axis, torch)
        call()
        bc._sync(torch)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            call()
        bc._sync(torch)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        log(f"host profile {name} {op} ({calls} calls):")
        log("\n".join(ln for ln in out.getvalue().splitlines()[4:] if ln.strip()))


def head(repeat, small, log=print):
    """LinearHead on channels-first features vs PyTorch's einsum + op."""
    torch = bc._torch_cuda()
    timer = bc.GpuTimer(torch, batch=5)
    shape = (1, 64, 32, 48) if small else (2, 256, 512, 1024)
    C = 19
    g = torch.Generator(device="cuda").manual_seed(7)
    f = torch.randn(shape, generator=g, device="cuda")
    W = torch.randn((C, shape[1]), generator=g, device="cuda") / shape[1] ** 0.5
    b = torch.randn((C,), generator=g, device="cuda")
    red = (shape[0],) + shape[2:]
    t = torch.randint(0, C, red, generator=g, device="cuda")
    h = fl.LinearHead(W, b)

    def logits():
        return torch.einsum("nkhw,ck->nchw", f, W) + b[:, None, None]

    ours = {"argmax": lambda: h.argmax(f, axis=1),
            "classify": lambda: h.classify(f, axis=1),
            "cross_entropy": lambda: h.cross_entropy(f, t, axis=1)}
    theirs = {"argmax": lambda: logits().argmax(1),
              "classify": lambda: logits().softmax(1).max(1),
              "cross_entropy": lambda: torch.nn.functional.cross_entropy(logits(), t)}
    floor = f.numel() * 4
    rows = []
    for op in ours:
        a, w = ours[op](), theirs[op]()
        if op != "cross_entropy":
            a = tuple(a) if op == "classify" else (a,)
            a = [torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, device=f.device)
                 for v in a]
            a = a if op == "classify" else a[0]
        if op == "argmax":
            diff = (a != w).float().mean().item()
        elif op == "classify":
            diff = (a[1] - w[0]).abs().max().item()
        else:
            diff = abs(float(a) - w.item())
        ms_fl, ms_t = timer(ours[op], repeat), timer(theirs[op], repeat)
        rows.append({"op": op, "shape": list(shape), "fastlogits_ms": ms_fl, "torch_ms": ms_t,
                     "fastlogits_gbps": floor / ms_fl / 1e6, "diff_vs_torch": diff})
        log(f"  head {op:14s} fastlogits {ms_fl:8.3f} ms ({floor / ms_fl / 1e6:6.0f} GB/s of "
            f"features)  torch {ms_t:8.3f} ms  x{ms_t / ms_fl:5.2f}  diff {diff:.2e}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--small", action="store_true", help="tiny shapes (a quick check)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=bc.OPS)
    ap.add_argument("--cases", nargs="+")
    ap.add_argument("--head", action="store_true", help="also time LinearHead")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--settings", nargs="+", help="setting names (default: all)")
    ap.add_argument("--host-profile", nargs="*", metavar="OP",
                    help="cProfile the host side of these ops on the first case")
    ap.add_argument("--profile", action="store_true",
                    help="also profile the ops (GPU time per kernel vs wall time)")
    args = ap.parse_args(argv)
    if not bc.gpu_available():
        print("cuda_sweep: needs a real GPU", file=sys.stderr)
        return 2
    cases = bc.SMALL_CASES if args.small else bc.FULL_CASES
    if args.cases:
        cases = [c for c in cases if c[0] in args.cases]
    t0 = time.time()
    result = {"machine": bc.machine()}
    if not args.no_sweep:
        result["copy_gbps"], result["rows"] = sweep(cases, args.ops, args.repeat, args.settings)
    if args.profile and bc._torch_cuda() is not None:
        result["profile"] = profile(cases, args.ops)
    if args.host_profile:
        host_profile(cases, args.host_profile)
    if args.head and bc._torch_cuda() is not None:
        result["head"] = head(args.repeat, args.small)
    result["seconds"] = time.time() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
