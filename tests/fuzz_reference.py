"""Random differential fuzzing of the CPU backend against the reference.

    python -m tests.fuzz_reference [--seed S] [--seconds T]

Not part of the test suite (pytest collects ``test_*.py`` only): a long
run for after a kernel change. Each case draws an op (softmax,
log_softmax, logsumexp, argmax, classify, cross_entropy with any options,
confusion_matrix), a dtype, 1 to 4 dimensions with the class axis
anywhere (1 to 3001 classes, about 60000 scores at most), a scale and an
offset, special values (NaN, +-inf, all -inf pixels, ties), strided,
transposed or broadcast memory, read-only and big-endian arrays,
``out=`` (in place too), a temperature (the ends of the range too) and a target
dtype, and compares with :mod:`fastlogits.reference` by the suite's rules
(:func:`tests.helpers.assert_close`). A failure prints the case's seed;
``--seed`` with ``--seconds 0`` reruns that one case alone. The first
minutes compile the specializations the cases meet.
"""

import argparse
import sys
import time

import numpy as np

import fastlogits as fl
from fastlogits import reference as ref
from tests.helpers import assert_close, sprinkle_specials

CLASSES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 19, 31, 32, 33, 64, 100, 150, 257, 500, 1000,
           2048, 3001)
DTYPES = (np.float16, np.float32, np.float64)
OPS = ("softmax", "log_softmax", "logsumexp", "argmax", "classify", "cross_entropy",
       "confusion_matrix")
#: Temperatures of the tempered ops, the ends of float32's and float64's
#: ranges included (the rule of reference.temperature_scale).
TEMPERATURES = (0.3, 2.0, 7.5, 5e-324, 1e-308, 1e-40, 1e-3, 1e3, 3.4e38, 1.7e308)
#: Tolerance of the losses (float64 sums of float32 pixel losses) per dtype.
LOSS_TOL = {np.float16: 3e-3, np.float32: 2e-5, np.float64: 1e-10}


def draw_logits(rng):
    """``(x, axis, shape, scale)``: logits of a random shape, dtype, scale
    (the normal's std) and memory layout, some with special values or
    many ties."""
    C = int(rng.choice(CLASSES))
    dt = DTYPES[rng.integers(3)]
    nd = int(rng.integers(1, 5))
    side = max(2, int((60000 // C + 1) ** (1 / max(1, nd - 1))) + 3)
    at = int(rng.integers(0, nd))
    others = [int(rng.integers(1, side)) for _ in range(nd - 1)]
    shape = others[:at] + [C] + others[at:]
    scale = float(rng.choice([0.5, 3, 30, 300]))
    x = (rng.standard_normal(shape) * scale + rng.choice([0, 50, -1e3])).astype(dt)
    if rng.random() < 0.5:
        last = np.moveaxis(x, at, -1).copy()
        sprinkle_specials(rng, last, -1, frac=float(rng.choice([0.01, 0.1, 0.3])))
        x = np.ascontiguousarray(np.moveaxis(last, -1, at))
    if rng.random() < 0.2 and dt != np.float64:
        x = np.round(x).astype(dt)  # many ties
    kind = rng.random()
    if kind < 0.15:  # every other element of the non-class axes
        big = np.empty([n * 2 if i != at else n for i, n in enumerate(shape)], dt)
        every = tuple(slice(None, None, 2) if i != at else slice(None) for i in range(nd))
        big[every] = x
        x = big[every]
    elif kind < 0.25 and nd >= 2:  # the same values in another memory order
        perm = list(rng.permutation(nd))
        x = np.transpose(np.ascontiguousarray(np.transpose(x, perm)), np.argsort(perm))
    elif kind < 0.32 and nd >= 2:  # one slice broadcast along a non-class axis (zero stride)
        along = int(rng.choice([i for i in range(nd) if i != at]))
        one = np.take(x, [0], axis=along)
        x = np.broadcast_to(one, x.shape)
    if rng.random() < 0.1 and dt != np.float16:  # big-endian, as from another machine
        x = x.astype(x.dtype.newbyteorder(">"))
    if rng.random() < 0.2:  # read-only, as a memory map opened with mode "r"
        x = x.view()
        x.flags.writeable = False
    axis = at if rng.random() < 0.5 else at - nd
    return x, axis, shape, scale


def draw_targets(rng, C, shape):
    """``(t, ignore_index)``: targets of a random integer dtype that holds
    C - 1 and the ignore index, a random fraction of them ignored."""
    ignore = int(rng.choice([-100, 255, 0, C - 1])) if rng.random() < 0.7 else -100
    t = rng.integers(0, C, shape)
    t = np.where(rng.random(shape) < rng.choice([0, 0.1, 0.5, 1.0]), ignore, t)
    for dtype in (rng.choice([np.uint8, np.int16, np.uint16, np.int32]), np.int64):
        info = np.iinfo(dtype)
        if info.min <= min(ignore, 0) and max(ignore, C - 1) <= info.max:
            return t.astype(dtype), ignore


def run_case(seed):
    """Draw and check one case; raises AssertionError on a mismatch."""
    rng = np.random.default_rng(seed)
    x, axis, shape, scale = draw_logits(rng)
    dt = x.dtype.type
    at = axis % x.ndim
    C = shape[at]
    reduced = tuple(shape[:at] + shape[at + 1:])
    T = 1.0 if rng.random() < 0.6 else float(rng.choice(TEMPERATURES))
    op = str(rng.choice(OPS))
    if op in ("softmax", "log_softmax", "logsumexp"):
        f, want = getattr(fl, op), getattr(ref, op)(x, axis, temperature=T)
        how = rng.random()
        if op != "logsumexp" and how < 0.2:
            got = x.astype(x.dtype.newbyteorder("="))  # writeable, native
            assert f(got, axis, temperature=T, out=got) is got
        elif how < 0.5:
            out = np.empty(want.shape, dt)
            got = f(x, axis, temperature=T, out=out)
            assert got is out
        else:
            got = f(x, axis, temperature=T)
        assert_close(got, want, dt)
    elif op == "argmax":
        out = np.empty(reduced, np.uint8) if C <= 256 and rng.random() < 0.3 else None
        np.testing.assert_array_equal(fl.argmax(x, axis, out=out), ref.argmax(x, axis))
    elif op == "classify":
        labels, conf = fl.classify(x, axis, temperature=T)
        want_labels, want_conf = ref.classify(x, axis, temperature=T)
        np.testing.assert_array_equal(labels, want_labels)
        assert_close(conf, want_conf, dt)
    elif op == "confusion_matrix":
        t, ignore = draw_targets(rng, C, reduced)
        np.testing.assert_array_equal(fl.confusion_matrix(x, t, axis, ignore_index=ignore),
                                      ref.confusion_matrix(x, t, axis, ignore_index=ignore))
    else:
        t, ignore = draw_targets(rng, C, reduced)
        kw = dict(class_weight=None if rng.random() < 0.5 else rng.uniform(0.1, 3, C),
                  ignore_index=ignore, label_smoothing=float(rng.choice([0.0, 0.0, 0.1, 0.5])),
                  reduction=str(rng.choice(["mean", "sum", "none"])),
                  return_grad=bool(rng.random() < 0.5))
        got, want = fl.cross_entropy(x, t, axis, **kw), ref.cross_entropy(x, t, axis, **kw)
        if kw["return_grad"]:
            assert_close(got[1], want[1], dt)
            got, want = got[0], want[0]
        assert np.asarray(got).dtype == np.asarray(want).dtype
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        inf = np.isinf(want)
        np.testing.assert_array_equal(got[inf], want[inf])
        fin = np.isfinite(want)
        # Losses are differences of scores: their rounding grows with the spread.
        tol = LOSS_TOL[dt]
        np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol * max(1.0, scale))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="first case's seed")
    ap.add_argument("--seconds", type=float, default=600.0,
                    help="run cases until then (0: only the case --seed)")
    args = ap.parse_args(argv)
    end = time.time() + args.seconds
    seed, cases, failures = args.seed, 0, 0
    while True:
        try:
            run_case(seed)
        except AssertionError as exc:
            failures += 1
            print(f"FAIL --seed {seed}: {str(exc)[:600]}", flush=True)
        cases += 1
        seed += 1
        if time.time() >= end:
            break
    print(f"{cases} cases from seed {args.seed}, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
