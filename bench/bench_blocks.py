"""The channels-first register blocks in cache, one thread: ns per pixel of
each block intrinsic of :mod:`fastlogits.cpu.blocks.planeblock` the ops use, timed
in one process, alternating, so their ratios hold on a noisy machine
(docs/perf/cpu-044, cpu-045)::

    python bench/bench_blocks.py --classes 19 --pixels 2048 --rounds 21

``argmax_expsum`` is classify's block, ``max_expsum`` softmax's,
log_softmax's and logsumexp's, ``xent`` the fused float32 loss's,
``targets`` the loss's target read (:func:`fastlogits.cpu.ops.losses._targets`)
per pixel; ``softmax`` softmax's blocks with their stores
(``max_expstore``, then ``store_softmax`` into an output of x's shape) and
``xent_grad`` the fused gradient's (cpu-047) into the same output. Each figure is the minimum over rounds of a compiled loop over
one (1, C, pixels) float32 block of planes, small enough for L1/L2.
"""

import argparse
import json
import time

import numpy as np
from numba import njit

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.planeblock import (LANES, planes_argmax_expsum, planes_max_expstore,
                                              planes_max_expsum, planes_store_softmax, planes_xent,
                                              planes_xent_grad)
from fastlogits.cpu.ops.losses import _targets

IGNORE = 255


@njit(fastmath=FASTMATH, error_model="numpy")
def _argmax_expsum(n, x, m, idx, cols, s):
    for _ in range(n):
        for q in range(0, x.shape[2], LANES):
            planes_argmax_expsum(x, q, m, idx, q, np.float32(1.0), cols, s)


@njit(fastmath=FASTMATH, error_model="numpy")
def _max_expsum(n, x, m, cols, s):
    for _ in range(n):
        for q in range(0, x.shape[2], LANES):
            planes_max_expsum(x, q, m, q, np.float32(1.0), cols, s)


@njit(fastmath=FASTMATH, error_model="numpy")
def _xent(n, x, m, cols, tt, wt, loss, sums):
    for _ in range(n):
        for q in range(0, x.shape[2], LANES):
            planes_xent(x, q, m, q, cols, tt, wt, loss, q, False, sums, None, None)


@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax(n, x, m, cols, s, g, out):
    for _ in range(n):
        for q in range(0, x.shape[2], LANES):
            planes_max_expstore(x, q, m, q, np.float32(1.0), cols, s)
            for i in range(LANES):
                g[q + i] = 1.0 / s[q + i]
            planes_store_softmax(cols, m, np.float32(1.0), g, q, out, q)


@njit(fastmath=FASTMATH, error_model="numpy")
def _xent_grad(n, x, m, cols, tt, wt, coef, bc, s, xt, sm, out):
    for _ in range(n):
        for q in range(0, x.shape[2], LANES):
            planes_xent_grad(x, q, m, q, cols, tt, wt, coef, bc, None, s, xt, sm, out, q)


@njit(fastmath=FASTMATH, error_model="numpy")
def _read_targets(n, t, w, tt, wt, keep):
    bad = 0
    for _ in range(n):
        bad += _targets(t.shape[0], t, 0, IGNORE, w.shape[0], w, tt, wt, keep)
    return bad


def measure(classes=19, pixels=2048, rounds=21, calls=400):
    """``{block: ns per pixel}``, the minimum over ``rounds`` alternating
    rounds of ``calls`` passes over the block each."""
    pixels = pixels // LANES * LANES
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, classes, pixels), dtype=np.float32)
    t = rng.integers(0, classes, pixels).astype(np.uint8)
    t[::10] = IGNORE
    m = np.empty(pixels, np.float32)
    idx = np.empty(pixels, np.int32)
    s = np.empty(pixels)
    cols = np.empty(classes * LANES, np.float32)
    tt = np.empty(pixels, np.int32)
    wt = np.empty(pixels, np.float32)
    keep = np.empty(pixels, np.float32)
    w = np.ones(classes, np.float32)
    _read_targets(1, t, w, tt, wt, keep)  # the loss block reads these
    loss = np.empty(1, np.float32)
    sums = np.zeros(2 * LANES)
    s32, xt, sm, g = (np.zeros(pixels, np.float32) for _ in range(4))
    out = np.empty_like(x)
    coef = np.array([1.0, 0.0], np.float32)
    bc = np.zeros(classes, np.float32)
    blocks = {
        "argmax_expsum": lambda n: _argmax_expsum(n, x, m, idx, cols, s),
        "max_expsum": lambda n: _max_expsum(n, x, m, cols, s),
        "xent": lambda n: _xent(n, x, m, cols, tt, wt, loss, sums),
        "targets": lambda n: _read_targets(n, t, w, tt, wt, keep),
        "softmax": lambda n: _softmax(n, x, m, cols, s32, g, out),
        "xent_grad": lambda n: _xent_grad(n, x, m, cols, tt, wt, coef, bc, s32, xt, sm, out),
    }
    for run in blocks.values():
        run(1)  # compile
    best = dict.fromkeys(blocks, np.inf)
    for _ in range(rounds):
        for name, run in blocks.items():
            t0 = time.perf_counter()
            run(calls)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: 1e9 * sec / calls / pixels for name, sec in best.items()}


def test_blocks_smoke():
    """Runs the measurement once on a tiny block; figures go to docs/perf/."""
    result = measure(classes=5, pixels=64, rounds=1, calls=2)
    assert all(v > 0 for v in result.values())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--pixels", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    print(json.dumps({k: round(v, 3) for k, v in
                      measure(args.classes, args.pixels, args.rounds).items()}))
