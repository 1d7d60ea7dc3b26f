"""The five per-pixel ops on every host backend against the reference."""

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import tuning
from fastlogits.registry import OPS
from tests.helpers import assert_close, at_line_offset, logits, specials_array, stream_every_row

BACKENDS = ["cpu", "numpy"]
DTYPES = [np.float16, np.float32, np.float64]
# (shape, axis): channels-last and channels-first, odd sizes that are not
# multiples of any tile; C = 1, 2, 3, 19, 150 and 1000+.
SHAPES = [
    ((5, 7, 19), -1),
    ((2, 19, 9, 11), 1),
    ((33, 1), -1),
    ((3, 1, 17), 1),
    ((31, 2), -1),
    ((4, 3, 13), 1),
    ((6, 150), -1),
    ((2, 150, 37), 1),
    ((9, 1031), -1),
    ((1, 1031, 21), 1),
    ((300, 3), 0),
]


def run(op, x, axis, **kw):
    if not op.tempered:
        kw.pop("temperature", None)
    return op.public(x, axis, **kw)


def expected(op, x, axis, **kw):
    if not op.tempered:
        kw.pop("temperature", None)
    return op.reference(x, axis, **kw)


def check(op, got, want, dtype):
    if op.output == "pair":
        np.testing.assert_array_equal(got[0], want[0])
        assert got[0].dtype == np.int64
        assert_close(got[1], want[1], dtype)
    elif op.exact:
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype == np.int64
    else:
        assert_close(got, want, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name", list(OPS))
def test_matches_reference(rng, name, shape, axis, dtype, backend):
    op = OPS[name]
    x = logits(rng, shape, dtype)
    got = run(op, x, axis, temperature=1.0, backend=backend)
    check(op, got, expected(op, x, axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name", list(OPS))
def test_special_values(rng, name, shape, axis, dtype):
    """NaN, +inf, -inf, all -inf pixels and ties: identical to the reference."""
    op = OPS[name]
    x = specials_array(rng, shape, axis, dtype)
    got = run(op, x, axis, temperature=0.7, backend="cpu")
    check(op, got, expected(op, x, axis, temperature=0.7), dtype)


def test_special_value_table():
    """The rules of DESIGN.md, one pixel each."""
    x = np.array(
        [
            [1.0, np.nan, 2.0],        # NaN -> NaN everywhere, lse NaN, argmax first NaN
            [1.0, np.inf, 2.0],        # +inf -> NaN probs, lse +inf
            [-np.inf, -np.inf, -np.inf],  # all -inf -> NaN probs, lse -inf
            [-np.inf, 0.0, -np.inf],   # some -inf: probability 0, log -inf
            [np.nan, np.inf, np.nan],  # NaN wins over +inf; first NaN index
            [3.0, 3.0, 1.0],           # tie: first max
        ],
        np.float32,
    )
    p = fl.softmax(x)
    assert np.isnan(p[:3]).all() and np.isnan(p[4]).all()
    np.testing.assert_array_equal(p[3], [0.0, 1.0, 0.0])
    lp = fl.log_softmax(x)
    np.testing.assert_array_equal(lp[3], [-np.inf, 0.0, -np.inf])
    lse = fl.logsumexp(x)
    assert np.isnan(lse[0]) and lse[1] == np.inf and lse[2] == -np.inf and lse[3] == 0.0
    assert np.isnan(lse[4])
    np.testing.assert_array_equal(fl.argmax(x), [1, 1, 0, 1, 0, 0])
    labels, conf = fl.classify(x)
    np.testing.assert_array_equal(labels, [1, 1, 0, 1, 0, 0])
    assert np.isnan(conf[[0, 1, 2, 4]]).all() and conf[3] == 1.0
    np.testing.assert_allclose(conf[5], 1 / (2 + np.exp(-2.0)), rtol=1e-6)


@pytest.mark.parametrize("name", list(OPS))
def test_small_tiles_cover_tails_and_many_tiles(tune, rng, name, monkeypatch):
    """Tunables are read at call time: tiny tiles make every path run many
    tiles with ragged tails, for both layouts and the large-C row path."""
    tune(cpu_tile_pixels=16)
    tune(cpu_tile_elements=64)
    tune(cpu_row_min_classes=8)
    tune(cpu_half_chunk_elements=100)
    op = OPS[name]
    for shape, axis in [((101, 5), -1), ((3, 5, 53), 1), ((57, 21), -1), ((77, 9), -1)]:
        for dtype, direct in ((np.float32, True), (np.float16, True), (np.float16, False)):
            tune(cpu_half_direct=direct)  # float16: kernels or chunks
            x = specials_array(rng, shape, axis, dtype)
            got = run(op, x, axis, temperature=1.3)
            check(op, got, expected(op, x, axis, temperature=1.3), dtype)


@pytest.mark.parametrize("copy_tiles", [False, True])
@pytest.mark.parametrize("name", list(OPS))
def test_channels_first_tiles_by_bytes(tune, rng, name, copy_tiles, monkeypatch):
    """Channels-first tiles of the ops that read a tile twice hold
    ``cpu_cf_tile_bytes`` of scores (here 32 pixels at 130 classes, at
    float32 precision for float16 too); argmax's take ``cpu_tile_pixels``
    at any C. Several tiles per image and a ragged last one, read in x or
    (``copy_tiles``: planes 4 KiB apart) copied first; in place too."""
    from fastlogits.cpu.plan import _cf_copies_tiles, _cf_tile_pixels

    C = 130
    tune(cpu_cf_tile_bytes=C * 4 * 32)
    tune(cpu_cf_copy_min_classes=1 if copy_tiles else 1 << 30)
    op = OPS[name]
    for dtype in (np.float32, np.float16, np.float64):
        x = specials_array(rng, (2, C, 2048 if copy_tiles else 301), 1, dtype)
        assert _cf_copies_tiles(x) == copy_tiles
        assert _cf_tile_pixels(x, True) == (16 if dtype == np.float64 else 32)
        assert _cf_tile_pixels(x, False) == tuning.current().cpu.tile_pixels
        want = expected(op, x, 1, temperature=1.3)
        check(op, run(op, x, 1, temperature=1.3), want, dtype)
        if name in ("softmax", "log_softmax"):
            y = x.copy()
            assert op.public(y, 1, temperature=1.3, out=y) is y
            check(op, y, want, dtype)


@pytest.mark.parametrize("name", list(OPS))
def test_non_contiguous_views(rng, name):
    op = OPS[name]
    base = logits(rng, (6, 40, 38), np.float32)
    views = [
        (base[:, ::2, 1::3], 1),      # strided channels-first
        (base[::-1, :, ::2], -1),     # reversed, strided classes
        (base.transpose(2, 0, 1), 0),  # transposed
        (np.asfortranarray(base), 2),
        (base[:, 3, :], 0),
    ]
    for x, axis in views:
        check(op, run(op, x, axis, temperature=2.0), expected(op, x, axis, temperature=2.0),
              np.float32)


@pytest.mark.parametrize("name", [name for name, op in OPS.items() if op.tempered])
def test_temperature(rng, name):
    op = OPS[name]
    x = logits(rng, (50, 19))
    for t in (0.05, 0.5, 3.0, 100.0):
        check(op, run(op, x, -1, temperature=t), expected(op, x, -1, temperature=t), np.float32)


def test_large_offsets_and_large_c(rng):
    """Max-subtraction keeps +1e4 offsets exact; sums over 200k classes stay
    accurate in float32 (blocked float64 accumulation)."""
    x = logits(rng, (4, 19), offset=1e4)
    assert_close(fl.softmax(x), fl.reference.softmax(x), np.float32)
    big = logits(rng, (2, 200_003), scale=1.0)
    assert_close(fl.softmax(big), fl.reference.softmax(big), np.float32)
    assert_close(fl.logsumexp(big), fl.reference.logsumexp(big), np.float32)
    big_cf = logits(rng, (1, 100_003, 3), scale=1.0)
    assert_close(fl.logsumexp(big_cf, 1), fl.reference.logsumexp(big_cf, 1), np.float32)
    labels, conf = fl.classify(big)
    want_labels, want_conf = fl.reference.classify(big)
    np.testing.assert_array_equal(labels, want_labels)
    assert_close(conf, want_conf, np.float32)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_in_place(rng, name, axis, dtype):
    op = OPS[name]
    x = logits(rng, (3, 19, 21) if axis == 1 else (7, 9, 19), dtype)
    want = op.reference(x, axis)
    y = x.copy()
    res = op.public(y, axis, out=y)
    assert res is y
    assert_close(y, want, dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_out_preallocated_and_non_contiguous(rng, name):
    op = OPS[name]
    x = logits(rng, (8, 19))
    want = op.reference(x, -1)
    out = np.empty(want.shape, want.dtype)
    assert op.public(x, out=out) is out
    assert_close(out, want, np.float32)
    # An out whose strides forbid a reshape: written through a temporary.
    holder = np.zeros((want.shape + (2,)) if want.ndim else (2,), want.dtype)
    strided = holder[..., 0]
    op.public(x, out=strided)
    assert_close(strided, want, np.float32)


LABEL_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_narrow_label_out(rng, label_dtype):
    x = logits(rng, (9, 17, 19))
    labels = np.empty((9, 17), label_dtype)
    assert fl.argmax(x, out=labels) is labels
    np.testing.assert_array_equal(labels, np.argmax(x, -1))
    conf = np.empty((9, 17), np.float32)
    lab2 = np.empty((9, 17), label_dtype)
    got = fl.classify(x, out=(lab2, conf))
    assert got[0] is lab2 and got[1] is conf
    np.testing.assert_array_equal(lab2, np.argmax(x, -1))
    assert_close(conf, fl.reference.classify(x)[1], np.float32)


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8])
def test_label_out_top_of_range(rng, label_dtype):
    """The largest label a one-byte ``out=`` holds (127, 255): the kernels
    write it through a view of the other signedness where theirs differs."""
    C = np.iinfo(label_dtype).max + 1
    x = logits(rng, (3, 5, C))
    x[:, :, -1] += 100.0
    x[0, 0, 7] += 1000.0
    labels = np.empty((3, 5), label_dtype)
    fl.argmax(x, out=labels)
    np.testing.assert_array_equal(labels, np.argmax(x, -1))
    assert labels.max() == C - 1


def test_label_dtypes_share_kernels(rng):
    """Every integer ``out=`` runs one of four compiled label types (one per
    width): a signed and an unsigned dtype of one width share a kernel."""
    from fastlogits.cpu.ops import argmax as ka
    from fastlogits.cpu.threads import driver_for

    x = logits(rng, (9, 17, 19))
    for dt in LABEL_DTYPES:
        fl.argmax(x, out=np.empty((9, 17), dt))
    launch, _ = driver_for(ka.argmax_cl_rows, x.size)  # a small x: the kernel itself
    label_types = {str(sig[3].dtype) for sig in launch.func.signatures}
    assert label_types <= {"uint8", "uint16", "int32", "int64"}, label_types
    assert len(label_types) == 4


def test_numpy_backend_honours_out(rng):
    x = logits(rng, (5, 4))
    out = np.empty_like(x)
    assert fl.softmax(x, out=out, backend="numpy") is out
    assert_close(out, fl.reference.softmax(x), np.float32)


# --------------------------------------------------------------------------
# Empty inputs, backends
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_empty_inputs(name, backend):
    op = OPS[name]
    for shape, axis in [((0, 19), -1), ((2, 19, 0), 1), ((0, 3, 4), 1)]:
        x = np.zeros(shape, np.float32)
        got = run(op, x, axis, backend=backend)
        want = expected(op, x, axis)
        if op.output == "pair":
            assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
            assert got[1].dtype == np.float32
        else:
            assert got.shape == want.shape and got.dtype == want.dtype


def test_backends_listing():
    names = fl.backends()
    assert names[:2] == ["numpy", "cpu"]


def test_env_backend_override(rng, monkeypatch):
    x = logits(rng, (4, 5))
    monkeypatch.setenv("FASTLOGITS_BACKEND", "numpy")
    assert_close(fl.softmax(x), fl.reference.softmax(x), np.float32)
    monkeypatch.setenv("FASTLOGITS_BACKEND", "gpu9000")
    with pytest.raises(ValueError, match="FASTLOGITS_BACKEND"):
        fl.softmax(x)


def test_scalar_dtype_outputs():
    x = np.array([0.5, 0.34, 2.41], np.float32)  # the seed example of DESIGN.md
    np.testing.assert_allclose(fl.softmax(x), [0.116, 0.099, 0.785], atol=1e-3)
    assert fl.argmax(x).shape == () and int(fl.argmax(x)) == 2
    labels, conf = fl.classify(x)
    assert int(labels) == 2 and abs(float(conf) - 0.785) < 1e-3


CHANNELS_LAST_PATHS = {
    # (CPU_ROW_MIN_CLASSES, CPU_ROW_ARGMAX_MIN_CLASSES, CPU_ROW_BLOCK_MAX_CLASSES,
    #  CPU_ROW_BLOCK_EXPNORM_MAX_CLASSES)
    "rows": (1, 1, 0, 0),
    "tiles": (10**9, 10**9, 0, 0),
    "blocks": (10**9, 10**9, 10**9, 10**9),  # every op, 8 <= C <= SUM_BLOCK
}


@pytest.mark.parametrize("path", sorted(CHANNELS_LAST_PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_channels_last_paths(tune, rng, name, dtype, path, monkeypatch):
    """Contiguous channels-last rows through each regime forced (the row
    kernels' vectors and masked tails; the transposed tiles) for C around
    the vector widths, with special values and ties. 23 rows: whole
    blocks of ``rowblock.ROWS`` rows and the rest for the row kernels."""
    rows_min, argmax_min, block_max, expnorm_block_max = CHANNELS_LAST_PATHS[path]
    tune(cpu_row_min_classes=rows_min)
    tune(cpu_row_argmax_min_classes=argmax_min)
    tune(cpu_row_block_max_classes=block_max)
    tune(cpu_row_block_expnorm_max_classes=expnorm_block_max)
    op = OPS[name]
    for C in (1, 2, 7, 8, 9, 15, 16, 17, 19, 31, 33, 64, 127, 128, 129, 150, 1037, 3001):
        x = specials_array(rng, (23, C), -1, dtype)
        want = expected(op, x, -1, temperature=0.7)
        check(op, run(op, x, -1, temperature=0.7), want, dtype)
        if op.output == "full":  # in place: out is x
            inplace = x.copy()
            op.public(inplace, -1, temperature=0.7, out=inplace)
            check(op, inplace, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_channels_last_streamed_rows(tune, rng, name, dtype, monkeypatch):
    """softmax and log_softmax rows written by non-temporal stores (every
    row streamed here, ``cpu_stream_row_min_bytes`` 0): rows of 1 to 3001
    classes, more rows than one block (``softmax.rows_per_block``) and a
    row longer than a block's bytes, into outputs at every 16-byte line
    offset, with special values and ties; in place (not streamed) and the
    allocating call give the same."""
    from fastlogits.cpu.ops import softmax as kernels

    streamed = stream_every_row(tune, monkeypatch, kernels, "expnorm_cl_rows", -2,
                                "cpu_row_block_expnorm_max_classes")
    op = OPS[name]
    long_row = kernels.ROW_BLOCK_BYTES // np.dtype(dtype).itemsize + 5
    for rows, C in ((23, 1), (23, 3), (23, 19), (70, 150), (40, 1037), (9, 3001), (3, long_row)):
        x = specials_array(rng, (rows, C), -1, dtype)
        want = expected(op, x, -1, temperature=0.7)
        for offset in (0, 16, 32, 48):
            out = at_line_offset(x.shape, dtype, offset)
            check(op, op.public(x, -1, temperature=0.7, out=out), want, dtype)
            assert streamed.pop() is True
        check(op, op.public(x, -1, temperature=0.7), want, dtype)
        inplace = x.copy()
        check(op, op.public(inplace, -1, temperature=0.7, out=inplace), want, dtype)
        assert streamed.pop() is False


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "tiles"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_channels_first_paths(tune, rng, name, dtype, blocks, monkeypatch):
    """C-contiguous channels-first maps through the register blocks of
    pixels (``cpu.blocks.planeblock``) or the tile loops, forced, with special
    values and ties in block pixels and in each image's last pixels (37
    per image: whole blocks of ``planeblock.LANES`` and a rest for the
    tiles), two images; in place for the ops with an x-shaped output."""
    tune(cpu_plane_block_max_classes=10**9 if blocks else 0)
    tune(cpu_plane_block_argmax_max_classes=10**9 if blocks else 0)
    op = OPS[name]
    for C in (1, 2, 3, 8, 19, 24, 127, 128, 129, 150):
        x = np.ascontiguousarray(specials_array(rng, (2, C, 37), 1, dtype))
        want = expected(op, x, 1, temperature=0.7)
        check(op, run(op, x, 1, temperature=0.7), want, dtype)
        if op.output == "full":  # in place: out is x
            inplace = x.copy()
            op.public(inplace, 1, temperature=0.7, out=inplace)
            check(op, inplace, want, dtype)


def test_blocks_stream_straight_only_in_whole_lines(tune, monkeypatch):
    """The channels-first blocks store an output straight by non-temporal
    stores only where each block is whole 64-byte lines: AVX2's blocks of
    8 float32 pixels (32 bytes) go through the scratch tile, since a
    plane's first block would start off its line and such a store faults
    there (tests/cpu/test_avx2_target.py runs that target)."""
    from fastlogits.cpu.plan import _plane_write
    from fastlogits.cpu.blocks.planeblock import WRITE_EBUF_STREAM, WRITE_STREAM

    tune(cpu_stream_min_bytes=0)
    for dtype, lanes, mode in ((np.float32, 16, WRITE_STREAM), (np.float32, 8, WRITE_EBUF_STREAM),
                               (np.float64, 8, WRITE_STREAM), (np.float64, 16, WRITE_STREAM)):
        x = at_line_offset((1, 3, 64), dtype, 16)
        out = at_line_offset(x.shape, dtype, 16)
        assert _plane_write(x, out, lanes) == mode, (dtype, lanes)


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "tiles"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_channels_first_streamed_outputs(tune, rng, name, dtype, blocks, monkeypatch):
    """softmax and log_softmax written by non-temporal stores (every output
    streamed here): straight from the blocks where out's lines line up with
    x's (planes of whole lines, out on x's line offset, in place), through
    the scratch tile elsewhere (planes of 37 pixels, out on another
    offset); special values in block pixels and in the rest."""
    from fastlogits.cpu.plan import _plane_write
    from fastlogits.cpu.blocks.planeblock import LANES, WRITE_EBUF_STREAM, WRITE_STREAM

    tune(cpu_stream_min_bytes=0)
    tune(cpu_plane_block_max_classes=10**9 if blocks else 0)
    op = OPS[name]
    # Straight from the blocks where a block is whole lines (not AVX2's float32).
    lined = WRITE_STREAM if LANES * np.dtype(dtype).itemsize % 64 == 0 else WRITE_EBUF_STREAM
    for C in (1, 3, 19, 40):
        for inner, out_offset, mode in ((48, 16, lined), (48, 32, WRITE_EBUF_STREAM),
                                        (37, 16, WRITE_EBUF_STREAM)):
            x = at_line_offset((2, C, inner), dtype, 16)
            x[...] = specials_array(rng, (2, C, inner), 1, dtype)
            out = at_line_offset((2, C, inner), dtype, out_offset)
            assert _plane_write(x, out) == mode
            want = expected(op, x, 1, temperature=0.7)
            check(op, op.public(x, 1, temperature=0.7, out=out), want, dtype)
            inplace = x.copy() if inner == 37 else x
            check(op, op.public(inplace, 1, temperature=0.7, out=inplace), want, dtype)


# --------------------------------------------------------------------------
# Accuracy near 0: log s = log1p(s - 1), the sum of the non-maximal terms
# (SciPy's rule), in every CPU regime (cpu/plan.py picks them by C and
# layout: channels-last tiles C < 8, row blocks 8..63, vector rows 64+ and
# their one-pass form for rows over rowvec.CHUNK_BYTES; channels-first
# plane blocks up to 64 and tiles, copied from 500 classes on 4 KiB planes).
# --------------------------------------------------------------------------

NEAR0_SHAPES = [
    ((40, 4), -1),
    ((40, 19), -1),
    ((40, 100), -1),
    ((5, 3000), -1),
    ((3, 19, 40), 1),
    ((2, 100, 40), 1),
    ((1, 600, 1024), 1),
]


def near0_logits(rng, shape, axis, dtype, d):
    """Each pixel: its max exactly 0 at a random class, one class at -d, one
    at -d - 1 (d a uniform draw from ``d``), the rest -1e4 (exp 0): log s
    is near 0, about exp(-d)."""
    C = shape[axis]
    x = np.full(shape, -1e4)
    flat = np.moveaxis(x, axis, -1).reshape(-1, C)
    n = flat.shape[0]
    rows = np.arange(n)
    k = rng.integers(0, C, n)
    dk = rng.uniform(*d, n)
    flat[rows, k] = 0.0
    flat[rows, (k + 1) % C] = -dk
    flat[rows, (k + 2) % C] = -dk - 1
    return np.ascontiguousarray(np.moveaxis(flat.reshape(np.moveaxis(x, axis, -1).shape), -1,
                                            axis)).astype(dtype)


def near0_rtol(dtype, t_max):
    """Relative error bound of log1p(s') for shifted scores down to -t_max:
    float32's exp (2**-24 (2 |t| + 4), tests/cpu/test_runexp.py) and a few
    ulp of log1p; float64's few ulp; float16 results rounded once."""
    if dtype == np.float16:  # 1 ulp (float32 results rounded to float16) and float32's error
        return 2.0**-10 + 1e-5
    if dtype == np.float32:
        return 2.0**-24 * (2 * t_max + 4) + 4 * np.finfo(np.float32).eps
    return 16 * np.finfo(np.float64).eps


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", NEAR0_SHAPES)
def test_logsumexp_near_zero_keeps_relative_precision(rng, shape, axis, dtype, temperature):
    # float16: log s down to about its smallest normal, 6.1e-5
    d = (8 * temperature, 9.5 * temperature) if dtype == np.float16 else (3, 12)
    x = near0_logits(rng, shape, axis, dtype, d)
    rtol = near0_rtol(dtype, (d[1] + 1) / temperature)
    want = fl.reference.logsumexp(x, axis, temperature=temperature).astype(np.float64)
    got = fl.logsumexp(x, axis, temperature=temperature)
    assert got.dtype == x.dtype
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=0)
    # log_softmax of the max class is -log s; the others keep their shift.
    lsm = fl.log_softmax(x, axis, temperature=temperature)
    want_lsm = fl.reference.log_softmax(x, axis, temperature=temperature)
    np.testing.assert_allclose(lsm.max(axis=axis).astype(np.float64),
                               want_lsm.max(axis=axis).astype(np.float64), rtol=rtol, atol=0)
    assert_close(lsm, want_lsm, dtype)
    # classify's confidence is still 1 / s, softmax still exp(t) / s.
    labels, conf = fl.classify(x, axis, temperature=temperature)
    want_labels, want_conf = fl.reference.classify(x, axis, temperature=temperature)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(conf, want_conf, rtol=2 * np.finfo(conf.dtype).eps)
    assert_close(fl.softmax(x, axis, temperature=temperature),
                 fl.reference.softmax(x, axis, temperature=temperature), dtype)


def test_logsumexp_scipy_gh18295():
    """SciPy gh-18295: logsumexp([0, -40]) = log1p(exp(-40)), not 0."""
    got = fl.logsumexp(np.array([0.0, -40.0]))
    assert got == pytest.approx(4.248354255291589e-18, rel=1e-15)
    got32 = fl.logsumexp(np.array([0.0, -10.0], np.float32))
    want32 = np.log1p(np.exp(-10.0))
    assert abs(float(got32) - want32) <= 4 * np.spacing(np.float32(want32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [4, 19, 100])
@pytest.mark.parametrize("channels_first", [False, True])
def test_ties_at_the_max_count_each(rng, dtype, C, channels_first):
    """k scores at the max: s - 1 = k - 1 + the rest (each tie's exp(0) = 1)."""
    k = rng.integers(1, min(C - 1, 4) + 1, 40)
    z = np.full((40, C), -1e4)
    for r in range(40):
        z[r, rng.choice(C, k[r], replace=False)] = 2.0
        z[r, np.argmin(z[r])] = 2.0 - 9.0  # one more term, exp(-9), at a free class
    want = 2.0 + np.log1p(k - 1 + np.exp(-9.0))
    x = (np.ascontiguousarray(z.T.reshape(1, C, 40)) if channels_first else z).astype(dtype)
    got = fl.logsumexp(x, axis=1 if channels_first else -1).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=near0_rtol(dtype, 9.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((40, 4), -1), ((40, 19), -1), ((40, 100), -1),
                                        ((3, 19, 40), 1), ((2, 100, 40), 1)])
def test_special_values_next_to_near_zero_pixels(shape, axis, dtype):
    """NaN, +inf and all -inf pixels keep their results beside near-0 ones."""
    C = shape[axis]
    z = np.full((40 * int(np.prod(shape)) // (40 * C), C), -1e4)
    z[:, 0] = 0.0
    z[:, 1] = -10.0
    z[1, 3] = np.nan
    z[2, 2] = np.inf
    z[3] = -np.inf
    z[4, :2] = np.inf
    z[5, 1] = -np.inf
    x = np.ascontiguousarray(np.moveaxis(z.reshape(np.moveaxis(np.empty(shape), axis, -1).shape),
                                         -1, axis)).astype(dtype)
    for name in ("softmax", "log_softmax", "logsumexp", "classify"):
        got = getattr(fl, name)(x, axis)
        want = getattr(fl.reference, name)(x, axis)
        check(OPS[name], got, want, dtype)


#: The temperatures at the ends of the range: the smallest subnormal, the
#: float64 and float32 edges, the largest finite values (reference.temperature_scale).
EXTREME_T = [5e-324, 1e-308, 1e-40, 3.4e38, 1.7e308]


@pytest.mark.parametrize("temperature", EXTREME_T)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((40, 4), -1), ((40, 19), -1), ((40, 100), -1),
                                        ((3, 19, 40), 1), ((2, 100, 40), 1)])
def test_extreme_temperatures_match_reference(rng, shape, axis, dtype, temperature):
    x = logits(rng, shape, dtype)
    x.reshape(-1)[::7] = x.reshape(-1)[3]  # some exact ties with other pixels' values
    for name in ("softmax", "log_softmax", "logsumexp", "classify"):
        got = getattr(fl, name)(x, axis, temperature=temperature)
        want = getattr(fl.reference, name)(x, axis, temperature=temperature)
        check(OPS[name], got, want, dtype)


def _scipy_cases():
    """Inputs of SciPy's own logsumexp tests (scipy/special/tests/test_logsumexp.py)."""
    logx = np.log(np.full(1000, 1e-40))
    return [
        ("arange200", np.arange(200.0), -1),
        ("equal_large", np.array([1000.0, 1000.0]), -1),
        ("many_equal", np.full(1000, 10000.0), -1),
        ("tiny_terms_rows", np.vstack([logx, logx]), -1),
        ("tiny_terms_cols", np.vstack([logx, logx]), 0),
        ("magnitudes", np.array([[1e10, 1e-10], [-1e10, -np.inf]]), -1),
        ("inf", np.array([np.inf]), -1),
        ("minus_inf", np.array([-np.inf]), -1),
        ("nan", np.array([np.nan]), -1),
        ("all_minus_inf", np.array([-np.inf, -np.inf]), -1),
        ("inf_and_minus_inf", np.array([np.inf, -np.inf]), -1),
        ("gh18295", np.array([0.0, -40.0]), -1),
        ("gh18295_many", np.array([[0.0, -40.0, -50.0, -np.inf] * 5] * 40), -1),
        ("gh18295_cf", np.array([[0.0, -40.0, -50.0, -np.inf] * 5] * 40).T.copy(), 0),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", _scipy_cases(), ids=lambda c: c[0])
def test_logsumexp_scipy_cases(case, dtype):
    special = pytest.importorskip("scipy.special")
    _, a, axis = case
    x = a.astype(dtype)
    with np.errstate(all="ignore"):
        want = special.logsumexp(x.astype(np.float64), axis=axis)
    got = fl.logsumexp(x, axis)
    want = np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got[fin], want[fin].astype(dtype), rtol=4 * eps, atol=0)
