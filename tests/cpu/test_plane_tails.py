"""The channels-first register-block kernels (docs/perf/cpu-080):
``argmax_cf_blocks``, ``expnorm_cf_blocks`` and ``ce_cf_blocks`` read a
tile's whole blocks of LANES pixels in place and the rest (an image's
first pixels before a 64-byte line, its last pixels, images smaller than
a block) as a padded block through the same call: no tile loops. Every
count of last pixels, images that start off a line, several tiles and
images, launched in parallel and whole, in place and streamed, with
special values, against the reference; strided inputs and more classes
go to the tile loops' kernels."""

import inspect

import numpy as np
import pytest
from numba import njit, types

import fastlogits as fl
from fastlogits import reference
from fastlogits.cpu.blocks.planeblock import LANES, padded_planes
from fastlogits.cpu.llvm.rowcopy import copy_flat
from tests.helpers import assert_close, specials_array

LAST = sorted({0, 1, 2, LANES // 2, LANES - 1})
TILE = 32  # pixels per tile (cpu_tile_pixels), so an image has several


@pytest.fixture(autouse=True)
def small_tiles(tune):
    """Tiles of TILE pixels (cpu_tile_pixels, cpu_loss_tile_pixels)."""
    tune(cpu_tile_pixels=TILE, cpu_loss_tile_pixels=TILE)


def _shifted(x, k):
    """A C-contiguous copy of x whose data start k elements past a 64-byte
    line: its images' first pixels before a line are a padded block."""
    buf = np.empty(x.size + 128 // x.itemsize, x.dtype)
    at = (-buf.ctypes.data % 64) // x.itemsize + k
    y = buf[at:at + x.size].reshape(x.shape)
    y[...] = x
    return y


def _maps(rng, last, dtype=np.float32, C=19):
    """(x, label) of channels-first maps whose inner size ends in ``last``
    pixels past whole blocks: several tiles, one image off its lines, one
    image of a single block and the last pixels."""
    for n, inner, shift in ((3, 3 * TILE + last, 0), (2, 2 * TILE + last, 5), (4, LANES + last, 1)):
        x = specials_array(rng, (n, C, inner), 1, dtype)
        yield _shifted(x, shift % (64 // x.itemsize)), (n, inner, shift)


def _switch_types(kernel, name):
    at = list(inspect.signature(kernel.py_func).parameters).index(name)
    return {sig[at] for sig in kernel.signatures}


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("last", LAST)
def test_exp_ops_plane_tails(rng, launch, tune, op, last):
    from fastlogits.cpu.ops import softmax as kernels

    for x, label in _maps(rng, last):
        want = getattr(reference, op)(x, axis=1)
        assert_close(getattr(fl, op)(x, axis=1), want, np.float32)
        if op != "logsumexp":
            y = x.copy()
            assert getattr(fl, op)(y, axis=1, out=y) is y  # in place
            assert_close(y, want, np.float32)
    if op != "logsumexp":  # streamed (planeblock.WRITE_STREAM or WRITE_EBUF_STREAM)
        tune(cpu_stream_min_bytes=0)
        for x, label in _maps(rng, last):
            for shift in (0, 3):
                out = _shifted(np.empty_like(x), shift)
                getattr(fl, op)(x, axis=1, out=out)
                assert_close(out, getattr(reference, op)(x, axis=1), np.float32)
    assert kernels.expnorm_cf_blocks.signatures


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("last", LAST)
def test_argmax_classify_plane_tails(rng, launch, dtype, last):
    from fastlogits.cpu.ops import argmax as kernels

    for x, label in _maps(rng, last, dtype):
        np.testing.assert_array_equal(fl.argmax(x, axis=1), reference.argmax(x, axis=1),
                                      err_msg=str(label))
        labels, conf = fl.classify(x, axis=1)
        want_labels, want_conf = reference.classify(x, axis=1)
        np.testing.assert_array_equal(labels, want_labels)
        assert_close(conf, want_conf, dtype)
    assert kernels.argmax_cf_blocks.signatures


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("last", LAST)
def test_loss_plane_tails(rng, launch, tune, dtype, last):
    from fastlogits.cpu.ops import losses as kernels

    C = 19
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-6)
    for x, label in _maps(rng, last, dtype, C):
        x[...] = np.where(np.isfinite(x), x, dtype(2.0))  # (NaN losses: test_losses)
        n, inner = label[:2]
        t = rng.integers(0, C, (n, inner)).astype(np.uint8)
        t[rng.random(t.shape) < 0.2] = 255
        t[:, -1] = 255  # ignored pixels among the last
        for kw in ({}, {"label_smoothing": 0.1, "class_weight": np.linspace(0.5, 2, C)}):
            want, want_grad = reference.cross_entropy(x, t, axis=1, ignore_index=255,
                                                      reduction="none", return_grad=True, **kw)
            np.testing.assert_allclose(
                fl.cross_entropy(x, t, axis=1, ignore_index=255, reduction="none", **kw),
                want, **tol, err_msg=str(label))
            got, grad = fl.cross_entropy(x, t, axis=1, ignore_index=255, reduction="none",
                                         return_grad=True, **kw)
            np.testing.assert_allclose(got, want, **tol)
            np.testing.assert_allclose(np.asarray(grad, np.float64), want_grad, **tol)
            total = fl.cross_entropy(x, t, axis=1, ignore_index=255, **kw)
            assert total == pytest.approx(float(reference.cross_entropy(
                x, t, axis=1, ignore_index=255, **kw)), rel=tol["rtol"] * 10)
            if dtype == np.float32:
                y = x.copy()  # the gradient in place over x
                fl.cross_entropy(y, t, axis=1, ignore_index=255, reduction="none",
                                 return_grad=True, grad_out=y, **kw)
                np.testing.assert_allclose(y, want_grad, **tol)
    if dtype == np.float32:  # the gradient streamed
        tune(cpu_stream_min_bytes=0)
        for x, label in _maps(rng, last, dtype, C):
            x[...] = np.where(np.isfinite(x), x, dtype(2.0))
            t = rng.integers(0, C, label[:2])
            want, want_grad = reference.cross_entropy(x, t, axis=1, reduction="none",
                                                      return_grad=True)
            for shift in (0, 3):
                g = _shifted(np.empty_like(x), shift)
                got, _ = fl.cross_entropy(x, t, axis=1, reduction="none", return_grad=True,
                                          grad_out=g)
                np.testing.assert_allclose(got, want, **tol)
                np.testing.assert_allclose(g, want_grad, **tol)
    assert kernels.ce_cf_blocks.signatures


@pytest.mark.parametrize("tdtype, ignore", [(np.uint8, -100), (np.int8, 255), (np.int64, -100)])
@pytest.mark.parametrize("at", [0, -1])
def test_loss_bad_target_in_padded_pixels(rng, launch, tdtype, ignore, at):
    """A bad target among an image's first or last pixels (read before the
    padded block, whose ignored value is t's -1, whatever
    ``ignore_index`` is) raises as anywhere else; targets equal to
    ``ignore_index`` there are ignored."""
    C, inner = 19, 2 * TILE + 3
    x = _shifted((3 * rng.standard_normal((2, C, inner))).astype(np.float32), 3)
    t = rng.integers(0, C, (2, inner)).astype(tdtype)
    ok = t.copy()
    if np.can_cast(np.min_scalar_type(ignore), tdtype):
        ok[1, -2] = ignore
        ok[0, 1] = ignore
    np.testing.assert_allclose(
        fl.cross_entropy(x, ok, axis=1, ignore_index=ignore, reduction="none"),
        reference.cross_entropy(x, ok, axis=1, ignore_index=ignore, reduction="none"),
        rtol=1e-5)
    bad = ok.copy()
    bad[1, at] = C + 1
    with pytest.raises(ValueError, match="target"):
        fl.cross_entropy(x, bad, axis=1, ignore_index=ignore)
    if np.issubdtype(tdtype, np.signedinteger):  # t's -1 itself is a bad target
        bad[1, at] = -1
        with pytest.raises(ValueError, match="target"):
            fl.cross_entropy(x, bad, axis=1, ignore_index=ignore)


@pytest.mark.parametrize("inner", [1, 3, LANES - 1])
def test_images_smaller_than_a_block(rng, launch, inner):
    """Every pixel of such an image is a padded block's."""
    x = specials_array(rng, (5, 19, inner), 1, np.float32)
    t = rng.integers(0, 19, (5, inner))
    np.testing.assert_array_equal(fl.argmax(x, axis=1), reference.argmax(x, axis=1))
    for op in ("softmax", "log_softmax", "logsumexp"):
        assert_close(getattr(fl, op)(x, axis=1), getattr(reference, op)(x, axis=1), np.float32)
    x = np.where(np.isfinite(x), x, np.float32(1.0))
    got, grad = fl.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    want, want_grad = reference.cross_entropy(x, t, axis=1, reduction="none", return_grad=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


def test_strided_and_many_classes_take_the_tiles(rng):
    """The blocks' kernels take C-contiguous x of few classes only: a
    strided view and more classes than ``cpu_plane_block_max_classes`` go
    to the tile loops' kernels, with the same results."""
    from fastlogits.cpu.ops import argmax, losses, softmax

    for x in (specials_array(rng, (2, 19, 40), 1, np.float32)[:, :, ::2],
              specials_array(rng, (2, 70, 37), 1, np.float32)):
        np.testing.assert_array_equal(fl.argmax(x, axis=1), reference.argmax(x, axis=1))
        assert_close(fl.softmax(x, axis=1), reference.softmax(x, axis=1), np.float32)
        x = np.where(np.isfinite(x), x, np.float32(1.0))
        t = rng.integers(0, x.shape[1], (x.shape[0], x.shape[2]))
        np.testing.assert_allclose(fl.cross_entropy(x, t, axis=1, reduction="none"),
                                   reference.cross_entropy(x, t, axis=1, reduction="none"),
                                   rtol=1e-5, atol=1e-6)
    assert argmax.argmax_cf.signatures and softmax.expnorm_cf.signatures
    assert losses.ce_cf.signatures


@pytest.mark.parametrize("op, on", [("softmax", "exps"), ("log_softmax", "logs"),
                                    ("logsumexp", "lse")])
def test_exp_ops_compile_per_op(rng, op, on):
    """Each exp op reaches the channels-first blocks' kernel with its own
    switch True and the others None: the kernel compiles that op's code
    alone (a True prunes nothing, so each op's code sits under its own
    switch; fastlogits.cpu.switches)."""
    from fastlogits.cpu.ops import softmax as kernels

    x = (3 * rng.standard_normal((2, 19, 21))).astype(np.float32)
    assert_close(getattr(fl, op)(x, axis=1), getattr(reference, op)(x, axis=1), np.float32)
    for name in ("exps", "logs", "lse"):
        seen = _switch_types(kernels.expnorm_cf_blocks, name)
        assert seen <= {types.none, types.boolean}
        if name == on:
            assert types.boolean in seen
        else:
            assert types.none in seen


@njit
def _pad(x, o, i, n, pad):
    return padded_planes(x, o, i, n, pad).copy()


@njit
def _copy(src, s, dst, d, n):
    copy_flat(src, s, dst, d, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_padded_planes_and_copy_flat(rng, dtype):
    x = (100 * rng.random((3, 5, 23))).astype(dtype)
    for o, i, n in ((0, 0, 1), (1, 3, 5), (2, 23 - LANES // 2, LANES // 2)):
        pad = np.zeros((1, 5, LANES), dtype)
        got = _pad(x, o, i, n, pad)
        np.testing.assert_array_equal(got[0, :, :n], x[o, :, i:i + n])
        np.testing.assert_array_equal(got[0, :, n:],
                                      np.repeat(x[o, :, i + n - 1][:, None], LANES - n, 1))
    dst = np.zeros(40, dtype)
    _copy(x, 30, dst, 2, 7)
    np.testing.assert_array_equal(dst[2:9], x.reshape(-1)[30:37])
    assert not dst[:2].any() and not dst[9:].any()
