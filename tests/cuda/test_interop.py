"""backend="cuda" with a HOST input from another library: the results come
back in that library, as on the host backends (tests/test_interop.py)."""

import numpy as np
import pytest

import fastlogits as fl


def test_torch_cpu_tensor_gives_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    t = rng.integers(0, 5, (2, 3, 4))
    tx = torch.from_numpy(x)
    p = fl.softmax(tx, axis=1, backend="cuda")
    assert type(p) is torch.Tensor and p.device.type == "cpu"
    np.testing.assert_allclose(p.numpy(), fl.softmax(x, axis=1, backend="numpy"),
                               rtol=1e-5, atol=1e-7)
    labels, conf = fl.classify(tx, axis=1, backend="cuda")
    assert type(labels) is torch.Tensor and type(conf) is torch.Tensor
    loss = fl.cross_entropy(tx, torch.from_numpy(t), axis=1, backend="cuda")
    assert type(loss) is torch.Tensor and loss.shape == () and loss.dtype == torch.float64
    out = torch.zeros((5, 5), dtype=torch.int64)
    assert fl.confusion_matrix(tx, t, axis=1, out=out, backend="cuda") is out
    np.testing.assert_array_equal(out.numpy(), fl.confusion_matrix(x, t, axis=1, backend="numpy"))
    head = fl.LinearHead(torch.ones((5, 5)))
    assert type(head.argmax(tx, axis=1, backend="cuda")) is torch.Tensor


def test_data_array_gives_data_arrays(rng):
    xr = pytest.importorskip("xarray")
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    da = xr.DataArray(x, dims=("y", "x", "class"), coords={"class": list("abcde")})
    lse = fl.logsumexp(da, backend="cuda")
    assert isinstance(lse, xr.DataArray) and lse.dims == ("y", "x")
    cm = fl.confusion_matrix(da, np.zeros((3, 4), np.int64), backend="cuda")
    assert cm.dims == ("target", "prediction") and list(cm.target.values) == list("abcde")
