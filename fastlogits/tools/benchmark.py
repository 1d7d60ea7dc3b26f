"""Timing and the report behind ``fastlogits bench`` (also used by bench/).

Every op is timed on every requested fastlogits backend and beside what a
user would otherwise write: the NumPy idiom (``np.exp(x - max) / sum``,
``np.argmax``) and PyTorch (``torch.softmax``, ``softmax().max()`` for
classify, ...) when it is installed, in one process and one run, together
with the memory bandwidth measured in the same run (:mod:`.bandwidth`).

Throughput counts the op's floor, the bytes it cannot avoid: one read of x
(plus the target for the losses) and one write of the outputs. Ops that
write an x-sized result (softmax, log_softmax) are compared with the copy
bandwidth (read + write), the others with the read bandwidth; GPU rows with
the device copy bandwidth.

bfloat16 (``dtype="bfloat16"``, PyTorch needed: NumPy has no bfloat16)
times fastlogits on a torch bfloat16 tensor beside the same values in
float32 (``fastlogits[cpu] float32``), the NumPy idiom on those float32
values, and PyTorch's own bfloat16 path on the tensor.

Main entry points: :func:`make_inputs`, :func:`implementations`,
:func:`floor_bytes`, :func:`time_call`, :func:`run`, :func:`format_table`,
:func:`plot`.
"""

import os
import platform
import time

import numpy as np

from fastlogits import tuning

__all__ = ["OPS", "available_ops", "Inputs", "make_inputs", "floor_bytes", "ceiling_kind",
           "implementations", "time_call", "measure_bandwidth", "cpu_name", "gpu_name",
           "machine_info", "run",
           "format_table", "plot"]

#: Every op the report knows, in report order; :func:`available_ops` keeps
#: those the installed fastlogits exposes.
OPS = ("softmax", "log_softmax", "logsumexp", "argmax", "classify", "cross_entropy",
       "confusion_matrix")

LAYOUTS = ("hwc", "chw")


def available_ops():
    """The ops of :data:`OPS` that ``fastlogits`` exposes at run time."""
    import fastlogits

    return [op for op in OPS if callable(getattr(fastlogits, op, None))]


#: The dtype name of bfloat16 benchmarks.
BFLOAT16 = "bfloat16"


class Inputs:
    """Benchmark data: logits ``x`` with class axis ``axis`` and a target.

    ``layout="hwc"``: x is (H, W, C), axis -1; ``"chw"``: x is (C, H, W),
    axis 0. ``target`` is (H, W) int64 in [0, C). bfloat16 logits: ``x``
    holds their bits (uint16), ``tensor`` is them as a torch bfloat16
    tensor (no copy) and ``float32`` the same values as float32 Inputs.
    """

    def __init__(self, x, axis, layout, target, tensor=None, float32=None):
        self.x, self.axis, self.layout, self.target = x, axis, layout, target
        self.tensor, self.float32 = tensor, float32
        self.C = x.shape[axis]
        self.pixels = x.size // self.C

    @property
    def bfloat16(self):
        return self.tensor is not None

    @property
    def shape_hwc(self):
        return self.x.shape if self.layout == "hwc" else self.x.shape[1:] + self.x.shape[:1]


def make_inputs(shape=(1024, 2048, 19), layout="hwc", dtype=np.float32, seed=0):
    """Random logits (normal, std 3) of ``shape`` = (H, W, C) in ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    H, W, C = (int(n) for n in shape)
    rng = np.random.default_rng(seed)
    full = (H, W, C) if layout == "hwc" else (C, H, W)
    x = rng.standard_normal(full, dtype=np.float32)
    x *= 3.0
    target = rng.integers(0, C, size=(H, W), dtype=np.int64)
    axis = -1 if layout == "hwc" else 0
    if isinstance(dtype, str) and dtype == BFLOAT16:
        import torch

        tensor = torch.from_numpy(x).to(torch.bfloat16)
        x = tensor.float().numpy()  # the values as bfloat16 rounded them
        return Inputs(tensor.view(torch.int16).numpy().view(np.uint16), axis, layout, target,
                      tensor, Inputs(x, axis, layout, target))
    x = x.astype(dtype, copy=False)
    return Inputs(x, axis, layout, target)


def floor_bytes(op, inp):
    """``(read, write)``: the bytes ``op`` cannot avoid moving on ``inp``."""
    x = inp.x
    read = x.nbytes
    conf = 8 if x.dtype == np.float64 else 4
    if op in ("softmax", "log_softmax"):
        return read, x.nbytes
    if op == "logsumexp":
        return read, inp.pixels * x.dtype.itemsize
    if op == "argmax":
        return read, inp.pixels * 8
    if op == "classify":
        return read, inp.pixels * (8 + conf)
    if op == "cross_entropy":
        return read + inp.target.nbytes, 8
    if op == "confusion_matrix":
        return read + inp.target.nbytes, inp.C * inp.C * 8
    raise ValueError(f"unknown op {op!r}")


def ceiling_kind(op):
    """``"copy"`` for ops writing an x-sized result, else ``"read"``."""
    return "copy" if op in ("softmax", "log_softmax") else "read"


# --------------------------------------------------------------------------
# implementations: zero-argument callables, one per (op, implementation)
# --------------------------------------------------------------------------

def _fastlogits_impl(op, inp, backend):
    import fastlogits as fl

    fn = getattr(fl, op)
    x, target, axis = inp.tensor if inp.bfloat16 else inp.x, inp.target, inp.axis
    sync = lambda: None  # noqa: E731
    if backend == "cuda":
        from numba import cuda

        x, target = cuda.to_device(x), cuda.to_device(target)
        sync = cuda.synchronize
    if op in ("cross_entropy", "confusion_matrix"):
        def call():
            r = fn(x, target, axis, backend=backend)
            sync()
            return r
    else:
        def call():
            r = fn(x, axis, backend=backend)
            sync()
            return r
    return call


def _numpy_impl(op, inp):
    """What a NumPy user writes (max-subtracted, as fast as NumPy goes)."""
    x, axis, target, C = inp.x, inp.axis, inp.target, inp.C

    def softmax():
        e = np.exp(x - x.max(axis, keepdims=True))
        e /= e.sum(axis, keepdims=True)
        return e

    def log_softmax():
        s = x - x.max(axis, keepdims=True)
        s -= np.log(np.exp(s).sum(axis, keepdims=True))
        return s

    def logsumexp():
        m = x.max(axis, keepdims=True)
        return np.log(np.exp(x - m).sum(axis)) + np.squeeze(m, axis)

    def argmax():
        return np.argmax(x, axis)

    def classify():
        m = x.max(axis, keepdims=True)
        return np.argmax(x, axis), 1.0 / np.exp(x - m).sum(axis)

    def cross_entropy():
        m = x.max(axis, keepdims=True)
        lse = np.log(np.exp(x - m).sum(axis)) + np.squeeze(m, axis)
        zt = np.take_along_axis(x, np.expand_dims(target, axis), axis).squeeze(axis)
        return float(np.mean(lse - zt))

    def confusion_matrix():
        pred = np.argmax(x, axis)
        return np.bincount((target * C + pred).ravel(), minlength=C * C).reshape(C, C)

    return {"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp,
            "argmax": argmax, "classify": classify, "cross_entropy": cross_entropy,
            "confusion_matrix": confusion_matrix}[op]


def _torch_impl(op, inp, device="cpu"):
    """PyTorch's own functions (``softmax().max()`` for classify)."""
    import torch
    import torch.nn.functional as F

    t = inp.tensor if inp.bfloat16 else torch.from_numpy(inp.x)
    tg = torch.from_numpy(inp.target)
    if device != "cpu":
        t, tg = t.to(device), tg.to(device)
    dim = inp.axis % inp.x.ndim
    C = inp.C
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    # cross_entropy wants (N, C, ...): rows for H×W×C, one image for C×H×W
    ce_x = t.reshape(-1, C) if dim == t.ndim - 1 else t[None]
    ce_t = tg.reshape(-1) if dim == t.ndim - 1 else tg[None]
    calls = {
        "softmax": lambda: torch.softmax(t, dim),
        "log_softmax": lambda: torch.log_softmax(t, dim),
        "logsumexp": lambda: torch.logsumexp(t, dim),
        "argmax": lambda: torch.argmax(t, dim),
        "classify": lambda: torch.softmax(t, dim).max(dim),
        "cross_entropy": lambda: F.cross_entropy(ce_x, ce_t),
        "confusion_matrix": lambda: torch.bincount(
            (tg * C + torch.argmax(t, dim)).reshape(-1), minlength=C * C).reshape(C, C),
    }
    fn = calls[op]

    def call():
        with torch.no_grad():
            r = fn()
        sync()
        return r

    return call


def _torch_devices():
    """``[]`` without PyTorch, else ``["cpu"]`` plus ``"cuda"`` with a GPU."""
    try:
        import torch
    except ImportError:
        return []
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def implementations(op, inp, backends=("cpu",), numpy=True, torch=True):
    """``{name: callable}`` for ``op``: ``fastlogits[<backend>]`` for each
    backend, ``numpy`` (the idiom) and ``torch`` / ``torch[cuda]``."""
    impls = {}
    for be in backends:
        impls[f"fastlogits[{be}]"] = _fastlogits_impl(op, inp, be)
    if inp.bfloat16:  # the same values in float32, beside
        for be in backends:
            impls[f"fastlogits[{be}] float32"] = _fastlogits_impl(op, inp.float32, be)
    if numpy:
        impls["numpy"] = _numpy_impl(op, inp.float32 if inp.bfloat16 else inp)
    if torch:
        for dev in _torch_devices():
            impls["torch" if dev == "cpu" else f"torch[{dev}]"] = _torch_impl(op, inp, dev)
    return impls


def time_call(fn, repeat=5, max_seconds=None):
    """Call ``fn`` once (first call: compile, cache load, page faults), then
    time up to ``repeat`` calls, stopping early once ``max_seconds`` have
    been spent on timed calls (after at least one).

    Returns
    -------
    dict
        ``first_ms``, ``times_ms`` (list), ``median_ms``, ``min_ms``.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    spent = 0.0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent >= max_seconds:
            break
    ms = [t * 1e3 for t in times]
    return {"first_ms": first * 1e3, "times_ms": ms, "median_ms": float(np.median(ms)),
            "min_ms": float(np.min(ms))}


def measure_bandwidth(nbytes=256 << 20, repeat=5, gpu=False):
    """``{"read": GB/s, "copy": GB/s, "copy_by_store": {"ordinary": GB/s,
    "non-temporal": GB/s}, "device_copy": GB/s or None, "read_by_threads":
    {threads: GB/s}, "copy_by_threads": {...}}``: each CPU ceiling is the
    best of one thread and all threads, the copy's also of both kinds of
    store (:mod:`fastlogits.tools.bandwidth`)."""
    from fastlogits.tools import bandwidth

    read_by, copy_by, copy_store = {}, {}, {}
    return {
        "read": bandwidth.read_gbps(nbytes, repeat, by_threads=read_by),
        "copy": bandwidth.copy_gbps(nbytes, repeat, by_threads=copy_by, by_store=copy_store),
        "copy_by_store": copy_store,
        "device_copy": bandwidth.device_copy_gbps(nbytes, repeat) if gpu else None,
        "read_by_threads": {str(k): v for k, v in read_by.items()},
        "copy_by_threads": {str(k): v for k, v in copy_by.items()},
    }


def cpu_name():
    """The CPU model (from /proc/cpuinfo where there is one)."""
    from fastlogits import machine

    return machine.cpu_model() or platform.processor() or platform.machine()


def gpu_name():
    """The current CUDA device's name, or None without a usable GPU."""
    import fastlogits

    if "cuda" not in fastlogits.backends():
        return None
    try:
        from fastlogits.cuda import runtime

        return runtime.describe().get("name") or "CUDA device (name unknown)"
    except Exception:  # a driver problem
        return "CUDA device (name unknown)"


def machine_info():
    """CPU model, cores, Numba threads, library versions, GPU name."""
    from importlib import metadata

    import numba

    import fastlogits

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "python": platform.python_version(), "fastlogits": fastlogits.__version__,
            "numpy": np.__version__, "numba": numba.__version__, "torch": torch_version,
            "gpu": gpu_name()}


def run(shape=(1024, 2048, 19), layout="hwc", ops=None, backends=None, repeat=5,
        dtype=np.float32, numpy=True, torch=True, bandwidth_bytes=None, max_seconds=3.0,
        seed=0, progress=None):
    """Time ``ops`` on every implementation and measure the bandwidth, in one run.

    Parameters
    ----------
    shape : (H, W, C)
    layout : {"hwc", "chw"}
    ops : list of str, optional
        Default :func:`available_ops`.
    backends : list of str, optional
        fastlogits backends; default every available one except "numpy"
        (the reference; the NumPy idiom is timed as ``numpy`` anyway).
    repeat : int
        Timed calls per implementation (after one untimed first call).
    numpy, torch : bool
        Time the NumPy idiom / PyTorch (when importable) too.
    bandwidth_bytes : int, optional
        Size of the bandwidth buffers; default x's size within [64, 512] MiB.
    max_seconds : float
        Stop repeating an implementation once its timed calls took this long.
    progress : callable, optional
        ``progress(total_steps)`` returning an object with ``update(n)``,
        ``set_description(str)`` (optional) and ``close()``.

    Returns
    -------
    dict
        JSON-ready: ``machine``, ``config``, ``bandwidth_gbps``, ``rows``
        (one per op and implementation: ``op``, ``impl``, ``median_ms``,
        ``min_ms``, ``first_ms``, ``runs``, ``read_bytes``, ``write_bytes``,
        ``gbps``, ``ceiling``, ``fraction_of_bandwidth``, ``vs_numpy``,
        ``vs_torch``).
    """
    import fastlogits

    avail = fastlogits.backends()
    if backends is None:
        backends = [b for b in avail if b != "numpy"]
    for be in backends:
        if be not in avail:
            raise ValueError(f"backend {be!r} is not available here; available: {', '.join(avail)}")
    known = available_ops()
    ops = list(ops) if ops else known
    for op in ops:
        if op not in known:
            raise ValueError(f"unknown op {op!r}; this fastlogits has: {', '.join(known)}")
    if torch and not _torch_devices():
        torch = False
    inp = make_inputs(shape, layout, dtype, seed)
    jobs = [(op, name, fn) for op in ops
            for name, fn in implementations(op, inp, backends, numpy, torch).items()]
    bar = progress(len(jobs) + 1) if progress is not None else None

    def step(desc):
        if bar is not None and hasattr(bar, "set_description"):
            bar.set_description(desc)

    try:
        step("memory bandwidth")
        if bandwidth_bytes is None:
            bandwidth_bytes = int(min(max(inp.x.nbytes, 64 << 20), 512 << 20))
        bw = measure_bandwidth(bandwidth_bytes, repeat=max(3, repeat), gpu="cuda" in backends)
        if bar is not None:
            bar.update(1)
        rows = []
        for op, name, fn in jobs:
            step(f"{op} {name}")
            t = time_call(fn, repeat, max_seconds)
            # rows on float32 values (bfloat16 runs' float32 and NumPy rows) move float32's bytes
            read, write = floor_bytes(op, inp.float32 if inp.bfloat16 and (
                name.endswith(" float32") or name == "numpy") else inp)
            gpu = name.endswith("[cuda]")
            kind = "device_copy" if gpu else ceiling_kind(op)
            gbps = (read + write) / (t["median_ms"] / 1e3) / 1e9
            ceiling = bw.get(kind)
            rows.append({"op": op, "impl": name, "median_ms": t["median_ms"], "min_ms": t["min_ms"],
                         "first_ms": t["first_ms"], "runs": len(t["times_ms"]),
                         "read_bytes": read, "write_bytes": write, "gbps": gbps, "ceiling": kind,
                         "fraction_of_bandwidth": gbps / ceiling if ceiling else None})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    by = {(r["op"], r["impl"]): r for r in rows}
    for r in rows:
        gpu = r["impl"].endswith("[cuda]")
        ref_np = by.get((r["op"], "numpy"))
        ref_t = by.get((r["op"], "torch[cuda]" if gpu else "torch")) or by.get((r["op"], "torch"))
        r["vs_numpy"] = ref_np["median_ms"] / r["median_ms"] if ref_np else None
        r["vs_torch"] = ref_t["median_ms"] / r["median_ms"] if ref_t else None
    return {
        "machine": machine_info(),
        "config": {"shape_hwc": [int(n) for n in inp.shape_hwc], "layout": layout,
                   "x_shape": list(inp.x.shape), "axis": inp.axis, "dtype": BFLOAT16 if inp.bfloat16 else str(np.dtype(dtype)),
                   "x_bytes": int(inp.x.nbytes), "ops": ops, "backends": list(backends),
                   "repeat": repeat, "bandwidth_bytes": int(bandwidth_bytes), "seed": seed,
                   # x-sized CPU outputs reuse freed blocks between the timed calls
                   # unless this is 0 (fastlogits.pool)
                   "output_pool_bytes": int(tuning.current().cpu.output_pool_bytes),
                   "output_pool_min_bytes": int(tuning.current().cpu.output_pool_min_bytes)},
        "bandwidth_gbps": bw,
        "rows": rows,
    }


def _fmt(v, spec, suffix=""):
    return "" if v is None else format(v, spec) + suffix


def _by_threads(bw, kind):
    """`` (1 thread 15.2, 2 threads 8.5)`` from a bandwidth dict, or ``""``."""
    by = bw.get(f"{kind}_by_threads") or {}
    if len(by) < 2:
        return ""
    parts = [f"{k} thread{'s' if k != '1' else ''} {v:.1f}" for k, v in by.items()]
    return " (" + ", ".join(parts) + ")"


def _by_store(bw):
    """The copy bandwidth with ordinary stores, where the report has it."""
    stores = bw.get("copy_by_store") or {}
    return f"; ordinary stores {stores['ordinary']:.1f}" if "ordinary" in stores else ""


def _pool_line(c):
    """Which outputs the timed calls got (the report's pool settings)."""
    from fastlogits import pool

    if "output_pool_bytes" not in c:  # a report from before the pool
        return "outputs: allocated by each call"
    return ("outputs: allocated by each call; fastlogits' CPU "
            + pool.describe(c["output_pool_bytes"], c.get("output_pool_min_bytes"))
            + "; NumPy's and PyTorch's on fresh pages")


def format_table(report):
    """The human-readable report: a header, then one line per op and
    implementation (median ms, GB/s, % of the bandwidth, speed-ups)."""
    m, c, bw = report["machine"], report["config"], report["bandwidth_gbps"]
    lines = [
        f"fastlogits bench: x {tuple(c['x_shape'])} {c['dtype']} ({c['layout']}, class axis "
        f"{c['axis']}), {c['x_bytes'] / 1e6:.3g} MB; median of up to {c['repeat']} runs",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['numba_threads']} Numba threads"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        f"versions: fastlogits {m['fastlogits']}, numpy {m['numpy']}, numba {m['numba']}"
        + (f", torch {m['torch']}" if m.get("torch") else ", torch not installed"),
        f"memory bandwidth (measured in this run, best of 1 and all threads): read "
        f"{bw['read']:.1f} GB/s{_by_threads(bw, 'read')}, "
        f"copy {bw['copy']:.1f} GB/s{_by_threads(bw, 'copy')} (read + write, the better of "
        "ordinary and non-temporal stores" + _by_store(bw) + ")"
        + (f", GPU device copy {bw['device_copy']:.0f} GB/s" if bw.get("device_copy") else ""),
        "GB/s counts one read of x (and target) plus the outputs; % of the read bandwidth, "
        "or of the copy bandwidth for softmax/log_softmax",
        _pool_line(c),
        "",
    ]
    head = ("op", "implementation", "median ms", "GB/s", "% of bw", "vs numpy", "vs torch")
    table = [head]
    last_op = None
    for r in report["rows"]:
        frac = r["fraction_of_bandwidth"]
        table.append((
            r["op"] if r["op"] != last_op else "", r["impl"], f"{r['median_ms']:.2f}",
            f"{r['gbps']:.1f}", _fmt(None if frac is None else 100 * frac, ".0f", "%"),
            _fmt(r["vs_numpy"], ".1f", "x"), _fmt(r["vs_torch"], ".1f", "x")))
        last_op = r["op"]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[i].rjust(widths[i]) for i in range(2, len(head))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(report, path):
    """Bar chart of GB/s per op and implementation, with the measured read
    and copy bandwidth as horizontal lines; saved to ``path``.

    Raises
    ------
    ImportError
        Without matplotlib (``pip install 'fastlogits[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, bw, c = report["rows"], report["bandwidth_gbps"], report["config"]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    by = {(r["op"], r["impl"]): r for r in rows}
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(ops) * max(1, len(impls)) / 2), 4.5))
    for k, name in enumerate(impls):
        xs = [i + (k - (len(impls) - 1) / 2) * width for i, op in enumerate(ops) if (op, name) in by]
        ys = [by[(op, name)]["gbps"] for op in ops if (op, name) in by]
        ax.bar(xs, ys, width, label=name)
    ax.axhline(bw["read"], color="k", linestyle="--", linewidth=1,
               label=f"read bandwidth {bw['read']:.0f} GB/s")
    ax.axhline(bw["copy"], color="grey", linestyle=":", linewidth=1,
               label=f"copy bandwidth {bw['copy']:.0f} GB/s")
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops, rotation=15)
    ax.set_ylabel("GB/s (one read of x + outputs)")
    ax.set_title(f"fastlogits bench: {tuple(c['x_shape'])} {c['dtype']} {c['layout']}, "
                 f"{report['machine']['cores']} cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
