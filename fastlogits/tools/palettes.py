"""Colour palettes for label maps and the colour map for confidence maps.

- :data:`CITYSCAPES`: the 19 Cityscapes training classes (train ids 0..18);
- :data:`ADE20K`: the 150 ADE20K classes, as used by MMSegmentation;
- :func:`distinct`: a generated palette of any size, neighbours well apart;
- :func:`for_classes`: the palette the command line uses for C classes;
- :func:`load`: a palette from a file (text rows "R G B" or a .npy (K, 3));
- :func:`confidence_lut` / :func:`confidence_levels`: confidence as a heat
  map (low confidence dark purple, high pale yellow, an inferno-like ramp)
  or a grey ramp, NaN in mid grey.
"""

import io

import numpy as np

__all__ = ["CITYSCAPES", "CITYSCAPES_CLASSES", "ADE20K", "distinct", "for_classes", "load",
           "confidence_lut", "confidence_levels", "NAN_COLOUR"]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

#: Cityscapes colours of the 19 training classes, in train-id order.
CITYSCAPES = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# The 150 ADE20K colours (MMSegmentation's order), 450 numbers row by row.
_ADE20K_FLAT = """
120 120 120 180 120 120 6 230 230 80 50 50 4 200 3 120 120 80 140 140 140 204 5 255
230 230 230 4 250 7 224 5 255 235 255 7 150 5 61 120 120 70 8 255 51 255 6 82
143 255 140 204 255 4 255 51 7 204 70 3 0 102 200 61 230 250 255 6 51 11 102 255
255 7 71 255 9 224 9 7 230 220 220 220 255 9 92 112 9 255 8 255 214 7 255 224
255 184 6 10 255 71 255 41 10 7 255 255 224 255 8 102 8 255 255 61 6 255 194 7
255 122 8 0 255 20 255 8 41 255 5 153 6 51 255 235 12 255 160 150 20 0 163 255
140 140 140 250 10 15 20 255 0 31 255 0 255 31 0 255 224 0 153 255 0 0 0 255
255 71 0 0 235 255 0 173 255 31 0 255 11 200 200 255 82 0 0 255 245 0 61 255
0 255 112 0 255 133 255 0 0 255 163 0 255 102 0 194 255 0 0 143 255 51 255 0
0 82 255 0 255 41 0 255 173 10 0 255 173 255 0 0 255 153 255 92 0 255 0 255
255 0 245 255 0 102 255 173 0 255 0 20 255 184 184 0 31 255 0 255 61 0 71 255
255 0 204 0 255 194 0 255 82 0 10 255 0 112 255 51 0 255 0 194 255 0 122 255
0 255 163 255 153 0 0 255 10 255 112 0 143 255 0 82 0 255 163 255 0 255 235 0
8 184 170 133 0 255 0 255 92 184 0 255 255 0 31 0 184 255 0 214 255 255 0 112
92 255 0 0 224 255 112 224 255 70 184 160 163 0 255 153 0 255 71 255 0 255 0 163
255 204 0 255 0 143 0 255 235 133 255 0 255 0 235 245 0 255 255 0 122 255 245 0
10 190 212 214 255 0 0 204 255 20 0 255 255 255 0 0 153 255 0 41 255 0 255 204
41 0 255 41 255 0 173 0 255 0 245 255 71 0 255 122 0 255 0 255 184 0 92 255
184 255 0 0 133 255 255 214 0 25 194 194 102 255 0 92 0 255
"""

#: ADE20K colours of the 150 classes.
ADE20K = np.array(_ADE20K_FLAT.split(), dtype=np.uint8).reshape(150, 3)

#: Colour of a NaN confidence in heat and grey maps (a neutral mid grey).
NAN_COLOUR = (128, 128, 128)


def _hsv_to_rgb(h, s, v):
    """Vectorized HSV (all in [0, 1]) to uint8 RGB rows."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(choices):
        sel = i == k
        rgb[sel] = np.stack([r, g, b], axis=-1)[sel]
    return np.round(rgb * 255).astype(np.uint8)


def distinct(n):
    """``n`` distinct colours, (n, 3) uint8, deterministic.

    Hues step by the golden ratio (neighbouring labels get far-apart hues);
    saturation and brightness cycle with different periods so colours that
    come round to a similar hue still differ.
    """
    k = np.arange(n, dtype=np.float64)
    h = (k * 0.6180339887498949 + 0.05) % 1.0
    s = np.array([0.85, 0.55, 1.0])[np.arange(n) % 3]
    v = np.array([0.95, 0.7, 0.85, 0.55])[np.arange(n) % 4]
    return _hsv_to_rgb(h, s, v)


def for_classes(C):
    """The default palette for ``C`` classes, (C, 3) uint8: Cityscapes for
    19, ADE20K for 150, :func:`distinct` otherwise."""
    if C == len(CITYSCAPES):
        return CITYSCAPES.copy()
    if C == len(ADE20K):
        return ADE20K.copy()
    return distinct(C)


def load(path, name="palette"):
    """Read a palette file: a ``.npy`` array of shape (K, 3), or text with
    one colour per line as three integers 0..255 ("R G B" or "R,G,B";
    ``#`` starts a comment). The kind is told by the file's first bytes.
    Returns (K, 3) uint8.

    Parameters
    ----------
    path : str or os.PathLike
    name : str
        How messages name the file's role, e.g. ``"--palette"``.

    Raises
    ------
    ValueError
        If the file cannot be read, holds no colours, not three numbers a
        row, or values outside 0..255; the message names ``name`` and
        ``path`` on one line.
    """
    where = f"{name} {str(path)!r}"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if data.startswith(b"\x93NUMPY"):
        try:
            rows = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{where}: not a readable .npy array: {exc}") from None
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{where} is neither a .npy array nor a text file of 'R G B' "
                             "rows (it holds binary data)") from None
        rows = _parse_text(text, where)
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != 3 or rows.shape[0] == 0:
        raise ValueError(f"{where}: expected (K, 3) colours, got shape {rows.shape}")
    if (rows.dtype.kind not in "iuf" or np.any(rows < 0) or np.any(rows > 255)
            or np.any(rows != np.round(rows))):
        raise ValueError(f"{where}: colours must be integers in 0..255")
    return rows.astype(np.uint8)


def _parse_text(text, where):
    """Rows of "R G B" text as an (n, 3) float64 array."""
    data = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        try:
            data.append([float(v) for v in line])
        except ValueError:
            raise ValueError(f"{where}: line {lineno} is not numbers: "
                             f"{' '.join(line)!r}") from None
        if len(line) != 3:
            raise ValueError(f"{where}: line {lineno} has {len(line)} numbers, "
                             "expected 3 (R G B)")
    return np.array(data, dtype=np.float64).reshape(-1, 3)


# inferno-like anchors from dark (confidence 0) to bright (confidence 1)
_HEAT_ANCHORS = np.array([
    (0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99),
    (212, 72, 66), (245, 125, 21), (250, 193, 39), (252, 255, 164),
], dtype=np.float64)


def confidence_lut(style="heat"):
    """(256, 3) uint8 colours of confidence levels.

    Entries 0..254 are confidence ``i / 254`` on a ``"heat"`` (inferno-like:
    dark purple for low, pale yellow for high) or ``"grey"`` ramp; entry 255
    is :data:`NAN_COLOUR`, for a NaN confidence. :func:`confidence_levels`
    turns confidences into these indices.
    """
    t = np.linspace(0.0, 1.0, 255)
    if style == "heat":
        pos = np.linspace(0.0, 1.0, len(_HEAT_ANCHORS))
        ramp = np.stack([np.interp(t, pos, _HEAT_ANCHORS[:, ch]) for ch in range(3)], axis=-1)
    elif style == "grey":
        ramp = np.repeat(t[:, None] * 255.0, 3, axis=1)
    else:
        raise ValueError(f"unknown confidence style {style!r}; expected 'heat' or 'grey'")
    lut = np.empty((256, 3), np.uint8)
    lut[:255] = np.round(ramp)
    lut[255] = NAN_COLOUR
    return lut


def confidence_levels(conf, out=None, chunk=None):
    """Indices into :func:`confidence_lut`: ``round(clip(conf, 0, 1) * 254)``,
    255 for NaN; uint8 of ``conf``'s shape (into ``out`` if given).

    ``chunk`` (a number of values) bounds the temporaries, a few bytes a
    value: contiguous values are converted that many at a time.
    """
    conf = np.asarray(conf)
    if out is None:
        out = np.empty(conf.shape, np.uint8)
    if chunk and conf.size > chunk and conf.flags.c_contiguous and out.flags.c_contiguous:
        c, o = conf.reshape(-1), out.reshape(-1)
        for i in range(0, c.size, chunk):
            o[i:i + chunk] = _levels(c[i:i + chunk])
    else:
        np.copyto(out, _levels(conf))
    return out


def _levels(conf):
    with np.errstate(invalid="ignore"):
        lv = np.clip(conf, 0.0, 1.0) * np.float32(254.0) + np.float32(0.5)
    return np.where(np.isnan(conf), 255, lv).astype(np.uint8)
