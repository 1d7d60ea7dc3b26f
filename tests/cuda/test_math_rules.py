"""The kernels' arithmetic rules of 946cea3, on every regime (tiny inputs):
scores ``(z - m) * inv_t`` with ``inv_t`` = reference.temperature_scale,
``log s = log1p(s')`` with ``s'`` the sum over every class but the first
maximum (SciPy's rule), logsumexp ``m * inv_t + log1p(s')``, confidence
``1 / (1 + s')``."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference, tuning

from conftest import to_gpu, to_host

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _regime(tune, monkeypatch, regime):
    """Shape a (pixels, C) problem for ``regime``; returns (make, axis)."""
    if regime == "rows":
        tune(cuda_tile_max_c=0)
    if regime == "cf":
        # (1, C, pixels): channels-first, a thread per pixel.
        return (lambda a: np.ascontiguousarray(a.T[None])), 1
    return (lambda a: a), -1


REGIMES = ["tile", "rows", "cf"]


@pytest.mark.parametrize("regime", REGIMES)
def test_logsumexp_near_zero_keeps_its_relative_precision(tune, monkeypatch, regime):
    make, axis = _regime(tune, monkeypatch, regime)
    x = make(np.array([[0.0, -40.0]]))
    got = to_host(fl.logsumexp(to_gpu(x), axis=axis, backend="cuda")).ravel()
    np.testing.assert_allclose(got, 4.248354255291589e-18, rtol=1e-14)


@pytest.mark.parametrize("regime", REGIMES)
def test_float32_logsumexp_within_4_ulp(tune, monkeypatch, regime):
    make, axis = _regime(tune, monkeypatch, regime)
    x = make(np.array([[0.0, -10.0]], np.float32))
    got = to_host(fl.logsumexp(to_gpu(x), axis=axis, backend="cuda")).ravel()[0]
    exact = np.log1p(np.exp(-10.0))
    assert got.dtype == np.float32
    assert abs(float(got) - exact) <= 4 * np.spacing(np.float32(exact)), (got, exact)


@pytest.mark.parametrize("regime", REGIMES)
def test_ties_at_the_max_count_once_each(tune, monkeypatch, regime):
    make, axis = _regime(tune, monkeypatch, regime)
    x = make(np.array([[1.0, 1.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf, -np.inf]]))
    got = to_host(fl.logsumexp(to_gpu(x), axis=axis, backend="cuda")).ravel()
    np.testing.assert_allclose(got[0], 1.0 + np.log(3.0), rtol=1e-15)
    assert got[1] == -np.inf
    labels, conf = fl.classify(to_gpu(x), axis=axis, backend="cuda")
    np.testing.assert_allclose(to_host(conf).ravel()[0], 1 / 3, rtol=1e-15)


TEMPERATURES = [5e-324, 1e-308, 1e-40, 3.4e38, 1.7e308]


def _close(got, want, rtol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    fin = np.isfinite(want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=rtol * 1e-30)


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_temperatures_match_the_reference(tune, monkeypatch, regime, dtype):
    make, axis = _regime(tune, monkeypatch, regime)
    x = make(np.array([[0.5, -1.0, 2.0], [3.0, 3.0, -np.inf], [-2.0, 1.0, 0.25]], dtype))
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for T in TEMPERATURES:
        g = to_gpu(x)
        for name in ("softmax", "log_softmax", "logsumexp"):
            got = to_host(getattr(fl, name)(g, axis=axis, temperature=T, backend="cuda"))
            want = getattr(reference, name)(x, axis=axis, temperature=T)
            _close(got, want, rtol)
        labels, conf = fl.classify(g, axis=axis, temperature=T, backend="cuda")
        wl, wc = reference.classify(x, axis=axis, temperature=T)
        assert np.array_equal(to_host(labels), wl)
        _close(to_host(conf), wc, rtol)


def test_negative_strides_and_host_copies_run_the_copy_kernel(rng):
    """An input no view can reach (a negative stride) is copied on the
    device by the copy kernel; an out= no view can reach gets a temporary
    copied back; both the same host code as on a GPU."""
    a = rng.standard_normal((3, 4, 5)).astype(np.float32) * 3
    g = to_gpu(a)
    rev = g[::-1]
    got = to_host(fl.softmax(rev, axis=1, backend="cuda"))
    np.testing.assert_allclose(got, reference.softmax(a[::-1], axis=1), atol=2e-6)
    out = to_gpu(np.zeros((5, 4, 3), np.float32))
    out_t = out.T if hasattr(out, "T") else out
    fl.softmax(g, axis=1, out=out_t, backend="cuda")
    np.testing.assert_allclose(to_host(out).T, reference.softmax(a, axis=1), atol=2e-6)
