"""Per-call cost of small inputs: two fastlogits trees and PyTorch, one run.

    python bench/small_calls.py OLD_TREE NEW_TREE [--pairs 5] [--calls 2000]
        [--json bench/results/<machine>-small-calls.json]

Each tree is timed in processes of its own (old, new and PyTorch
alternating, ``--pairs`` times; the median of each), on the cases of the
architecture issue: (8, 125) float32 channels-last and (1, 19, 64, 64)
float32 channels-first, for argmax, softmax, classify and cross_entropy.
A call here is the library's overhead: validation, dispatch, allocation
and a kernel over a few thousand scores. Microseconds per call, best of
``--repeat`` loops of ``--calls`` calls in each process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [("hwc", (8, 125), -1), ("chw", (1, 19, 64, 64), 1)]
OPS = ("argmax", "softmax", "classify", "cross_entropy")

_CHILD = r"""
import json, sys, timeit
import numpy as np
lib, calls, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cases = json.loads(sys.argv[4])
ops = json.loads(sys.argv[5])
out = {}
if lib == "torch":
    import torch
    F = torch.nn.functional
for name, shape, axis in cases:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    reduced = tuple(n for k, n in enumerate(shape) if k != axis % len(shape))
    t = rng.integers(0, shape[axis], reduced)
    if lib == "torch":
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        fns = {"argmax": lambda: xt.argmax(axis),
               "softmax": lambda: xt.softmax(axis),
               "classify": lambda: xt.softmax(axis).max(axis),
               "cross_entropy": lambda: F.cross_entropy(xt if axis == 1 else xt, tt)}
    else:
        import fastlogits as fl
        fns = {"argmax": lambda: fl.argmax(x, axis),
               "softmax": lambda: fl.softmax(x, axis),
               "classify": lambda: fl.classify(x, axis),
               "cross_entropy": lambda: fl.cross_entropy(x, t, axis)}
    for op in ops:
        f = fns[op]
        f()
        f()
        best = min(timeit.repeat(f, number=calls, repeat=repeat)) / calls
        out[f"{op}|{name}"] = best * 1e6
print(json.dumps(out))
"""


def _run(lib, tree, args):
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.path.abspath(tree)
    res = subprocess.run([sys.executable, "-c", _CHILD, lib, str(args.calls), str(args.repeat),
                          json.dumps(CASES), json.dumps(list(args.ops))],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.abspath(tree) if tree else None)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ops", nargs="+", default=list(OPS))
    ap.add_argument("--json", help="write the medians here")
    args = ap.parse_args(argv)
    runs = {"old": [], "new": [], "torch": []}
    for _ in range(args.pairs):
        runs["old"].append(_run("fastlogits", args.old, args))
        runs["new"].append(_run("fastlogits", args.new, args))
        try:
            runs["torch"].append(_run("torch", None, args))
        except subprocess.CalledProcessError:
            runs.pop("torch", None)
    med = {k: {case: statistics.median(r[case] for r in v) for case in v[0]}
           for k, v in runs.items() if v}
    print(f"{'op|case':24s} {'old us':>8s} {'new us':>8s} {'torch us':>9s} "
          f"{'old/new':>8s} {'new/torch':>9s}")
    for case in med["new"]:
        torch_us = med.get("torch", {}).get(case, float("nan"))
        print(f"{case:24s} {med['old'][case]:8.1f} {med['new'][case]:8.1f} {torch_us:9.1f} "
              f"{med['old'][case] / med['new'][case]:8.2f} {med['new'][case] / torch_us:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"suite": "small-calls", "pairs": args.pairs, "calls": args.calls,
                       "cases": CASES, "medians_us": med,
                       "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)},
                      f, indent=1)


if __name__ == "__main__":
    main()
