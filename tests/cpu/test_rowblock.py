"""The register blocks of rows (fastlogits.cpu.blocks.rowblock) on their own:
every block layout (8 rows; 16 rows as two 8-row parts; 16 rows as two
halves of each 64-byte register), every remainder C % 8, both dtypes,
NaN / +-inf / ties / all -inf rows in each half, blocks that start
anywhere in x and in the outputs, nothing else written."""

import numpy as np
import pytest
from numba import njit

from fastlogits.cpu.blocks import rowblock
from fastlogits.cpu.blocks.rowblock import block_intrinsics
from tests.helpers import exp_rest

CLASSES = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 24, 33, 64, 95, 96, 128]

#: (rows, wide): every layout, built here whatever the machine's own
#: (``rowblock.ROWS``); 16 rows without wide vectors is two 8-row parts.
LAYOUTS = [(8, False), (16, False), (16, True)]


def _wrappers(rows, wide):
    k = block_intrinsics(rows, wide)
    argmax, argmax_expsum, wsum = k.argmax, k.argmax_expsum, k.wsum
    max_expsum, max_expstore = k.max_expsum, k.max_expstore
    store_softmax, store_log = k.store_softmax, k.store_log_softmax

    @njit
    def _argmax(x, r, m, idx, p):
        argmax(x, r, m, idx, p)

    @njit
    def _argmax_expsum(x, r, m, idx, p, inv_t, cols, s):
        argmax_expsum(x, r, m, idx, p, inv_t, cols, s)

    @njit
    def _wsum(x, r, m, p, w, s):
        wsum(x, r, m, p, w, s)

    @njit
    def _softmax_block(x, r, inv_t, out, log):
        """softmax (or log_softmax) of rows r .. r + rows - 1 into out."""
        R, C = rows, x.shape[1]
        m = np.empty(R, x.dtype)
        g = np.empty(R, x.dtype)
        s = np.empty(R)
        cols = np.empty(C * R, x.dtype)
        if log:  # the max-only intrinsics of softmax, log_softmax and the losses
            max_expsum(x, r, m, 0, inv_t, cols, s)
            for i in range(R):
                g[i] = np.log1p(s[i])  # s: the exp-sum less the max's 1
            store_log(cols, m, inv_t, g, 0, out, r)
        else:
            max_expstore(x, r, m, 0, inv_t, cols, s)
            for i in range(R):
                g[i] = 1.0 / (1.0 + s[i])
            store_softmax(cols, m, inv_t, g, 0, out, r)

    return rows, _argmax, _argmax_expsum, _wsum, _softmax_block


_KERNELS = {layout: None for layout in LAYOUTS}


@pytest.fixture(params=LAYOUTS, ids=lambda v: f"{v[0]}rows{'-wide' if v[1] else ''}")
def kernels(request):
    """``(rows, argmax, argmax_expsum, wsum, softmax_block)`` of one layout,
    compiled once."""
    if _KERNELS[request.param] is None:
        _KERNELS[request.param] = _wrappers(*request.param)
    return _KERNELS[request.param]


def test_package_layout_matches_the_target():
    from fastlogits._vector_width import target_has_avx512

    assert rowblock.ROWS == (16 if target_has_avx512() else 8)


def _rows(rng, C, dtype, R):
    """R + 3 rows: 0..2 before the block, the block of R at row 3, each of
    its 8-row parts with NaN, +-inf, ties and an all -inf row."""
    x = rng.standard_normal((R + 3, C)).astype(dtype) * 3
    for h in range(3, R + 3, 8):
        x[h, C // 2] = np.nan              # NaN beats everything, wherever it is
        x[h, 0] = np.inf
        x[h + 1, [1, C - 1]] = np.inf      # tie of +inf: the first wins
        x[h + 2] = -np.inf                 # all -inf: index 0, max -inf
        x[h + 3, [C - 2, C - 1]] = x[h + 3].max() + 1  # a tie in the overlapping tail block
        x[h + 4, C - 1] = 50.0             # the max in the very last class
        x[h + 5, :] = 2.0                  # every class tied
        x[h + 6, [0, C - 1]] = np.nan      # first NaN at 0
    x[-1, 3] = 77.0                        # the block's last row
    return x


def _ref_argmax(x):
    """NumPy's argmax (first NaN wins) and the max by the same rule."""
    idx = np.argmax(x, axis=1)
    return x[np.arange(len(x)), idx], idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_block_argmax_matches_numpy(rng, kernels, C, dtype):
    R, argmax, _, _, _ = kernels
    x = _rows(rng, C, dtype, R)
    m = np.full(R + 5, 7.0, dtype)
    idx = np.full(R + 5, -5, np.int32)
    argmax(x, 3, m, idx, 2)
    want_m, want_i = _ref_argmax(x[3:R + 3])
    np.testing.assert_array_equal(idx[2:R + 2], want_i)
    np.testing.assert_array_equal(m[2:R + 2], want_m)  # NaN == NaN here
    assert (m[:2] == 7).all() and (m[R + 2:] == 7).all()
    assert (idx[:2] == -5).all() and (idx[R + 2:] == -5).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_block_argmax_merges_chains_like_numpy(rng, kernels, C, dtype):
    """Many blocks of small integers (ties everywhere) with NaN and +-inf
    scattered: the independent (max, index) chains (class j % 2 of a class
    block in chain j % 2, ``rowblock.ARGMAX_CHAINS``) must merge to
    NumPy's first maximum, first NaN."""
    R, argmax, _, _, _ = kernels
    rows = 16 * 20
    x = rng.integers(-2, 3, (rows, C)).astype(dtype)
    u = rng.random((rows, C))
    x[u < 0.02] = np.nan
    x[(u >= 0.02) & (u < 0.08)] = -np.inf
    x[u > 0.97] = np.inf
    x[:8] = -np.inf                     # a part of all -inf rows: index 0
    x[8:16, 1::2] = 3.0                 # the max only in odd classes (chain 1)...
    x[8:16, 2::4] = 3.0                 # ...tied from class 2 on (chain 0)
    x[16:24, 1::2] = np.nan             # a NaN in the odd chain only, first at 1
    x[16:24, 0] = 5.0
    m = np.empty(rows, dtype)
    idx = np.empty(rows, np.int32)
    for r in range(0, rows, R):
        argmax(x, r, m, idx, r)
    want_m, want_i = _ref_argmax(x)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(m, want_m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_block_argmax_expsum_matches_numpy(rng, kernels, C, dtype):
    """The fused argmax + exp-sum: the same labels and max as the argmax
    (specials in every part), and the exp-sum of the finite rows."""
    R, argmax, argmax_expsum, _, _ = kernels
    x = _rows(rng, C, dtype, R)
    m = np.full(R + 5, 7.0, dtype)
    idx = np.full(R + 5, -5, np.int32)
    s = np.full(R + 5, -1.0)
    cols = np.full(C * R, 3.0, dtype)
    inv_t = dtype(1 / 0.7)
    argmax_expsum(x, 3, m, idx, 2, inv_t, cols, s)
    xb = x[3:R + 3]
    want_m, want_i = _ref_argmax(xb)
    np.testing.assert_array_equal(idx[2:R + 2], want_i)
    np.testing.assert_array_equal(m[2:R + 2], want_m)
    fin = np.isfinite(want_m)
    want_s = exp_rest((xb[fin].astype(np.float64) - want_m[fin, None]) * np.float64(inv_t))
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    # s - 1 for classify's 1 / (1 + s), not the log ops' exact rest: 1 + s is
    # the sum of every term.
    np.testing.assert_allclose(1 + s[2:R + 2][fin], 1 + want_s, rtol=rtol)
    for a, v in ((m, 7), (idx, -5), (s, -1)):
        assert (a[:2] == v).all() and (a[R + 2:] == v).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_block_sums_match_float64(rng, kernels, C, dtype):
    R, argmax, argmax_expsum, wsum, _ = kernels
    x = rng.standard_normal((R + 3, C)).astype(dtype) * 4
    x[5, 1] = -np.inf                          # exp(-inf) = 0, w * inf skipped below
    x[6] = np.linspace(-200, 0, C).astype(dtype)  # terms that underflow
    x[R + 1] = np.linspace(-150, 10, C).astype(dtype)  # ... in the last part too
    m = np.full(R + 5, 99.0, dtype)
    idx = np.zeros(R + 5, np.int32)
    inv_t = dtype(1 / 0.7)
    s = np.full(R + 5, -1.0)
    argmax_expsum(x, 2, m, idx, 4, inv_t, np.empty(C * R, dtype), s)
    xb = x[2:R + 2].astype(np.float64)
    mb = m[4:R + 4].astype(np.float64)[:, None]
    want = exp_rest((xb - mb) * np.float64(inv_t))
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(1 + s[4:R + 4], 1 + want, rtol=rtol)  # s - 1, as above
    assert (s[:4] == -1).all() and (s[R + 4:] == -1).all()

    w = rng.uniform(0.1, 2, C).astype(dtype)
    x[5, 1] = 0.0  # the smoothing sum of a -inf logit is inf; keep it finite here
    argmax(x, 2, m, idx, 4)
    s[:] = -1.0
    wsum(x, 2, m, 4, w, s)
    xb = x[2:R + 2].astype(np.float64)
    mb = m[4:R + 4].astype(np.float64)[:, None]
    want = (w.astype(np.float64) * (mb - xb)).sum(axis=1)
    atol = 1e-5 * np.abs(want).max() if dtype == np.float32 else 1e-12 * np.abs(want).max()
    np.testing.assert_allclose(s[4:R + 4], want, rtol=0, atol=atol)
    assert (s[:4] == -1).all() and (s[R + 4:] == -1).all()


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
def test_block_softmax_stores_rows_back(rng, kernels, C, dtype, log):
    """The kept columns (exponentials, or scores for log_softmax) scaled
    and transposed back: every class of every row of the block, in place
    over x too, nothing outside the block written."""
    R, *_, softmax_block = kernels
    x = rng.standard_normal((R + 5, C)).astype(dtype) * 3
    x[4, [0, C - 1]] = x[4].max() + 2      # ties of the max, the last class included
    x[R + 1] = np.linspace(-120, 5, C).astype(dtype)  # terms that underflow
    inv_t = dtype(1 / 0.7)
    xb = x[2:R + 2].astype(np.float64) * np.float64(inv_t)
    z = xb - xb.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    want = z - lse if log else np.exp(z - lse)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    out = np.full_like(x, 9.0)
    softmax_block(x, 2, inv_t, out, log)
    np.testing.assert_allclose(out[2:R + 2], want, rtol=rtol, atol=rtol)
    assert (out[:2] == 9).all() and (out[R + 2:] == 9).all()
    y = x.copy()
    softmax_block(y, 2, inv_t, y, log)     # in place
    np.testing.assert_allclose(y[2:R + 2], want, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(y[:2], x[:2])
    np.testing.assert_array_equal(y[R + 2:], x[R + 2:])


def test_block_rejects_what_it_cannot_read(kernels):
    """Typing fails (no silent fallback) for non-contiguous, integer or
    mismatched arrays."""
    R, argmax, argmax_expsum, _, _ = kernels
    x = np.ones((R, 16), np.float32)
    m, idx, s = np.empty(R, np.float32), np.empty(R, np.int32), np.empty(R)
    with pytest.raises(Exception):
        argmax(x[:, ::2], 0, m, idx, 0)
    with pytest.raises(Exception):
        argmax(np.ones((R, 16), np.int32), 0, np.empty(R, np.int32), idx, 0)
    with pytest.raises(Exception):  # m of another dtype than x
        argmax_expsum(x, 0, np.empty(R), idx, 0, np.float32(1), np.empty(16 * R, np.float32), s)
    with pytest.raises(Exception):  # a column scratch of another dtype than x
        argmax_expsum(x, 0, m, idx, 0, np.float32(1), np.empty(16 * R), s)


def xent_case(rng, C, R):
    """Block rows (R + 3 of :func:`_rows`, float32, the block at row 3),
    targets (every fifth ignored), their int32 classes and float32
    weights as the fused loss takes them, and the class weights."""
    x = _rows(rng, C, np.float32, R)
    t = rng.integers(0, C, R)
    t[::5] = -100
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    tt = np.where(t < 0, -1, t).astype(np.int32)
    wt = np.where(t < 0, 0.0, w[np.maximum(t, 0)]).astype(np.float32)
    return x, t, tt, wt, w


def check_xent(run, x, t, tt, wt, w, R):
    """``run(x, r, tt, wt, want_loss, eps) -> (loss, sums)`` of the fused
    loss of rows 3 .. 3 + R - 1 (label-smoothed by ``eps`` with the class
    weights ``w``: :func:`fastlogits.cpu.ops.losses._smoothing_coefs`; eps =
    0 without smoothing arguments) against the reference: the losses
    stored (only there), their float64 lane sums, the weights' sums;
    nothing stored without ``want_loss``."""
    from fastlogits import reference

    for eps in (0.0, 0.3):
        want = reference.cross_entropy(x[3:3 + R], t, -1, class_weight=w.astype(np.float64),
                                       ignore_index=-100, label_smoothing=eps,
                                       reduction="none")
        loss, sums = run(x, 3, tt, wt, True, eps)
        np.testing.assert_allclose(loss[3:3 + R], want, rtol=1e-5, atol=1e-5, equal_nan=True)
        assert (loss[:3] == 0).all() and (loss[3 + R:] == 0).all()
        np.testing.assert_allclose(sums[:R], want, rtol=1e-5, atol=1e-5, equal_nan=True)
        np.testing.assert_array_equal(sums[R:], wt.astype(np.float64))
        loss, sums = run(x, 3, tt, wt, False, eps)
        assert (loss == 0).all()
        np.testing.assert_array_equal(sums[R:], wt.astype(np.float64))


def xent_runner(xent, R, w, at=None):
    """``run(x, r, tt, wt, want_loss, eps)`` for :func:`check_xent` of the
    fused loss intrinsic ``xent`` (R pixels a block; x (rows, C)), or, with
    ``at(x, r) -> (x', first)``, of its planes form on ``x'``."""
    from fastlogits.cpu.ops.losses import _smoothing_coefs

    @njit
    def run_on(xk, first, tt, wt, want_loss, n, r, ls):
        loss = np.zeros(n, xk.dtype)
        sums = np.zeros(2 * R)
        m, cols = np.empty(R, xk.dtype), np.empty(w.shape[0] * R, xk.dtype)
        if ls.shape[0] == 0:
            xent(xk, first, m, 0, cols, tt, wt, loss, r, want_loss, sums, None, None)
        else:
            xent(xk, first, m, 0, cols, tt, wt, loss, r, want_loss, sums, w, ls)
        return loss, sums

    def run(x, r, tt, wt, want_loss, eps):
        xk, first = (x, r) if at is None else at(x, r)
        ls = (_smoothing_coefs(w, np.float64(w.astype(np.float64).sum()), eps) if eps > 0
              else np.empty(0, w.dtype))
        return run_on(xk, first, tt, wt, want_loss, x.shape[0], r, ls)

    return run


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"{v[0]}rows{'-wide' if v[1] else ''}")
def test_block_xent_matches_reference(rng, layout):
    """The fused cross-entropy of a block (``rows_xent``) in every layout,
    with and without label smoothing, the special-value rows of
    :func:`_rows` included (NaN where the max is not finite, 0 at ignored
    rows)."""
    R, wide = layout
    xent = block_intrinsics(R, wide).xent
    for C in (8, 19, 33):
        case = xent_case(rng, C, R)
        check_xent(xent_runner(xent, R, case[-1]), *case, R)


def check_max_expsum(run, R, rng):
    """``run(x, r, m, p, inv_t, cols, s)`` of a max-only intrinsic on the
    special rows of :func:`_rows`: the max with NaN wherever a score is
    NaN (NumPy's np.max), the exp-sum of the finite rows, nothing written
    outside the block."""
    inv_t_of = {np.float32: np.float32(1 / 0.7), np.float64: 1 / 0.7}
    for dtype in (np.float32, np.float64):
        for C in (8, 19, 33):
            x = _rows(rng, C, dtype, R)
            m = np.full(R + 5, 7.0, dtype)
            s = np.full(R + 5, -1.0)
            inv_t = inv_t_of[dtype]
            run(x, 3, m, 2, inv_t, np.full(C * R, 3.0, dtype), s)
            xb = x[3:R + 3]
            want_m = np.max(xb, axis=1)
            np.testing.assert_array_equal(m[2:R + 2], want_m)
            fin = np.isfinite(want_m)
            want_s = exp_rest((xb[fin].astype(np.float64) - want_m[fin, None])
                              * np.float64(inv_t))
            rtol = 1e-5 if dtype == np.float32 else 1e-13
            np.testing.assert_allclose(s[2:R + 2][fin], want_s, rtol=rtol,
                                       atol=C * np.finfo(dtype).tiny)
            for a, v in ((m, 7), (s, -1)):
                assert (a[:2] == v).all() and (a[R + 2:] == v).all()


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"{v[0]}rows{'-wide' if v[1] else ''}")
def test_block_max_expsum_matches_numpy(rng, layout):
    """``max_expsum`` (softmax, log_softmax, logsumexp and the losses: no
    index) in every layout."""
    R, wide = layout
    max_expsum = block_intrinsics(R, wide).max_expsum

    @njit
    def run(x, r, m, p, inv_t, cols, s):
        max_expsum(x, r, m, p, inv_t, cols, s)

    check_max_expsum(run, R, rng)


def check_xent_grad(run, R, rng, in_place=True):
    """``run(x, r, tt, wt, coef, bc, w, out, out_at, m, s, xt, sm)`` of a
    fused gradient intrinsic (rows ``r ..`` of x, the block's scratch from
    index 2, ``out`` rows from ``out_at``) on the special rows of
    :func:`_rows`, with and without label smoothing (``w`` None without):
    the gradient against the reference's ("sum", g = 1.5 applied through
    ``coef`` and ``bc``), NaN where the max is not finite, 0 at ignored
    rows whatever their logits; m, xt exact, s and sm close where the max
    is finite; nothing written outside the block; with ``in_place``, out
    x itself."""
    from fastlogits import reference

    g = 1.5
    for dtype in (np.float32, np.float64):
        for C in (8, 9, 19, 33):
            x = _rows(rng, C, dtype, R)
            t = rng.integers(0, C, R)
            t[::5] = -100
            t[6] = -100  # an ignored row of NaN logits (row 3 + 6 of _rows)
            w64 = rng.uniform(0.5, 2.0, C)
            # tt, wt as the scratch holds them: the block's pixels from index 2.
            tt = np.pad(np.where(t < 0, -1, t), 2, constant_values=3).astype(np.int32)
            wt = np.pad(np.where(t < 0, 0.0, w64[np.maximum(t, 0)]), 2).astype(dtype)
            xb = x[3:3 + R]
            for eps in (0.0, 0.2):
                coef = np.array([g * (1 - eps), g * eps * w64.sum() / C], dtype)
                bc = (g * eps / C * w64).astype(dtype)
                wsm = w64.astype(dtype) if eps > 0 else None
                out = np.full((R + 6, C), 5.0, dtype)
                scratch = [np.full(R + 4, 7.0, dtype) for _ in range(4)]
                run(x, 3, tt, wt, coef, bc, wsm, out, 2, *scratch)
                m, s, xt, sm = (a[2:2 + R] for a in scratch)
                _, want = reference.cross_entropy(xb, t, -1, class_weight=w64,
                                                  label_smoothing=eps, reduction="sum",
                                                  return_grad=True)
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(out[2:2 + R], g * want, rtol=rtol, atol=rtol,
                                           equal_nan=True)
                np.testing.assert_array_equal(out[2:2 + R][t < 0], 0)
                assert (out[:2] == 5).all() and (out[R + 2:] == 5).all()
                np.testing.assert_array_equal(m, np.max(xb, axis=1))
                np.testing.assert_array_equal(xt, np.where(t < 0, 0, xb[np.arange(R),
                                                                        np.maximum(t, 0)]))
                fin = np.isfinite(m)
                xf = xb[fin].astype(np.float64)
                np.testing.assert_allclose(s[fin], exp_rest(xf - m[fin, None]), rtol=rtol,
                                           atol=C * np.finfo(dtype).tiny)
                want_sm = ((m[fin, None] - xf) * w64).sum(1) if eps > 0 else 7.0
                np.testing.assert_allclose(sm[fin], want_sm, rtol=rtol)
                for a in scratch:
                    assert (a[:2] == 7).all() and (a[R + 2:] == 7).all()
                if in_place:
                    y = x.copy()
                    run(y, 3, tt, wt, coef, bc, wsm, y, 3, *(a.copy() for a in scratch))
                    np.testing.assert_array_equal(y[3:3 + R], out[2:2 + R])
                    np.testing.assert_array_equal(y[:3], x[:3])


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"{v[0]}rows{'-wide' if v[1] else ''}")
def test_block_xent_grad_matches_reference(rng, layout):
    """The fused cross-entropy gradient of a block (``rows_xent_grad``) in
    every layout, both dtypes, with and without label smoothing."""
    R, wide = layout
    xent_grad = block_intrinsics(R, wide).xent_grad

    @njit
    def run(x, r, tt, wt, coef, bc, w, out, out_at, m, s, xt, sm):
        cols = np.empty(x.shape[1] * R, x.dtype)
        xent_grad(x, r, m, 2, cols, tt, wt, coef, bc, w, s, xt, sm, out, out_at)

    check_xent_grad(run, R, rng)
