"""Maps per second over a dataset of maps on disk (zarr): fastlogits on
dask, in-process, and the NumPy idiom through dask, in one run; the
scheduler's overhead per task.

    python bench/bench_dask.py --json bench/results/<machine>-dask.json
    python bench/bench_dask.py --maps 2 --shape 64,128,19     # a small check
    python bench/bench_dask.py --quick                         # seconds: a code check, no figures
    python -m pytest bench/bench_dask.py                       # the same, as a smoke test

The maps: ``--maps`` (default 16) float32 maps of ``--shape`` (default
Cityscapes, 1024x2048x19), drawn once (normal, std 3, fixed seed) into
one zarr array, (N, H, W, C) or with ``--layout chw`` (N, C, H, W), one
map per chunk, uncompressed, in a new directory under ``--scratch``
(default the system's temporary directory), removed at the end.

Every variant does the same per map: read it from the zarr store (in the
worker, as ``fastlogits classify STORE.zarr`` does), compute labels and
confidence, and reduce them to two numbers (the pixels of class 0 and
the confidence's sum; so no map crosses the network, and the variants
are checked against each other). Timed: ``--repeat`` passes over all
maps after a warm-up task on each worker (imports, kernels from the
on-disk cache); maps/s from the median pass.

- ``fastlogits`` in-process: a plain loop, all of Numba's threads;
- ``fastlogits`` on dask, ``--workers`` (default 1 and 2) worker
  processes (``dask.distributed.LocalCluster``, one dask thread each),
  the maps in tasks of a few (:func:`fastlogits.tools.dataset.batches`,
  as the command), Numba threads = the host's cores over the workers
  (:func:`fastlogits.tools.dataset.set_task_threads`, as the command);
- ``numpy softmax`` on dask (the most workers, batched alike): the idiom of the issue,
  the softmax materialized, then ``np.argmax`` and its max;
- ``numpy lean`` on dask: ``np.argmax`` and 1 / sum(exp(x - max)), the
  NumPy idiom ``fastlogits bench`` times;
- ``dask array`` (the most workers): ``fl.classify(da.from_zarr(...))``,
  where fastlogits takes dask arrays (else recorded as unavailable);
- the first task of fresh workers (``first_task_s`` of the fastlogits
  rows: one map per worker at once; the imports and the kernels loaded
  from Numba's on-disk cache);
- ``read`` in-process and ``no-op`` on dask: the read alone, and a task
  that returns at once, one task per map (the scheduler's cost per task,
  as wall time per map).

Each map is read as the command reads it (``MapSource.read``): a memory
map of its chunk file where the store is uncompressed, one chunk per map
(the default here), which zarr's own read would copy at about 2 ms per
10 MB.

Goals (issue 39): fastlogits on dask within 15 % of in-process, and at
least 10x the NumPy idiom through dask. ``bench/report.py`` renders the
JSON (suite ``dask``).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CITYSCAPES = (1024, 2048, 19)
QUICK = {"maps": 2, "shape": (16, 24, 19), "repeat": 1, "workers": (1, 2), "processes": False}


# --------------------------------------------------------------------------
# the tasks (run in the workers; pickled by value, see _by_value)
# --------------------------------------------------------------------------

def _summary(labels, conf):
    return int(np.count_nonzero(labels == 0)), float(conf.sum(dtype=np.float64))


def task_fastlogits(src, table=None):
    """Read the map, classify it with fastlogits (the command's call), reduce."""
    from fastlogits import _layout
    from fastlogits.tools import dataset, tiled

    dataset.set_task_threads(table)
    x = src.read()
    rshape = _layout.reduced_shape(x.shape, src.axis)
    labels = dataset.task_buffer("labels", rshape, np.uint8)
    conf = dataset.task_buffer("confidence", rshape, np.float32)
    tiled.classify_into(x, src.axis, labels, conf, 1.0, "cpu")
    return _summary(labels, conf)


def task_numpy_softmax(src, table=None):
    """The issue's NumPy idiom: the softmax, then np.argmax and its max."""
    x, axis = src.read(), src.axis
    e = np.exp(x - x.max(axis, keepdims=True))
    e /= e.sum(axis, keepdims=True)
    return _summary(np.argmax(x, axis), e.max(axis))


def task_numpy_lean(src, table=None):
    """np.argmax and 1 / sum(exp(x - max)): no softmax kept (fastlogits bench's idiom)."""
    x, axis = src.read(), src.axis
    m = x.max(axis, keepdims=True)
    return _summary(np.argmax(x, axis), 1.0 / np.exp(x - m).sum(axis))


def task_read(src, table=None):
    x = src.read()
    return 0, float(x.flat[0])


def task_noop(src, table=None):
    return 0, 0.0


def _by_value():
    """Workers need not import this file: its functions travel by value."""
    if __name__ != "__main__":
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------
# the maps
# --------------------------------------------------------------------------

def make_maps(root, n, shape_hwc, layout, seed=0, say=print):
    """``n`` maps in one zarr array under ``root``; returns their MapSources."""
    import zarr

    from fastlogits.tools import dataset

    H, W, C = shape_hwc
    shape = (n, H, W, C) if layout == "hwc" else (n, C, H, W)
    path = os.path.join(root, "maps.zarr")
    z = zarr.create_array(path, shape=shape, chunks=(1,) + shape[1:], dtype="float32",
                          compressors=None)
    rng = np.random.default_rng(seed)
    for i in range(n):
        z[i] = rng.standard_normal(shape[1:], dtype=np.float32) * 3
        say(f"wrote map {i + 1}/{n}")
    _, maps = dataset.open_dataset(path, -1 if layout == "hwc" else 1)
    return path, maps


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def _passes(run, repeat):
    """Seconds of ``repeat`` runs of ``run()`` and the last run's result."""
    times, res = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
    return times, res


def _row(variant, runner, workers, times, n, results=None, **extra):
    med = statistics.median(times)
    row = {"variant": variant, "runner": runner, "workers": workers,
           "seconds": [round(t, 6) for t in times], "median_s": med,
           "maps_per_s": n / med if med > 0 else None, "ms_per_map": 1e3 * med / n}
    if results is not None:
        row["class0_pixels"] = sum(r[0] for r in results)
        row["confidence_sum"] = sum(r[1] for r in results)
    row.update(extra)
    return row


def _in_process(maps, repeat):
    task_fastlogits(maps[0])  # warm-up: kernels from the cache, the page cache
    rows = []
    times, res = _passes(lambda: [task_fastlogits(m) for m in maps], repeat)
    rows.append(_row("fastlogits", "in-process", None, times, len(maps), res))
    times, _ = _passes(lambda: [task_read(m) for m in maps], repeat)
    rows.append(_row("read", "in-process", None, times, len(maps)))
    return rows


def run_batch(fn, srcs, table=None):
    """``fn`` on each map of a task's batch in turn."""
    return [fn(src, table) for src in srcs]


def _on_cluster(client, fn, maps, table, repeat, batched=True):
    """``repeat`` passes, after one warm-up task on each worker; the maps in
    the command's batches (:func:`fastlogits.tools.dataset.batches`), or one
    task per map (``batched`` False: the no-op's cost per task)."""
    from fastlogits.tools import dataset

    info = client.scheduler_info(n_workers=-1)["workers"]
    t0 = time.perf_counter()
    warm = [client.submit(fn, maps[0], table, workers=[w], allow_other_workers=False, pure=False)
            for w in info]
    client.gather(warm)
    first = time.perf_counter() - t0  # a fresh worker's first task: imports, kernels from the cache
    if not batched:
        times, res = _passes(lambda: client.gather(client.map(fn, maps, table=table, pure=False)),
                             repeat)
        return times, res, first
    groups = dataset.batches(maps, sum(w["nthreads"] for w in info.values()),
                             nbytes=lambda src: src.nbytes)

    def run():
        futures = [client.submit(run_batch, fn, g, table, pure=False) for g in groups]
        return [r for rs in client.gather(futures) for r in rs]

    times, res = _passes(run, repeat)
    return times, res, first


def _dask_array_variant(client, path, axis, n, repeat):
    """fl.classify on da.from_zarr, reduced like the tasks; None where
    fastlogits does not take dask arrays (yet)."""
    import dask
    import dask.array as da

    import fastlogits as fl

    probe = fl.classify(da.ones((2, 3, 4), chunks=(1, 3, 4), dtype=np.float32))
    if not all(isinstance(r, da.Array) for r in probe):
        return None, "fastlogits.classify does not return dask arrays for dask input here"
    x = da.from_zarr(path)
    labels, conf = fl.classify(x, axis)
    graph = ((labels == 0).sum(), conf.sum(dtype=np.float64))

    def run():
        with client.as_current():
            c0, s = dask.compute(*graph)
        return [(int(c0), float(s))]

    run()  # warm-up
    times, res = _passes(run, repeat)
    return _row("dask array", "dask", None, times, n, res), None


def measure(maps=16, shape=CITYSCAPES, layout="hwc", workers=(1, 2), repeat=3, scratch=None,
            processes=True, numpy=True, seed=0, say=None):
    """Run every variant; returns the report (see the module's description)."""
    import distributed

    import fastlogits
    from fastlogits.tools import benchmark, dataset

    say = say or (lambda msg: None)
    _by_value()
    H, W, C = shape
    map_bytes = H * W * C * 4
    tmp = tempfile.mkdtemp(prefix="fastlogits-bench-dask-", dir=scratch)
    try:
        free = shutil.disk_usage(tmp).free
        if free < 1.1 * maps * map_bytes:
            raise SystemExit(f"bench_dask: {maps} maps need {maps * map_bytes / 2**30:.1f} GiB in "
                             f"{tmp}, {free / 2**30:.1f} GiB free; use --scratch")
        path, srcs = make_maps(tmp, maps, shape, layout, seed, say)
        axis = -1 if layout == "hwc" else 1
        say("in-process")
        rows = _in_process(srcs, repeat)
        unavailable = {}
        for k in workers:
            say(f"LocalCluster of {k} worker {'processes' if processes else 'threads'}")
            with dataset.local_cluster(k, processes=processes) as cluster, \
                    distributed.Client(cluster, set_as_default=False) as client:
                table = dataset.threads_per_worker(client)
                variants = [("fastlogits", task_fastlogits), ("no-op", task_noop)]
                if numpy and k == max(workers):
                    variants += [("numpy softmax", task_numpy_softmax),
                                 ("numpy lean", task_numpy_lean)]
                for j, (name, fn) in enumerate(variants):
                    say(f"  {name} on {k} worker(s)")
                    times, res, first = _on_cluster(client, fn, srcs, table, repeat,
                                                    batched=name != "no-op")
                    # the first variant meets fresh workers: their first task's cost
                    extra = {"first_task_s": round(first, 4)} if j == 0 else {}
                    rows.append(_row(name, "dask", k, times, maps,
                                     None if name == "no-op" else res,
                                     numba_threads=sorted(table.values()), **extra))
                if k == max(workers):
                    say(f"  dask array on {k} worker(s)")
                    row, why = _dask_array_variant(client, path, axis, maps, repeat)
                    if row is None:
                        unavailable["dask array"] = why
                    else:
                        rows.append(dict(row, workers=k))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"suite": "dask",
            "config": {"maps": maps, "shape_hwc": list(shape), "layout": layout, "dtype": "float32",
                       "workers": list(workers), "repeat": repeat, "processes": processes,
                       "map_bytes": map_bytes, "store": "zarr v3, one map per chunk, uncompressed"},
            "machine": dict(benchmark.machine_info(), usable_cores=dataset.usable_cores(),
                            dask=_version("dask"), distributed=distributed.__version__,
                            zarr=_version("zarr"), fastlogits_path=os.path.dirname(fastlogits.__file__)),
            "rows": rows, "unavailable": unavailable, "summary": summarize(rows)}


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def summarize(rows):
    """The ratios the goals are stated in, and whether the variants agree."""
    def rate(variant, workers):
        for r in rows:
            if r["variant"] == variant and r["workers"] == workers:
                return r["maps_per_s"]
        return None

    inproc = rate("fastlogits", None)
    ks = sorted(r["workers"] for r in rows if r["variant"] == "fastlogits" and r["workers"])
    out = {"dask_vs_in_process": {str(k): rate("fastlogits", k) / inproc for k in ks},
           "goal_dask_vs_in_process": 0.85, "goal_vs_numpy": 10.0}
    if ks:
        k = ks[-1]
        for idiom in ("numpy softmax", "numpy lean"):
            if rate(idiom, k):
                out[f"vs_{idiom.replace(' ', '_')}"] = rate("fastlogits", k) / rate(idiom, k)
        noop = [r for r in rows if r["variant"] == "no-op"]
        out["no_op_ms_per_map"] = {str(r["workers"]): r["ms_per_map"] for r in noop}
    ref = next(r for r in rows if r["variant"] == "fastlogits" and r["workers"] is None)
    out["agree"] = all(r["class0_pixels"] == ref["class0_pixels"]
                       and abs(r["confidence_sum"] - ref["confidence_sum"])
                       <= 1e-5 * abs(ref["confidence_sum"]) + 1e-3
                       for r in rows if "class0_pixels" in r)
    return out


def _shape(text):
    vals = tuple(int(v) for v in text.replace("x", ",").split(","))
    if len(vals) != 3 or min(vals) < 1:
        raise argparse.ArgumentTypeError("give H,W,C, e.g. 1024,2048,19")
    return vals


def main(argv=None):
    from bench import report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", type=int, default=16, help="maps in the stack (default 16)")
    ap.add_argument("--shape", type=_shape, default=CITYSCAPES, metavar="H,W,C",
                    help="a map's shape (default 1024,2048,19)")
    ap.add_argument("--layout", choices=("hwc", "chw"), default="hwc")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="K",
                    help="LocalCluster sizes (default 1 2)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (default 3)")
    ap.add_argument("--scratch", metavar="DIR", help="where the maps are written (default: the "
                    "system's temporary directory); removed at the end")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy idioms")
    ap.add_argument("--quick", action="store_true",
                    help="2 tiny maps, clusters of threads: checks the code in seconds, no figures")
    ap.add_argument("--json", metavar="OUT", help="write the report as JSON")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    kw = dict(maps=args.maps, shape=args.shape, workers=tuple(args.workers), repeat=args.repeat)
    if args.quick:
        kw = dict(QUICK)
    if kw["maps"] < 1 or kw["repeat"] < 1 or min(kw["workers"]) < 1:
        ap.error("--maps, --repeat and --workers must be at least 1")
    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    res = measure(layout=args.layout, scratch=args.scratch, numpy=not args.no_numpy, say=say, **kw)
    print("\n".join(report.dask_table(res)))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


def test_bench_dask_quick(tmp_path):
    """The --quick run (clusters of threads, tiny maps) and its table: the
    figures mean nothing; the variants must agree."""
    from bench import report

    res = measure(scratch=tmp_path, **QUICK)
    variants = {(r["variant"], r["workers"]) for r in res["rows"]}
    assert {("fastlogits", None), ("read", None), ("fastlogits", 1), ("fastlogits", 2),
            ("no-op", 1), ("no-op", 2), ("numpy softmax", 2), ("numpy lean", 2)} <= variants
    assert res["summary"]["agree"]
    assert ("dask array", 2) in variants or "dask array" in res["unavailable"]
    assert os.listdir(tmp_path) == []  # the maps are removed
    text = "\n".join(report.dask_table(res))
    assert "| fastlogits | 2 |" in text and "within 15 %" in text


if __name__ == "__main__":
    main()
