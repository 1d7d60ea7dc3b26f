"""Benchmark tables from machine-readable results.

    python bench/report.py bench/core.json            # one pytest-benchmark JSON
    python bench/report.py --all                      # bench/RESULTS.md from bench/results/
    python bench/report.py --all --results-dir DIR --out -   # print it instead

One file (the first form): for each group (op|shape|layout|dtype) of a
pytest-benchmark JSON, the median ms of every implementation, GB/s over the
op's floor (one read of x plus the outputs), the fraction of the read (or,
for x-sized outputs, copy) bandwidth measured in the same run, and the
speed-ups of fastlogits over NumPy and PyTorch.

``--all``: the whole ``bench/RESULTS.md``, the current tables per machine,
from ``bench/results/`` (one file per machine and suite, named
``<machine>-<suite>[-<layout>][-<dtype>].json``; see its README.md). It
reads the kinds of result files there: ``fastlogits bench --json``,
pytest-benchmark JSON of ``bench_losses.py`` / ``bench_core.py`` and of
``bench_head.py``, ``bench_cuda.py`` / ``cuda_sweep.py`` /
``cuda_overhead.py`` JSON, ``small_calls.py`` and ``bench_dask.py`` JSON. Hand-kept text (``intro.md``, ``<machine>.md``)
is included verbatim. The output depends on those files only (no clock, no
machine), so two runs give the same bytes.
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = "python bench/report.py --all"

# Machines, newest first: (file prefix, section title).
MACHINES = [
    ("xeon", "Intel Xeon (Sapphire Rapids or later), 2 vCPUs"),
    ("zen4", "AMD Zen 4, 2 vCPUs"),
    ("h200", "NVIDIA H200"),
    ("icelake", "Intel Ice Lake, 2 vCPUs (sessions 9-14)"),
    ("zen3", "AMD Zen 3, 2 vCPUs, AVX2 (sessions 6-8)"),
]
SHORT = {"xeon": "Intel Xeon", "zen4": "AMD Zen 4", "h200": "NVIDIA H200",
         "icelake": "Intel Ice Lake", "zen3": "AMD Zen 3"}
# Suites in the order a machine's tables are printed.
SUITE_ORDER = ["cityscapes", "ade20k", "classes1000", "vocab", "losses", "head",
               "cuda", "cuda-losses", "cuda-e2e", "cuda-overhead", "cuda-profile", "cuda-sweep", "small-calls",
               "compile", "dask"]
SHAPES = {(1024, 2048, 19): "Cityscapes", (512, 512, 150): "ADE20K",
          (256, 256, 1000): "1000 classes", (1, 512, 32000): "Vocabulary"}
LAYOUT = {"hwc": "channels-last", "chw": "channels-first"}


# --------------------------------------------------------------------------
# pytest-benchmark JSON (bench_core.py, bench_losses.py): the ratio table
# --------------------------------------------------------------------------

def pytest_table(data):
    """The machine line and ratio table of a pytest-benchmark JSON, as lines."""
    groups = defaultdict(dict)
    floors = {}
    for b in data["benchmarks"]:
        impl = b["extra_info"].get("impl", b["name"])
        groups[b["group"]][impl] = b["stats"]["median"]
        floors[(b["group"], impl)] = b["extra_info"].get("floor_bytes")
    bw = groups.pop("bandwidth", {})

    def ceiling_gbps(kind):
        """The best of the thread counts measured (impl "read", "read[2 threads]", ...)."""
        rates = [floors[("bandwidth", impl)] / t / 1e9 for impl, t in bw.items()
                 if impl.split("[")[0] == kind]
        return max(rates) if rates else None

    read_gbps = ceiling_gbps("read")
    copy_gbps = max(filter(None, (ceiling_gbps("copy"), ceiling_gbps("copy-nt"))), default=None)
    cpu = data["machine_info"].get("cpu", {}).get("brand_raw", "?")
    lines = []
    if read_gbps and copy_gbps:
        lines.append(f"machine: {cpu}, read {read_gbps:.1f} GB/s, copy {copy_gbps:.1f} GB/s "
                     "(read+write, ordinary or non-temporal stores; best of one thread and all "
                     "threads), same run")
    else:  # e.g. bench_losses.py run without bench_core.py's test_bandwidth
        lines.append(f"machine: {cpu}; no bandwidth measured in this run (add "
                     "bench/bench_core.py -k bandwidth): no % of ceiling")
    lines.append("")
    lines.append("| op | shape | layout | fastlogits ms | GB/s | % of ceiling | NumPy ms | x NumPy "
                 "| PyTorch ms | x PyTorch |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for group, impls in groups.items():
        op, shape, layout, _ = group.split("|")
        ours = impls.get("fastlogits[cpu]")
        if ours is None:
            continue
        gbps = floors[(group, "fastlogits[cpu]")] / ours / 1e9
        # Ops that write an x-sized result are held to the copy ceiling.
        ceiling = copy_gbps if op in ("softmax", "log_softmax", "cross_entropy_grad",
                                      "cross_entropy_grad_out") else read_gbps
        np_ms, th_ms = impls.get("numpy"), impls.get("torch")
        cells = [op, shape, layout, f"{ours * 1e3:.1f}", f"{gbps:.1f}",
                 f"{100 * gbps / ceiling:.0f} %" if ceiling else "-",
                 f"{np_ms * 1e3:.1f}" if np_ms else "-", f"{np_ms / ours:.1f}" if np_ms else "-",
                 f"{th_ms * 1e3:.1f}" if th_ms else "-", f"{th_ms / ours:.1f}" if th_ms else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(path):
    """The first form: print the table of one pytest-benchmark JSON."""
    with open(path) as fh:
        data = json.load(fh)
    lines = pytest_table(data)
    print(lines[0] + "\n")
    print("\n".join(lines[2:]))


# --------------------------------------------------------------------------
# bench_head.py's pytest-benchmark JSON
# --------------------------------------------------------------------------

HEAD_REGIMES = ("fastlogits[cpu,dot]", "fastlogits[cpu,transposed]")


def head_table(data):
    """The LinearHead ratio table (and the product forms, where measured), as lines."""
    rows = {}
    for b in data["benchmarks"]:
        if not b["group"] or "->" not in b["group"]:
            continue
        rows.setdefault(b["group"], {})[b["extra_info"]["impl"]] = (b["stats"]["median"],
                                                                     b["extra_info"])
    lines = ["| op | features -> C | layout | fastlogits ms | GFLOP/s | GB/s | peak extra MB "
             "| NumPy ms | x NumPy | NumPy MB | PyTorch ms | x PyTorch | PyTorch MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group, impls in rows.items():
        op, shape, layout, _ = group.split("|")
        if "fastlogits[cpu]" not in impls:
            continue
        t, info = impls["fastlogits[cpu]"]

        def mb(i):
            v = impls.get(i, (None, {}))[1].get("peak_extra_bytes")
            return f"{v / 1e6:.0f}" if v is not None else "-"

        def ms_ratio(i):
            if i not in impls:
                return "-", "-"
            return f"{impls[i][0] * 1e3:.1f}", f"{impls[i][0] / t:.1f}"

        nms, nx = ms_ratio("numpy")
        tms, tx = ms_ratio("torch")
        lines.append(f"| {op} | {shape} | {layout} | {t * 1e3:.1f} | {info['flops'] / t / 1e9:.0f} "
                     f"| {info['floor_bytes'] / t / 1e9:.1f} | {mb('fastlogits[cpu]')} | {nms} "
                     f"| {nx} | {mb('numpy')} | {tms} | {tx} | {mb('torch')} |")
    forms = [(g, i) for g, i in rows.items()
             if g.split("|")[2] == "hwc" and any(r in i for r in HEAD_REGIMES)]
    if forms:
        lines += ["", "Channels-last product forms (default: dot when N >= "
                  "CPU_HEAD_DOT_MIN_RATIO * C):", "",
                  "| op | features -> C | default ms | " + " | ".join(f"{r} ms" for r in HEAD_REGIMES)
                  + " |", "|---|---|---|" + "---|" * len(HEAD_REGIMES)]
        for group, impls in forms:
            op, shape, _, _ = group.split("|")
            cells = [f"{impls[i][0] * 1e3:.1f}" if i in impls else "-"
                     for i in ("fastlogits[cpu]",) + HEAD_REGIMES]
            lines.append(f"| {op} | {shape} | " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------
# fastlogits bench --json
# --------------------------------------------------------------------------

def _ms(v):
    return "-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def _x(v):
    return "-" if v is None else f"{v:.1f}"


def bench_table(report):
    """The bandwidth line and the per-op table of a ``fastlogits bench`` report, as lines."""
    bw = report["bandwidth_gbps"]
    by_t = bw.get("read_by_threads") or {}
    one = f" (1 thread {by_t['1']:.1f})" if "1" in by_t and len(by_t) > 1 else ""
    stores = (bw.get("copy_by_store") or {}).get("ordinary")
    ordinary = f" (ordinary stores {stores:.1f})" if stores else ""
    lines = [f"read {bw['read']:.1f} GB/s{one}, copy {bw['copy']:.1f} GB/s{ordinary}, "
             "measured in the same run", "",
             "| op | fastlogits ms | GB/s | % of bandwidth | NumPy ms | × NumPy | PyTorch ms "
             "| × PyTorch |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(r["op"], r["impl"]): r for r in report["rows"]}
    # A bfloat16 run times the same values in float32 beside (benchmark.implementations).
    same_f32 = any(impl == "fastlogits[cpu] float32" for _, impl in by)
    if same_f32:
        lines[2] += " fastlogits float32 ms | bfloat16 / float32 time |"
        lines[3] += "---|---|"
    for op in dict.fromkeys(r["op"] for r in report["rows"]):
        r = by.get((op, "fastlogits[cpu]"))
        if r is None:
            continue
        npy, th = by.get((op, "numpy")), by.get((op, "torch"))
        frac = r.get("fraction_of_bandwidth")
        pct = "-" if frac is None else f"{100 * frac:.0f} % ({r['ceiling']})"
        line = (f"| {op} | {_ms(r['median_ms'])} | {r['gbps']:.1f} | {pct} "
                f"| {_ms(npy and npy['median_ms'])} | {_x(r.get('vs_numpy') if npy else None)} "
                f"| {_ms(th and th['median_ms'])} | {_x(r.get('vs_torch') if th else None)} |")
        if same_f32:
            f32 = by.get((op, "fastlogits[cpu] float32"))
            ratio = f32 and r["median_ms"] / f32["median_ms"]
            line += f" {_ms(f32 and f32['median_ms'])} | {'-' if not ratio else f'{ratio:.2f}'} |"
        lines.append(line)
    return lines


def bench_title(report):
    c = report["config"]
    shape = tuple(c["shape_hwc"])
    name = SHAPES.get(shape, "")
    dims = (f"{shape[1]} rows × {shape[2]} classes" if shape[0] == 1
            else "×".join(str(n) for n in shape))
    dtype = "" if c["dtype"] == "float32" else f", {c['dtype']}"
    return f"{name} {dims}, {LAYOUT.get(c['layout'], c['layout'])}{dtype}".strip()


# --------------------------------------------------------------------------
# CUDA: bench_cuda.py, cuda_sweep.py, cuda_overhead.py
# --------------------------------------------------------------------------

def cuda_table(result, mode="kernel"):
    """fastlogits[cuda] beside torch[cuda], one row per case and op, as lines."""
    rows = [r for r in result["rows"] if r["mode"] == mode]
    by = {(r["case"], r["op"], r["impl"]): r for r in rows}
    if mode == "kernel":
        lines = [f"device-to-device copy {result['copy_gbps']:.0f} GB/s (read + write), median of "
                 f"{result['repeat']}", "",
                 "| case | op | fastlogits ms | % copy | PyTorch ms | % copy | × PyTorch |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    else:
        lines = ["host NumPy in, host NumPy out, pageable memory, wall-clock; median of "
                 f"{result['repeat']}", "",
                 "| case | op | fastlogits ms | PyTorch ms | × PyTorch |",
                 "| --- | --- | ---: | ---: | ---: |"]
    keys = dict.fromkeys((r["case"], r["op"]) for r in rows)
    for case, op in keys:
        ours, th = by.get((case, op, "fastlogits[cuda]")), by.get((case, op, "torch[cuda]"))
        if ours is None:
            continue
        sp = f"{ours['speedup_vs_torch']:.2f}×" if ours.get("speedup_vs_torch") else "-"
        tms = f"{th['ms']:.3f}" if th else "-"
        if mode == "kernel":
            def pct(r):
                return f"{100 * r['fraction_of_copy']:.0f} %" if r and r.get("fraction_of_copy") else "-"
            lines.append(f"| {case} | {op} | {ours['ms']:.3f} | {pct(ours)} | {tms} | {pct(th)} "
                         f"| {sp} |")
        else:
            lines.append(f"| {case} | {op} | {ours['ms']:.1f} | {th['ms']:.1f} | {sp} |"
                         if th else f"| {case} | {op} | {ours['ms']:.1f} | - | - |")
    return lines


def overhead_table(result):
    shape = "×".join(str(n) for n in result["shape"])
    lines = [f"host time per call on a tiny device-resident input ({shape}, axis "
             f"{result['axis']}), µs", "",
             "| op | fastlogits µs | PyTorch µs |", "| --- | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['fastlogits_us']:.0f} | {r['torch_us']:.0f} |")
    return lines


def profile_table(result):
    lines = ["GPU time per call from PyTorch's profiler (CUPTI), against the call's wall time", "",
             "| case | op | wall ms per call (profiled) | GPU ms per call |",
             "| --- | --- | ---: | ---: |"]
    for r in result["profile"]:
        lines.append(f"| {r['case']} | {r['op']} | {r['wall_ms']:.2f} | {r['gpu_ms']:.3f} |")
    return lines


def sweep_table(result):
    rows = result["rows"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    by = {(r["case"], r["op"], r["setting"]): r for r in rows}
    lines = [f"launch settings, ms (% of copy, {result['copy_gbps']:.0f} GB/s); `default` is the "
             "library's, timed again at the end as `default_again`", "",
             "| case | op | " + " | ".join(settings) + " |",
             "| --- | --- |" + " ---: |" * len(settings)]
    for case, op in dict.fromkeys((r["case"], r["op"]) for r in rows):
        cells = []
        for s in settings:
            r = by.get((case, op, s))
            cells.append("-" if r is None else f"{r['ms']:.3f} ({100 * r['fraction_of_copy']:.0f} %)"
                         if r.get("fraction_of_copy") else f"{r['ms']:.3f}")
        lines.append(f"| {case} | {op} | " + " | ".join(cells) + " |")
    if result.get("head"):
        lines += ["", "LinearHead (features → 19 classes, channels-first, against PyTorch's einsum "
                  "+ bias + op):", "",
                  "| op | features | fastlogits ms | PyTorch ms | × PyTorch | GB/s of features |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        for h in result["head"]:
            shape = "×".join(str(n) for n in h["shape"])
            lines.append(f"| {h['op']} | {shape} | {h['fastlogits_ms']:.2f} | {h['torch_ms']:.2f} "
                         f"| {h['torch_ms'] / h['fastlogits_ms']:.2f}× | {h['fastlogits_gbps']:.0f} |")
    return lines


CUDA_TITLES = {
    "cuda": "kernel-only, device-resident float32",
    "cuda-losses": "the losses, kernel-only (after cuda-046)",
    "cuda-e2e": "end to end (host NumPy in and out)",
    "cuda-overhead": "host overhead per call, tiny input",
    "cuda-profile": "where the time goes (profiler)",
    "cuda-sweep": "launch settings and LinearHead",
}


# --------------------------------------------------------------------------
# --all: the whole RESULTS.md
# --------------------------------------------------------------------------

def _provenance(results_dir):
    """file name -> (date, commit, command) from the README's table."""
    out = {}
    readme = results_dir / "README.md"
    if not readme.exists():
        return out
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].endswith(".json"):
            out[cells[0]] = (cells[3], cells[4], cells[5])
    return out


def _split(name):
    """``zen4-cityscapes-hwc.json`` -> ("zen4", "cityscapes")."""
    stem = name[:-len(".json")]
    machine, _, rest = stem.partition("-")
    for suite in sorted(SUITE_ORDER, key=len, reverse=True):
        if rest == suite or rest.startswith(suite + "-"):
            return machine, suite
    return machine, rest


def _section(path):
    """(title, lines) of one result file."""
    data = json.loads(path.read_text())
    machine, suite = _split(path.name)
    short = SHORT.get(machine, machine)
    if "benchmarks" in data:  # pytest-benchmark
        if suite == "head":
            return f"{short} — LinearHead, features 512×1024×256 → 19 classes", head_table(data)
        lines = pytest_table(data)
        return f"{short} — the losses suite, 1024×2048×19", lines
    if "bandwidth_gbps" in data and "config" in data:  # fastlogits bench
        return f"{short} — {bench_title(data)}", bench_table(data)
    if suite == "cuda-e2e":
        return f"{short} — {CUDA_TITLES[suite]}", cuda_table(data, "e2e")
    if suite in ("cuda", "cuda-losses"):
        return f"{short} — {CUDA_TITLES[suite]}", cuda_table(data)
    if suite == "cuda-overhead":
        return f"{short} — {CUDA_TITLES[suite]}", overhead_table(data)
    if suite == "cuda-profile":
        return f"{short} — {CUDA_TITLES[suite]}", profile_table(data)
    if suite == "cuda-sweep":
        return f"{short} — {CUDA_TITLES[suite]}", sweep_table(data)
    if data.get("suite") == "small-calls":
        return f"{short} — small calls, µs per call (bench/small_calls.py)", small_calls_table(data)
    if data.get("suite") == "dask":
        return f"{short} — {dask_title(data)}", dask_table(data)
    if suite == "compile":
        H, W, C = data["shape"]
        packages = data.get("packages")
        env = ("" if packages is None else ", SciPy installed" if packages.get("scipy")
               else ", fastlogits' dependencies only")
        rounds = data.get("repeat", 1)
        medians = f", medians of {rounds} rounds" if rounds > 1 else ""
        return (f"{short} — first calls on an empty kernel cache, {H}×{W}×{C} float32 "
                f"{data['layout']}{env}{medians} (bench/bench_compile.py)", compile_table(data))
    raise ValueError(f"{path}: unknown kind of result file")


def compile_table(data):
    """bench/bench_compile.py's cases: seconds (wall and the process's CPU)
    of old and new tree, each case in a fresh process on an empty cache."""
    wall, cpu = data["summary"], data.get("summary_cpu", {})
    trees = list(wall)
    head = " | ".join(f"{t} s | {t} CPU s" for t in trees)
    lines = [f"| case | {head} |", "|---" * (1 + 2 * len(trees)) + "|"]
    for case in wall[trees[0]]:
        cells = " | ".join(f"{wall[t][case]:.2f} | "
                           + (f"{cpu[t][case]:.2f}" if t in cpu else "-") for t in trees)
        lines.append(f"| {case} | {cells} |")
    return lines


def small_calls_table(data):
    """bench/small_calls.py's medians: old tree, new tree and PyTorch per op and case."""
    med = data["medians_us"]
    lines = ["| op, case | old µs | new µs | PyTorch µs | old/new | new/PyTorch |",
             "|---|---|---|---|---|---|"]
    for case, new in med["new"].items():
        old, torch = med["old"][case], med.get("torch", {}).get(case)
        tail = f"{torch:.1f} | {old / new:.2f} | {new / torch:.2f}" if torch else "- | - | -"
        lines.append(f"| {case.replace('|', ', ')} | {old:.1f} | {new:.1f} | {tail.split(' | ')[0]} | "
                     f"{old / new:.2f} | {tail.split(' | ')[-1]} |")
    return lines


# --------------------------------------------------------------------------
# bench/bench_dask.py: a dataset of maps on dask
# --------------------------------------------------------------------------

def dask_title(data):
    c = data["config"]
    dims = "×".join(str(n) for n in c["shape_hwc"])
    return (f"a dataset on dask: {c['maps']} maps {dims}, {LAYOUT.get(c['layout'], c['layout'])}, "
            "read from zarr (bench/bench_dask.py)")


def dask_table(data):
    """Maps per second of each variant, against in-process fastlogits, and the goals."""
    rows = data["rows"]
    base = next(r for r in rows if r["variant"] == "fastlogits" and r["workers"] is None)
    lines = ["| variant | workers | maps/s | ms per map | × in-process fastlogits |",
             "|---|---|---|---|---|"]
    for r in rows:
        where = "in-process" if r["workers"] is None else str(r["workers"])
        ratio = r["maps_per_s"] / base["maps_per_s"]
        lines.append(f"| {r['variant']} | {where} | {r['maps_per_s']:.2f} | {r['ms_per_map']:.1f} "
                     f"| {ratio:.2f} |")
    s = data["summary"]

    def workers(k):
        return f"{k} worker{'s' if str(k) != '1' else ''}"

    text = ["Goals: fastlogits on dask within 15 % of in-process: " + ", ".join(
        f"{100 * v:.0f} % ({workers(k)})" for k, v in s["dask_vs_in_process"].items()) + "."]
    idioms = [(i, s[f"vs_{i}"]) for i in ("numpy_softmax", "numpy_lean") if f"vs_{i}" in s]
    if idioms:
        text.append("At least 10× the NumPy idiom through dask: " + ", ".join(
            f"{v:.1f}× {i.replace('_', ' ')}" for i, v in idioms) + ".")
    firsts = [(r["workers"], r["first_task_s"]) for r in rows if r.get("first_task_s") is not None]
    if firsts:
        text.append("The first task of fresh workers (one map each at once: imports, kernels "
                    "from Numba's on-disk cache): " + ", ".join(
                        f"{v:.2f} s ({workers(k)})" for k, v in firsts) + ".")
    if s.get("no_op_ms_per_map"):
        text.append("A no-op task: " + ", ".join(
            f"{v:.2f} ms per map ({workers(k)})" for k, v in s["no_op_ms_per_map"].items()) + ".")
    for name, why in (data.get("unavailable") or {}).items():
        text.append(f"Not measured: {name} ({why}).")
    if not data["config"].get("processes", True):
        text.append("Clusters of threads (--quick): a code check, not figures to report.")
    text.append("The variants agree (pixels of class 0 equal, confidence sums within 1e-5)."
                if s.get("agree") else "THE VARIANTS DISAGREE (see the JSON).")
    return lines + ["", " ".join(text)]


VARIANTS = ["", "hwc", "chw", "hwc-f16", "chw-f16", "hwc-bf16", "chw-bf16"]


def _sort_key(name):
    machine, suite = _split(name)
    variant = name[:-len(".json")][len(machine) + 1 + len(suite):].lstrip("-")
    order = [m for m, _ in MACHINES]
    return (order.index(machine) if machine in order else len(order), machine,
            SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER),
            VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS), name)


def render_all(results_dir):
    """The text of RESULTS.md from ``results_dir``."""
    results_dir = Path(results_dir)
    prov = _provenance(results_dir)
    files = sorted((p.name for p in results_dir.glob("*.json")), key=_sort_key)
    try:
        shown = results_dir.resolve().relative_to(HERE.parent).as_posix()
    except ValueError:
        shown = results_dir.as_posix()
    out = ["# Benchmark results", "",
           f"<!-- Generated by `{COMMAND}` from {shown}/; do not edit: edit the files there "
           "and rerun. -->",
           f"*Generated by `{COMMAND}` from `{shown}/` (the JSON results and the hand-kept "
           "`intro.md` and `<machine>.md`). The optimization log and the history of these "
           "figures: `docs/perf/`.*", ""]
    intro = results_dir / "intro.md"
    if intro.exists():
        out += [intro.read_text().rstrip(), ""]
    by_machine = defaultdict(list)
    for name in files:
        by_machine[_split(name)[0]].append(name)
    titles = dict(MACHINES)
    machines = [m for m, _ in MACHINES if m in by_machine] + sorted(
        m for m in by_machine if m not in titles)
    out += ["Machines: " + "; ".join(titles.get(m, m) for m in machines) + ".", ""]
    for m in machines:
        out += [f"## {titles.get(m, m)}", ""]
        desc = results_dir / f"{m}.md"
        if desc.exists():
            out += [desc.read_text().rstrip(), ""]
        for name in by_machine[m]:
            title, lines = _section(results_dir / name)
            date, commit, command = prov.get(name, ("?", "?", "?"))
            out += [f"### {title}", "",
                    f"`{shown}/{name}`; {date}, {commit}; {command}", ""]
            out += lines + [""]
    return "\n".join(out).rstrip() + "\n"


def cli(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="?", help="one pytest-benchmark JSON: print its ratio table")
    ap.add_argument("--all", action="store_true",
                    help="write the whole RESULTS.md from --results-dir")
    ap.add_argument("--results-dir", help="the results folder (default: bench/results); "
                    "implies --all")
    ap.add_argument("--out", help="where --all writes (default: RESULTS.md beside the results "
                    "folder; '-' prints it)")
    args = ap.parse_args(argv)
    if args.all or args.results_dir:
        results_dir = Path(args.results_dir or HERE / "results")
        text = render_all(results_dir)
        out = args.out or str(results_dir.parent / "RESULTS.md")
        if out == "-":
            sys.stdout.write(text)
        else:
            Path(out).write_text(text)
            print(f"wrote {out}", file=sys.stderr)
        return
    if args.json is None:
        ap.error("give a pytest-benchmark JSON file, or --all")
    main(args.json)


if __name__ == "__main__":
    cli()
