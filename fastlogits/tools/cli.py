"""The ``fastlogits`` command: ``info``, ``demo``, ``classify``, ``bench``, ``compile``.

Run ``fastlogits COMMAND --help`` for the options of each. Every error a
user can cause (a missing file, a wrong axis, a shape that does not fit, an
unknown option, a bad size) prints one line on stderr and exits with status
2, with nothing written half-way; Ctrl-C exits with 130. Set
``FASTLOGITS_DEBUG=1`` to get Python tracebacks instead.
"""

import argparse
import os
import sys
import time

from fastlogits.tools import files

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (and no usage block)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


class CommandError(Exception):
    """An error to report on one line (exit status 2)."""


# --------------------------------------------------------------------------
# progress bars on stderr: tqdm when installed, else a small built-in one
# --------------------------------------------------------------------------

class _Bar:
    """A minimal progress bar, drawn on stderr only when it is a terminal,
    and only once the run has lasted ``delay`` seconds."""

    def __init__(self, total, desc, unit, delay=0.5, stream=None):
        self.total, self.desc, self.unit = max(1, total), desc, unit
        self.n, self.delay, self.stream = 0, delay, stream or sys.stderr
        self.t0 = self.last = time.monotonic()
        self.drawn = False
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def set_description(self, desc):
        self.desc = desc

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.live and now - self.t0 >= self.delay and (now - self.last >= 0.1 or self.n >= self.total):
            self.last = now
            self._draw(now)

    def _draw(self, now):
        frac = min(1.0, self.n / self.total)
        filled = int(30 * frac)
        elapsed = now - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.desc[:32]:<32} {100 * frac:5.1f}% |{'#' * filled}{'.' * (30 - filled)}| "
                          f"{_human(self.n)}/{_human(self.total)} {self.unit} "
                          f"{elapsed:5.1f}s, {eta:5.1f}s left ")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _human(n):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _progress(desc, unit, enabled=True):
    """A factory ``make(total)`` for a progress bar, or None when disabled."""
    if not enabled:
        return None

    def make(total):
        try:
            from tqdm import tqdm
        except ImportError:
            return _Bar(total, desc, unit)
        try:
            return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                        leave=False, delay=0.5)
        except TypeError:  # an old tqdm without `delay`
            return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                        leave=False)

    return make


# --------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------

def _ints(text, n, name):
    parts = [p for p in text.replace("x", ",").replace("X", ",").split(",") if p.strip()]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != n or any(v < 1 for v in vals):
        shape = ",".join("HWC"[:n]) if n == 3 else "H,W"
        raise argparse.ArgumentTypeError(f"{text!r} must be {n} positive integers, e.g. {shape}")
    return vals


def _size2(text):
    return _ints(text, 2, "--size")


def _shape3(text):
    return _ints(text, 3, "--shape")


def _memory(text):
    from fastlogits.tools.tiled import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
    return v


def _list(values):
    """``["cpu,numpy", "cuda"]`` -> ``["cpu", "numpy", "cuda"]`` (None stays None)."""
    if values is None:
        return None
    out = []
    for v in values:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------

def _version(dist, module=None):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    if module is not None:
        try:
            mod = __import__(module)
            return getattr(mod, "__version__", "installed")
        except ImportError:
            pass
    return "not installed"


def _tile_status():
    """The channels-first tiles' byte budget and where it comes from."""
    from fastlogits import machine, tuning
    from fastlogits.tools.tiled import format_size

    l2 = machine.l2_bytes()
    l2 = f"the L2 cache: {format_size(l2)} here" if l2 else "1 MiB: the L2 size is unknown"
    return (f"channels-first tiles read twice: up to {format_size(tuning.current().cpu.cf_tile_bytes)} "
            f"(tuning knob cpu_cf_tile_bytes; by default half {l2})")


def _half_status():
    """How the CPU kernels take float16 and bfloat16 logits
    (fastlogits.cpu.llvm.scores; bfloat16 goes the way float16 goes)."""
    from fastlogits import tuning
    from fastlogits.cpu.llvm.half import HARDWARE

    if not HARDWARE:
        return "through float32 chunks (the CPU has no F16C, and is not ARMv8); bfloat16 too"
    if not tuning.current().cpu.half_direct:
        return "through float32 chunks (tuning knob cpu_half_direct is off); bfloat16 too"
    return ("read and written by the kernels as it is, converted in hardware (F16C or ARMv8; "
            "tuning knob cpu_half_direct); bfloat16 too, converted by integer shifts")


def _fastexp_status():
    """How exp runs in the CPU kernels: compiles a tiny (uncached) loop over
    :func:`fastlogits.cpu.llvm.fastexp.fexp` and looks for vector types in its IR."""
    import re

    try:
        import numpy as np
        from numba import njit

        from fastlogits.tuning import FASTMATH
        from fastlogits.cpu.llvm.fastexp import fexp
    except ImportError as exc:
        return f"not available ({exc}); kernels would call the scalar libm exp"

    def loop(x, out):
        for i in range(x.size):
            out[i] = fexp(x[i])

    probe = njit(fastmath=FASTMATH)(loop)
    vectorized = []
    for dt, name in ((np.float32, "float"), (np.float64, "double")):
        a = np.zeros(16, dt)
        probe(a, a.copy())
        ir = probe.inspect_llvm(probe.signatures[-1])
        vectorized.append(re.search(rf"<\d+ x {name}>", ir) is not None)
    if all(vectorized):
        return "vectorized polynomial exp (float32/float64)"
    return "fastlogits.cpu.llvm.fastexp present, but the exp loop did not vectorize (scalar code)"


def _cache_dirs():
    """Numba's on-disk cache directories of the fastlogits kernels, with
    the number and size of the cache files in each."""
    import fastlogits
    from fastlogits.tools import precompile

    dirs = precompile.cache_dirs()
    if not dirs:  # Numba's rule: NUMBA_CACHE_DIR, else __pycache__ next to the source
        base = os.environ.get("NUMBA_CACHE_DIR")
        dirs = [base or os.path.join(os.path.dirname(fastlogits.__file__), "cpu", "__pycache__")]
    out = []
    for d in dirs:
        entries = [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []
        entries = [f for f in entries if f.endswith((".nbi", ".nbc"))]
        size = sum(os.path.getsize(f) for f in entries)
        out.append((d, len(entries), size))
    return out


def _cached_variants_line():
    """How many compiled variants the cache in use holds for this CPU."""
    from fastlogits.tools import precompile

    drivers, functions = precompile.cached_variants()
    return (f"{drivers} kernel variants for this CPU ({functions} compiled functions with their "
            "callees); 'fastlogits compile' adds more")


def _numba_cuda_line():
    """numba-cuda's version, and whether the CUDA backend supports it."""
    installed = _version("numba-cuda")
    try:
        from fastlogits.cuda import runtime
    except Exception:  # noqa: BLE001 - numba-cuda missing or broken: the GPU line says why
        return installed
    problem = runtime.version_problem(installed if installed != "not installed" else "")
    lo, hi = runtime.SUPPORTED_NUMBA_CUDA
    if problem:
        return f"{installed} (UNSUPPORTED: the CUDA backend needs >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]})"
    return f"{installed} (supported: >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]})"


def _gpu_line():
    """The GPU, from :func:`fastlogits.cuda.runtime.describe` when it exists."""
    from fastlogits import preflight

    usable, reason = preflight.cuda_status()
    if not usable:
        return f"none ({reason})"
    try:
        from fastlogits.cuda import runtime

        d = runtime.describe()
    except Exception:  # an older or partial CUDA module: fall back on Numba
        from fastlogits.tools.benchmark import gpu_name

        return gpu_name() or reason
    parts = []
    if d.get("compute_capability"):
        parts.append("compute capability %d.%d" % tuple(d["compute_capability"]))
    if d.get("multiprocessors"):
        parts.append(f"{d['multiprocessors']} SMs")
    if d.get("memory_bytes"):
        parts.append(f"{d['memory_bytes'] / 2**30:.0f} GiB")
    name = d.get("name") or reason
    return f"{name} ({', '.join(parts)})" if parts else name


def cmd_info(args):
    import platform

    import numba
    import numpy as np

    import fastlogits
    from fastlogits import machine, pool, tuning
    from fastlogits.tools import bandwidth
    from fastlogits.tools.benchmark import cpu_name
    from fastlogits.tools.tiled import format_size

    bandwidth.read_kernel(np.ones(4096, np.float32), 2)  # a parallel kernel: starts the threads
    layer = machine.threading_layer()
    rows = [
        ("fastlogits", f"{fastlogits.__version__} ({os.path.dirname(fastlogits.__file__)})"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("numba-cuda", _numba_cuda_line()),
        ("torch", _version("torch", "torch")),
        ("backends", ", ".join(fastlogits.backends())),
        ("threads", f"{numba.get_num_threads()} Numba threads of {os.cpu_count()} cores, "
                    f"threading layer {layer}"),
        ("CPU", cpu_name()),
        ("row prefetch", f"channels-last rows of up to {tuning.current().cpu.row_prefetch_max_bytes} bytes "
                         f"(the value for {machine.cpu_vendor() or 'unknown'} CPUs: "
                         "tuning knob cpu_row_prefetch_max_bytes)"),
        ("tiles", _tile_status()),
        ("float16", _half_status()),
        ("GPU", _gpu_line()),
        ("fastexp", _fastexp_status()),
        ("vectors", machine.wide_vectors()),
        ("output pool", pool.describe()),
    ]
    dirs = _cache_dirs()
    if len({d for d, _, _ in dirs}) > 3:  # __pycache__ per source directory: sum them up
        n, size = sum(n for _, n, _ in dirs), sum(s for _, _, s in dirs)
        rows.append(("kernel cache", f"{len(dirs)} directories ({n} files, {format_size(size)}), "
                                     f"e.g. {dirs[0][0]}"))
    else:
        for d, n, size in dirs:
            rows.append(("kernel cache", f"{d} ({n} files, {format_size(size)})"))
    rows.append(("cached", _cached_variants_line()))
    if os.environ.get("NUMBA_CACHE_DIR"):
        rows.append(("", f"(NUMBA_CACHE_DIR={os.environ['NUMBA_CACHE_DIR']})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------

def cmd_demo(args):
    from fastlogits.tools import demo

    res = demo.run(out_dir=args.out, size=args.size, backends=_list(args.backends),
                   seed=args.seed, repeat=args.repeat, full_reference=args.full_reference)
    if not res["agree"]:
        print("fastlogits demo: error: the backends disagree (see above)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------
# classify
# --------------------------------------------------------------------------

def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


#: Options of a single file's classification only, and their defaults.
_FILE_ONLY = {"key": None, "max_memory": 1 << 30, "palette": None, "confidence_map": "heat"}


def cmd_classify(args):
    if os.path.isdir(args.input):
        return _classify_dataset(args)
    for opt in ("workers", "scheduler"):
        if getattr(args, opt) is not None:
            raise CommandError(f"--{opt} applies to a dataset (a directory of .npy files or a "
                               f"zarr store), but input {args.input!r} is a file")
    from fastlogits.tools import tiled

    opts = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in _FILE_ONLY.items()}
    res = tiled.classify_file(
        args.input, args.axis, labels=args.labels, confidence=args.confidence,
        temperature=args.temperature, backend=args.backend, key=opts["key"],
        max_memory=opts["max_memory"], labels_dtype=args.labels_dtype, palette=opts["palette"],
        confidence_style=opts["confidence_map"],
        progress=_progress("classify", "px", enabled=not args.quiet))
    if not args.quiet:
        counts = res["class_counts"]
        n = max(1, int(counts.sum()))
        top = [c for c in counts.argsort()[::-1][:5] if counts[c]]
        share = ", ".join(f"{c}: {100 * counts[c] / n:.1f}%" for c in top)
        print(f"classified {res['pixels']:,} pixels x {res['classes']} classes ({res['dtype']}, "
              f"shape {res['shape']}, class axis {res['axis']}) on {res['backend']} in "
              f"{res['seconds']:.2f} s, {res['tiles']} tile(s); top classes {share}")
        for path in res["outputs"]:
            print(f"wrote {path}")
    return 0


def _classify_dataset(args):
    from fastlogits.tools import dataset

    for k in _FILE_ONLY:
        if getattr(args, k) is not None:
            raise CommandError(f"--{k.replace('_', '-')} applies to a single .npy/.npz file, not to "
                               f"a dataset (input {args.input!r} is a directory)")
    args.interrupted_note = "; finished maps are kept: run the same command again to resume"
    res = dataset.classify_dataset(
        args.input, args.axis, labels=args.labels, confidence=args.confidence,
        temperature=args.temperature, backend=args.backend, labels_dtype=args.labels_dtype,
        workers=args.workers, scheduler=args.scheduler,
        progress=_progress("classify", "map", enabled=not args.quiet))
    if not args.quiet:
        if res["done"]:
            rate = res["done"] / res["seconds"] if res["seconds"] > 0 else float("inf")
            print(f"classified {res['done']} map(s), {res['pixels']:,} pixels, "
                  f"{res['runner']}, in {res['seconds']:.2f} s ({rate:.2f} maps/s); "
                  f"{res['skipped']} finished before")
        else:
            print(f"all {res['maps']} map(s) were finished before: nothing to do")
        for out in res["outputs"]:
            print(f"wrote {out}" if res["done"] else f"kept {out}")
    return 0


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------

def cmd_bench(args):
    import json

    import numpy as np

    from fastlogits.tools import benchmark

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'fastlogits[plot]'") from None
    for path in (args.json, args.plot):
        if path is not None:
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                raise CommandError(f"cannot write {path!r}: directory {d!r} does not exist")
    files.check_distinct([("--json", args.json), ("--plot", args.plot)])
    report = benchmark.run(
        shape=args.shape, layout=args.layout, ops=_list(args.ops), backends=_list(args.backends),
        repeat=args.repeat, dtype=args.dtype if args.dtype == "bfloat16" else np.dtype(args.dtype),
        torch=not args.no_torch,
        progress=_progress("bench", "step", enabled=not args.quiet))
    print(benchmark.format_table(report))
    if args.json is not None:
        files.write_atomic(args.json, lambda f: f.write(json.dumps(report, indent=2).encode()),
                            "--json")
        print(f"wrote {args.json}")
    if args.plot is not None:
        with files.AtomicOutput(args.plot, "--plot") as out:
            # savefig opens by name to infer the format from the extension; the
            # name is the exclusive temporary's (random, made by us beforehand)
            with out._errors():
                benchmark.plot(report, out.temp)
        print(f"wrote {args.plot}")
    return 0


# --------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------

def cmd_compile(args):
    from fastlogits.tools import precompile

    known = precompile.op_names()
    ops = _list(args.ops) or known
    # "head" stands for every LinearHead method
    ops = [o for op in ops for o in ([k for k in known if k.startswith("head.")]
                                     if op == "head" else [op])]
    unknown = [o for o in ops if o not in known]
    if unknown:
        raise CommandError(f"unknown op {unknown[0]!r}; choose from {', '.join(known)} or head")
    dtypes = _list(args.dtypes)
    bad = [d for d in dtypes if d not in precompile.DTYPES]
    if bad:
        raise CommandError(f"unknown dtype {bad[0]!r}; choose from {', '.join(precompile.DTYPES)}")
    if "bfloat16" in dtypes:
        try:
            precompile.bfloat16_dtype()
        except RuntimeError as e:
            raise CommandError(str(e)) from None
    layouts = _list(args.layouts)
    bad = [d for d in layouts if d not in precompile.LAYOUTS]
    if bad:
        raise CommandError(f"unknown layout {bad[0]!r}; choose from hwc, chw")
    if args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, got {args.jobs}")
    todo = precompile.tasks(list(dict.fromkeys(ops)), dict.fromkeys(dtypes),
                            dict.fromkeys(layouts), dict.fromkeys(args.classes))
    before, _ = precompile.cached_variants()
    compiled, recompiled, seconds = precompile.compile_all(
        todo, args.jobs, progress=_progress("compile", "task", enabled=not args.quiet))
    after, functions = precompile.cached_variants()
    if not args.quiet:
        print(f"compiled {len(todo)} task(s) ({len(set(ops))} op(s) x {len(set(dtypes))} dtype(s) x "
              f"{len(set(layouts))} layout(s) x {len(set(args.classes))} class count(s)) in "
              f"{seconds:.1f} s with {min(args.jobs, len(todo))} process(es): {compiled} functions "
              f"compiled, {recompiled} more in the check")
        print(f"kernel cache: {after} kernel variants for this CPU ({after - before:+d}), "
              f"{functions} compiled functions")
    return 0


def _classes(text):
    vals = []
    for p in text.split(","):
        try:
            v = int(p)
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive integers, e.g. 19,150")
        vals.append(v)
    return vals


# --------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------

def build_parser():
    """The ``fastlogits`` argument parser."""
    p = _Parser(prog="fastlogits",
                description="Logits to labels, confidences and probabilities at the speed of memory.")
    p.add_argument("--version", action="version", version=f"fastlogits {_package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions, backends, threads, GPU, fast-exp path, kernel cache",
                       description="Show versions, backends, threads, the GPU, whether the "
                                   "vectorized exp is active and where compiled kernels are cached.")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("demo", help="classify a synthetic Cityscapes-sized scene on every backend",
                       description="Synthesize a street scene (1024x2048, 19 Cityscapes classes), "
                                   "classify it on every available backend, check that they agree, "
                                   "write labels.png and confidence.png and print a timing table.")
    s.add_argument("--out", default="fastlogits-demo", metavar="DIR",
                   help="output directory (default: ./fastlogits-demo)")
    s.add_argument("--size", type=_size2, default=(1024, 2048), metavar="H,W",
                   help="scene size (default: 1024,2048)")
    s.add_argument("--backends", nargs="+", metavar="B",
                   help="backends to run (default: all available), e.g. cpu,numpy")
    s.add_argument("--repeat", type=int, default=5, metavar="N",
                   help="timed runs per backend (default: 5; fewer for slow backends)")
    s.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    s.add_argument("--full-reference", action="store_true",
                   help="run the NumPy reference on the whole scene (default: a centre crop "
                        "of 256x512 pixels, which the other backends are compared on)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("classify", help="labels and confidence of a logits file or a dataset of maps",
                       description="Classify a logits file, or a dataset of maps. A .npy input is "
                                   "read in tiles, so memory stays within --max-memory whatever "
                                   "its size. Outputs: .npy or .png (palette labels, heat-map "
                                   "confidence), written under a temporary name and renamed when "
                                   "complete. A dataset (a directory of .npy files, or a zarr "
                                   "store: a group of maps or one array whose leading axis "
                                   "indexes them) is classified one task per map, in this process "
                                   "or on a dask cluster (--workers, --scheduler), into a "
                                   "directory of .npy or a .zarr store per output; a rerun "
                                   "resumes it: finished maps are not computed again.")
    s.add_argument("input", metavar="INPUT",
                   help="logits: a .npy or .npz file, a directory of .npy files, or a zarr store")
    s.add_argument("--axis", type=int, required=True, metavar="A",
                   help="the class axis (-1 for H,W,C; 1 for N,C,H,W; 0 for C,H,W); of the whole "
                        "array for a zarr array of maps (1 for N,C,H,W, -1 for N,H,W,C)")
    s.add_argument("--labels", metavar="OUT", help="labels output: .npy or .png; for a dataset, "
                   "a directory (one NAME.npy per map) or a .zarr store (one array per map)")
    s.add_argument("--confidence", metavar="OUT", help="top-1 probability output, as --labels")
    s.add_argument("--temperature", type=_positive_float, default=1.0, metavar="T",
                   help="divide logits by T before the softmax (default 1)")
    s.add_argument("--backend", default="auto", choices=("auto", "cpu", "numpy", "cuda"),
                   help="default: auto (FASTLOGITS_BACKEND, else cpu)")
    s.add_argument("--key", metavar="K", help="array name inside a .npz (default: its only array)")
    s.add_argument("--max-memory", type=_memory, metavar="SIZE",
                   help="bound on the memory taken above what importing fastlogits and "
                        "compiling its kernels takes (peak RSS; the input's page cache is "
                        "never mapped, so not counted), give or take a fixed 4 MiB, "
                        "e.g. 512M or 4G (default: 1G)")
    s.add_argument("--labels-dtype", metavar="D",
                   help=".npy labels dtype (default: the narrowest unsigned type holding C-1)")
    s.add_argument("--palette", metavar="FILE",
                   help="colours of .png labels: text 'R G B' rows or a .npy (K,3) "
                        "(default: Cityscapes for 19 classes, ADE20K for 150, else generated)")
    s.add_argument("--confidence-map", choices=("heat", "grey"),
                   help="colours of a .png confidence (default: heat)")
    run = s.add_mutually_exclusive_group()
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="dataset only: run on a local dask cluster of N worker processes "
                          "(default: in this process, one map after another)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="dataset only: run on the dask cluster of this scheduler, "
                          "e.g. tcp://10.0.0.1:8786 (its workers need fastlogits)")
    s.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("bench", help="time every op on every backend beside NumPy and PyTorch",
                       description="Time every op on every available backend, the NumPy idiom "
                                   "and PyTorch (when installed) in one run, with the memory "
                                   "bandwidth measured in the same run.")
    s.add_argument("--shape", type=_shape3, default=(1024, 2048, 19), metavar="H,W,C",
                   help="logits shape (default: 1024,2048,19)")
    s.add_argument("--layout", choices=("hwc", "chw"), default="hwc",
                   help="hwc: (H,W,C), class axis -1; chw: (C,H,W), class axis 0")
    s.add_argument("--ops", nargs="+", metavar="OP", help="ops to time (default: all)")
    s.add_argument("--backends", nargs="+", metavar="B",
                   help="fastlogits backends (default: all available but the numpy reference)")
    s.add_argument("--repeat", type=int, default=5, metavar="N", help="timed runs (default: 5)")
    s.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "float64"),
                   default="float32",
                   help="bfloat16 (PyTorch needed) also times the same values in float32 "
                        "and PyTorch's bfloat16 path")
    s.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    s.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    s.add_argument("--plot", metavar="OUT.png", help="bar chart (needs matplotlib)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("compile", help="compile the CPU kernels ahead of use, into Numba's cache",
                       description="Compile the CPU kernel variants the chosen ops use, ahead of "
                                   "use, in parallel processes, into the cache Numba loads them "
                                   "from (NUMBA_CACHE_DIR when set): for Docker images and "
                                   "cluster workers, whose first calls then compile nothing. "
                                   "The cache is per CPU model: compile on the machine type "
                                   "that runs the calls.")
    s.add_argument("--ops", nargs="+", metavar="OP",
                   help="ops to compile, e.g. argmax cross_entropy head (default: all)")
    s.add_argument("--dtypes", nargs="+", metavar="D", default=["float32"],
                   help="logits dtypes: float16, bfloat16 (needs ml_dtypes), float32, float64 "
                        "(default: float32)")
    s.add_argument("--layouts", nargs="+", metavar="L", default=["hwc", "chw"],
                   help="hwc (channels-last, class axis -1) and/or chw (channels-first, "
                        "class axis 1) (default: both)")
    s.add_argument("--classes", type=_classes, default=[19], metavar="C[,C...]",
                   help="class counts of your maps: the kernel variant depends on it "
                        "(fewer than 8 classes, 8 and more) (default: 19)")
    s.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="processes compiling at once (default: the number of cores)")
    s.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    s.set_defaults(func=cmd_compile)
    return p


def _package_version():
    from fastlogits import __version__

    return __version__


def _one_line(exc):
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (ValueError, TypeError, CommandError, files.WriteError)):
        return " ".join(text.split())
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def main(argv=None):
    """Entry point of the ``fastlogits`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "repeat", 1) < 1:
        parser.error("--repeat must be at least 1")
    debug = os.environ.get("FASTLOGITS_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        done = "; no output was written" if args.command == "classify" else ""
        done = getattr(args, "interrupted_note", done)
        print(f"fastlogits {args.command}: interrupted{done}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line, never a traceback
        if debug:
            raise
        print(f"fastlogits {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
