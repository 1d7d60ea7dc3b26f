"""Bounded-memory classification of logits files (fastlogits.tools.tiled)."""

import os

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import api
from fastlogits.tools import palettes, png, tiled


def _logits(rng, shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 4.0).astype(dtype)


def _files(d):
    return sorted(os.listdir(d))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("1000", 1000), ("64k", 64 << 10), ("64KiB", 64 << 10), ("512M", 512 << 20),
    ("1G", 1 << 30), ("1.5GB", 3 << 29), ("2t", 2 << 40), (" 3 M ", 3 << 20)])
def test_parse_size(text, value):
    assert tiled.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "1X", "-5M", "0", "1e3", "12 parsecs"])
def test_parse_size_errors(text):
    with pytest.raises(ValueError, match="size|more than 0"):
        tiled.parse_size(text)


@pytest.mark.parametrize("C, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                      (65536, np.uint16), (65537, np.uint32)])
def test_narrowest_label_dtype(C, dtype):
    assert tiled.narrowest_label_dtype(C) == np.dtype(dtype)


@pytest.mark.parametrize("shape, axis, order", [
    ((7, 9, 5), 2, "C"), ((5, 7, 9), 0, "C"), ((2, 5, 7, 9), 1, "C"), ((7, 9, 5), 2, "F"),
    ((13, 3), 1, "C"), ((3, 1, 11, 4), 3, "C"), ((6,), 0, "C")])
@pytest.mark.parametrize("max_pixels", [1, 2, 5, 8, 9, 50, 10**6])
def test_plan_tiles_covers_every_pixel_once(shape, axis, order, max_pixels):
    x = np.zeros(shape, order=order)
    seen = np.zeros(x.shape[:axis] + x.shape[axis + 1:], np.int64)
    for idx in tiled.plan_tiles(x.shape, x.strides, axis, max_pixels):
        tile = x[idx]
        assert tile.ndim == x.ndim and tile.shape[axis] == shape[axis]
        assert tile.size // shape[axis] <= max(1, max_pixels)
        seen[idx[:axis] + idx[axis + 1:]] += 1
    assert np.all(seen == 1)


def test_plan_tiles_follow_memory_order():
    """H×W×C: bands of whole rows, contiguous in the file."""
    x = np.zeros((10, 8, 3), np.float32)
    tiles = list(tiled.plan_tiles(x.shape, x.strides, 2, 20))
    assert all(x[i].flags.c_contiguous for i in tiles)
    assert [t[0] for t in tiles] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 10)]


# --------------------------------------------------------------------------
# tiled == in memory
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, order", [
    ((23, 31, 19), -1, "C"),     # H×W×C
    ((2, 7, 17, 13), 1, "C"),    # N×C×H×W (tiles gathered from every class plane)
    ((7, 17, 29), 0, "C"),       # C×H×W
    ((23, 31, 5), 2, "F"),       # a Fortran-ordered file
    ((300, 3), 1, "C"),          # rows of scores
])
@pytest.mark.parametrize("max_memory", [600, 5000, 1 << 30])
def test_tiled_equals_in_memory(shape, axis, order, max_memory, rng, tmp_path):
    x = _logits(rng, shape)
    if order == "F":
        x = np.asfortranarray(x)
    src = tmp_path / "x.npy"
    np.save(src, x)
    res = tiled.classify_file(src, axis, tmp_path / "l.npy", tmp_path / "c.npy",
                              max_memory=max_memory, temperature=1.5)
    labels, conf = np.load(tmp_path / "l.npy"), np.load(tmp_path / "c.npy")
    ref_l, ref_c = fl.classify(x, axis, temperature=1.5)
    C = x.shape[axis]
    assert labels.dtype == tiled.narrowest_label_dtype(C) and conf.dtype == np.float32
    np.testing.assert_array_equal(labels, ref_l)
    np.testing.assert_allclose(conf, ref_c, rtol=1e-6, atol=0)
    if max_memory == 600:
        assert res["tiles"] > 1
    assert res["pixels"] == ref_l.size
    np.testing.assert_array_equal(res["class_counts"], np.bincount(ref_l.ravel(), minlength=C))
    assert _files(tmp_path) == ["c.npy", "l.npy", "x.npy"]  # no temporaries left


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_tiled_dtypes_and_backends(dtype, backend, rng, tmp_path):
    x = _logits(rng, (19, 23, 7), dtype)
    np.save(tmp_path / "x.npy", x)
    tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / "l.npy", tmp_path / "c.npy",
                        backend=backend, max_memory=20000, labels_dtype="int32")
    ref_l, ref_c = fl.reference.classify(x, -1)
    labels, conf = np.load(tmp_path / "l.npy"), np.load(tmp_path / "c.npy")
    assert labels.dtype == np.int32 and conf.dtype == ref_c.dtype
    np.testing.assert_array_equal(labels, ref_l)
    np.testing.assert_allclose(conf, ref_c, rtol=2e-6 if dtype != np.float64 else 1e-12)


def test_labels_only_uses_argmax(rng, tmp_path, monkeypatch):
    x = _logits(rng, (9, 11, 4))
    x[0, 0] = [np.nan, 1, 2, 3]
    x[0, 1] = [5, 5, 1, 1]  # a tie: the first maximum
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(api, "classify", None)  # must not be needed
    tiled.classify_file(tmp_path / "x.npy", -1, labels=tmp_path / "l.npy", max_memory=300)
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), np.argmax(x, -1))


def test_npz_input(rng, tmp_path):
    x = _logits(rng, (5, 6, 3))
    np.savez(tmp_path / "one.npz", logits=x)
    np.savez_compressed(tmp_path / "two.npz", a=x, b=x[..., :2])
    tiled.classify_file(tmp_path / "one.npz", -1, labels=tmp_path / "l1.npy")
    tiled.classify_file(tmp_path / "two.npz", -1, labels=tmp_path / "l2.npy", key="b")
    np.testing.assert_array_equal(np.load(tmp_path / "l1.npy"), np.argmax(x, -1))
    np.testing.assert_array_equal(np.load(tmp_path / "l2.npy"), np.argmax(x[..., :2], -1))
    with pytest.raises(ValueError, match="holds 2 arrays.*--key"):
        tiled.classify_file(tmp_path / "two.npz", -1, labels=tmp_path / "l3.npy")
    with pytest.raises(ValueError, match="no array 'c'"):
        tiled.classify_file(tmp_path / "two.npz", -1, labels=tmp_path / "l3.npy", key="c")
    with pytest.raises(ValueError, match="in memory, more than --max-memory"):
        tiled.classify_file(tmp_path / "one.npz", -1, labels=tmp_path / "l3.npy", max_memory=100)
    assert not (tmp_path / "l3.npy").exists()


def test_empty_and_1d_inputs(rng, tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 4, 3), np.float32))
    tiled.classify_file(tmp_path / "e.npy", -1, tmp_path / "el.npy", tmp_path / "ec.npy")
    assert np.load(tmp_path / "el.npy").shape == (0, 4) and np.load(tmp_path / "ec.npy").shape == (0, 4)
    v = _logits(rng, (7,))
    np.save(tmp_path / "v.npy", v)
    tiled.classify_file(tmp_path / "v.npy", 0, tmp_path / "vl.npy", tmp_path / "vc.npy")
    assert np.load(tmp_path / "vl.npy").shape == () and int(np.load(tmp_path / "vl.npy")) == np.argmax(v)


# --------------------------------------------------------------------------
# PNG outputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("C", [19, 150, 5])
def test_png_outputs(C, rng, tmp_path):
    x = _logits(rng, (1, C, 21, 34))  # N×C×H×W with N = 1: a 21×34 image
    np.save(tmp_path / "x.npy", x)
    tiled.classify_file(tmp_path / "x.npy", 1, tmp_path / "l.png", tmp_path / "c.png",
                        max_memory=20000)
    ref_l, ref_c = fl.classify(x, 1)
    lab = png.read_png(tmp_path / "l.png")
    assert lab["mode"] == "P" and lab["array"].shape == (21, 34)
    np.testing.assert_array_equal(lab["array"], ref_l[0])
    np.testing.assert_array_equal(lab["palette"], palettes.for_classes(C))
    conf = png.read_png(tmp_path / "c.png")
    assert conf["mode"] == "RGB" and conf["array"].shape == (21, 34, 3)
    lut = palettes.confidence_lut("heat")
    np.testing.assert_array_equal(conf["array"], lut[palettes.confidence_levels(ref_c[0])])


def test_png_many_classes_is_rgb(rng, tmp_path):
    x = _logits(rng, (6, 5, 300))
    np.save(tmp_path / "x.npy", x)
    tiled.classify_file(tmp_path / "x.npy", -1, labels=tmp_path / "l.png")
    d = png.read_png(tmp_path / "l.png")
    assert d["mode"] == "RGB"
    np.testing.assert_array_equal(d["array"], palettes.distinct(300)[np.argmax(x, -1)])


def test_png_custom_palette_and_grey(rng, tmp_path):
    x = _logits(rng, (4, 6, 3))
    x[0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "pal.txt").write_text("255 0 0\n0 255 0\n0 0 255\n")
    tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / "l.png", tmp_path / "c.png",
                        palette=tmp_path / "pal.txt", confidence_style="grey")
    d = png.read_png(tmp_path / "l.png")
    np.testing.assert_array_equal(d["palette"], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    np.testing.assert_array_equal(d["array"], np.argmax(x, -1))
    c = png.read_png(tmp_path / "c.png")["array"]
    assert tuple(c[0, 0]) == palettes.NAN_COLOUR  # NaN confidence
    (tmp_path / "pal2.txt").write_text("255 0 0\n0 255 0\n")
    with pytest.raises(ValueError, match="2 colours, but the map has 3 classes"):
        tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / "l2.png", palette=tmp_path / "pal2.txt")


def test_png_of_a_3d_map_is_an_error(rng, tmp_path):
    np.save(tmp_path / "x.npy", _logits(rng, (2, 3, 4, 5)))
    with pytest.raises(ValueError, match="PNG holds a 2-D map.*shape \\(2, 4, 5\\)"):
        tiled.classify_file(tmp_path / "x.npy", 1, labels=tmp_path / "l.png")
    assert _files(tmp_path) == ["x.npy"]


def test_png_larger_than_max_memory_is_an_error(rng, tmp_path):
    np.save(tmp_path / "x.npy", _logits(rng, (40, 50, 3)))
    with pytest.raises(ValueError, match="a PNG of the map needs .* more than --max-memory"):
        tiled.classify_file(tmp_path / "x.npy", -1, labels=tmp_path / "l.png", max_memory=1500)
    assert _files(tmp_path) == ["x.npy"]


# --------------------------------------------------------------------------
# nothing half-written
# --------------------------------------------------------------------------

@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
@pytest.mark.parametrize("ext", [".npy", ".png"])
def test_failure_leaves_nothing(exc, ext, rng, tmp_path, monkeypatch):
    x = _logits(rng, (30, 20, 5))
    np.save(tmp_path / "x.npy", x)
    old = b"previous contents"
    (tmp_path / f"l{ext}").write_bytes(old)
    real = api.classify
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "classify", flaky)
    with pytest.raises(type(exc)):
        # several tiles (the PNG encoder's buffers count in the budget too)
        tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / f"l{ext}", tmp_path / f"c{ext}",
                            max_memory=2000 if ext == ".npy" else 16000)
    assert len(calls) == 3
    assert _files(tmp_path) == sorted(["x.npy", f"l{ext}"])  # no temporaries, no partial output
    assert (tmp_path / f"l{ext}").read_bytes() == old  # the old file is untouched


def test_too_little_memory(rng, tmp_path):
    np.save(tmp_path / "x.npy", _logits(rng, (4, 4, 1000)))
    with pytest.raises(ValueError, match="too small: one pixel of 1000 float32 classes needs about"):
        tiled.classify_file(tmp_path / "x.npy", -1, labels=tmp_path / "l.npy", max_memory=3000)
    assert _files(tmp_path) == ["x.npy"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "nothing to write"),
    (dict(labels="l.txt"), "must end in .npy or .png"),
    (dict(labels="nodir/l.npy"), "does not exist"),
    (dict(labels="x.npy"), "is the input file"),
    (dict(labels="l.npy", confidence="l.npy"), "same file"),
    (dict(labels="l.png", labels_dtype="uint8"), "--labels-dtype applies to .npy"),
    (dict(labels="l.npy", palette="p.txt"), "--palette applies to .png"),
    (dict(labels="l.npy", labels_dtype="float32"), "integer dtype"),
    (dict(labels="l.npy", labels_dtype="int7"), "not a NumPy dtype"),  # (ml_dtypes registers int4)
    (dict(labels="l.npy", labels_dtype="int8", axis=0), "cannot hold label 199"),
    (dict(labels="l.npy", axis=5), "--axis=5 is out of range.*shape \\(200, 3, 4\\)"),
    (dict(labels="l.npy", temperature=0.0), "temperature"),
    (dict(labels="l.npy", backend="gpu"), "unknown backend"),
    (dict(labels="l.npy", key="a"), "--key applies to .npz"),
])
def test_argument_errors(kwargs, match, rng, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", _logits(rng, (200, 3, 4)))
    kwargs = dict(kwargs)
    axis = kwargs.pop("axis", -1)
    with pytest.raises((ValueError, TypeError), match=match):
        tiled.classify_file("x.npy", axis, **kwargs)
    assert _files(tmp_path) == ["x.npy"]


def test_bad_input_files(tmp_path):
    (tmp_path / "text.npy").write_text("not an array")
    np.save(tmp_path / "ints.npy", np.zeros((3, 3), np.int32))
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "noclass.npy", np.zeros((3, 0), np.float32))
    for name, match in (("missing.npy", "does not exist"), ("text.npy", "not a .npy or .npz"),
                        ("ints.npy", "float16, float32 or float64"), ("obj.npy", "cannot read"),
                        ("noclass.npy", "no classes"), (".", "directory")):
        with pytest.raises((ValueError, TypeError), match=match):
            tiled.classify_file(tmp_path / name, -1, labels=tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


def test_memory_stays_bounded(rng, tmp_path):
    """With a small --max-memory the tiles are small: the buffers the loop
    allocates never exceed the budget (a map 50x larger than the budget)."""
    x = _logits(rng, (200, 100, 19))  # 1.5 MB
    np.save(tmp_path / "x.npy", x)
    budget = 30000
    sizes = []
    res = tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / "l.npy", tmp_path / "c.npy",
                              max_memory=budget,
                              progress=lambda total: type("P", (), {
                                  "update": lambda self, n: sizes.append(n),
                                  "close": lambda self: None})())
    assert sum(sizes) == 200 * 100 and res["tiles"] == len(sizes) > 40
    assert max(sizes) * 19 * 4 < budget


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape, axis", [((11, 6, 5), -1), ((2, 5, 7, 3), 1)])
def test_big_endian_equals_native(shape, axis, order, rng, tmp_path):
    """'>f4' logits (.npy read in tiles, and .npz in memory) give the native
    input's results exactly."""
    x = np.asarray(_logits(rng, shape), order=order)
    np.save(tmp_path / "le.npy", x)
    np.save(tmp_path / "be.npy", x.astype(">f4", order=order))
    np.savez(tmp_path / "be.npz", a=x.astype(">f4"))
    res = {}
    for name in ("le.npy", "be.npy", "be.npz"):
        out = tmp_path / f"{name}-l.npy", tmp_path / f"{name}-c.npy"
        held = x.nbytes if name.endswith(".npz") else 0  # an .npz array is held whole
        r = tiled.classify_file(tmp_path / name, axis, *out, max_memory=held + 300)
        assert r["tiles"] >= 2
        res[name] = [np.load(p) for p in out]
    for name in ("be.npy", "be.npz"):
        for a, b in zip(res["le.npy"], res[name]):
            assert a.dtype == b.dtype and b.dtype.isnative
            np.testing.assert_array_equal(a, b)
    ref_l, ref_c = fl.classify(x, axis)
    np.testing.assert_array_equal(res["le.npy"][0], ref_l)
    np.testing.assert_allclose(res["le.npy"][1], ref_c, rtol=1e-6)
