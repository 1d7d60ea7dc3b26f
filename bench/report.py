"""Turn a pytest-benchmark JSON file into the ratio table of bench/RESULTS.md.

    python bench/report.py bench/core.json

For each group (op|shape|layout|dtype): median ms of every implementation,
GB/s over the op's floor (one read of x plus the outputs), the fraction of
the read (or, for x-sized outputs, copy) bandwidth measured in the same
run, and the speed-ups of fastlogits over NumPy and PyTorch.
"""

import json
import sys
from collections import defaultdict


def main(path):
    with open(path) as fh:
        data = json.load(fh)
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
    if read_gbps and copy_gbps:
        print(f"machine: {cpu}, read {read_gbps:.1f} GB/s, copy {copy_gbps:.1f} GB/s "
              "(read+write, ordinary or non-temporal stores; best of one thread and all "
              "threads), same run\n")
    else:  # e.g. bench_losses.py run without bench_core.py's test_bandwidth
        print(f"machine: {cpu}; no bandwidth measured in this run (add "
              "bench/bench_core.py -k bandwidth): no % of ceiling\n")
    print("| op | shape | layout | fastlogits ms | GB/s | % of ceiling | NumPy ms | x NumPy "
          "| PyTorch ms | x PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
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
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
