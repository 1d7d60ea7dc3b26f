"""Guard for issue 36, with no GPU: the CUDA host code reaches numba-cuda
only through public names, and its launch is accepted by a double built
from the installed numba-cuda's real signatures (tests/cuda_host/cuda_doubles.py).

Fails on 946cea3 (whose launch called ``CUDADispatcher.call`` with five
arguments, and whose views and copies used numba-cuda internals)."""

import pathlib
import re

import pytest

pytest.importorskip("numba.cuda")

from fastlogits.cuda import runtime  # noqa: E402
from tests.cuda_host.cuda_doubles import RecordingKernel  # noqa: E402

CUDA_DIR = pathlib.Path(runtime.__file__).parent

#: numba-cuda internals the host code once leaned on (issue 36), and the
#: deprecated conversion of Numba's default stream.
FORBIDDEN = {
    r"\.call\(": "CUDADispatcher.call (launch with kernel[griddim, blockdim, stream, shared])",
    r"\bgpu_data\b": "DeviceNDArray(gpu_data=) / .gpu_data",
    r"\.setitem\(": "DeviceNDArray.setitem",
    r"__cuda_ndarray__": "the __cuda_ndarray__ marker",
    r"device_memset": "cudadrv.driver.device_memset",
    r"ensure_context": "cudadrv.devices._runtime.ensure_context",
    r"numba\.cuda\.cudadrv|cuda import cudadrv": "numba.cuda.cudadrv (internal modules)",
    r"int\(stream\)": "int(stream) (deprecated for Numba's default stream)",
    r"DeviceNDArray\(": "the DeviceNDArray constructor",
}


def _host_sources():
    return sorted(CUDA_DIR.rglob("*.py"))


@pytest.mark.parametrize("pattern", sorted(FORBIDDEN))
def test_host_code_uses_no_numba_cuda_internals(pattern):
    hits = [f"{p.relative_to(CUDA_DIR)}:{n}: {line.strip()}"
            for p in _host_sources()
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{FORBIDDEN[pattern]}:\n" + "\n".join(hits)


class _Stream:
    """A stream speaking the CUDA stream protocol, as numba-cuda's do."""

    def __cuda_stream__(self):
        return (0, 12345)


def test_launch_goes_through_the_documented_launch_configuration():
    """``runtime.launch`` indexes the kernel with 1-D dimensions as Python
    ints and calls the configuration with the arguments, as the real
    ``CUDADispatcher.__getitem__`` and ``_LaunchConfiguration.__call__``
    accept them; the configuration is made once and reused."""
    k = RecordingKernel()
    stream = _Stream()
    import numpy as np

    runtime.launch(k, np.int64(3), 64, stream, 128, "a", 1)
    runtime.launch(k, 3, 64, stream, 128, "b")
    assert [c[4] for c in k.calls] == [("a", 1), ("b",)]
    griddim, blockdim, st, shared, _ = k.calls[0]
    assert (griddim, blockdim, st, shared) == (3, 64, stream, 128)
    assert all(type(v) is int for v in (griddim, blockdim, shared))
    assert k.configured == 1


def test_the_double_refuses_the_old_launch():
    """The double is a real guard: the five-argument ``call`` of 946cea3
    is refused with the TypeError a GPU gave."""
    k = RecordingKernel()
    with pytest.raises(TypeError):
        k.call(("a",), (3, 1, 1), (64, 1, 1), "stream", 128)


def test_stream_key_never_converts_a_stream_to_int(recwarn):
    assert runtime.stream_key(_Stream()) == 12345
    assert runtime.stream_key(object()) == 0
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_version_range_is_reported():
    assert runtime.version_problem("0.30.4") is None
    assert "outside the supported range >=0.30,<0.31" in runtime.version_problem("0.31.0")
    assert "outside" in runtime.version_problem("0.29.9")
    assert runtime.version_problem("0.30.0rc1") is None


def test_pyproject_pins_the_supported_range():
    text = (CUDA_DIR.parents[1] / "pyproject.toml").read_text()
    lo, hi = runtime.SUPPORTED_NUMBA_CUDA
    assert f'numba-cuda[cu13]>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}' in text


def test_status_names_an_unsupported_numba_cuda(monkeypatch):
    monkeypatch.setattr(runtime, "numba_cuda_version", lambda: "0.31.2")
    usable, reason = runtime.status()
    assert not usable and "numba-cuda 0.31.2 is outside the supported range" in reason
