"""bfloat16 logits (issue #38 item 3): the rounding (fastlogits._bfloat16,
the converters of fastlogits.cpu.llvm.half), the reference, every op on the
"numpy" and "cpu" backends against it in both layouts with special values
(the CPU kernels reading bfloat16 as it is, or through float32 chunks),
and the interop: ml_dtypes arrays and torch bfloat16 tensors in, results
of their kind out, ``out=`` in bfloat16, bad outputs refused. (The CUDA
kernels' bfloat16: tests/cuda/test_bfloat16.py.)

bfloat16 outputs are within 1 bfloat16 ulp of the reference's (which
rounds its float64 result once); float32 outputs as float16's.

The CPU kernels compile a copy of themselves for bfloat16 read as it is:
the direct path runs on one shape per layout (:data:`DIRECT`), so the
tests add few compiled specializations; the other shapes take the float32
chunks, whose kernels the float32 tests compile anyway."""

import numba
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _bfloat16, reference
from fastlogits._vector_width import target_converts_half
from fastlogits.cpu.llvm import half
from tests.helpers import (assert_bfloat16_close, assert_close, logits, specials_array,
                           to_bfloat16)

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
IGNORE = -100
LAYOUTS = [((5, 13, 19), -1), ((19, 7, 9), 0), ((2, 3, 5, 11), 1), ((37, 1), -1), ((4, 2), 0)]
#: The layouts the CPU kernels read as they are (one channels-last, one
#: channels-first); the others go through float32 chunks.
DIRECT = LAYOUTS[:2]


def bf16_logits(rng, shape, axis, specials=True):
    x = specials_array(rng, shape, axis, np.float32) if specials else logits(rng, shape)
    return to_bfloat16(x)


# --------------------------------------------------------------------------
# rounding and conversion
# --------------------------------------------------------------------------

def _float32_cases(rng, n):
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.3895314e38, 3.3961e38, -3.4e38,
                      1e-40, -1e-40, 9.2e-41, 1.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                      -(1.0 + 2.0 ** -8)], np.float32)
    return np.concatenate([bits.view(np.float32), edges])


def test_round_bits_matches_ml_dtypes_cast(rng):
    """float32 -> bfloat16: nearest, ties to even, NaN quiet and NaN."""
    v = _float32_cases(rng, 100_003)
    got = _bfloat16.round_bits(v)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns of NaN
        want = v.astype(BF16).view(np.uint16)
    nan = np.isnan(v)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(_bfloat16.widen(got[nan])).all()
    assert (got[nan] & 0x0040).all()  # quiet


def test_round_bits_of_float64_rounds_once():
    """float64 -> bfloat16 directly, not through float32 (which would round
    1 + 2**-8 + 2**-40 to the tie 1 + 2**-8, then to 1)."""
    v = np.array([1 + 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -40, 1 + 3 * 2.0 ** -8,
                  -(1 + 2.0 ** -8 + 2.0 ** -40), 1e300, -1e300, 1e-300, 3.397e38, 3.39e38, np.nan])
    got = _bfloat16.widen(_bfloat16.round_bits(v), np.float64)
    want = [1.0, 1 + 2.0 ** -7, 1 + 2.0 ** -6, -(1 + 2.0 ** -7), np.inf, -np.inf, 0.0, np.inf,
            3.3895313892515355e38]
    np.testing.assert_array_equal(got[:-1], want)
    assert np.isnan(got[-1])


def test_widen_is_exact_for_every_bfloat16():
    every = np.arange(2 ** 16, dtype=np.uint16)
    np.testing.assert_array_equal(_bfloat16.widen(every).view(np.uint32),
                                  every.astype(np.uint32) << 16)


CHUNKS = [((50, 19, 1), (10, 40, 0, 1)), ((3, 19, 101), (1, 3, 7, 90))]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", CHUNKS, ids=["block", "planes"])
def test_converters(rng, case, strided):
    """cpu.llvm.half's bfloat16 kernels: the same bits as round_bits and
    widen, into and out of chunks of contiguous and strided arrays, and
    nothing outside the chunk written."""
    shape, (o0, o1, i0, i1) = case
    outer, C, inner = shape
    big = np.full((outer, C + 2, 2 * inner), 7, np.uint16)
    out = big[:, 1:C + 1, ::2] if strided else np.full(shape, 7, np.uint16)
    n = (o1 - o0) * C * (i1 - i0)
    src = _float32_cases(rng, n)[-n:].reshape(o1 - o0, C, i1 - i0)
    half.store(out, o0, o1, i0, i1, src, bfloat16=True)
    np.testing.assert_array_equal(out[o0:o1, :, i0:i1], _bfloat16.round_bits(src))
    rest = np.ones(shape, bool)
    rest[o0:o1, :, i0:i1] = False
    assert (out[rest] == 7).all() and (big[:, :, 1::2] == 7).all()
    got = half.load(out, o0, o1, i0, i1, bfloat16=True)
    np.testing.assert_array_equal(got.view(np.uint32),
                                  _bfloat16.widen(out[o0:o1, :, i0:i1]).view(np.uint32))


@pytest.mark.parametrize("machine, f16c, expected", [
    ("aarch64", False, True), ("arm64", False, True), ("AArch64", False, True),
    ("x86_64", True, True), ("x86_64", False, False), ("AMD64", False, False)])
def test_half_conversions_in_hardware(machine, f16c, expected):
    """ARMv8 converts half precision natively (no feature name to ask
    for); x86 only with F16C."""
    asked = []

    def has(feature):
        asked.append(feature)
        return f16c

    assert target_converts_half(machine, has) is expected
    assert asked == ([] if "arm" in machine.lower() or "aarch" in machine.lower() else ["f16c"])


# --------------------------------------------------------------------------
# the reference and the ops
# --------------------------------------------------------------------------

def test_reference_rounds_its_float64_results(rng):
    x = bf16_logits(rng, (40, 7), -1)
    x64 = x.astype(np.float64)
    for op in (reference.softmax, reference.log_softmax, reference.logsumexp):
        got = op(x, -1)
        assert got.dtype == BF16
        np.testing.assert_array_equal(got.view(np.uint16),
                                      _bfloat16.round_bits(op(x64, -1)))
    labels, conf = reference.classify(x, -1)
    np.testing.assert_array_equal(labels, np.argmax(x64, -1))
    assert conf.dtype == np.float32
    loss, grad = reference.cross_entropy(x, rng.integers(0, 7, 40), -1, return_grad=True)
    assert isinstance(loss, np.float64) and grad.dtype == BF16


def expect_path(tune, backend, shape, axis):
    """Send the "cpu" backend's bfloat16 of ``(shape, axis)`` the direct way
    for :data:`DIRECT`, else through float32 chunks; returns whether the
    kernels will read it as it is (direct, and the CPU converts half
    precision: :func:`fastlogits.cpu.plan.half_direct`)."""
    direct = backend == "cpu" and (shape, axis) in DIRECT
    tune(cpu_half_direct=direct)
    return direct and half.HARDWARE


def check_path(backend, direct, chunk_loads):
    if backend == "cpu":
        assert (chunk_loads == []) == direct, (direct, chunk_loads[:3])


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("shape, axis", LAYOUTS)
def test_ops_match_the_reference(tune, rng, chunk_loads, backend, shape, axis):
    direct = expect_path(tune, backend, shape, axis)
    x = bf16_logits(rng, shape, axis)
    x32 = x.astype(np.float32)
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(fl, op)(x, axis, backend=backend)
        assert_bfloat16_close(got, getattr(reference, op)(x, axis))
    labels, conf = fl.classify(x, axis, backend=backend)
    np.testing.assert_array_equal(labels, np.argmax(x32, axis))
    np.testing.assert_array_equal(fl.argmax(x, axis, backend=backend), labels)
    assert_close(conf, reference.classify(x, axis)[1], np.float16)
    t = rng.integers(0, shape[axis], np.delete(shape, axis % len(shape)))
    t.reshape(-1)[::5] = IGNORE
    cm = fl.confusion_matrix(x, t, axis, ignore_index=IGNORE, backend=backend)
    np.testing.assert_array_equal(cm, reference.confusion_matrix(x, t, axis,
                                                                 ignore_index=IGNORE))
    y = bf16_logits(rng, shape, axis, specials=False)
    for kw in (dict(), dict(reduction="none", label_smoothing=0.1)):
        loss, grad = fl.cross_entropy(y, t, axis, ignore_index=IGNORE, return_grad=True,
                                      backend=backend, **kw)
        want, want_grad = reference.cross_entropy(y, t, axis, ignore_index=IGNORE,
                                                  return_grad=True, **kw)
        assert np.asarray(loss).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(loss, want, rtol=4e-6, atol=1e-6)
        assert_bfloat16_close(grad, want_grad, atol=1e-6)
        if direct:  # the loss alone (its gradient a stand-in, another specialization)
            alone = fl.cross_entropy(y, t, axis, ignore_index=IGNORE, **kw)
            np.testing.assert_allclose(alone, want, rtol=4e-6, atol=1e-6)
    check_path(backend, direct, chunk_loads)


@pytest.mark.parametrize("shape, axis", DIRECT)
def test_special_values_and_temperature(tune, chunk_loads, shape, axis):
    """NaN, +-inf, all -inf pixels, ties, subnormal bfloat16 and a
    temperature, each pixel's classes padded to 19 with -inf (which
    changes none of its results), read as they are."""
    direct = expect_path(tune, "cpu", shape, axis)
    rows = np.array([[np.nan, 1, 2], [np.inf, 1, 2], [-np.inf] * 3, [3, 3, -np.inf],
                     [1e-39, -1e-39, 0.5], [-1e38, 1e38, 1]], np.float32)
    rows = np.concatenate([rows, np.full((len(rows), 16), -np.inf, np.float32)], 1)
    xb = to_bfloat16(rows if axis == -1 else np.ascontiguousarray(rows.T))
    for T in (1.0, 0.3, 1e30):
        for op in ("softmax", "log_softmax", "logsumexp"):
            assert_bfloat16_close(getattr(fl, op)(xb, axis, temperature=T),
                                  getattr(reference, op)(xb, axis, temperature=T))
        assert_close(fl.classify(xb, axis, temperature=T)[1],
                     reference.classify(xb, axis, temperature=T)[1], np.float16)
    np.testing.assert_array_equal(fl.argmax(xb, axis), [0, 0, 0, 0, 2, 1])
    check_path("cpu", direct, chunk_loads)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # signalling NaNs
def test_every_bfloat16_value(chunk_loads):
    """Each of the 65 536 bfloat16 bit patterns once, 16 classes a pixel in
    both layouts, read as they are: NaN payloads, infinities, subnormals
    and both zeros compare as NumPy compares them in float32."""
    bits = np.random.default_rng(7).permutation(np.arange(1 << 16, dtype=np.uint32))
    x = bits.astype(np.uint16).view(BF16).reshape(-1, 16)
    for arr, axis in ((x, -1), (np.ascontiguousarray(x.T), 0)):
        labels, conf = fl.classify(arr, axis)
        np.testing.assert_array_equal(labels, reference.argmax(arr, axis))
        np.testing.assert_array_equal(fl.argmax(arr, axis), labels)
        assert_close(conf, reference.classify(arr, axis)[1], np.float16)
        for op in ("softmax", "logsumexp"):
            assert_bfloat16_close(getattr(fl, op)(arr, axis), getattr(reference, op)(arr, axis))
    assert chunk_loads == [] or not half.HARDWARE


def test_small_chunks_convert_serially(tune, rng, monkeypatch):
    """The float32 chunks' converters run on the calling thread below
    ``cpu_serial_below`` elements (as a kernel launch does), on all
    threads above it."""
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: serial and parallel are the same launch")
    tune(cpu_half_direct=False)
    threads = []
    for name in ("from_flat", "from_chunk", "from_rows", "to_flat", "to_chunk", "to_rows"):
        def spy(*args, _convert=getattr(half.BFLOAT16, name)):
            threads.append(numba.get_num_threads())
            return _convert(*args)

        monkeypatch.setattr(half.BFLOAT16, name, spy)
    x = bf16_logits(rng, (6, 19), -1)
    want = reference.softmax(x)
    assert_bfloat16_close(fl.softmax(x), want)
    assert threads and set(threads) == {1}
    threads.clear()
    tune(cpu_serial_below=0)
    assert_bfloat16_close(fl.softmax(x), want)
    assert threads and set(threads) == {numba.get_num_threads()}


def test_strided_input_and_outputs(rng):
    """A transposed input and out= views whose strides forbid the canonical
    view (written through a temporary)."""
    x = bf16_logits(rng, (9, 19, 6), 1).transpose(0, 2, 1)  # (9, 6, 19), class axis last
    out = np.zeros((9, 8, 19), BF16)[:, :6]
    assert fl.softmax(x, -1, out=out) is out
    assert_bfloat16_close(out, reference.softmax(x, -1))
    lse = np.zeros((9, 8), BF16)[:, :6]
    fl.logsumexp(x, -1, out=lse)
    assert_bfloat16_close(lse, reference.logsumexp(x, -1))
    inplace = x.copy()
    assert fl.log_softmax(inplace, -1, out=inplace) is inplace
    assert_bfloat16_close(inplace, reference.log_softmax(x, -1))


def test_bad_outputs_are_refused(rng):
    x = bf16_logits(rng, (4, 5), -1)
    with pytest.raises(TypeError, match="out has dtype uint16, expected bfloat16"):
        fl.softmax(x, out=np.empty((4, 5), np.uint16))
    with pytest.raises(TypeError, match="out has dtype float32, expected bfloat16"):
        fl.softmax(x, out=np.empty((4, 5), np.float32))
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected float32"):
        fl.softmax(x.astype(np.float32), out=np.empty((4, 5), BF16))
    with pytest.raises(TypeError, match="bfloat16, expected an integer dtype"):
        fl.argmax(x, out=np.empty(4, BF16))
    with pytest.raises(ValueError, match="out has shape"):
        fl.softmax(x, out=np.empty((5, 4), BF16))
    with pytest.raises(TypeError, match="f must hold float16, float32 or float64 features"):
        fl.LinearHead(np.ones((3, 5), np.float32)).softmax(x)


# --------------------------------------------------------------------------
# torch and xarray
# --------------------------------------------------------------------------

def test_torch_bfloat16_tensors(rng):
    torch = pytest.importorskip("torch")
    x = bf16_logits(rng, (2, 19, 5, 7), 1)
    t = torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(fl, op)(t, 1)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16
        assert_bfloat16_close(got.view(torch.int16).numpy().view(BF16),
                              getattr(reference, op)(x, 1))
    # torch's own bfloat16 softmax (float32 inside, rounded once) within 1 step
    finite = torch.from_numpy(bf16_logits(rng, (40, 19), -1, specials=False).view(np.int16)
                              ).view(torch.bfloat16)
    mine = fl.softmax(finite, -1).view(torch.int16).numpy().view(BF16)
    assert_bfloat16_close(mine, torch.softmax(finite, -1).view(torch.int16).numpy().view(BF16))
    labels, conf = fl.classify(t, 1)
    assert labels.dtype == torch.int64 and conf.dtype == torch.float32
    np.testing.assert_array_equal(labels.numpy(), np.argmax(x.astype(np.float32), 1))
    out = torch.empty(t.shape, dtype=torch.bfloat16)
    assert fl.softmax(t.requires_grad_(True), 1, out=out) is out
    assert_bfloat16_close(out.view(torch.int16).numpy().view(BF16), reference.softmax(x, 1))
    target = torch.from_numpy(rng.integers(0, 19, (2, 5, 7)))
    loss, grad = fl.cross_entropy(t, target, 1, return_grad=True)
    assert loss.dtype == torch.float64 and grad.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="out has dtype bfloat16, expected float32"):
        fl.softmax(t.float(), 1, out=out)
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        fl.cross_entropy(t, t, 1)


def test_dataarray_of_bfloat16(rng):
    xr = pytest.importorskip("xarray")
    x = bf16_logits(rng, (6, 5, 19), -1)
    da = xr.DataArray(x, dims=("y", "x", "class"))
    p = fl.softmax(da)
    assert isinstance(p, xr.DataArray) and p.dtype == BF16 and p.dims == da.dims
    assert_bfloat16_close(p.values, reference.softmax(x))
    assert fl.logsumexp(da).dims == ("y", "x")
