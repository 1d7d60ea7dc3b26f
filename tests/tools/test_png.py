"""The PNG encoder/decoder of fastlogits.tools.png and the palettes."""

import io
import struct
import zlib

import numpy as np
import pytest

from fastlogits.tools import palettes, png


def _encode(img, mode, palette=None):
    f = io.BytesIO()
    if mode == "P":
        png.write_indexed(f, img, palette)
    elif mode == "RGB":
        png.write_rgb(f, img)
    else:
        png.write_png(f, img.shape[0], img.shape[1], "L", [img])
    return f.getvalue()


def _decode(data, tmp_path):
    p = tmp_path / "img.png"
    p.write_bytes(data)
    return png.read_png(p)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (37, 100), (64, 1)])
def test_palette_roundtrip(shape, rng, tmp_path):
    pal = palettes.distinct(23)
    img = rng.integers(0, 23, size=shape, dtype=np.uint8)
    d = _decode(_encode(img, "P", pal), tmp_path)
    assert d["mode"] == "P"
    assert d["array"].shape == shape and d["array"].dtype == np.uint8
    np.testing.assert_array_equal(d["array"], img)
    np.testing.assert_array_equal(d["palette"], pal)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 9, 3), (33, 65, 3)])
def test_rgb_roundtrip(shape, rng, tmp_path):
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    d = _decode(_encode(img, "RGB"), tmp_path)
    assert d["mode"] == "RGB" and d["palette"] is None
    np.testing.assert_array_equal(d["array"], img)


def test_grey_roundtrip(rng, tmp_path):
    img = rng.integers(0, 256, size=(11, 13), dtype=np.uint8)
    d = _decode(_encode(img, "L"), tmp_path)
    assert d["mode"] == "L"
    np.testing.assert_array_equal(d["array"], img)


def test_many_blocks_and_idat_chunks(rng, tmp_path, monkeypatch):
    """Row blocks of a few rows and tiny IDAT chunks: the stream must still
    decode (the Up filter carries the last row across blocks)."""
    monkeypatch.setattr(png, "_ROWS_PER_BLOCK_BYTES", 3 * 100 * 7)
    monkeypatch.setattr(png, "_IDAT_BYTES", 16)
    img = rng.integers(0, 256, size=(301, 100, 3), dtype=np.uint8)  # incompressible
    data = _encode(img, "RGB")
    assert data.count(b"IDAT") > 2
    np.testing.assert_array_equal(_decode(data, tmp_path)["array"], img)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png_with_filters(img, filters):
    """An RGB PNG whose rows use the given filter types (an independent
    encoder, to check that the decoder undoes all five filters)."""
    h, w, ch = img.shape
    rows = img.reshape(h, w * ch).astype(np.int64)
    raw = bytearray()
    prev = np.zeros(w * ch, np.int64)
    for r in range(h):
        ft = filters[r % len(filters)]
        cur = rows[r]
        out = np.empty_like(cur)
        for i in range(w * ch):
            a = cur[i - ch] if i >= ch else 0
            c = prev[i - ch] if i >= ch else 0
            b = prev[i]
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ft]
            out[i] = (cur[i] - pred) % 256
        raw += bytes([ft]) + bytes(out.astype(np.uint8))
        prev = cur

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


def test_decoder_undoes_every_filter(rng, tmp_path):
    img = rng.integers(0, 256, size=(10, 6, 3), dtype=np.uint8)
    d = _decode(_png_with_filters(img, [0, 1, 2, 3, 4]), tmp_path)
    np.testing.assert_array_equal(d["array"], img)


def test_decoder_rejects_corruption(rng, tmp_path):
    data = bytearray(_encode(rng.integers(0, 5, size=(4, 4), dtype=np.uint8), "P",
                             palettes.distinct(5)))
    data[40] ^= 0xFF
    with pytest.raises(ValueError, match="CRC"):
        _decode(bytes(data), tmp_path)
    with pytest.raises(ValueError, match="not a PNG"):
        _decode(b"hello", tmp_path)


def test_encoder_errors():
    f = io.BytesIO()
    with pytest.raises(ValueError, match="mode"):
        png.write_png(f, 1, 1, "CMYK", [np.zeros((1, 1), np.uint8)])
    with pytest.raises(ValueError, match="palette"):
        png.write_indexed(io.BytesIO(), np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        png.write_png(io.BytesIO(), 2, 3, "RGB", [np.zeros((2, 3), np.uint8)])
    with pytest.raises(ValueError, match="rows"):
        png.write_png(io.BytesIO(), 3, 2, "L", [np.zeros((2, 2), np.uint8)])
    with pytest.raises(ValueError, match="pixels a side"):
        png.write_png(io.BytesIO(), 0, 2, "L", [])


# --------------------------------------------------------------------------
# palettes
# --------------------------------------------------------------------------

def test_standard_palettes():
    assert palettes.CITYSCAPES.shape == (19, 3) and palettes.CITYSCAPES.dtype == np.uint8
    assert tuple(palettes.CITYSCAPES[0]) == (128, 64, 128)  # road
    assert tuple(palettes.CITYSCAPES[10]) == (70, 130, 180)  # sky
    assert palettes.ADE20K.shape == (150, 3)
    assert tuple(palettes.ADE20K[0]) == (120, 120, 120) and tuple(palettes.ADE20K[-1]) == (92, 0, 255)
    np.testing.assert_array_equal(palettes.for_classes(19), palettes.CITYSCAPES)
    np.testing.assert_array_equal(palettes.for_classes(150), palettes.ADE20K)
    assert palettes.for_classes(7).shape == (7, 3)


@pytest.mark.parametrize("n", [1, 2, 20, 256, 1000])
def test_distinct_palette(n):
    pal = palettes.distinct(n)
    assert pal.shape == (n, 3) and pal.dtype == np.uint8
    np.testing.assert_array_equal(pal, palettes.distinct(n))  # deterministic
    if n <= 256:
        assert len(np.unique(pal, axis=0)) == n
    if n > 1:  # neighbouring labels are far apart
        assert np.abs(pal[1:].astype(int) - pal[:-1]).sum(axis=1).min() > 60


def test_load_palette(tmp_path):
    txt = tmp_path / "pal.txt"
    txt.write_text("# my colours\n255 0 0\n0,255,0  # green\n\n0 0 255\n")
    np.testing.assert_array_equal(palettes.load(txt), [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    npy = tmp_path / "pal.npy"
    np.save(npy, np.array([[1, 2, 3], [4, 5, 6]]))
    np.testing.assert_array_equal(palettes.load(npy), [[1, 2, 3], [4, 5, 6]])
    for text, msg in (("1 2\n", "3"), ("1 2 300\n", "0..255"), ("a b c\n", "not numbers"),
                      ("# nothing\n", "shape")):
        txt.write_text(text)
        with pytest.raises(ValueError, match=msg):
            palettes.load(txt)


def test_confidence_levels_and_lut():
    conf = np.array([0.0, 0.5, 1.0, np.nan, 1.5, -0.5], np.float32)
    np.testing.assert_array_equal(palettes.confidence_levels(conf), [0, 127, 254, 255, 254, 0])
    for style in ("heat", "grey"):
        lut = palettes.confidence_lut(style)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
        assert tuple(lut[255]) == palettes.NAN_COLOUR
        # brighter with confidence: the ramp's luminance increases
        lum = lut[:255].astype(float) @ [0.299, 0.587, 0.114]
        assert np.all(np.diff(lum) >= -1e-9) and lum[-1] - lum[0] > 200
    with pytest.raises(ValueError, match="style"):
        palettes.confidence_lut("rainbow")
