"""Compile every CUDA kernel to sm_90 PTX, with no GPU needed.

``numba.cuda.compile_ptx`` runs the whole Numba typing and NVVM pipeline,
so it catches typing errors the simulator (which runs kernels as Python)
cannot, and lets us read the generated code: float16/float32 kernels must
contain no float64 instruction (``.f64``), which a stray Python float
literal or a float64 helper would introduce (an H100 runs float64 at a
fraction of the float32 rate).

The NVVM toolchain comes with ``numba-cuda[cu13]`` (no driver needed). The
test skips, saying why, only when that toolchain cannot be loaded.
"""

import os

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                                reason="compile_ptx is not available under the CUDA simulator")

CC = (9, 0)


def _toolchain_problem():
    try:
        from numba import cuda, types

        def probe(a):
            a[0] = 1.0

        cuda.compile_ptx(probe, (types.float32[:],), cc=CC)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no toolchain"
        return f"the NVVM toolchain is unavailable ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="module")
def compiler():
    problem = _toolchain_problem()
    if problem:
        pytest.skip(problem)
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    saved = dispatcher.get_current_device
    if not cuda.is_available():
        # numba-cuda 0.30 compiles device functions for the *current*
        # device's compute capability even inside compile_ptx; with no GPU
        # there is none, so pin it to the PTX target.
        class _Target:
            compute_capability = CC

        dispatcher.get_current_device = lambda: _Target()
    yield cuda.compile_ptx
    dispatcher.get_current_device = saved


def _signatures():
    from fastlogits.cuda.host.signatures import kernel_signatures

    return kernel_signatures()


@pytest.mark.parametrize("name,kernel,argtypes,single", _signatures(),
                         ids=[s[0] for s in _signatures()])
def test_compiles_for_sm90(compiler, name, kernel, argtypes, single):
    ptx, _ = compiler(kernel.py_func, argtypes, cc=CC)
    assert ".target sm_90" in ptx
    if single:
        f64 = [ln.strip() for ln in ptx.splitlines() if ".f64" in ln]
        assert not f64, f"{name}: float64 instructions in a single-precision kernel: {f64[:5]}"


def _head_signatures():
    from fastlogits.cuda.host.signatures import head_kernel_signatures

    return head_kernel_signatures()


@pytest.mark.parametrize("name,kernel,argtypes,single", _head_signatures(),
                         ids=[s[0] for s in _head_signatures()])
def test_head_compiles_for_sm90(compiler, name, kernel, argtypes, single):
    """The fused LinearHead kernels (fastlogits.cuda.kernels.head), same checks."""
    test_compiles_for_sm90(compiler, name, kernel, argtypes, single)
