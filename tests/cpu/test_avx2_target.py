"""The CPU kernels compiled for an AVX2 target (no AVX-512), in a child
process: Numba compiles for the CPU that ``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES`` name, and fastlogits sizes its blocks by those
features (8 pixels or rows, where AVX-512 takes 16), so an AVX-512 host
runs the code an AVX2 machine would. The child gets its own Numba cache.

Kept small: one compile of the channels-first softmax and loss kernels
and the head's channels-last logits (about a minute)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastlogits._vector_width import target_has

#: Haswell's features, the oldest x86 fastlogits targets with AVX2.
AVX2_FEATURES = ",".join(f"+{f}" for f in (
    "64bit", "avx", "avx2", "bmi", "bmi2", "cmov", "cx16", "cx8", "f16c", "fma", "fsgsbase",
    "fxsr", "lzcnt", "mmx", "movbe", "pclmul", "popcnt", "rdrnd", "sahf", "sse", "sse2", "sse3",
    "sse4.1", "sse4.2", "ssse3", "xsave", "xsaveopt"))

CHILD = textwrap.dedent("""
    import numpy as np
    import fastlogits as fl
    from fastlogits import reference, tuning
    from fastlogits.cpu.blocks.planeblock import LANES
    from tests.helpers import at_line_offset

    assert LANES == 8, LANES
    tuning.override(cpu_stream_min_bytes=0).__enter__()  # every x-sized output streamed
    rng = np.random.default_rng(7)
    for C in (8, 19):
        # Planes of whole lines, x 16 bytes past a line as NumPy puts large
        # arrays: each plane's first tile holds an 8-pixel block off its line.
        x = at_line_offset((2, C, 48), np.float32, 16)
        x[...] = 3 * rng.standard_normal(x.shape)
        t = rng.integers(0, C, (2, 48))
        t[:, ::5] = -100
        out = at_line_offset(x.shape, np.float32, 16)
        want = reference.softmax(x.astype(np.float64), 1)
        np.testing.assert_allclose(fl.softmax(x, 1, out=out), want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(fl.softmax(x, 1), want, rtol=1e-5, atol=1e-7)
        want_loss, want_grad = reference.cross_entropy(x.astype(np.float64), t, 1,
                                                       return_grad=True)
        loss, grad = fl.cross_entropy(x, t, 1, return_grad=True, grad_out=out)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    # The head's channels-last dot form on feature rows 1-15 float32
    # elements past a line: its aligned loads on 32-byte vectors.
    tuning.override(cpu_head_dot_min_ratio=0).__enter__()
    for offset in (1, 9, 15):
        W = rng.standard_normal((5, 32)).astype(np.float32) / 8
        b = rng.standard_normal(5).astype(np.float32)
        head = fl.LinearHead(W, b)
        raw = np.empty(37 * 32 + 32, np.float32)
        s = (-raw.ctypes.data % 64) // 4 + offset
        f = raw[s:s + 37 * 32].reshape(37, 32)
        f[...] = 3 * rng.standard_normal(f.shape)
        want = f.astype(np.float64) @ W.T.astype(np.float64) + b
        np.testing.assert_allclose(head.logits(f), want, rtol=1e-4, atol=1e-4)
    print("ok")
""")


@pytest.mark.skipif(not target_has("avx2"), reason="the host cannot run AVX2 code")
def test_kernels_on_an_avx2_target(tmp_path):
    """On an AVX2 target: channels-first float32 softmax and the loss
    gradient streamed out (a non-temporal store from an 8-pixel block off
    its line faulted there: every such softmax of 16 MB or more,
    allocating or not, crashed the process; now they go through the
    scratch tile), and LinearHead's channels-last dot form (its aligned
    loads took a 64-byte line's offset for a 32-byte vector's: wrong
    logits)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2_FEATURES,
               NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
