"""``fastlogits demo``: a synthetic Cityscapes-like scene, classified on every backend.

:func:`synthesize` paints a street scene (sky, buildings, trees, road,
sidewalks, poles and signs, cars, a bus, people, a cyclist) the way a
segmentation network's output looks: per-class probabilities composited
with soft edges, a few classes that a network confuses (road/sidewalk,
terrain/vegetation, car/truck, ...) mixed in smooth blobs, then logits
``kappa * log(p + eps)`` plus smooth noise. Everything is painted on a grid
8 times coarser than the output and bilinearly upsampled in blocks of rows,
so the only full-size array is the logits themselves (160 MB at the
default 1024×2048×19 float32) and generation takes a fraction of a second.

:func:`run` classifies the scene with :func:`fastlogits.classify` on every
available backend, checks that they agree, writes ``labels.png``
(Cityscapes palette) and ``confidence.png`` (heat map: region boundaries
show as dark, low-confidence lines) and returns a timing table.
"""

import os
import time

import numpy as np

from fastlogits.tools import files, palettes, png

__all__ = ["synthesize", "run", "CLASSES"]

CLASSES = palettes.CITYSCAPES_CLASSES
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)

_BLOCK_ROWS = 32


def _interp(n_out, n_in):
    """Source indices and weights of a bilinear resize (pixel centres aligned)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(a, H, W, out=None):
    """Bilinear resize of ``a`` (h, w, ...) to (H, W, ...), float32, in
    blocks of rows (temporaries of one block only)."""
    h, w = a.shape[:2]
    tail = a.shape[2:]
    ones = (1,) * len(tail)
    if out is None:
        out = np.empty((H, W) + tail, np.float32)
    y0, y1, fy = _interp(H, h)
    x0, x1, fx = _interp(W, w)
    fx = fx.reshape((W,) + ones)
    gx = 1.0 - fx
    for r0 in range(0, H, _BLOCK_ROWS):
        r1 = min(H, r0 + _BLOCK_ROWS)
        f = fy[r0:r1].reshape((-1, 1) + ones)
        rows = a[y0[r0:r1]] * (1.0 - f) + a[y1[r0:r1]] * f  # (block, w, ...) small
        blk = out[r0:r1]
        np.multiply(np.take(rows, x0, axis=1), gx, out=blk)
        blk += np.take(rows, x1, axis=1) * fx
    return out


def _smooth_noise(rng, h, w, channels, cells):
    """Smooth noise in about [-1, 1]: random values on a coarse grid of
    ``cells`` cells across the width, bilinearly upsampled to (h, w, channels)."""
    ch = max(2, int(round(cells * h / w)) + 1)
    coarse = rng.uniform(-1.0, 1.0, size=(ch, cells + 1, channels)).astype(np.float32)
    return upsample(coarse, h, w)


class _Canvas:
    """Per-class probabilities on the coarse grid, painted back to front."""

    def __init__(self, h, w, C, rng):
        self.h, self.w, self.rng = h, w, rng
        self.v, self.u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w,
                                     indexing="ij")
        self.P = np.zeros((h, w, C), np.float32)
        # soft edges about one coarse pixel wide (8 output pixels at 8x)
        self.soft = 0.9

    def mask(self, d):
        """Coverage of a region from its signed distance ``d`` (coarse pixels, > 0 inside)."""
        return 1.0 / (1.0 + np.exp(-np.clip(d / self.soft, -30, 30)))

    def paint(self, m, mix):
        """Alpha-composite coverage ``m`` of the class mixture ``mix`` ({class: weight})."""
        m = m.astype(np.float32)
        self.P *= (1.0 - m)[..., None]
        for c, wgt in mix.items():
            self.P[..., c] += wgt * m

    def box(self, u0, u1, v0, v1, rounding=0.0):
        """Signed distance to a box in coarse pixels (rounded corners)."""
        du = np.minimum(self.u - u0, u1 - self.u) * self.w
        dv = np.minimum(self.v - v0, v1 - self.v) * self.h
        if rounding > 0:
            r = rounding * min((u1 - u0) * self.w, (v1 - v0) * self.h)
            cu, cv = np.minimum(du - r, 0), np.minimum(dv - r, 0)
            return np.where((du < r) & (dv < r), r - np.hypot(cu, cv), np.minimum(du, dv))
        return np.minimum(du, dv)

    def ellipse(self, uc, vc, ru, rv):
        q = np.hypot((self.u - uc) / ru, (self.v - vc) / rv)
        return (1.0 - q) * min(ru * self.w, rv * self.h)


def _scene_probabilities(h, w, rng):
    """The painted street scene: (h, w, 19) probabilities on the coarse grid."""
    cv = _Canvas(h, w, len(CLASSES), rng)
    u, v = cv.u, cv.v
    horizon = 0.47
    cv.paint(np.ones((h, w)), {SKY: 1.0})
    # buildings: a skyline of blocks of random widths and heights
    edges = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 14)]))
    tops = rng.uniform(0.05, 0.33, len(edges) - 1)
    seg = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, len(tops) - 1)
    cv.paint(cv.mask((v - tops[seg]) * h), {BUILDING: 1.0})
    # trees: irregular blobs along both sides
    bumps = _smooth_noise(rng, h, w, 1, 24)[..., 0]
    for uc in np.concatenate([rng.uniform(0.02, 0.3, 3), rng.uniform(0.7, 0.98, 3)]):
        vc, ru, rv = rng.uniform(0.3, 0.42), rng.uniform(0.05, 0.1), rng.uniform(0.1, 0.16)
        cv.paint(cv.mask(cv.ellipse(uc, vc, ru, rv) + 2.5 * bumps), {VEGETATION: 1.0})
    # ground, sidewalks and road, in perspective
    below = (v - horizon) * h
    cv.paint(cv.mask(below), {TERRAIN: 1.0})
    depth = np.maximum(v - horizon, 0)
    cv.paint(cv.mask(np.minimum((0.1 + 1.9 * depth - np.abs(u - 0.5)) * w, below)), {SIDEWALK: 1.0})
    cv.paint(cv.mask(np.minimum((0.04 + 1.25 * depth - np.abs(u - 0.5)) * w, below)), {ROAD: 1.0})
    # a see-through fence on the left, a wall on the right
    cv.paint(cv.mask(cv.box(0.0, 0.17, 0.42, 0.53)), {FENCE: 0.75, VEGETATION: 0.25})
    cv.paint(cv.mask(cv.box(0.84, 1.0, 0.38, 0.5)), {WALL: 1.0})
    # poles with signs and traffic lights
    for up in (0.08, 0.3, 0.66, 0.9):
        cv.paint(cv.mask(cv.box(up - 0.003, up + 0.003, 0.14, 0.56 + 0.25 * abs(up - 0.5))),
                 {POLE: 1.0})
        if up < 0.5:
            cv.paint(cv.mask(cv.box(up - 0.012, up + 0.012, 0.15, 0.2, 0.3)), {SIGN: 1.0})
        else:
            cv.paint(cv.mask(cv.box(up + 0.003, up + 0.013, 0.14, 0.22, 0.2)), {LIGHT: 1.0})
    # vehicles on the road, far to near; size grows with depth
    for vc, lane, cls, aspect in ((0.52, -0.3, TRAIN, 1.6), (0.56, 0.4, BUS, 1.1),
                                  (0.6, -0.45, TRUCK, 0.9), (0.66, 0.35, CAR, 0.55),
                                  (0.76, -0.4, CAR, 0.55), (0.9, 0.45, CAR, 0.55)):
        s = (vc - horizon) / (1 - horizon)
        half = 0.04 + 1.25 * (vc - horizon)
        uc = 0.5 + lane * half
        bw, bh = 0.42 * s, 0.42 * s * aspect
        cv.paint(cv.mask(cv.box(uc - bw / 2, uc + bw / 2, vc - bh, vc, 0.25)), {cls: 1.0})
    # people on the sidewalks, a cyclist and a motorcyclist on the road edge
    for k in range(7):
        vc = rng.uniform(0.56, 0.8)
        s = (vc - horizon) / (1 - horizon)
        side = 1 if k % 2 else -1
        uc = 0.5 + side * (0.04 + 1.25 * (vc - horizon) + 0.6 * (vc - horizon))
        cv.paint(cv.mask(cv.ellipse(uc, vc - 0.16 * s, 0.018 * s, 0.16 * s)), {PERSON: 1.0})
    for uc, vc, vehicle in ((0.3, 0.6, BICYCLE), (0.72, 0.7, MOTORCYCLE)):
        s = (vc - horizon) / (1 - horizon)
        cv.paint(cv.mask(cv.ellipse(uc, vc - 0.05 * s, 0.07 * s, 0.05 * s)), {vehicle: 1.0})
        cv.paint(cv.mask(cv.ellipse(uc, vc - 0.19 * s, 0.025 * s, 0.12 * s)), {RIDER: 1.0})
    # what a network confuses: swap probability between look-alike classes in blobs
    pairs = ((ROAD, SIDEWALK, 0.45), (TERRAIN, VEGETATION, 0.5), (BUILDING, WALL, 0.45),
             (CAR, TRUCK, 0.4), (PERSON, RIDER, 0.45), (SIDEWALK, TERRAIN, 0.4), (SKY, BUILDING, 0.3))
    fields = _smooth_noise(rng, h, w, len(pairs), 10)
    P = cv.P
    for k, (a, b, strength) in enumerate(pairs):
        t = strength / (1.0 + np.exp(-8.0 * (fields[..., k] - 0.35)))
        pa, pb = P[..., a].copy(), P[..., b].copy()
        P[..., a] = pa * (1 - t) + pb * t
        P[..., b] = pb * (1 - t) + pa * t
    return P


def synthesize(H=1024, W=2048, seed=0):
    """A Cityscapes-like scene's logits, (H, W, 19) float32, deterministic in ``seed``.

    Smooth regions with soft, uncertain boundaries: what a segmentation
    network's final layer produces, not white noise.
    """
    if H < 1 or W < 1:
        raise ValueError(f"the demo scene needs at least 1x1 pixels, got {H}x{W}")
    rng = np.random.default_rng(seed)
    f = max(1, min(H, W) // 128)  # coarse grid: 8x smaller at 1024x2048
    h, w = max(2, -(-H // f)), max(2, -(-W // f))
    P = _scene_probabilities(h, w, rng)
    # far away (near the horizon) the network is less sure: lower contrast
    kappa = (1.0 + 0.6 * np.abs((np.arange(h) + 0.5) / h - 0.47)[:, None, None]).astype(np.float32)
    coarse = kappa * np.log(P + np.float32(2e-3))
    coarse += 0.8 * _smooth_noise(rng, h, w, len(CLASSES), 40)
    coarse *= np.float32(2.0)
    return upsample(coarse.astype(np.float32), H, W)


#: The NumPy reference classifies a centre crop of at most this many pixels
#: (a quarter of each side of the full scene) unless asked for the whole
#: scene: it runs at about 2 Mpixel/s, most of a warm demo's time.
REFERENCE_CROP_PIXELS = 256 * 512


def _crop(H, W, full):
    """The (row, column) slices of the centre crop the reference sees."""
    if full or H * W <= REFERENCE_CROP_PIXELS:
        return slice(0, H), slice(0, W)
    h = max(1, min(H, H // 4 or 1))
    w = max(1, min(W, REFERENCE_CROP_PIXELS // h))
    r0, c0 = (H - h) // 2, (W - w) // 2
    return slice(r0, r0 + h), slice(c0, c0 + w)


def run(out_dir="fastlogits-demo", size=(1024, 2048), backends=None, seed=0, repeat=5,
        max_seconds=3.0, echo=print, full_reference=False):
    """Synthesize the scene, classify it on every backend, write the pictures.

    Parameters
    ----------
    out_dir : str
        Where ``labels.png`` and ``confidence.png`` go (created if missing).
    size : (H, W)
    backends : list of str, optional
        Default every available backend (:func:`fastlogits.backends`).
    repeat : int
        Timed runs per backend (after a first, untimed call that includes
        compilation), stopping early after ``max_seconds``.
    echo : callable
        Prints the report lines.
    full_reference : bool
        Run the NumPy reference on the whole scene; by default it runs on
        a centre crop of at most :data:`REFERENCE_CROP_PIXELS` pixels, which
        every other backend's labels and confidence are compared on.

    Returns
    -------
    dict
        ``timings`` (per backend: ``first_ms``, ``median_ms``, ``runs``,
        ``mpix_per_s``, ``gbps``), ``agree`` (bool), ``files``.
    """
    import fastlogits as fl
    from fastlogits.tools.benchmark import time_call

    H, W = size
    avail = fl.backends()
    backends = list(backends) if backends else avail
    for be in backends:
        if be not in avail:
            raise ValueError(f"backend {be!r} is not available here; available: {', '.join(avail)}")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    x = synthesize(H, W, seed)
    t_synth = time.perf_counter() - t0
    echo(f"fastlogits demo: synthetic street scene {H}x{W}, 19 Cityscapes classes, float32 "
         f"({x.nbytes / 1e6:.0f} MB), made in {t_synth * 1e3:.0f} ms")
    results, timings = {}, {}
    crop_rows, crop_cols = _crop(H, W, full_reference)
    cropped = (crop_rows.stop - crop_rows.start) * (crop_cols.stop - crop_cols.start) < H * W
    for be in backends:
        xb = x[crop_rows, crop_cols] if be == "numpy" and cropped else x
        pixels = xb.shape[0] * xb.shape[1]
        moved = xb.nbytes + pixels * (8 + 4)  # one read of x, int64 labels + float32 confidence
        t = time_call(lambda: results.__setitem__(be, fl.classify(xb, backend=be)), repeat,
                      max_seconds)
        s = t["median_ms"] / 1e3
        timings[be] = {"first_ms": t["first_ms"], "median_ms": t["median_ms"],
                       "runs": len(t["times_ms"]), "mpix_per_s": pixels / s / 1e6,
                       "gbps": moved / s / 1e9, "pixels": pixels}
    # agreement: every backend against the reference where present (on its crop)
    ref = "numpy" if "numpy" in results else backends[0]
    lab_ref, conf_ref = results[ref]
    window = ((crop_rows, crop_cols) if ref == "numpy" and cropped
              else (slice(None), slice(None)))
    agree = True
    checks = []
    for be in backends:
        if be == ref:
            continue
        lab, conf = (np.asarray(a)[window] for a in results[be])
        mism = int(np.count_nonzero(lab != lab_ref))
        dconf = (float(np.nanmax(np.abs(np.asarray(conf, np.float64) - conf_ref)))
                 if lab.size else 0.0)
        ok = mism == 0 and dconf <= 1e-5
        agree &= ok
        where = (f" on the reference's {lab.shape[0]}x{lab.shape[1]} centre crop"
                 if window[0] != slice(None) else "")
        checks.append(f"{be} vs {ref}{where}: {mism} labels differ, max |confidence difference| "
                      f"{dconf:.1e} -> {'agree' if ok else 'DISAGREE'}")
    # the pictures: the whole scene from a backend that classified all of it
    whole = next((be for be in backends if not (be == "numpy" and cropped)), None)
    lab0, conf0 = (np.asarray(a) for a in results[whole]) if whole else (lab_ref, conf_ref)
    H, W = lab0.shape
    pixels = H * W
    labels_path = os.path.join(out_dir, "labels.png")
    conf_path = os.path.join(out_dir, "confidence.png")
    files.write_atomic(labels_path, lambda f: png.write_indexed(f, lab0.astype(np.uint8),
                                                                  palettes.CITYSCAPES))
    lut = palettes.confidence_lut("heat")
    levels = palettes.confidence_levels(conf0)
    files.write_atomic(conf_path, lambda f: png.write_png(
        f, H, W, "RGB", (lut[b] for b in png._row_blocks(levels))))

    counts = np.bincount(lab0.ravel(), minlength=len(CLASSES))
    top = np.argsort(counts)[::-1][:6]
    echo("scene: " + ", ".join(f"{CLASSES[c]} {100 * counts[c] / pixels:.0f}%" for c in top
                               if counts[c]) + f"; mean confidence {np.nanmean(conf0):.3f}")
    echo("")
    head = ("backend", "first call ms", "median ms", "runs", "Mpixel/s", "GB/s")
    rows = [head] + [(f"fastlogits[{be}]" + ("*" if t["pixels"] < H * W else ""),
                      f"{t['first_ms']:.0f}", f"{t['median_ms']:.1f}",
                      str(t["runs"]), f"{t['mpix_per_s']:.1f}", f"{t['gbps']:.2f}")
                     for be, t in timings.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for k, r in enumerate(rows):
        echo("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]))
        if k == 0:
            echo("  ".join("-" * n for n in widths))
    echo("(classify: labels + top-1 probability in one pass; 'first call' includes Numba "
         "compilation or loading its on-disk cache; GB/s counts one read of x + the outputs)")
    if any(t["pixels"] < H * W for t in timings.values()):
        echo("(* on a centre crop of the scene; --full-reference runs it on all of it)")
    echo("")
    for line in checks:
        echo(line)
    echo(f"wrote {labels_path} (Cityscapes palette) and {conf_path} (heat map: dark = low "
         "confidence, at region boundaries)")
    return {"timings": timings, "agree": agree, "files": [labels_path, conf_path],
            "seconds_synthesize": t_synth}
