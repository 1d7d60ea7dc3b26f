"""Classify logits files of any size with bounded memory (``fastlogits classify``).

A ``.npy`` input is memory-mapped and cut into tiles along its non-class
axes, slowest-varying axis first, so a tile is one contiguous slab of the
file whenever the layout allows (H×W×C: a band of rows; N×C×H×W: a band of
rows of every class plane, gathered into one contiguous buffer). Each tile
goes through :func:`fastlogits.classify` (or :func:`fastlogits.argmax` when
no confidence is asked for) into small reusable buffers, and from there into
the outputs:

- ``.npy``: an ``np.lib.format.open_memmap`` file under a temporary name in
  the output's directory, renamed over the final name only at the end;
- ``.png``: a palette image of the labels or a heat map of the confidence;
  the (one byte a pixel) index image is held in memory, then encoded.

After a tile is done its pages of the input and output maps are handed back
to the kernel (``madvise(MADV_DONTNEED)``; the file data stays in the page
cache), so the process's memory stays within ``max_memory`` whatever the
size of the file. A failure or KeyboardInterrupt removes every temporary
file: nothing is ever written half-way.
"""

import mmap
import os
import re
import time
import zipfile

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, _png, palettes

__all__ = ["parse_size", "format_size", "narrowest_label_dtype", "open_logits", "plan_tiles",
           "tile_pixels", "classify_array", "classify_file"]

#: Largest tile of input read at once: bigger tiles gain nothing (the
#: kernels stream) and the progress bar moves more smoothly.
MAX_TILE_BYTES = 64 << 20

#: Extra bytes per score the NumPy reference needs (float64 temporaries).
_NUMPY_BYTES_PER_SCORE = 40

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """Parse a memory size: ``"1G"``, ``"512M"``, ``"1.5GiB"``, ``"64kb"`` or
    a number of bytes. Units are powers of 1024. Returns int bytes > 0.

    Raises
    ------
    ValueError
        If ``text`` is not such a size.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size; use e.g. 512M, 2G or a number of bytes")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


def format_size(n):
    """``1536`` -> ``"1.5 KiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def narrowest_label_dtype(C):
    """The narrowest unsigned integer dtype holding labels ``0 .. C - 1``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if C - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


# --------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------

def open_logits(path, key=None):
    """Open a logits file: ``.npy`` memory-mapped, ``.npz`` member loaded.

    The format is told by the file's first bytes, not its name.

    Returns
    -------
    array : ndarray or np.memmap
    nbytes_in_memory : int
        Bytes the array holds in memory (0 for a memory map).

    Raises
    ------
    ValueError
        Missing or unreadable file, not .npy/.npz, unknown ``key``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"input {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"input {path!r} is a directory, not a .npy or .npz file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise ValueError(f"cannot read input {path!r}: {exc.strerror or exc}") from None
    if magic == b"\x93NUMPY":
        if key is not None:
            raise ValueError(f"--key applies to .npz input, but {path!r} is a .npy file")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False), 0
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot read {path!r} as a .npy array: {exc}") from None
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            npz = np.load(path, allow_pickle=False)
            names = list(npz.files)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read {path!r} as a .npz archive: {exc}") from None
        if key is None:
            if len(names) != 1:
                raise ValueError(f"{path!r} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                 "choose one with --key")
            key = names[0]
        if key not in names:
            raise ValueError(f"{path!r} has no array {key!r}; it holds: {', '.join(names)}")
        try:
            arr = npz[key]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read array {key!r} of {path!r}: {exc}") from None
        return arr, arr.nbytes
    raise ValueError(f"input {path!r} is not a .npy or .npz file")


# --------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------

def plan_tiles(shape, strides, axis, max_pixels):
    """Index tuples of the tiles of an array, each at most ``max_pixels``
    pixels (positions along the non-class axes), in memory order.

    The non-class axes are ordered slowest-varying first (largest stride);
    a tile takes a range along one of them, the full extent of every faster
    one and a single index of every slower one: for H×W×C a band of rows,
    for a huge row a piece of it. Every tile keeps all dimensions.
    """
    ndim = len(shape)
    full = [slice(None)] * ndim
    nonclass = [d for d in range(ndim) if d != axis]
    if not nonclass or any(shape[d] == 0 for d in nonclass):
        if not any(shape[d] == 0 for d in nonclass):
            yield tuple(full)
        return
    order = sorted(nonclass, key=lambda d: -abs(strides[d]))
    sizes = [shape[d] for d in order]
    j = 0
    while _layout.size_of(sizes[j + 1:]) > max_pixels:
        j += 1
    below = _layout.size_of(sizes[j + 1:])
    step = max(1, max_pixels // below)
    for outer in np.ndindex(*sizes[:j]):
        idx = list(full)
        for d, i in zip(order[:j], outer):
            idx[d] = slice(i, i + 1)
        for s0 in range(0, sizes[j], step):
            idx[order[j]] = slice(s0, min(s0 + step, sizes[j]))
            yield tuple(idx)


def _page_release(root):
    """A function ``release(view)`` returning ``view``'s pages of the memory
    map ``root`` to the kernel; a no-op where that is not possible."""
    mm = getattr(root, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return lambda view: None
    # np.memmap maps from the allocation-granularity boundary below `offset`.
    base = root.ctypes.data - root.offset % mmap.ALLOCATIONGRANULARITY
    length = len(mm)

    def release(view):
        if view.size == 0:
            return
        lo, hi = np.lib.array_utils.byte_bounds(view)
        start = (lo - base) // mmap.PAGESIZE * mmap.PAGESIZE
        stop = min(length, hi - base)
        if stop > start >= 0:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
            except (OSError, ValueError):
                pass

    return release


def _costs(x, axis, be, with_confidence, label_dtype, conf_dtype, out_pixel_bytes, contiguous):
    """``(fixed, per_pixel)`` bytes of the tiled loop (approximate)."""
    C = x.shape[axis]
    score = x.dtype.itemsize
    per_pixel = C * score  # the tile of x (mapped pages or loaded array)
    if not contiguous:
        per_pixel += C * score  # the gather buffer
    if be == "numpy":
        per_pixel += C * _NUMPY_BYTES_PER_SCORE + 16
    elif be == "cuda":
        per_pixel += C * score + 16
    per_pixel += label_dtype.itemsize + (conf_dtype.itemsize if with_confidence else 0)
    if be == "cpu" and x.dtype == np.float16:
        per_pixel += C * 4 + 8  # float32 copies of (at most) the tile, made by the API in chunks
    per_pixel += out_pixel_bytes
    return 0, per_pixel


def tile_pixels(x, axis, backend, *, with_confidence=True, label_dtype=None, max_memory=1 << 30,
                fixed_bytes=0, out_pixel_bytes=0):
    """Pixels per tile that keep :func:`classify_array` within ``max_memory``.

    Raises
    ------
    ValueError
        If not even one pixel fits.
    """
    C = x.shape[axis]
    label_dtype = np.dtype(label_dtype or narrowest_label_dtype(C))
    conf_dtype = chk.compute_dtype(x.dtype)
    probe = next(plan_tiles(x.shape, x.strides, axis, 1), None)
    contiguous = probe is None or x[probe].flags.c_contiguous
    fixed, per_pixel = _costs(x, axis, backend, with_confidence, label_dtype, conf_dtype,
                              out_pixel_bytes, contiguous)
    room = max_memory - fixed_bytes - fixed
    if room < per_pixel:
        need = fixed_bytes + fixed + per_pixel
        what = f"one pixel of {C} {x.dtype} classes"
        if fixed_bytes:
            what += f" plus {format_size(fixed_bytes)} for the data held whole in memory"
        raise ValueError(f"--max-memory {format_size(max_memory)} is too small: {what} needs "
                         f"about {format_size(need)}")
    return int(min(room // per_pixel, max(1, MAX_TILE_BYTES // (C * x.dtype.itemsize))))


def classify_array(x, axis, sinks, *, temperature=1.0, backend="cpu", with_confidence=True,
                   label_dtype=None, max_memory=1 << 30, fixed_bytes=0, out_pixel_bytes=0,
                   progress=None):
    """Classify ``x`` tile by tile, handing each tile's results to ``sinks``.

    Parameters
    ----------
    x : ndarray or np.memmap
        Logits (validated by the caller), class axis ``axis`` (>= 0).
    sinks : list of callables
        Each called as ``sink(index, labels, confidence)`` per tile, with
        ``index`` the tile's position in the output (x's shape without the
        class axis) and ``confidence`` None without ``with_confidence``.
    backend : {"numpy", "cpu", "cuda"}
        A resolved backend.
    label_dtype : dtype, optional
        Labels dtype (default the narrowest unsigned type holding C - 1).
    max_memory : int
        Bytes the loop may use in all, ``fixed_bytes`` of which are taken
        by the caller, and ``out_pixel_bytes`` more per pixel of a tile
        (see :func:`tile_pixels`).
    progress : object with ``update(n)``, optional
        Told the number of pixels of each finished tile.

    Returns
    -------
    dict
        ``tiles``, ``pixels``, ``class_counts`` (int64 (C,)).
    """
    from fastlogits import api

    C = x.shape[axis]
    label_dtype = np.dtype(label_dtype or narrowest_label_dtype(C))
    conf_dtype = chk.compute_dtype(x.dtype)
    max_pixels = tile_pixels(x, axis, backend, with_confidence=with_confidence,
                             label_dtype=label_dtype, max_memory=max_memory,
                             fixed_bytes=fixed_bytes, out_pixel_bytes=out_pixel_bytes)
    # reusable buffers, sized for the largest tile (np.empty: pages appear when used)
    labels_buf = np.empty(max_pixels, label_dtype)
    conf_buf = np.empty(max_pixels, conf_dtype) if with_confidence else None
    gather_buf = None
    release = _page_release(x if isinstance(x, np.memmap) else None)
    counts = np.zeros(C, np.int64)
    tiles = pixels = 0
    for idx in plan_tiles(x.shape, x.strides, axis, max_pixels):
        src = tile = x[idx]
        if not tile.flags.c_contiguous:  # gather the pieces into one C-contiguous block
            if gather_buf is None:
                gather_buf = np.empty(max_pixels * C, x.dtype)
            tile = gather_buf[:src.size].reshape(src.shape)
            np.copyto(tile, src)
        rshape = _layout.reduced_shape(tile.shape, axis)
        n = _layout.size_of(rshape)
        labels = labels_buf[:n].reshape(rshape)
        conf = conf_buf[:n].reshape(rshape) if with_confidence else None
        if backend == "cuda":  # host tile -> device -> host; results copied into the buffers
            if with_confidence:
                lab, cf = api.classify(tile, axis, temperature=temperature, backend="cuda")
                labels[...], conf[...] = lab, cf
            else:
                labels[...] = api.argmax(tile, axis, backend="cuda")
        elif with_confidence:
            api.classify(tile, axis, temperature=temperature, out=(labels, conf), backend=backend)
        else:
            api.argmax(tile, axis, out=labels, backend=backend)
        release(src)
        counts += np.bincount(labels.ravel(), minlength=C)[:C]
        ridx = idx[:axis] + idx[axis + 1:]
        for sink in sinks:
            sink(ridx, labels, conf)
        tiles += 1
        pixels += n
        if progress is not None:
            progress.update(n)
    return {"tiles": tiles, "pixels": pixels, "class_counts": counts}


# --------------------------------------------------------------------------
# outputs: written under a temporary name, renamed at the end
# --------------------------------------------------------------------------

def _temp_name(path):
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.fastlogits-{os.getpid()}.tmp")


class _Output:
    """One output file; ``commit`` renames its temporary over the final name."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.temp = _temp_name(self.path)

    def finish(self):
        """Write everything to the temporary file."""

    def commit(self):
        os.replace(self.temp, self.path)

    def abort(self):
        self._drop()
        try:
            os.remove(self.temp)
        except FileNotFoundError:
            pass

    def _drop(self):
        pass


class _NpyOutput(_Output):
    """Labels or confidence as ``.npy`` written through a memory map."""

    def __init__(self, path, shape, dtype, which):
        super().__init__(path)
        self.which = which
        self.mm = np.lib.format.open_memmap(self.temp, mode="w+", dtype=dtype, shape=shape)
        self.release = _page_release(self.mm)

    def __call__(self, idx, labels, conf):
        view = self.mm[idx + (Ellipsis,)]  # a view even for a 0-d map
        view[...] = labels if self.which == "labels" else conf
        self.release(view)

    def finish(self):
        self.mm.flush()
        self._drop()

    def _drop(self):
        self.mm = None


def _png_shape(rshape, path):
    """The 2-D (H, W) image of a map of shape ``rshape`` (size-1 axes dropped)."""
    dims = [n for n in rshape if n != 1]
    if len(dims) > 2:
        raise ValueError(f"{path}: a PNG holds a 2-D map, but the map has shape {tuple(rshape)}; "
                         "write .npy instead")
    while len(dims) < 2:
        dims.insert(0, 1)
    if 0 in dims:
        raise ValueError(f"{path}: the map has shape {tuple(rshape)}, no pixels for a PNG")
    return tuple(dims)


class _PngOutput(_Output):
    """A PNG of labels (palette colours) or confidence (heat map); the map is
    kept in memory as one index per pixel until :meth:`finish` encodes it."""

    def __init__(self, path, rshape, which, C=None, palette=None, style="heat"):
        super().__init__(path)
        self.which = which
        self.image_shape = _png_shape(rshape, self.path)
        if which == "labels":
            self.palette = palette if palette is not None else palettes.for_classes(C)
            idx_dtype = np.uint8 if C <= 256 else narrowest_label_dtype(C)
        else:
            self.palette = palettes.confidence_lut(style)
            idx_dtype = np.uint8
        self.index = np.empty(rshape, idx_dtype)

    @staticmethod
    def map_bytes(rshape, which, C):
        n = _layout.size_of(rshape)
        itemsize = 1 if which != "labels" or C <= 256 else narrowest_label_dtype(C).itemsize
        return n * itemsize

    def __call__(self, idx, labels, conf):
        if self.which == "labels":
            self.index[idx] = labels
        else:
            palettes.confidence_levels(conf, out=self.index[idx + (Ellipsis,)])

    def finish(self):
        img = self.index.reshape(self.image_shape)
        with open(self.temp, "wb") as f:
            if self.which == "labels" and len(self.palette) <= 256:
                _png.write_indexed(f, img, self.palette)
            else:  # more than 256 colours: RGB, coloured block by block
                blocks = (self.palette[b] for b in _png._row_blocks(img))
                _png.write_png(f, img.shape[0], img.shape[1], "RGB", blocks)
        self.index = None


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------

def _check_output_path(path, option, input_path):
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".png"):
        raise ValueError(f"{option} {path!r}: the output must end in .npy or .png")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"{option} {path!r}: directory {d!r} does not exist")
    if not os.access(d, os.W_OK):
        raise ValueError(f"{option} {path!r}: directory {d!r} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a directory")
    if os.path.exists(path) and os.path.samefile(path, input_path):
        raise ValueError(f"{option} {path!r} is the input file; choose another name")
    return ext


def classify_file(input_path, axis, labels=None, confidence=None, *, temperature=1.0,
                  backend="auto", key=None, max_memory=1 << 30, labels_dtype=None,
                  palette=None, confidence_style="heat", progress=None):
    """Classify a ``.npy``/``.npz`` logits file into ``.npy``/``.png`` outputs.

    Parameters
    ----------
    input_path : str
        ``.npy`` (memory-mapped, processed in tiles) or ``.npz`` (``key``
        selects the array; the only one by default).
    axis : int
        The class axis of the input.
    labels, confidence : str, optional
        Output paths ending in ``.npy`` or ``.png``; at least one.
    temperature : float
        Scales the confidence (labels do not depend on it).
    backend : {"auto", "cpu", "numpy", "cuda"}
    max_memory : int
        Approximate bound on the memory used, in bytes (see :func:`parse_size`).
    labels_dtype : str or dtype, optional
        Integer dtype of ``.npy`` labels (default the narrowest unsigned).
    palette : str, optional
        Palette file for ``.png`` labels (see :func:`fastlogits.palettes.load`).
    confidence_style : {"heat", "grey"}
        Colour map of a ``.png`` confidence.
    progress : callable, optional
        ``progress(total_pixels)`` returning an object with ``update(n)``
        and ``close()``.

    Returns
    -------
    dict
        ``shape``, ``axis``, ``classes``, ``dtype``, ``pixels``, ``tiles``,
        ``seconds``, ``class_counts``, ``outputs`` (paths written).

    Raises
    ------
    ValueError, TypeError
        Every problem with the arguments or files, before anything is
        written; nothing is left behind on any failure.
    """
    from fastlogits import api

    t0 = time.perf_counter()
    input_path = os.fspath(input_path)
    if labels is None and confidence is None:
        raise ValueError("nothing to write: give --labels OUT and/or --confidence OUT (.npy or .png)")
    if not os.path.exists(input_path):
        raise ValueError(f"input {input_path!r} does not exist")
    lab_ext = _check_output_path(labels, "--labels", input_path) if labels is not None else None
    conf_ext = (_check_output_path(confidence, "--confidence", input_path)
                if confidence is not None else None)
    if labels is not None and confidence is not None and \
            os.path.abspath(labels) == os.path.abspath(confidence):
        raise ValueError("--labels and --confidence name the same file")
    if labels_dtype is not None and lab_ext != ".npy":
        raise ValueError("--labels-dtype applies to .npy labels only")
    if palette is not None and lab_ext != ".png":
        raise ValueError("--palette applies to .png labels only")
    chk.check_temperature(temperature)
    be = api.resolve_backend(backend, np.empty(0, np.float32))

    x, in_memory = open_logits(input_path, key)
    chk.check_logits_dtype(x.dtype, name=f"input {input_path!r}")
    try:
        ax = chk.normalize_axis(axis, x.ndim, name="--axis")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc} (input {input_path!r} has shape {x.shape})") from None
    if x.shape[ax] == 0:
        raise ValueError(f"input {input_path!r} has no classes: axis {ax} of shape {x.shape} is empty")
    C = x.shape[ax]
    rshape = _layout.reduced_shape(x.shape, ax)
    if labels_dtype is not None:
        try:
            ldt = np.dtype(labels_dtype)
        except TypeError:
            raise ValueError(f"--labels-dtype {labels_dtype!r} is not a NumPy dtype") from None
        chk.check_out_meta(rshape, ldt, rshape, C - 1, name="--labels-dtype", kind="label")
    else:
        ldt = narrowest_label_dtype(C)
    pal = None
    if palette is not None:
        pal = palettes.load(palette)
        if len(pal) < C:
            raise ValueError(f"--palette {palette!r} has {len(pal)} colours, but the map has {C} classes")
    # PNG maps live in memory until encoded: they count against max_memory.
    fixed = in_memory
    for ext, which in ((lab_ext, "labels"), (conf_ext, "confidence")):
        if ext == ".png":
            _png_shape(rshape, labels if which == "labels" else confidence)
            fixed += _PngOutput.map_bytes(rshape, which, C)
    if fixed > max_memory:
        what = "the .npz array" if in_memory else "a PNG of the map"
        raise ValueError(f"{what} needs {format_size(fixed)} in memory, more than --max-memory "
                         f"{format_size(max_memory)}; use .npy files (processed in tiles) "
                         "or raise --max-memory")

    conf_dt = chk.compute_dtype(x.dtype)
    out_pixel_bytes = ((ldt.itemsize if lab_ext == ".npy" else 0)
                       + (conf_dt.itemsize if conf_ext == ".npy" else 0))
    budget = dict(with_confidence=confidence is not None, label_dtype=ldt, max_memory=max_memory,
                  fixed_bytes=fixed, out_pixel_bytes=out_pixel_bytes)
    tile_pixels(x, ax, be, **budget)  # raises before any file is created

    outputs = []
    bar = None
    try:
        for path, ext, which in ((labels, lab_ext, "labels"), (confidence, conf_ext, "confidence")):
            if path is None:
                continue
            if ext == ".npy":
                dt = ldt if which == "labels" else conf_dt
                outputs.append(_NpyOutput(path, rshape, dt, which))
            else:
                outputs.append(_PngOutput(path, rshape, which, C=C, palette=pal, style=confidence_style))
        total = _layout.size_of(rshape)
        bar = progress(total) if progress is not None else None
        stats = classify_array(x, ax, outputs, temperature=temperature, backend=be,
                               progress=bar, **budget)
        for out in outputs:
            out.finish()
        for out in outputs:
            out.commit()
    except BaseException:
        for out in outputs:
            out.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return {"shape": tuple(x.shape), "axis": ax, "classes": C, "dtype": str(x.dtype),
            "pixels": stats["pixels"], "tiles": stats["tiles"], "class_counts": stats["class_counts"],
            "seconds": time.perf_counter() - t0, "outputs": [o.path for o in outputs],
            "labels_dtype": str(ldt), "backend": be}
