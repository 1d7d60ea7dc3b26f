"""float16 <-> float32 conversion of the float16 path (fastlogits.cpu.llvm.half):
the same bits as NumPy's casts, on every float16 value, on random float32
bit patterns (subnormal, overflowing, infinite and NaN results included),
through strided views, with nothing outside them written; and the public
ops on float16 logits whose results are float16 subnormals."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import tuning
from fastlogits.cpu.host import ChunkScratch
from fastlogits.cpu.llvm import half


def _same_bits(got, want):
    """Equal bits, NaN payloads aside."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint16 if got.itemsize == 2 else np.uint32),
                                  want[~nan].view(np.uint16 if want.itemsize == 2 else np.uint32))


def _float32_cases(rng, n):
    """Random float32 bit patterns (every class of value), values around
    float16's subnormal, normal and overflow boundaries, and ties."""
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, -65520.0,
                      2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 6.0975552e-05, 1e-8,
                      -1e-8, 1.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11], np.float32)
    small = (rng.standard_normal(n) * 1e-5).astype(np.float32)
    return np.concatenate([bits, edges, small])


@pytest.fixture(params=[True, False], ids=["hardware", "numpy"])
def path(request, monkeypatch):
    """Both paths: F16C (where the CPU has it) and the NumPy fallback."""
    if request.param and not half.HARDWARE:
        pytest.skip("the CPU has no F16C")
    monkeypatch.setattr(half, "HARDWARE", request.param)
    return request.param


def test_store_matches_numpy_cast(rng, path):
    src = _float32_cases(rng, 200_003).reshape(1, 1, -1)
    out = np.empty(src.shape, np.float16)
    with np.errstate(over="ignore"):  # values beyond 65504 become inf
        want = src.astype(np.float16)
        half.store(out, 0, 1, 0, src.shape[2], src)
    _same_bits(out, want)


#: (name, outer, C, inner, chunk (o0, o1, i0, i1)): a chunk that is one
#: contiguous block (channels-last), a span of every class plane of a
#: C-contiguous array (channels-first), and both of a strided array.
CHUNKS = [("block", 50, 19, 1, (10, 40, 0, 1)), ("planes", 3, 19, 101, (1, 3, 7, 90)),
          ("one-image", 1, 5, 4000, (0, 1, 100, 3500))]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", CHUNKS, ids=[c[0] for c in CHUNKS])
def test_store_and_load_chunks(rng, path, case, strided):
    """A chunk written into the float16 output (nothing else of it), and
    read back from a float16 input, on every path."""
    _, outer, C, inner, (o0, o1, i0, i1) = case
    shape = (outer, C, inner)
    big = np.full((outer, C + 2, 2 * inner), 9.0, np.float16)
    out = big[:, 1:C + 1, ::2] if strided else np.full(shape, 9.0, np.float16)
    src = (rng.standard_normal((o1 - o0, C, i1 - i0)) * 1e-5).astype(np.float32)
    half.store(out, o0, o1, i0, i1, src)
    _same_bits(out[o0:o1, :, i0:i1], src.astype(np.float16))
    rest = np.ones(shape, bool)
    rest[o0:o1, :, i0:i1] = False
    assert (out[rest] == 9.0).all()
    if strided:
        assert (big[:, [0, C + 1]] == 9.0).all() and (big[:, :, 1::2] == 9.0).all()
    x = out.copy() if not strided else out
    got = half.load(x, o0, o1, i0, i1)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, x[o0:o1, :, i0:i1].astype(np.float32))
    into = np.full(got.shape, np.nan, np.float32)
    assert half.load(x, o0, o1, i0, i1, out=into) is into
    np.testing.assert_array_equal(into, got)


def test_store_into_reduced_outputs(rng, path):
    """2-D (outer, inner) outputs (logsumexp's, a loss map's), contiguous
    and strided."""
    for out in (np.zeros((4, 300), np.float16), np.zeros((4, 600), np.float16)[:, ::2]):
        src = (rng.standard_normal((2, 200)) * 1e-6).astype(np.float32)
        half.store(out, 1, 3, 50, 250, src)
        _same_bits(out[1:3, 50:250], src.astype(np.float16))
        out[1:3, 50:250] = 0
        assert (out == 0).all()


def test_load_is_exact_for_every_float16(path):
    every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16).reshape(1, 1, -1)
    got = half.load(every, 0, 1, 0, every.shape[2])
    _same_bits(got, every.astype(np.float32))


@pytest.fixture(params=[True, False], ids=["direct", "chunked"])
def half_direct(tune, request, monkeypatch):
    """float16 read and written by the kernels as it is, or through float32
    chunks (``cpu_half_direct``)."""
    tune(cpu_half_direct=request.param)
    return request.param


@pytest.mark.parametrize("axis", [-1, 0])
def test_float16_ops_with_subnormal_results(rng, axis, half_direct):
    """Confident logits: most probabilities, and a "mean" gradient over many
    pixels, are float16 subnormals; each op gives its float32 result on the
    same values, rounded to float16: within a float16 step, or 2 float32
    ulps of 1 near 0 (log_softmax of a sure class, log s ~ 1e-7). Not bit
    for bit: where a channels-first tile starts depends on the array's
    address, and the register blocks and the tile loops round their
    exponentials differently, so two float32 runs may differ in the last
    bit."""
    shape = (300, 19) if axis == -1 else (19, 300)
    x = (rng.standard_normal(shape) * 8).astype(np.float16)
    x32 = x.astype(np.float32)

    def close(got, want):
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2.0 ** -10,
                                   atol=2.0 ** -22)

    for op in (fl.softmax, fl.log_softmax):
        close(op(x, axis), op(x32, axis))
    t = rng.integers(0, 19, 300)
    _, g = fl.cross_entropy(x, t, axis, return_grad=True)
    _, g32 = fl.cross_entropy(x32, t, axis, return_grad=True)
    close(g, g32)
    p = fl.softmax(x, axis)
    assert ((p > 0) & (p < 2.0 ** -14)).mean() > 0.2  # the case this covers


def test_float16_outputs_through_temporaries(rng, half_direct):
    """float16 logits into `out=` arrays whose strides forbid the canonical
    view (H and W cannot merge), so the chunks go to a temporary that is
    copied back at the end: every output gets its results."""
    x = (rng.standard_normal((6, 40, 19)) * 8).astype(np.float16)
    x32 = x.astype(np.float32)
    big = np.zeros((6, 50, 19), np.float16)
    out = big[:, :40]
    assert out.base is big and not out.flags.c_contiguous
    res = fl.softmax(x, -1, out=out)
    assert res is out
    np.testing.assert_allclose(out.astype(np.float32), fl.softmax(x32, -1), rtol=2.0 ** -10,
                               atol=2.0 ** -24)
    assert (big[:, 40:] == 0).all()
    lse = np.zeros((6, 50), np.float16)[:, :40]
    fl.logsumexp(x, -1, out=lse)
    np.testing.assert_allclose(lse.astype(np.float32), fl.logsumexp(x32, -1), rtol=2.0 ** -10)
    labels = np.zeros((6, 50), np.int64)[:, :40]
    conf = np.zeros((6, 50), np.float32)[:, :40]
    fl.classify(x, -1, out=(labels, conf))
    want_labels, want_conf = fl.classify(x32, -1)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(conf, want_conf, rtol=1e-6)


def test_chunk_scratch_reuses_its_buffers():
    scratch = ChunkScratch()
    a = scratch.get("x", (2, 19, 50), np.float32)
    b = scratch.get("x", (1, 19, 30), np.float32)  # a smaller last chunk
    assert a.flags.c_contiguous and b.flags.c_contiguous and b.shape == (1, 19, 30)
    assert np.shares_memory(a, b)
    assert not np.shares_memory(a, scratch.get("y", (2, 19, 50), np.float32))
    wider = scratch.get("x", (1, 19, 30), np.float64)
    assert wider.dtype == np.float64 and not np.shares_memory(a, wider)
    assert scratch.get("x", (3, 19, 50), np.float64).shape == (3, 19, 50)


@pytest.mark.parametrize("axis", [-1, 0])
def test_float16_chunks_share_one_buffer(tune, rng, monkeypatch, axis):
    """Every chunk's float32 copy of x (and of a float16 output) goes into
    the same buffer: a fresh array per chunk was faulted in page by page
    whenever glibc had given the last one back (docs/perf/cpu-054). The
    results are those of float32 logits, chunk by chunk."""
    tune(cpu_half_chunk_elements=19 * 70)
    tune(cpu_half_direct=False)
    shape = (19, 9, 31) if axis == 0 else (9, 31, 19)
    x = (rng.standard_normal(shape) * 4).astype(np.float16)
    seen = []
    load = half.load

    def recording_load(*args, out=None, **kwargs):
        seen.append(out)
        return load(*args, out=out, **kwargs)

    monkeypatch.setattr(half, "load", recording_load)
    p = fl.softmax(x, axis)
    assert len(seen) > 2 and all(np.shares_memory(seen[0], o) for o in seen)
    np.testing.assert_allclose(p.astype(np.float32), fl.softmax(x.astype(np.float32), axis),
                               rtol=2.0 ** -10, atol=2.0 ** -24)
