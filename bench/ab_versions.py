"""A/B of two source trees of fastlogits through the public API.

Where :mod:`ab_config` compares two values of a tunable in one process,
this compares two versions of the code (a kernel change): each round runs
one fresh process per tree, alternating, with ``PYTHONPATH`` pointing at
the tree (each tree keeps its own Numba cache), and times the ops of
:data:`ab_config.OPS` on channels-last float32 logits; the report gives,
per op and class count, the median over rounds of each process's median.
Log 29 of bench/RESULTS.md (two argmax chains) was measured this way::

    git worktree add /tmp/old b030e61
    python bench/ab_versions.py /tmp/old . --classes 19 48 8 --pairs 3

A child process checks that it imported fastlogits from its tree (an
editable install elsewhere would otherwise win silently) and fails if not.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def _child(tree, ops, classes, elements, rounds):
    """Time in this process; print ``{"op@C": median seconds}`` as JSON."""
    import fastlogits

    where = os.path.realpath(fastlogits.__file__)
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"fastlogits was imported from {where}, not from {tree}")
    from ab_config import OPS, _once  # this script's directory is sys.path[0]

    rng = np.random.default_rng(1)
    result = {}
    for C in classes:
        n = elements // C
        x = rng.standard_normal((n, C), dtype=np.float32)
        t = rng.integers(0, C, n).astype(np.uint8 if C < 256 else np.int64)
        for op in ops:
            result[f"{op}@{C}"] = float(np.median([_once(lambda: OPS[op](x, t))
                                                   for _ in range(rounds)]))
    print(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", help="source tree of the old version (holds fastlogits/)")
    ap.add_argument("new", help="source tree of the new version")
    ap.add_argument("--ops", nargs="+", default=["argmax", "classify", "confusion_matrix",
                                                 "cross_entropy"])
    ap.add_argument("--classes", nargs="+", type=int, default=[19])
    ap.add_argument("--elements", type=int, default=40 * 1024 * 1024)
    ap.add_argument("--rounds", type=int, default=7, help="timed calls per process")
    ap.add_argument("--pairs", type=int, default=3, help="old/new process pairs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.new, args.ops, args.classes, args.elements, args.rounds)
        return
    from ab_config import OPS

    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        ap.error(f"unknown ops {unknown}; choose from {sorted(OPS)}")
    runs = {args.old: [], args.new: []}
    for _ in range(args.pairs):
        for tree in (args.old, args.new):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            cmd = [sys.executable, os.path.abspath(__file__), tree, tree, "--child",
                   "--ops", *args.ops, "--classes", *map(str, args.classes),
                   "--elements", str(args.elements), "--rounds", str(args.rounds)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for key in runs[args.old][0]:
        old, new = (1e3 * np.median([r[key] for r in runs[tree]]) for tree in (args.old, args.new))
        op, C = key.split("@")
        print(f"C={int(C):5d} {op:16s} old {old:7.1f} ms  new {new:7.1f} ms  old/new {old / new:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
