"""A/B of two source trees of fastlogits through the public API.

Where :mod:`ab_config` compares two values of a tunable in one process,
this compares two versions of the code (a kernel change): each round runs
one fresh process per tree, alternating (old first in every other pair,
new first in the others), with ``PYTHONPATH`` pointing at
the tree (each tree keeps its own Numba cache), and times the ops of
:data:`ab_config.OPS` on float32 logits, channels-last (pixels, C) or with
``--layout chw`` channels-first (C, pixels); the report gives,
per op and class count, the median over rounds of each process's median.
docs/perf/cpu-029 (two argmax chains) was measured this way::

    git worktree add /tmp/old b030e61
    python bench/ab_versions.py /tmp/old . --classes 19 48 8 --pairs 3

and cpu-033 (the exp-sum two classes at a time) with ``--layout chw``.

LinearHead methods are ops too, ``head.<method>.<layout>`` (layout ``hwc``:
features (pixels, N), axis -1; ``chw``: (N, pixels), axis 0), on
``--elements`` float32 features of ``--features`` each into each of
``--classes`` classes (cpu-030)::

    python bench/ab_versions.py /tmp/old . --ops head.argmax.hwc head.argmax.chw \
        --elements 134217728

With ``--calls N`` each timed sample is N calls in a row, and the report
gives microseconds per call: on a small input (``--elements 1000``) that
is the per-call overhead (cpu-070)::

    python bench/ab_versions.py .ab/base . --elements 1000 --classes 125 \
        --calls 2000 --rounds 7 --pairs 4

A child process checks that it imported fastlogits from its tree (an
editable install elsewhere would otherwise win silently) and fails if not.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


HEAD_METHODS = ("argmax", "classify")


def _head_op(op, C, N, elements, rng):
    """``(call, features)`` of the ``head.<method>.<layout>`` op."""
    import fastlogits as fl

    _, method, layout = op.split(".")
    W = (rng.standard_normal((C, N), dtype=np.float32) / np.sqrt(N)).astype(np.float32)
    head = fl.LinearHead(W, rng.standard_normal(C, dtype=np.float32))
    npix = elements // N
    if layout == "hwc":
        f, axis = rng.standard_normal((npix, N), dtype=np.float32), -1
    else:
        f, axis = rng.standard_normal((N, npix), dtype=np.float32), 0
    return (lambda: getattr(head, method)(f, axis=axis)), f


def _per_call(call, calls):
    """Seconds per call of ``calls`` calls back to back, after one untimed
    call (compilation, page faults)."""
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _child(tree, ops, classes, elements, rounds, features, layout, ignored, dtype, scale,
           targets, calls=1):
    """Time in this process; print ``{"op@C": median seconds}`` as JSON
    (seconds per call of ``calls`` calls in a row with ``calls`` > 1)."""
    import fastlogits

    where = os.path.realpath(fastlogits.__file__)
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"fastlogits was imported from {where}, not from {tree}")
    from ab_config import OPS, _once, make_inputs  # this script's directory is sys.path[0]

    rng = np.random.default_rng(1)
    result = {}
    for C in classes:
        core = [op for op in ops if op in OPS]
        if core:
            x, t, axis = make_inputs(rng, C, elements, layout, ignored, dtype, scale, targets)
        for op in ops:
            if op in OPS:
                call = lambda: OPS[op](x, t, axis)  # noqa: E731
            else:
                call, _ = _head_op(op, C, features, elements, rng)
            result[f"{op}@{C}"] = float(np.median([_once(call) if calls == 1
                                                   else _per_call(call, calls)
                                                   for _ in range(rounds)]))
            call = None
    print(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", help="source tree of the old version (holds fastlogits/)")
    ap.add_argument("new", help="source tree of the new version")
    ap.add_argument("--ops", nargs="+", default=["argmax", "classify", "confusion_matrix",
                                                 "cross_entropy"])
    ap.add_argument("--classes", nargs="+", type=int, default=[19])
    ap.add_argument("--elements", type=int, default=40 * 1024 * 1024,
                    help="logits (or head features) per op")
    ap.add_argument("--features", type=int, default=256, help="N of the head.* ops")
    ap.add_argument("--rounds", type=int, default=7, help="timed calls per process")
    ap.add_argument("--pairs", type=int, default=3, help="old/new process pairs")
    ap.add_argument("--layout", choices=("hwc", "chw"), default="hwc",
                    help="core ops: logits (pixels, C), axis -1, or (C, pixels), axis 0")
    ap.add_argument("--ignored", type=float, default=0.0,
                    help="fraction of the targets set to the ignore index (the losses)")
    ap.add_argument("--dtype", choices=("float16", "float32", "float64"), default="float32",
                    help="dtype of the core ops' logits")
    ap.add_argument("--scale", type=float, default=1.0, help="std of the core ops' logits")
    ap.add_argument("--targets", choices=("uint8", "int64"), default=None,
                    help="dtype of the losses' targets (default uint8 below 255 classes)")
    ap.add_argument("--calls", type=int, default=1,
                    help="calls per timed sample (> 1: per-call time of a loop, reported in "
                         "microseconds; for small --elements, where a call is the overhead)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.new, args.ops, args.classes, args.elements, args.rounds, args.features,
               args.layout, args.ignored, args.dtype, args.scale, args.targets, args.calls)
        return
    from ab_config import OPS

    heads = {f"head.{m}.{lay}" for m in HEAD_METHODS for lay in ("hwc", "chw")}
    unknown = sorted(set(args.ops) - set(OPS) - heads)
    if unknown:
        ap.error(f"unknown ops {unknown}; choose from {sorted(OPS) + sorted(heads)}")
    runs = {args.old: [], args.new: []}
    for pair in range(args.pairs):
        # Old first in even pairs, new first in odd ones: whichever runs
        # second in a pair met a warmer (or busier) machine.
        for tree in (args.old, args.new) if pair % 2 == 0 else (args.new, args.old):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            cmd = [sys.executable, os.path.abspath(__file__), tree, tree, "--child",
                   "--ops", *args.ops, "--classes", *map(str, args.classes),
                   "--elements", str(args.elements), "--rounds", str(args.rounds),
                   "--features", str(args.features), "--layout", args.layout,
                   "--ignored", str(args.ignored), "--dtype", args.dtype,
                   "--scale", str(args.scale), "--calls", str(args.calls)]
            if args.targets:
                cmd += ["--targets", args.targets]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
    scale, unit = (1e3, "ms") if args.calls == 1 else (1e6, "us")
    for key in runs[args.old][0]:
        old, new = (scale * np.median([r[key] for r in runs[tree]])
                    for tree in (args.old, args.new))
        op, C = key.split("@")
        print(f"C={int(C):5d} {op:18s} old {old:7.1f} {unit}  new {new:7.1f} {unit}  "
              f"old/new {old / new:.2f}", flush=True)


if __name__ == "__main__":
    main()
