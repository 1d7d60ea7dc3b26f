"""Host time per call of the CUDA ops, for a lent GPU.

    python bench/cuda_overhead.py [--json F] [--profile OP ...]

On a tiny device-resident input (2 x 19 x 8 x 16 scores, channels-first)
the GPU's work takes microseconds, so the time per call of a loop of calls
is the host's: validation, device views, allocation, launches, and for the
ops that return host values (cross_entropy, confusion_matrix) the wait for
the stream. This is the floor of every call; where it exceeds the kernel
(the losses on an H200: docs/perf/cuda-046) it is the call's
time. PyTorch's own call is timed beside it (its C++ dispatcher is the
bar), with the same preallocated outputs as :mod:`bench.bench_cuda`.
``--profile`` prints cProfile's cumulative view of fastlogits' call.
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

from bench import bench_cuda as bc  # noqa: E402

SHAPE, AXIS = (2, 19, 8, 16), 1
OPS = ("argmax", "classify", "softmax", "cross_entropy", "cross_entropy_grad",
       "confusion_matrix")


def per_call_us(call, torch, calls=200, rounds=5):
    """Median over ``rounds`` of the wall time per call of ``calls`` calls
    (the GPU waited for at the end of each round), in microseconds."""
    for _ in range(20):
        call()
    bc._sync(torch)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        bc._sync(torch)
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return float(np.median(times))


def profile(call, calls=200, lines=40):
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        call()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--profile", nargs="*", default=[], choices=OPS, metavar="OP")
    args = ap.parse_args(argv)
    if not bc.gpu_available():
        print("cuda_overhead: needs a real GPU", file=sys.stderr)
        return 2
    torch = bc._torch_cuda()
    if torch is not None:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(SHAPE, generator=g, device="cuda")
        t = torch.randint(0, SHAPE[AXIS], SHAPE[:AXIS] + SHAPE[AXIS + 1:], generator=g,
                          device="cuda")
    else:
        hx, ht = bc.host_inputs(SHAPE, AXIS, 0)
        x, t = bc.to_gpu(hx, None), bc.to_gpu(ht, None)
    rows = []
    print(f"host time per call, {SHAPE} axis={AXIS} on the GPU (median of 5 x 200 calls)")
    for op in args.ops:
        ours = per_call_us(bc._fl_device_call(op, x, t, AXIS, torch), torch)
        theirs = (per_call_us(bc._torch_call(op, x, t, AXIS), torch)
                  if torch is not None else float("nan"))
        rows.append({"op": op, "fastlogits_us": ours, "torch_us": theirs})
        print(f"  {op:20s} fastlogits {ours:8.1f} us   torch {theirs:8.1f} us")
    for op in args.profile:
        print(f"cProfile, 200 calls of {op}:")
        print(profile(bc._fl_device_call(op, x, t, AXIS, torch)))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": bc.machine(), "shape": SHAPE,
                                               "axis": AXIS, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
