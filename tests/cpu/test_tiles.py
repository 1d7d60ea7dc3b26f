"""The channels-last transposes (vector gathers in, scatters out) against
NumPy's, and the code the tiles' running max compiles to."""

import re

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.blocks.gather import lookup, transpose8
from fastlogits.cpu.blocks.tiles import load_transposed, store_transposed


# C around the 8-class blocks of transpose8 (8, 9, 16, 19, 150) and below them.
CASES = [(19, 256, 0), (19, 37, 100), (3, 16, 5), (150, 33, 7), (1, 17, 0), (8, 24, 3),
         (9, 19, 2), (16, 40, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("C,P,r0", CASES)
def test_load_transposed(rng, dtype, contiguous, C, P, r0):
    rows = r0 + P + 3
    x2 = rng.standard_normal((rows, C)).astype(dtype)
    if not contiguous:  # every other class of a wider array: a strided view
        x2 = rng.standard_normal((rows, 2 * C)).astype(dtype)[:, ::2]
    tile = P + 5  # the scratch is wider than the P pixels copied
    buf = np.full((1, C, tile), np.nan, dtype)
    load_transposed(x2, r0, P, buf)
    np.testing.assert_array_equal(buf[0, :, :P], x2[r0:r0 + P].T)
    assert np.isnan(buf[0, :, P:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("C,P,r0", CASES)
def test_store_transposed(rng, dtype, contiguous, C, P, r0):
    rows = r0 + P + 3
    tile = P + 5
    buf = rng.standard_normal((1, C, tile)).astype(dtype)
    if contiguous:
        base = np.full((rows, C), np.nan, dtype)
        out2 = base
    else:  # every other class of a wider array: a strided view
        base = np.full((rows, 2 * C), np.nan, dtype)
        out2 = base[:, ::2]
    store_transposed(buf, P, out2, r0)
    np.testing.assert_array_equal(out2[r0:r0 + P], buf[0, :, :P].T)
    # Nothing else written: rows outside the tile, and the gaps of a view.
    written = np.zeros(base.shape, bool)
    written[r0:r0 + P, ::(1 if contiguous else 2)] = True
    assert np.isnan(base[~written]).all()


# A masked store: AVX/AVX2 ``vmaskmovps %ymm, %ymm, (mem)`` or an AVX-512
# store under a mask register ``vmovups %zmm, (mem) {%k1}``.
_MASKED_STORE = re.compile(r"vp?maskmov\w*\s+%[xy]mm\d+,\s*%[xy]mm\d+,\s*[^\s%]*\("
                           r"|vmov\w*\s+%[xyz]mm\d+,\s*[^\s%]*\([^)]*\)\s*\{%k")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tile_max", "tile_argmax"])
def test_running_max_has_no_masked_store(rng, dtype, name):
    """The tiles' running max is written to the other of two buffers each
    class: updated in place, LLVM made its store a masked store, which is
    microcoded on AVX2 CPUs (10x slower on Zen 3, docs/perf/cpu-023).
    Compiled afresh (the cached kernels keep no assembly), as the kernels
    compile it."""
    from fastlogits import tuning
    from fastlogits.cpu.blocks import tiles
    from fastlogits.cpu.llvm.prefetch import no_region

    fn = njit(fastmath=tuning.FASTMATH, error_model="numpy")(getattr(tiles, name).py_func)
    C, P = 19, 256
    x = rng.standard_normal((1, C, P)).astype(dtype)
    m, m2 = np.empty(P, dtype), np.empty(P, dtype)
    if name == "tile_max":
        fn(x, 0, 0, P, m, m2, no_region(x))
    else:
        idx = np.empty(P, np.int32)
        fn(x, 0, 0, P, m, m2, idx, no_region(x))
        np.testing.assert_array_equal(idx, np.argmax(x[0], axis=0))
    np.testing.assert_array_equal(m, x[0].max(axis=0))
    asm = fn.inspect_asm(fn.signatures[0])
    assert not _MASKED_STORE.findall(asm)


@njit(cache=True)
def _transpose8(src, start, stride, ncls, dst, dstart, dstride):
    transpose8(src, start, stride, ncls, dst, dstart, dstride)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ncls", [1, 3, 7, 8])
def test_transpose8_block(rng, dtype, ncls):
    """One 8 x 8 block on its own, whatever path load_transposed takes on
    this machine: rows of src (stride 11) to rows of dst (stride 13),
    ``ncls`` of the 8 classes; nothing else of dst is written."""
    src = rng.standard_normal(3 + 8 * 11).astype(dtype)
    dst = np.full(5 + 8 * 13, np.nan, dtype)
    _transpose8(src, 3, 11, ncls, dst, 5, 13)
    block = src[3:3 + 8 * 11].reshape(8, 11)[:, :ncls]  # (pixels, classes)
    got = dst[5:5 + 8 * 13].reshape(8, 13)[:ncls, :8]  # (classes, pixels)
    np.testing.assert_array_equal(got, block.T)
    written = np.zeros(dst.shape, bool)
    for j in range(ncls):
        written[5 + j * 13:5 + j * 13 + 8] = True
    assert np.isnan(dst[~written]).all()


@njit
def _lookup(table, idx, out, n):
    lookup(table, idx, out, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lookup_gathers_where_the_index_is_set(rng, dtype):
    """``gather.lookup``: ``out[p] = table[idx[p]]`` where idx >= 0, else 0
    (an inf or NaN entry of the table too, where not looked up), for
    every count around the vector width; nothing past n written."""
    table = rng.uniform(0.5, 2.0, 19).astype(dtype)
    table[[3, 7]] = [np.inf, np.nan]
    for n in (0, 1, 7, 8, 15, 16, 17, 33, 100):
        idx = rng.integers(-1, 19, n + 5).astype(np.int32)
        out = np.full(n + 5, -3.0, dtype)
        _lookup(table, idx, out, n)
        want = np.where(idx[:n] >= 0, table[np.maximum(idx[:n], 0)], 0.0)
        np.testing.assert_array_equal(out[:n], want)
        assert (out[n:] == -3.0).all()


def test_lookup_rejects_what_it_cannot_read():
    table = np.ones(4, np.float32)
    with pytest.raises(Exception):  # int64 indices
        _lookup(table, np.zeros(4, np.int64), np.empty(4, np.float32), 4)
    with pytest.raises(Exception):  # out of another dtype
        _lookup(table, np.zeros(4, np.int32), np.empty(4), 4)
