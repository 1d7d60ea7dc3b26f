"""Host time per call of the CUDA ops WITHOUT a GPU: old tree against this
one, in one run.

    python bench/cuda_host_overhead.py [--old .ab/old] [--calls 300] [--rounds 5]

Make the old tree with
``mkdir -p .ab/old && git archive 946cea3 fastlogits bench | tar -x -C .ab/old``.

What is measured, honestly labelled: each tree's host path of a call
(argument checks, the caller's library and stream, device views, plan,
output allocation, scratch, the copies back and the wait) under the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), on a tiny channels-first input
held in the simulator's device arrays (exposing
``__cuda_array_interface__``, as tests/cuda/conftest.py arranges), with the
launch (``runtime.launch``) replaced by a stub that does nothing: the GPU
launch and the kernels are left out, and so are the costs only a real
driver has (``from_cuda_array_interface``'s context lookup, the driver's
copies and waits). The old tree's simulator branches stand in for its GPU
branches. A lower bound of the GPU call's host time, not a GPU figure:
bench/cuda_overhead.py on a GPU is (bench/gpu_session.sh).

Each tree runs in its own process, alternating, ``--rounds`` times; the
median per op is printed. The machine is shared: expect 10-20 % noise.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPS = ("softmax", "log_softmax", "logsumexp", "argmax", "classify", "cross_entropy",
       "confusion_matrix")

CHILD = r'''
import json, sys, time
import numpy as np
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

def cai(self):
    a = self._ary
    return {"shape": a.shape, "typestr": a.dtype.str, "strides": a.strides,
            "data": (a.__array_interface__["data"][0], not a.flags.writeable),
            "version": 3, "stream": None}
FakeCUDAArray.__cuda_array_interface__ = property(cai)

import fastlogits as fl
from fastlogits.cuda import runtime
import fastlogits.cuda.host.ops, fastlogits.cuda.host.losses, fastlogits.cuda.host.errflag
import fastlogits.cuda.host.scratch

from fastlogits.cuda.kernels import errflag

def stub(kernel, blocks, threads, stream, shared_bytes, *args):  # the GPU launch, left out
    if kernel is errflag.reset_flag:  # keep the error flag clear, as the kernel would
        np.asarray(args[0])[...] = errflag.CLEAR
runtime.launch = stub

from numba import cuda
rng = np.random.default_rng(0)
x = cuda.to_device(rng.standard_normal((2, 19, 8, 16)).astype(np.float32))
t = cuda.to_device(rng.integers(0, 19, size=(2, 8, 16)))
calls = {
    "softmax": lambda: fl.softmax(x, axis=1),
    "log_softmax": lambda: fl.log_softmax(x, axis=1),
    "logsumexp": lambda: fl.logsumexp(x, axis=1),
    "argmax": lambda: fl.argmax(x, axis=1),
    "classify": lambda: fl.classify(x, axis=1),
    "cross_entropy": lambda: fl.cross_entropy(x, t, axis=1),
    "confusion_matrix": lambda: fl.confusion_matrix(x, t, axis=1),
}
n = int(sys.argv[1])
res = {}
for op in sys.argv[2:]:
    f = calls[op]
    for _ in range(20):
        f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    res[op] = (time.perf_counter() - t0) / n * 1e6
print(json.dumps(res))
'''


def run_tree(tree, calls, ops):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(calls), *ops], cwd=str(tree), env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=str(ROOT / ".ab" / "old"))
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", nargs="*", default=list(OPS))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    trees = {"old": Path(args.old), "new": ROOT}
    runs = {k: [] for k in trees}
    for _ in range(args.rounds):
        for tag, tree in trees.items():
            runs[tag].append(run_tree(tree, args.calls, args.ops))
    med = {tag: {op: sorted(r[op] for r in rs)[len(rs) // 2] for op in args.ops}
           for tag, rs in runs.items()}
    print("host time per call, us (simulator device arrays, launch stubbed out: NOT a GPU figure)")
    print(f"  {'op':18s} {'old':>9s} {'new':>9s} {'new/old':>8s}")
    for op in args.ops:
        o, n = med["old"][op], med["new"][op]
        print(f"  {op:18s} {o:9.1f} {n:9.1f} {n / o:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"median_us": med, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
