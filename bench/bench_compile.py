"""Cold compilation: the first call of each op in a fresh process with an
empty Numba cache, old tree against new (issue #38).

Every case runs in its own process, ``PYTHONPATH`` at the tree and
``NUMBA_CACHE_DIR`` at a new empty directory; it times the first call of
each op on a 512x1024x19 float32 map (channels-last; ``--layout chw`` for
(1, 19, 512, 1024)), all five ops in one script (then again in a second
process on the cache the first filled: the warm figure), and a read-only
input (``np.load(mmap_mode="r")``) after the writeable one, and
cross_entropy without then with the gradient (and the reverse): two
kernels since docs/perf/cpu-078. Each case also
records which dispatchers Numba compiled and for how long (its
``numba:compile`` events, as :mod:`compile_profile` does for pytest)::

    mkdir -p .ab/old && git archive ca21157 fastlogits | tar -x -C .ab/old
    python bench/bench_compile.py --old .ab/old --repeat 3 --json bench/results/<machine>-compile.json

First calls move 10-30 % between runs on a busy machine: ``--repeat N``
runs every case N times (old and new taking turns) and reports the
medians.

A tree is compared only with itself in the same run: the figures depend on
the machine and its load, and on what is installed (the file records it:
with SciPy every case takes about 0.2 s more). A user's fresh environment
has fastlogits' dependencies only; to time one, run this script with a
virtual environment's Python that has just numba and numpy (the cases
put the trees on ``PYTHONPATH``)::

    python -m venv /tmp/rt && /tmp/rt/bin/pip install numba numpy tbb
    /tmp/rt/bin/python bench/bench_compile.py --old .ab/old --repeat 3 --json bench/results/<machine>-compile-runtime.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

OPS = ("argmax", "classify", "softmax", "cross_entropy", "confusion_matrix")
SHAPE = (512, 1024, 19)


def _packages():
    """Versions of the packages a first call's time depends on, None where
    not installed: with SciPy, Numba's first compile in a process imports
    ``scipy.linalg`` (about 0.2 s of every case; a user's fresh
    environment has only fastlogits' own dependencies)."""
    from importlib import metadata

    out = {}
    for name in ("numba", "numpy", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _inputs(layout, tmp):
    """x (float32 logits), t (int64 targets) and the path of x saved as .npy."""
    import numpy as np

    rng = np.random.default_rng(0)
    H, W, C = SHAPE
    x = (3 * rng.standard_normal((H, W, C), dtype=np.float32))
    t = rng.integers(0, C, (H, W))
    if layout == "chw":
        x = np.ascontiguousarray(x.transpose(2, 0, 1))[None]
        t = t[None]
    path = os.path.join(tmp, "x.npy")
    np.save(path, x)
    return x, t, path


def _call(op, x, t, axis):
    import fastlogits as fl

    if op == "cross_entropy with gradient":
        return fl.cross_entropy(x, t, axis=axis, return_grad=True)
    if op in ("cross_entropy", "confusion_matrix"):
        return getattr(fl, op)(x, t, axis=axis)
    return getattr(fl, op)(x, axis=axis)


#: Cases of the loss called both ways in one script: without the gradient
#: (its kernel compiled without the gradient's code) and with it.
BOTH_WAYS = {"loss-then-gradient": ("cross_entropy", "cross_entropy with gradient"),
             "gradient-then-loss": ("cross_entropy with gradient", "cross_entropy")}


def _child(case, layout, tmp):
    """Run ``case`` in this process; print a JSON result on the last line."""
    t0 = time.perf_counter()
    import fastlogits  # first, as a user's script: it sets Numba's target features

    import_s = time.perf_counter() - t0
    import numpy as np
    from numba.core import event

    compiles = []

    class Listener(event.Listener):
        def __init__(self):
            self.starts = []

        def on_start(self, ev):
            self.starts.append(time.perf_counter())

        def on_end(self, ev):
            took = time.perf_counter() - self.starts.pop()
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            name = f"{func.__module__}.{func.__qualname__}" if func else "?"
            compiles.append((name, took, not self.starts))

    event.register("numba:compile", Listener())
    x, t, path = _inputs(layout, tmp)
    axis = 1 if layout == "chw" else -1
    calls = {}

    def timed(label, op, xx):
        start = len(compiles)
        c1, t1 = time.process_time(), time.perf_counter()
        _call(op, xx, t, axis)
        calls[label] = {"seconds": time.perf_counter() - t1, "cpu_s": time.process_time() - c1,
                        "compiled": [[n, round(s, 3)] for n, s, top in compiles[start:] if top],
                        "specializations": len(compiles) - start}

    if case in OPS:
        timed(case, case, x)
    elif case in ("all", "warm"):
        for op in OPS:
            timed(op, op, x)
    elif case in BOTH_WAYS:
        for op in BOTH_WAYS[case]:
            timed(op, op, x)
    elif case.startswith("readonly:"):
        op = case.split(":", 1)[1]
        timed(op, op, x)
        ro = np.load(path, mmap_mode="r")
        timed(op + " read-only", op, ro)
    else:
        raise SystemExit(f"unknown case {case}")
    where = os.path.realpath(fastlogits.__file__)
    print(json.dumps({"import_s": import_s, "calls": calls, "module": where}))


def run_case(tree, case, layout, cache_dir):
    """The child's result for ``case`` on ``tree`` with the Numba cache at
    ``cache_dir``, and its whole wall time."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), NUMBA_CACHE_DIR=cache_dir)
    env.pop("NUMBA_DISABLE_JIT", None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case,
                              "--layout", layout, "--tmp", tmp],
                             env=env, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{tree} {case} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["module"].startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"{case}: fastlogits was imported from {res['module']}, not {tree}")
    res["process_s"] = wall
    return res


def cases(readonly_ops):
    return list(OPS) + ["all"] + [f"readonly:{op}" for op in readonly_ops] + list(BOTH_WAYS)


def measure(trees, layout="hwc", readonly_ops=("softmax", "cross_entropy"), only=None,
            repeat=1):
    """``[{tree label: {case: result}}]``, one dict per round (``repeat``
    of them): every case of every tree in a fresh process on an empty
    cache, the trees taking turns case by case (``"warm"``: "all" again on
    the cache "all" filled)."""
    todo = cases(readonly_ops) if only is None else list(only)
    runs = []
    for _ in range(repeat):
        results = {label: {} for label in trees}
        for case in todo:
            for label, tree in trees.items():
                with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
                    results[label][case] = run_case(tree, case, layout, cache)
                    if case == "all":
                        results[label]["warm"] = run_case(tree, "warm", layout, cache)
                _report_line(label, case, results[label][case])
        runs.append(results)
    return runs


def _report_line(label, case, res):
    parts = [f"{k} {v['seconds']:.2f} s, cpu {v['cpu_s']:.2f} s ({v['specializations']} spec.)"
             for k, v in res["calls"].items()]
    print(f"{label:4s} {case:24s} {'; '.join(parts)}  [process {res['process_s']:.1f} s]",
          file=sys.stderr, flush=True)


def _round_summary(results, key):
    """One round's figures per tree (see :func:`summary`)."""
    out = {}
    for label, res in results.items():
        s = {}
        for op in OPS:
            if op in res:
                s[f"first {op}"] = res[op]["calls"][op][key]
        if "all" in res:
            s["all five"] = sum(c[key] for c in res["all"]["calls"].values())
            s["all five, warm cache"] = sum(c[key] for c in res["warm"]["calls"].values())
        for case in BOTH_WAYS:
            if case in res:
                s[f"{case} (both calls)"] = sum(c[key] for c in res[case]["calls"].values())
        for case, r in res.items():
            if case.startswith("readonly:"):
                op = case.split(":", 1)[1]
                s[f"read-only {op} after writeable"] = r["calls"][op + " read-only"][key]
        out[label] = s
    return out


def summary(runs, key="seconds"):
    """Per tree: each op's first call, all five in one script, warm,
    read-only extras; wall seconds, or with ``key="cpu_s"`` the process's
    CPU seconds (Numba compiles on one thread: on a busy machine, the
    steadier figure); the median over the rounds of :func:`measure`."""
    rounds = [_round_summary(results, key) for results in runs]
    return {label: {k: statistics.median(r[label][k] for r in rounds) for k in s}
            for label, s in rounds[0].items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="tree of the old version (holds fastlogits/)")
    ap.add_argument("--new", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="tree of the new version (default: this checkout)")
    ap.add_argument("--layout", choices=("hwc", "chw"), default="hwc")
    ap.add_argument("--cases", nargs="+", help=f"subset of {cases(OPS)}")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every case (the tables give the medians); first calls"
                    " move 10-30 %% between runs on a busy machine")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.layout, args.tmp)
        return
    trees = {"old": args.old, "new": args.new} if args.old else {"new": args.new}
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    runs = measure(trees, args.layout, only=args.cases, repeat=args.repeat)
    table, cpu = summary(runs), summary(runs, "cpu_s")
    print(f"{'':40s} {'wall':>24s}   {'cpu':>24s}")
    for key in next(iter(table.values())):
        row = "  ".join(f"{label} {table[label][key]:6.2f} s" for label in table)
        row_cpu = "  ".join(f"{label} {cpu[label][key]:6.2f} s" for label in cpu)
        print(f"{key:40s} {row}   {row_cpu}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": SHAPE, "layout": args.layout, "repeat": args.repeat,
                       "summary": table, "summary_cpu": cpu, "runs": runs, "machine": os.uname().nodename,
                       "cpus": os.cpu_count(), "packages": _packages()}, fh, indent=1)


if __name__ == "__main__":
    main()
