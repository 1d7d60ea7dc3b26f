"""A minimal PNG encoder (and a small decoder for the tests), zlib + struct.

Enough for label and confidence maps without Pillow: 8-bit greyscale
(``"L"``), truecolour (``"RGB"``) and palette (``"P"``, up to 256 colours)
images. The encoder takes the image as blocks of rows and streams them
through one ``zlib.compressobj`` into consecutive IDAT chunks, so its extra
memory is one block, not the image. Every row uses the "Up" filter (the
difference with the row above), which turns the large uniform regions of
segmentation maps into runs of zeros that deflate well.
"""

import struct
import zlib

import numpy as np

__all__ = ["write_png", "write_indexed", "write_rgb", "read_png", "encoder_bytes"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {"L": 0, "RGB": 2, "P": 3}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_MAX_SIDE = 2**31 - 1
_IDAT_BYTES = 256 << 10  # compressed bytes per IDAT chunk (at most)
_ROWS_PER_BLOCK_BYTES = 256 << 10  # raw bytes per block when slicing an array



def _chunk(f, kind, data):
    f.write(struct.pack(">I", len(data)))
    f.write(kind)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def write_png(f, height, width, mode, blocks, palette=None, level=6):
    """Write a PNG to the binary file ``f`` from blocks of rows.

    Parameters
    ----------
    f : binary file object
    height, width : int
        Image size; the blocks must hold exactly ``height`` rows in all.
    mode : {"L", "P", "RGB"}
    blocks : iterable of ndarray
        uint8 blocks of rows, each (n, width) for "L"/"P" or (n, width, 3)
        for "RGB".
    palette : (K, 3) uint8 array, required for "P" (K <= 256)
    level : int
        zlib compression level.
    """
    if mode not in _COLOUR_TYPE:
        raise ValueError(f"unknown PNG mode {mode!r}")
    if not (1 <= height <= _MAX_SIDE and 1 <= width <= _MAX_SIDE):
        raise ValueError(f"a PNG must be between 1 and {_MAX_SIDE} pixels a side, got {height}x{width}")
    channels = 3 if mode == "RGB" else 1
    f.write(_SIGNATURE)
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[mode], 0, 0, 0))
    if mode == "P":
        pal = np.asarray(palette, dtype=np.uint8)
        if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= len(pal) <= 256:
            raise ValueError(f"a PNG palette holds 1 to 256 RGB rows, got shape {pal.shape}")
        _chunk(f, b"PLTE", pal.tobytes())
    comp = zlib.compressobj(level)
    pending = []
    pending_bytes = 0
    prev = np.zeros(width * channels, np.uint8)
    rows_seen = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.uint8)
        n = block.shape[0]
        if block.shape[1:] != ((width, 3) if channels == 3 else (width,)):
            raise ValueError(f"PNG row block has shape {block.shape}, expected (n, {width}"
                             + (", 3)" if channels == 3 else ")"))
        if n == 0:
            continue
        rows = block.reshape(n, width * channels)
        # "Up" filter: each byte minus the byte above (mod 256).
        up = np.empty((n, width * channels + 1), np.uint8)
        up[:, 0] = 2
        np.subtract(rows[0], prev, out=up[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=up[1:, 1:])
        prev = rows[-1].copy()
        rows_seen += n
        data = comp.compress(up)  # the buffer itself, not a bytes copy
        if data:
            pending.append(data)
            pending_bytes += len(data)
        if pending_bytes >= _IDAT_BYTES:
            _chunk(f, b"IDAT", b"".join(pending))
            pending, pending_bytes = [], 0
    if rows_seen != height:
        raise ValueError(f"PNG got {rows_seen} rows, expected {height}")
    pending.append(comp.flush())
    _chunk(f, b"IDAT", b"".join(pending))
    _chunk(f, b"IEND", b"")


def _row_blocks(img):
    """Slices of ``img`` of about 4 MB each (at least one row)."""
    per_row = max(1, int(np.prod(img.shape[1:], dtype=np.int64)))
    step = max(1, _ROWS_PER_BLOCK_BYTES // per_row)
    for r in range(0, img.shape[0], step):
        yield img[r:r + step]


def encoder_bytes(height, width, channels, itemsize=1):
    """An upper bound on the buffers :func:`write_png` takes for an image
    given as :func:`_row_blocks` of an (height, width) map of ``itemsize``
    bytes a pixel, coloured to ``channels`` bytes a pixel: the coloured
    block, its filtered copy, and the pending IDAT data with its joined
    copy. zlib's own state (about 300 KiB at level 6) is not included."""
    rows = min(height, max(1, _ROWS_PER_BLOCK_BYTES // max(1, width * itemsize)))
    block = rows * (width * channels + 1)
    pending = min(_IDAT_BYTES, height * (width * channels + 1)) + block  # deflate adds < 1%
    return 2 * block + 2 * pending


def write_indexed(f, index, palette, level=6):
    """Write a 2-D uint8 index image with its (K <= 256, 3) palette as "P"."""
    index = np.asarray(index)
    write_png(f, index.shape[0], index.shape[1], "P", _row_blocks(index), palette=palette, level=level)


def write_rgb(f, rgb, level=6):
    """Write an (H, W, 3) uint8 image as "RGB"."""
    rgb = np.asarray(rgb)
    write_png(f, rgb.shape[0], rgb.shape[1], "RGB", _row_blocks(rgb), level=level)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path):
    """Decode an 8-bit non-interlaced PNG (used by the tests).

    Returns
    -------
    dict
        ``"array"``: uint8 (H, W) or (H, W, channels); ``"mode"``: "L",
        "RGB", "P", "LA" or "RGBA"; ``"palette"``: (K, 3) uint8 or None.

    Raises
    ------
    ValueError
        On a bad signature or CRC, or a format outside that subset.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != _SIGNATURE:
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, palette, header = 8, [], None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad CRC in chunk {kind!r}")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3).copy()
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = header
    if depth != 8 or interlace != 0 or ctype not in _CHANNELS:
        raise ValueError(f"{path}: only 8-bit non-interlaced PNGs are supported")
    ch = _CHANNELS[ctype]
    stride = width * ch
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for r in range(height):
        ftype, row = raw[r, 0], raw[r, 1:]
        if ftype == 0:
            cur = row.copy()
        elif ftype == 2:
            cur = row + prev
        elif ftype == 1:
            cur = np.empty(stride, np.uint8)
            for c in range(ch):  # a running sum along each channel, mod 256
                cur[c::ch] = np.cumsum(row[c::ch], dtype=np.uint8)
        elif ftype in (3, 4):
            cur = np.zeros(stride, np.int64)
            rw, pv = row.astype(np.int64), prev.astype(np.int64)
            for i in range(stride):
                a = cur[i - ch] if i >= ch else 0
                c = pv[i - ch] if i >= ch else 0
                pred = (a + pv[i]) // 2 if ftype == 3 else _paeth(a, pv[i], c)
                cur[i] = (rw[i] + pred) & 0xFF
            cur = cur.astype(np.uint8)
        else:
            raise ValueError(f"{path}: unknown filter type {ftype} in row {r}")
        out[r] = cur
        prev = cur
    mode = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}[ctype]
    arr = out.reshape(height, width) if ch == 1 else out.reshape(height, width, ch)
    return {"array": arr, "mode": mode, "palette": palette}
