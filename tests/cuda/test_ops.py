"""The CUDA backend against fastlogits.reference: every regime, dtype and
op, special values, out=, non-contiguous and empty inputs, the caller's
array library, and validation errors.

Under the simulator (CI) the launch configuration is shrunk (conftest
``SMALL``: 64 threads, 2 blocks) so every case covers several blocks,
partial tiles and grid-stride loops; group reductions run the
shared-memory tree there. Tests marked ``real_gpu`` (shuffle path, large
C accuracy, PyTorch/CuPy interop, default launch configuration) run only
on a GPU.
"""

import numpy as np
import pytest
from conftest import KINDS, SIM, ForeignArray, kind_of, real_gpu, to_gpu, to_host

import fastlogits as fl
from fastlogits import reference, tuning
from fastlogits.cuda import runtime
from fastlogits.cuda.host import ops

EXPNORM = ("softmax", "log_softmax", "logsumexp")

# NaN/inf arithmetic on the simulator's NumPy scalars warns; a GPU does not.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

#: (shape, axis) per regime under the SMALL config (see conftest).
CASES = {
    "tile": ((5, 29, 19), -1),        # 145 rows in 64-row tiles over 2 blocks
    "tile-C1": ((37, 1), -1),
    "tile-C3": ((3, 41, 3), -1),
    "cl-pixel": ((5, 29, 19), -1),    # channels-last a thread per pixel (CASE_CONFIG)
    "cl-pixel-C2": ((37, 2), -1),
    "cf": ((2, 5, 7, 11), 1),         # 154 pixels, thread per pixel, grid-stride
    "cf-C2": ((3, 2, 45), 1),
    "rows-warp": ((3, 7, 40), -1),    # 24 < C <= 64: a warp (32 lanes) per row
    "rows-block": ((5, 150), -1),     # C > 64: the 64-thread block per row
    "rows-cf": ((2, 100, 3), 1),      # channels-first, large C, few pixels
}

#: Settings a case needs on top of the SMALL config.
CASE_CONFIG = {case: {"cuda_cl_pixel_max_c": 24} for case in ("cl-pixel", "cl-pixel-C2")}


@pytest.fixture(autouse=True)
def case_config(request, tune, small_launch):
    case = getattr(request.node, "callspec", None) and request.node.callspec.params.get("case")
    tune(**CASE_CONFIG.get(case, {}))


TOL = {  # dtype -> (atol for probabilities, atol and rtol for log values)
    np.float16: (1e-3, 1e-3, 2e-3),
    np.float32: (2e-6, 2e-6, 2e-6),
    np.float64: (1e-12, 1e-12, 1e-12),
}


def logits(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_matches(op, got, want, dtype, conf=False):
    got = to_host(got)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (op, got.dtype, want.dtype)
    atol_p, atol_l, rtol_l = TOL[np.float32 if conf and dtype == np.float16 else dtype]
    if op in ("softmax", "confidence"):
        np.testing.assert_allclose(got, want, atol=atol_p, rtol=0, equal_nan=True, err_msg=op)
    else:
        np.testing.assert_allclose(got, want, atol=atol_l, rtol=rtol_l, equal_nan=True,
                                   err_msg=op)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=op)


def check_all_ops(x, axis, xin, temperature=1.0, **kw):
    """Every op on ``xin`` (x or a GPU copy of it) against the reference on x."""
    dtype = x.dtype.type
    for op in EXPNORM:
        got = getattr(fl, op)(xin, axis, temperature=temperature, **kw)
        assert_matches(op, got, getattr(reference, op)(x, axis, temperature=temperature), dtype)
    lab = to_host(fl.argmax(xin, axis, **kw))
    np.testing.assert_array_equal(lab, np.argmax(x, axis))
    assert lab.dtype == np.int64
    lab, conf = fl.classify(xin, axis, temperature=temperature, **kw)
    want_lab, want_conf = reference.classify(x, axis, temperature=temperature)
    np.testing.assert_array_equal(to_host(lab), want_lab)
    assert_matches("confidence", conf, want_conf, dtype, conf=True)


# --------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_matches_reference(rng, case, dtype):
    shape, axis = CASES[case]
    x = logits(rng, shape, dtype)
    check_all_ops(x, axis, to_gpu(x), temperature=0.7 if dtype == np.float32 else 1.0)


@pytest.mark.parametrize("case", ["tile", "cf", "cl-pixel", "rows-warp", "rows-block"])
def test_host_input(rng, case):
    """NumPy in with backend="cuda": copied over, NumPy out."""
    shape, axis = CASES[case]
    x = logits(rng, shape, np.float32)
    check_all_ops(x, axis, x, backend="cuda")
    assert isinstance(fl.softmax(x, axis, backend="cuda"), np.ndarray)


@pytest.mark.parametrize("threads", [32, 96])
def test_other_block_sizes(tune, rng, monkeypatch, threads):
    """A block of one warp (group == block) and a block of three warps."""
    tune(cuda_threads_per_block=threads)
    for case in ("tile", "rows-warp", "rows-block"):
        shape, axis = CASES[case]
        x = logits(rng, shape, np.float32)
        xd = to_gpu(x)
        assert_matches("softmax", fl.softmax(xd, axis), reference.softmax(x, axis), np.float32)
        lab, conf = fl.classify(xd, axis)
        np.testing.assert_array_equal(to_host(lab), np.argmax(x, axis))


def special_rows(C, dtype):
    """Rows of C logits holding every special case of DESIGN.md."""
    base = np.linspace(-3.0, 2.0, C)
    rows = []

    def row(**at):
        r = base.copy()
        for i, v in at.items():
            r[int(i[1:])] = v
        rows.append(r)

    last = C - 1
    row()                                         # plain
    row(**{f"c{last}": np.nan})                   # NaN last
    row(**{"c0": np.nan, f"c{last}": np.nan})     # two NaNs: first wins
    row(**{f"c{C // 2}": np.inf})                 # +inf
    row(**{"c0": np.inf, f"c{last}": np.nan})     # +inf and NaN: NaN wins
    row(**{f"c{last}": -np.inf})                  # -inf among finite
    rows.append(np.full(C, -np.inf))              # all -inf
    rows.append(np.full(C, 1.5))                  # all tied: label 0
    t = base.copy()
    t[C // 2] = t[last] = 9.0                     # tie for max: first wins
    rows.append(t)
    if C > 1:
        r = np.full(C, -np.inf)
        r[last] = 0.5                             # one finite among -inf
        rows.append(r)
        r = np.full(C, -np.inf)
        r[0] = np.inf                             # +inf among -inf
        rows.append(r)
    return np.array(rows, dtype=dtype)


@pytest.mark.parametrize("case", ["tile", "tile-C1", "cf", "rows-warp", "rows-block", "rows-cf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(case, dtype):
    shape, axis = CASES[case]
    C = shape[axis]
    rows = special_rows(C, dtype)              # (n, C)
    x = np.moveaxis(rows, -1, axis % len(shape)) if axis != -1 else rows
    if axis == 1:                              # (n, C) -> (1, C, n): channels-first
        x = np.ascontiguousarray(rows.T[None])
    with np.errstate(invalid="ignore"):
        check_all_ops(x, axis, to_gpu(x))


def test_large_offsets_and_temperature(rng):
    x = (logits(rng, (3, 19, 5), np.float32) + 1e4).astype(np.float32)
    for t in (0.05, 1.0, 30.0):
        check_all_ops(x, 1, to_gpu(x), temperature=t)


# --------------------------------------------------------------------------
# out=, layouts, empty inputs, caller's library
# --------------------------------------------------------------------------

def test_gpu_out_and_in_place(rng):
    from numba import cuda

    x = logits(rng, (4, 6, 19), np.float32)
    xd = to_gpu(x)
    out = cuda.device_array(x.shape, np.float32)
    assert fl.softmax(xd, out=out) is out
    assert_matches("softmax", out, reference.softmax(x), np.float32)
    red = cuda.device_array((4, 6), np.float32)
    assert fl.logsumexp(xd, out=red) is red
    assert_matches("logsumexp", red, reference.logsumexp(x), np.float32)
    lab = cuda.device_array((4, 6), np.uint8)
    conf = cuda.device_array((4, 6), np.float32)
    got = fl.classify(xd, out=(lab, conf))
    assert got[0] is lab and got[1] is conf
    np.testing.assert_array_equal(to_host(lab), np.argmax(x, -1))
    assert fl.argmax(xd, out=lab) is lab
    # In place: out=x.
    assert fl.log_softmax(xd, out=xd) is xd
    assert_matches("log_softmax", xd, reference.log_softmax(x), np.float32)


def test_host_out_and_in_place(rng):
    x = logits(rng, (3, 50, 2), np.float64)
    out = np.empty_like(x)
    assert fl.softmax(x, 1, out=out, backend="cuda") is out
    assert_matches("softmax", out, reference.softmax(x, 1), np.float64)
    y = x.copy()
    assert fl.softmax(y, 1, out=y, backend="cuda") is y
    assert_matches("softmax", y, reference.softmax(x, 1), np.float64)
    lab = np.empty((3, 2), np.int16)
    conf = np.empty((3, 2), np.float64)
    assert fl.classify(x, 1, out=(lab, conf), backend="cuda") == (lab, conf)
    np.testing.assert_array_equal(lab, np.argmax(x, 1))


def test_host_results_land_in_place(tune, rng, monkeypatch):
    """Host results go straight into a C-contiguous NumPy out (no
    temporary), through one into a strided out; allocated ones come from
    the output pool (fastlogits.pool), as the CPU backend's."""
    from fastlogits import pool, tuning

    made = []
    empty = pool.empty
    monkeypatch.setattr(pool, "empty", lambda *a, **k: made.append(a) or empty(*a, **k))
    x = logits(rng, (4, 19, 6), np.float32)
    out = np.empty_like(x)
    assert fl.softmax(x, 1, out=out, backend="cuda") is out
    assert_matches("softmax", out, reference.softmax(x, 1), np.float32)
    assert made == []
    holder = np.full((4, 19, 12), np.nan, np.float32)
    out = holder[:, :, ::2]
    assert fl.softmax(x, 1, out=out, backend="cuda") is out
    assert_matches("softmax", out, reference.softmax(x, 1), np.float32)
    assert np.isnan(holder[:, :, 1::2]).all() and len(made) == 1
    tune(cpu_output_pool_min_bytes=0)
    pool.release()
    got = fl.softmax(x, 1, backend="cuda")
    assert not got.flags.owndata  # a pooled block
    assert_matches("softmax", got, reference.softmax(x, 1), np.float32)
    del got
    pool.release()


def test_host_input_gpu_out(rng):
    from numba import cuda

    x = logits(rng, (9, 5), np.float32)
    out = cuda.device_array((9, 5), np.float32)
    assert fl.softmax(x, out=out, backend="cuda") is out
    assert_matches("softmax", out, reference.softmax(x), np.float32)


def test_non_contiguous_gpu_views(rng):
    """Strided GPU inputs and outputs: folded to 3-D when the strides allow,
    copied through a contiguous temporary when not."""
    from numba import cuda

    big = logits(rng, (6, 10, 19), np.float32)
    bd = to_gpu(big, "foreign")
    for key, axis in [((slice(None), slice(None, None, 2)), -1),   # not foldable
                      ((slice(1, 5),), -1),                         # offset, contiguous
                      ((slice(None), slice(None), slice(None, None, 2)), -1),  # strided classes
                      ((slice(None), slice(2, 9)), 1)]:             # channels-first view
        x = big[key]
        check_all_ops(x, axis, bd[key])
    # A non-foldable output: results land in the strided view.
    x = logits(rng, (4, 5, 19), np.float32)
    holder = cuda.device_array((4, 10, 19), np.float32)
    out = holder[:, ::2]
    assert fl.softmax(to_gpu(x), out=out) is out
    assert_matches("softmax", to_host(holder)[:, ::2], reference.softmax(x), np.float32)
    # Transposed input: class axis 0.
    t = logits(rng, (23, 40), np.float32)
    check_all_ops(t.T, 0, to_gpu(t, "foreign").T)


def test_non_contiguous_host_views(rng):
    big = logits(rng, (5, 12, 21), np.float32)
    check_all_ops(big[:, ::2], -1, big[:, ::2], backend="cuda")
    check_all_ops(big.transpose(0, 2, 1), 1, big.transpose(0, 2, 1), backend="cuda")


@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((3, 4, 0), 1), ((0, 7, 2), 1)])
def test_empty(shape, axis):
    x = np.zeros(shape, np.float32)
    for xin, kw in [(x, {"backend": "cuda"}), (to_gpu(x), {})]:
        red = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
        assert to_host(fl.softmax(xin, axis, **kw)).shape == shape
        assert to_host(fl.logsumexp(xin, axis, **kw)).shape == red
        lab, conf = fl.classify(xin, axis, **kw)
        assert to_host(lab).shape == red and to_host(lab).dtype == np.int64
        assert to_host(conf).dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
def test_results_in_callers_library(rng, kind):
    x = logits(rng, (7, 19), np.float32)
    xd = to_gpu(x, kind)
    want = {"numba": "numba", "foreign": "numba", "torch": "torch", "cupy": "cupy"}[kind]
    res = [fl.softmax(xd), fl.logsumexp(xd), fl.argmax(xd), *fl.classify(xd)]
    assert [kind_of(r) for r in res] == [want] * 5
    assert_matches("softmax", res[0], reference.softmax(x), np.float32)
    np.testing.assert_array_equal(to_host(res[2]), np.argmax(x, -1))


# --------------------------------------------------------------------------
# Validation (before any kernel runs)
# --------------------------------------------------------------------------

def test_out_errors(rng):
    from numba import cuda

    x = logits(rng, (4, 6, 19), np.float32)
    xd = to_gpu(x)
    with pytest.raises(ValueError, match=r"out has shape \(4, 6\), expected \(4, 6, 19\)"):
        fl.softmax(xd, out=cuda.device_array((4, 6), np.float32))
    with pytest.raises(TypeError, match="out has dtype float64, expected float32"):
        fl.softmax(xd, out=cuda.device_array((4, 6, 19), np.float64))
    with pytest.raises(TypeError, match="must be a GPU array"):
        fl.softmax(xd, out=np.empty((4, 6, 19), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        fl.softmax(xd, out=ForeignArray(cuda.device_array((4, 6, 19), np.float32), readonly=True))
    with pytest.raises(TypeError, match="integer dtype"):
        fl.argmax(xd, out=cuda.device_array((4, 6), np.float32))
    with pytest.raises(ValueError, match="cannot hold label 149"):
        fl.argmax(to_gpu(logits(rng, (2, 150), np.float32)), out=cuda.device_array(2, np.int8))
    with pytest.raises(ValueError, match=r"out\[1\] \(confidence\) has shape"):
        fl.classify(xd, out=(cuda.device_array((4, 6), np.int64),
                             cuda.device_array((4,), np.float32)))
    conf = cuda.device_array((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"\(labels\) and out\[1\] \(confidence\) overlap"):
        fl.classify(xd, out=(ForeignArray(conf, typestr="<i4"), conf))
    # Partial overlap with x (a shifted window of the same buffer).
    holder = to_gpu(logits(rng, (6, 6, 19), np.float32))
    with pytest.raises(ValueError, match="overlaps x"):
        fl.softmax(holder[:4], out=holder[2:])
    with pytest.raises(TypeError, match="tuple"):
        fl.classify(xd, out=cuda.device_array((4, 6), np.int64))


def test_input_errors(rng):
    xd = to_gpu(logits(rng, (4, 5), np.float32))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        fl.softmax(xd, 2)
    with pytest.raises(ValueError, match="temperature"):
        fl.softmax(xd, temperature=0.0)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fl.argmax(to_gpu(np.ones((3, 4), np.int32)))
    with pytest.raises(ValueError, match="no classes"):
        fl.softmax(to_gpu(np.ones((3, 0), np.float32)))
    with pytest.raises(ValueError, match="GPU array but backend='cpu'"):
        fl.softmax(xd, backend="cpu")


# --------------------------------------------------------------------------
# Plan and runtime (no kernels)
# --------------------------------------------------------------------------

def test_plan_regimes(tune, monkeypatch):
    assert ops.plan((145, 19, 1), 4).regime == "tile"
    tune(cuda_cl_pixel_max_c=19)
    assert ops.plan((145, 19, 1), 4).regime == "cf"
    assert ops.plan((145, 20, 1), 4).regime == "tile"
    assert ops.plan((145, 19, 1), 4, writes_scores=True).regime == "tile"
    tune(cuda_cl_pixel_max_c=0)
    assert ops.plan((2, 5, 77), 4).regime == "cf"
    p = ops.plan((21, 40, 1), 4)
    assert (p.regime, p.group, p.threads) == ("rows", 32, 64)
    p = ops.plan((5, 150, 1), 4)
    assert (p.regime, p.group) == ("rows", 64)
    assert ops.plan((2, 100, 3), 4).regime == "rows"
    assert ops.plan((2, 100, 30), 4).regime == "cf"
    for big in [(10**6, 19, 1), (8, 19, 10**6)]:
        assert ops.plan(big, 8).blocks <= tuning.current().cuda.max_blocks
    assert not ops.plan((5, 150, 1), 4).shuffle or not SIM


def test_plan_tile_fits_shared_memory(tune, monkeypatch):
    tune(cuda_threads_per_block=1024)
    tune(cuda_tile_max_c=64)
    p = ops.plan((10**6, 33, 1), 8)
    assert p.regime == "tile" and p.threads % 32 == 0
    assert p.shared_bytes <= tuning.current().cuda.tile_shared_bytes and p.pitch % 2 == 1


def test_bad_block_size(tune, monkeypatch, rng):
    tune(cuda_threads_per_block=100)
    with pytest.raises(ValueError, match="threads_per_block=100"):
        fl.softmax(to_gpu(logits(rng, (3, 4), np.float32)))


def test_status_and_backends():
    usable, reason = runtime.status()
    assert usable and reason
    assert "cuda" in fl.backends()
    info = runtime.describe()
    assert info["usable"] and info["simulator"] == SIM


# --------------------------------------------------------------------------
# Real GPU only
# --------------------------------------------------------------------------

@real_gpu
@pytest.mark.parametrize("case", ["rows-warp", "rows-block", "rows-cf"])
def test_shuffle_and_tree_agree(tune, rng, monkeypatch, case):
    shape, axis = CASES[case]
    x = logits(rng, shape, np.float32)
    x[0, ..., 0] = np.nan
    xd = to_gpu(x)
    res = {}
    for shuffle in (True, False):
        tune(cuda_warp_shuffle=shuffle)
        assert ops.plan(ops._layout.split_shape(shape, axis % len(shape)), 4).shuffle == shuffle
        res[shuffle] = [to_host(fl.softmax(xd, axis)), to_host(fl.argmax(xd, axis))]
        check_all_ops(x, axis, xd)
    for a, b in zip(res[True], res[False]):
        np.testing.assert_allclose(a, b, atol=1e-6, equal_nan=True)


@real_gpu
@pytest.mark.parametrize("shape,axis", [((4, 19, 64, 96), 1), ((4, 64, 96, 19), -1),
                                        ((33, 32000), -1), ((6, 150, 37, 41), 1),
                                        ((3, 1000, 5), 1), ((7, 200_003), -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_default_config_large(rng, monkeypatch, shape, axis, dtype):
    """Default launch configuration, realistic sizes; float32 sums over
    200k classes stay within the float32 tolerance (compensated sums)."""
    monkeypatch.undo()
    x = logits(rng, shape, dtype)
    check_all_ops(x, axis, to_gpu(x))


@real_gpu
def test_torch_current_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    x = logits(rng, (8, 19, 128, 256), np.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        # Produced and consumed on s: no race without any synchronization.
        xt = torch.from_numpy(x).to("cuda", non_blocking=True) * 1.0
        p = fl.softmax(xt, 1)
        lab, conf = fl.classify(xt, 1)
        ref_p = torch.softmax(xt, 1)
        ref_lab = xt.argmax(1)
    s.synchronize()
    assert isinstance(p, torch.Tensor) and p.device == xt.device
    torch.testing.assert_close(p, ref_p, atol=2e-6, rtol=0)
    assert torch.equal(lab, ref_lab)
    torch.testing.assert_close(conf, ref_p.max(1).values, atol=2e-6, rtol=0)


@real_gpu
def test_torch_half_out(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    x = logits(rng, (6, 33), np.float16)
    xt = torch.from_numpy(x).cuda()
    out = torch.empty_like(xt)
    assert fl.softmax(xt, out=out) is out
    assert out.dtype == torch.float16
    assert_matches("softmax", out, reference.softmax(x), np.float16)


class _FailingKernel:
    """A stand-in kernel whose launch fails as the driver reports it."""

    def __init__(self, message):
        self.message = message

    def py_func(self):
        pass

    def __getitem__(self, launch_config):
        def launch(*args):
            raise RuntimeError(self.message)
        return launch


def test_launch_out_of_registers_is_a_config_error():
    k = _FailingKernel("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: too many resources requested")
    with pytest.raises(ValueError, match=r"1024 threads .*threads_per_block"):
        runtime.launch(k, 4, 1024, 0, 0)
    with pytest.raises(RuntimeError, match="something else"):  # other failures pass through
        runtime.launch(_FailingKernel("something else"), 4, 256, 0, 0)


@real_gpu
def test_too_many_threads_for_the_registers(tune, monkeypatch, rng):
    """cross_entropy over large C uses about 123 registers per thread: a
    1024-thread block cannot hold it (measured on an H200)."""
    tune(cuda_threads_per_block=1024)
    tune(cuda_large_c=64)
    x = to_gpu(rng.standard_normal((4, 300)).astype(np.float32))
    t = to_gpu(rng.integers(0, 300, size=4))
    with pytest.raises(ValueError, match="cuda_threads_per_block"):
        fl.cross_entropy(x, t, backend="cuda")


@pytest.mark.skipif(SIM, reason="the simulator replaces numba.cuda.dispatcher; "
                    "tests/cuda_host/test_cuda_launch_guard.py runs this check outside it")
def test_launch_uses_the_documented_launch_configuration():
    """runtime.launch indexes the kernel (``kernel[griddim, blockdim,
    stream, sharedmem](*args)``) with 1-D dimensions as Python ints, the
    same under the simulator as on a GPU; the double binds every call
    against the installed numba-cuda's real signatures (issue 36: the old
    hand-written double mocked a ``call`` that numba-cuda 0.30 does not
    have)."""
    from tests.cuda_host.cuda_doubles import RecordingKernel

    k = RecordingKernel()
    stream = runtime.default_stream()
    runtime.launch(k, np.int64(3), 64, stream, 128, "a", 1)
    assert k.calls == [(3, 64, stream, 128, ("a", 1))]
    assert all(type(v) is int for v in k.calls[0][:2])


@real_gpu
def test_no_low_occupancy_warnings(rng):
    """The ops size their grids themselves (one block totals the losses'
    partial sums): Numba's low-occupancy warning would only be noise."""
    import warnings

    x = to_gpu(rng.standard_normal((3, 5)).astype(np.float32))
    t = to_gpu(rng.integers(0, 5, size=3))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fl.cross_entropy(x, t, backend="cuda")
        fl.confusion_matrix(x, t, backend="cuda")
        fl.classify(x, backend="cuda")
    assert not [w for w in seen if "occupancy" in str(w.message)]
