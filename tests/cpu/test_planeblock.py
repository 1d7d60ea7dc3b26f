"""The channels-first register blocks (fastlogits.cpu.blocks.planeblock) on their
own: the tests of tests/cpu/test_rowblock.py, run on the same rows laid out as
class planes (a block's pixels are rows of those tests), at every block
width, with the block in the second image of the batch so ``start``'s
image offset is exercised."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.blocks import planeblock
from fastlogits.cpu.blocks.planeblock import plane_intrinsics
from tests.cpu.test_rowblock import (  # noqa: F401  (collected here with this module's fixture)
                                 test_block_argmax_expsum_matches_numpy, test_block_argmax_matches_numpy,
                                 test_block_argmax_merges_chains_like_numpy, test_block_softmax_stores_rows_back,
                                 test_block_sums_match_float64)

WIDTHS = [8, 16]


def _planes(x2):
    """(2, C, n) C-contiguous: image 1 holds rows ``x2`` (n, C) as class
    planes, image 0 garbage."""
    n, C = x2.shape
    x3 = np.full((2, C, n), 1234.0, x2.dtype)
    x3[1] = x2.T
    return x3


def _start(x2, r):
    """The flat index of row r's block in :func:`_planes` (image 1)."""
    return x2.shape[1] * x2.shape[0] + r


def _wrappers(lanes):
    k = plane_intrinsics(lanes)
    argmax, argmax_expsum, wsum = k.argmax, k.argmax_expsum, k.wsum
    max_expsum, max_expstore = k.max_expsum, k.max_expstore
    store_softmax, store_log = k.store_softmax, k.store_log_softmax

    @njit
    def _argmax(x3, start, m, idx, p):
        argmax(x3, start, m, idx, p)

    @njit
    def _argmax_expsum(x3, start, m, idx, p, inv_t, cols, s):
        argmax_expsum(x3, start, m, idx, p, inv_t, cols, s)

    @njit
    def _wsum(x3, start, m, p, w, s):
        wsum(x3, start, m, p, w, s)

    @njit
    def _softmax_block(x3, start, inv_t, out3, log):
        R, C = lanes, x3.shape[1]
        m = np.empty(R, x3.dtype)
        g = np.empty(R, x3.dtype)
        s = np.empty(R)
        cols = np.empty(C * R, x3.dtype)
        if log:  # the max-only intrinsics of softmax, log_softmax and the losses
            max_expsum(x3, start, m, 0, inv_t, cols, s)
            for i in range(R):
                g[i] = np.log1p(s[i])  # s: the exp-sum less the max's 1
            store_log(cols, m, inv_t, g, 0, out3, start)
        else:
            max_expstore(x3, start, m, 0, inv_t, cols, s)
            for i in range(R):
                g[i] = 1.0 / (1.0 + s[i])
            store_softmax(cols, m, inv_t, g, 0, out3, start)

    # The row tests' interface: rows x (n, C), a block at row r.
    def argmax_rows(x, r, m, idx, p):
        _argmax(_planes(x), _start(x, r), m, idx, p)

    def argmax_expsum_rows(x, r, m, idx, p, inv_t, cols, s):
        _argmax_expsum(_planes(x), _start(x, r), m, idx, p, inv_t, cols, s)

    def wsum_rows(x, r, m, p, w, s):
        _wsum(_planes(x), _start(x, r), m, p, w, s)

    def softmax_rows(x, r, inv_t, out, log):
        x3 = _planes(x)
        out3 = x3 if out is x else _planes(out)   # in place stays in place
        _softmax_block(x3, _start(x, r), inv_t, out3, log)
        np.testing.assert_array_equal(out3[0], 1234.0)  # the other image untouched
        out[...] = out3[1].T

    return lanes, argmax_rows, argmax_expsum_rows, wsum_rows, softmax_rows, _argmax


_KERNELS = {}


@pytest.fixture(params=WIDTHS, ids=lambda v: f"{v}lanes")
def kernels(request):
    """The row tests' ``(rows, argmax, argmax_expsum, wsum, softmax_block)``
    for plane blocks of one width, compiled once."""
    if request.param not in _KERNELS:
        _KERNELS[request.param] = _wrappers(request.param)
    return _KERNELS[request.param][:5]


def test_package_width_matches_the_row_blocks():
    from fastlogits.cpu.blocks import rowblock

    assert planeblock.LANES == rowblock.ROWS


@pytest.mark.parametrize("lanes", WIDTHS)
def test_plane_blocks_reject_what_they_cannot_read(lanes):
    """Typing fails (no silent fallback) for non-contiguous, 2-D or
    integer x."""
    if lanes not in _KERNELS:
        _KERNELS[lanes] = _wrappers(lanes)
    argmax = _KERNELS[lanes][5]
    m, idx = np.empty(lanes, np.float32), np.empty(lanes, np.int32)
    x = np.ones((1, 4, 2 * lanes), np.float32)
    argmax(x, 0, m, idx, 0)
    with pytest.raises(Exception):
        argmax(x[:, :, ::2], 0, m, idx, 0)
    with pytest.raises(Exception):
        argmax(x[0], 0, m, idx, 0)
    with pytest.raises(Exception):
        argmax(np.ones((1, 4, lanes), np.int32), 0, np.empty(lanes, np.int32), idx, 0)


@pytest.mark.parametrize("wide", [False, True], ids=["offsets32", "offsets64"])
@pytest.mark.parametrize("lanes", WIDTHS)
def test_plane_xent_matches_reference(rng, lanes, wide):
    """The fused cross-entropy of a block of planes (``planes_xent``), with
    and without label smoothing, the special values included, as the row
    blocks' (the same part codegen);
    the target logits gathered by 32-bit offsets and by the 64-bit ones
    of x of 2**31 elements or more."""
    from tests.cpu.test_rowblock import check_xent, xent_case, xent_runner

    xent = plane_intrinsics(lanes, wide_offsets=wide).xent
    for C in (4, 8, 19, 33):  # fewer than 8 too: planes need no 8-class blocks
        case = xent_case(rng, C, lanes)
        run = xent_runner(xent, lanes, case[-1], at=lambda x, r: (_planes(x), _start(x, r)))
        check_xent(run, *case, lanes)


@pytest.mark.parametrize("lanes", WIDTHS)
def test_plane_max_expsum_matches_numpy(rng, lanes):
    """``max_expsum`` of the plane blocks, as the row blocks'."""
    from tests.cpu.test_rowblock import check_max_expsum

    max_expsum = plane_intrinsics(lanes).max_expsum

    @njit
    def run3(x3, start, m, p, inv_t, cols, s):
        max_expsum(x3, start, m, p, inv_t, cols, s)

    check_max_expsum(lambda x, r, *rest: run3(_planes(x), _start(x, r), *rest), lanes, rng)


@pytest.mark.parametrize("wide", [False, True], ids=["offsets32", "offsets64"])
@pytest.mark.parametrize("stream", [False, True], ids=["stored", "streamed"])
@pytest.mark.parametrize("lanes", WIDTHS)
def test_plane_xent_grad_matches_reference(rng, lanes, stream, wide):
    """The fused cross-entropy gradient of a block of planes
    (``xent_grad``, ``stream_xent_grad``), as the row blocks'; the output
    planes' blocks start 64-byte lines (non-temporal stores need it); the
    target logits gathered by 32- and 64-bit offsets."""
    from tests.cpu.test_rowblock import check_xent_grad

    k = plane_intrinsics(lanes, wide_offsets=wide)
    xent_grad = k.stream_xent_grad if stream else k.xent_grad

    @njit
    def run3(x3, start, tt, wt, coef, bc, w, out3, out_start, m, s, xt, sm):
        cols = np.empty(x3.shape[1] * lanes, x3.dtype)
        xent_grad(x3, start, m, 2, cols, tt, wt, coef, bc, w, s, xt, sm, out3, out_start)

    def run(x, r, tt, wt, coef, bc, w, out, out_at, *scratch):
        x3 = _planes(x)
        if out is x:  # in place
            run3(x3, _start(x, r), tt, wt, coef, bc, w, x3, _start(x, r), *scratch)
            x[...] = x3[1].T
            return
        # out's rows as planes of 64 pixels (whole lines), the block at a
        # line start: pixel 16 of image 1 takes row out_at.
        n, C = out.shape
        o3 = np.zeros(2 * C * 64 + 64, out.dtype)
        shift = (-o3.ctypes.data % 64) // out.itemsize
        o3 = o3[shift:shift + 2 * C * 64].reshape(2, C, 64)
        o3[1, :, 16 - out_at:16 - out_at + n] = out.T
        run3(x3, _start(x, r), tt, wt, coef, bc, w, o3, C * 64 + 16, *scratch)
        out[...] = o3[1, :, 16 - out_at:16 - out_at + n].T

    # Not in place when streamed: x's blocks do not start lines here
    # (tests/api/test_losses.py streams in place through the driver).
    check_xent_grad(run, lanes, rng, in_place=not stream)
