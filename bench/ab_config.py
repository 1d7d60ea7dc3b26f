"""A/B of one ``fastlogits.tuning`` knob through the public API.

Times each op with the tunable at its "off" and "on" values, interleaved
round by round in one process (so both see the same machine state), on
float32 logits of about ``--elements`` scores, channels-last (pixels, C)
or with ``--layout chw`` channels-first (C, pixels), and prints the
medians. docs/perf/cpu-026 (the 8-row register blocks) was
measured this way::

    python bench/ab_config.py cpu_row_block_max_classes 0 1073741824 \\
        --ops argmax classify confusion_matrix cross_entropy --classes 8 19 64 96 150

and cpu-037 (the channels-first register blocks) with ``--layout chw``.
"""

import argparse
import time

import numpy as np

import fastlogits as fl
from fastlogits import tuning

_BUFFERS = {}


def _buffer_like(x, tag="out"):
    """One preallocated array like x per shape, dtype and ``tag`` (``out=``,
    ``grad_out``), made as a copy of x."""
    key = (x.shape, x.dtype.str, tag)
    if key not in _BUFFERS:
        _BUFFERS[key] = x.copy()
    return _BUFFERS[key]


def _shifted_buffer_like(x, shift=32):
    """One preallocated array like x whose data start ``shift`` bytes
    further into their 64-byte line than x's (cpu-050: the channels-first
    kernels stream from registers only into outputs on x's line offset)."""
    key = (x.shape, x.dtype.str, "shifted", shift)
    if key not in _BUFFERS:
        raw = np.empty(x.nbytes + 128, np.uint8)
        first = (x.ctypes.data - raw.ctypes.data + shift) % 64
        _BUFFERS[key] = raw[first:first + x.nbytes].view(x.dtype).reshape(x.shape)
    return _BUFFERS[key]


def _in_place_grad(x, t, axis):
    """The gradient in place over a copy of x (made once: later calls run
    on the previous call's gradient, finite values all the same)."""
    y = _buffer_like(x, "in place")
    return fl.cross_entropy(y, t, axis=axis, ignore_index=_ignore_index(t), return_grad=True,
                            grad_out=y)


#: ``op(x, t, axis)``: x the logits, t the targets (for the losses).
OPS = {
    "argmax": lambda x, t, axis=-1: fl.argmax(x, axis=axis),
    "classify": lambda x, t, axis=-1: fl.classify(x, axis=axis),
    "confusion_matrix": lambda x, t, axis=-1: fl.confusion_matrix(
        x, t, axis=axis, ignore_index=_ignore_index(t)),
    "cross_entropy": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t)),
    "cross_entropy_weighted": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t), class_weight=_class_weight(x, axis)),
    "cross_entropy_smoothed": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t), label_smoothing=0.1),
    "cross_entropy_smoothed_weighted": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t), label_smoothing=0.1,
        class_weight=_class_weight(x, axis)),
    "cross_entropy_grad": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t), return_grad=True),
    "cross_entropy_grad_out": lambda x, t, axis=-1: fl.cross_entropy(
        x, t, axis=axis, ignore_index=_ignore_index(t), return_grad=True,
        grad_out=_buffer_like(x)),
    "cross_entropy_grad_inplace": _in_place_grad,
    "softmax_inplace": lambda x, t, axis=-1: fl.softmax(
        _buffer_like(x, "in place"), axis=axis, out=_buffer_like(x, "in place")),
    "log_softmax_inplace": lambda x, t, axis=-1: fl.log_softmax(
        _buffer_like(x, "in place"), axis=axis, out=_buffer_like(x, "in place")),
    "softmax": lambda x, t, axis=-1: fl.softmax(x, axis=axis),
    "softmax_out": lambda x, t, axis=-1: fl.softmax(x, axis=axis, out=_buffer_like(x)),
    "softmax_out_shifted": lambda x, t, axis=-1: fl.softmax(
        x, axis=axis, out=_shifted_buffer_like(x)),
    "log_softmax": lambda x, t, axis=-1: fl.log_softmax(x, axis=axis),
    "logsumexp": lambda x, t, axis=-1: fl.logsumexp(x, axis=axis),
}


def _class_weight(x, axis):
    """Class weights for the weighted loss ops: 0.5 to 2, not all 1 (unit
    weights take the unweighted path)."""
    return np.linspace(0.5, 2.0, x.shape[axis])


def _ignore_index(t):
    """The ignore index of :func:`make_inputs`' targets: 255 for uint8."""
    return 255 if t.dtype == np.uint8 else -100


def make_inputs(rng, C, elements, layout, ignored=0.0, dtype="float32", scale=1.0,
                targets=None):
    """``(x, t, axis)``: logits of about ``elements`` scores (normal, std
    ``scale``, of ``dtype``), (pixels, C) with axis -1 (``layout`` "hwc")
    or (C, pixels) with axis 0 ("chw"), and random targets of dtype
    ``targets`` ("uint8" or "int64"; None: uint8 below 255 classes, else
    int64, as bench_losses' int64 targets are), a fraction ``ignored`` of
    them the ignore index (:func:`_ignore_index`)."""
    n = elements // C
    shape, axis = ((n, C), -1) if layout == "hwc" else ((C, n), 0)
    x = rng.standard_normal(shape, dtype=np.float32)
    if scale != 1.0 or dtype != "float32":
        x = (x * np.float32(scale)).astype(dtype)
    if targets is None:
        targets = "uint8" if C < 255 else "int64"
    if targets == "uint8" and C >= 255:
        raise ValueError(f"uint8 targets hold fewer than 255 classes, not {C}")
    t = rng.integers(0, C, n).astype(targets)
    t[rng.random(n) < ignored] = _ignore_index(t)
    return x, t, axis


def _once(f):
    """One timed call after an untimed one (compilation, page faults)."""
    f()
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="a fastlogits.tuning knob, e.g. cpu_tile_pixels")
    ap.add_argument("off", type=int)
    ap.add_argument("on", type=int)
    ap.add_argument("--ops", nargs="+", choices=sorted(OPS), default=sorted(OPS))
    ap.add_argument("--classes", nargs="+", type=int, default=[19])
    ap.add_argument("--elements", type=int, default=40 * 1024 * 1024)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layout", choices=("hwc", "chw"), default="hwc",
                    help="logits (pixels, C), axis -1, or (C, pixels), axis 0")
    ap.add_argument("--ignored", type=float, default=0.0,
                    help="fraction of the targets set to the ignore index")
    ap.add_argument("--dtype", choices=("float16", "float32", "float64"), default="float32")
    ap.add_argument("--scale", type=float, default=1.0, help="std of the logits")
    ap.add_argument("--targets", choices=("uint8", "int64"), default=None,
                    help="dtype of the losses' targets (default uint8 below 255 classes)")
    args = ap.parse_args(argv)
    knob = args.name.lower()  # CPU_TILE_PIXELS (the old config name) or cpu_tile_pixels
    try:
        tuning.replaced(tuning.current(), **{knob: args.off})
    except (TypeError, ValueError) as exc:
        ap.error(str(exc))
    rng = np.random.default_rng(1)
    for C in args.classes:
        x, t, axis = make_inputs(rng, C, args.elements, args.layout, args.ignored,
                                 args.dtype, args.scale, args.targets)
        for op in args.ops:
            times = {args.off: [], args.on: []}
            for _ in range(args.rounds):
                for value in (args.off, args.on):
                    with tuning.override(**{knob: value}):
                        times[value].append(_once(lambda: OPS[op](x, t, axis)))
            off, on = (1e3 * np.median(times[v]) for v in (args.off, args.on))
            print(f"C={C:5d} {op:16s} off {off:7.1f} ms  on {on:7.1f} ms  off/on {off / on:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
