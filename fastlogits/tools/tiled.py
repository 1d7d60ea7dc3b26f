"""Classify logits files of any size with bounded memory (``fastlogits classify``).

A ``.npy`` input is cut into tiles along its non-class axes, slowest-varying
axis first, so a tile is one contiguous slab of the file whenever the layout
allows (H×W×C: a band of rows; N×C×H×W: a band of rows of every class
plane). Each tile is read with ``pread`` into one reusable buffer (never
through a memory map: the kernel maps a file's page cache into a process in
pieces of up to 2 MiB, all counted in its RSS, so mapped reads of a
channels-first tile's C planes cost far more than the tile), converted to
native byte order in place, and goes through :func:`fastlogits.classify`
(or :func:`fastlogits.argmax` when no confidence is asked for) into small
reusable buffers, and from there into the outputs:

- ``.npy``: header and tiles written with ``pwrite`` into an exclusive
  temporary in the output's directory, renamed over the final name only at
  the end (:class:`fastlogits.tools.files.AtomicOutput`);
- ``.png``: a palette image of the labels or a heat map of the confidence;
  the (one byte a pixel) index image is held in memory, then encoded.

Everything the loop allocates is counted against ``max_memory`` (see
:func:`tile_pixels`); what it bounds is the process's memory above what
importing fastlogits and compiling its kernels takes. A failure or
KeyboardInterrupt removes every temporary file: nothing is ever written
half-way.
"""

import os
import re
import time
import zipfile

import numpy as np

from fastlogits import preflight
from fastlogits.tools import files, palettes, png

__all__ = ["parse_size", "format_size", "narrowest_label_dtype", "open_logits", "plan_tiles",
           "tile_pixels", "classify_array", "classify_into", "classify_file"]

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
    while preflight.size_of(sizes[j + 1:]) > max_pixels:
        j += 1
    below = preflight.size_of(sizes[j + 1:])
    step = max(1, max_pixels // below)
    for outer in np.ndindex(*sizes[:j]):
        idx = list(full)
        for d, i in zip(order[:j], outer):
            idx[d] = slice(i, i + 1)
        for s0 in range(0, sizes[j], step):
            idx[order[j]] = slice(s0, min(s0 + step, sizes[j]))
            yield tuple(idx)


def _runs(shape, idx, itemsize):
    """The contiguous pieces of the block ``idx`` of a C-ordered array.

    Parameters
    ----------
    shape : tuple of int
        The whole array's shape (C order, as stored in a file).
    idx : tuple of slice
        One step-1 slice per axis.

    Yields
    ------
    (offset, nbytes)
        Byte offset in the whole array and length of each piece, in the
        order of the block's own C-ordered copy (pieces follow each other
        there).
    """
    ranges = [range(*s.indices(n)) for s, n in zip(idx, shape)]
    sizes = [len(r) for r in ranges]
    if 0 in sizes:
        return
    strides = [itemsize * preflight.size_of(shape[d + 1:]) for d in range(len(shape))]
    k = len(shape)
    while k > 0 and sizes[k - 1] == shape[k - 1]:  # trailing axes taken whole
        k -= 1
    k = max(0, k - 1)  # ... and the partial axis before them: one piece
    nbytes = itemsize * preflight.size_of(sizes[k:])
    base = sum(st * r.start for st, r in zip(strides, ranges))
    for outer in np.ndindex(*sizes[:k]):
        yield base + sum(i * st for i, st in zip(outer, strides)), nbytes


def _block_shape(shape, idx):
    return tuple(len(range(*s.indices(n))) for s, n in zip(idx, shape))


def _native(dtype):
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


class _FileReader:
    """Tiles of a memory-mapped ``.npy`` read with ``pread`` into one buffer,
    in native byte order; the map only tells the layout (nothing of it is
    touched, so no page of the file is mapped into the process)."""

    def __init__(self, x, max_bytes):
        self.f = open(x.filename, "rb", buffering=0)
        self.offset, self.shape, self.dtype = x.offset, x.shape, x.dtype
        # a Fortran-ordered file is the C-ordered file of the transposed array
        self.fortran = x.ndim > 1 and not x.flags.c_contiguous
        self.buf = np.empty(max_bytes, np.uint8)

    def __call__(self, idx):
        shape, idx = (self.shape[::-1], idx[::-1]) if self.fortran else (self.shape, idx)
        bshape = _block_shape(shape, idx)
        nbytes = preflight.size_of(bshape) * self.dtype.itemsize
        mv = memoryview(self.buf[:nbytes])
        pos = 0
        for off, n in _runs(shape, idx, self.dtype.itemsize):
            _read_exact(self.f, mv[pos:pos + n], self.offset + off)
            pos += n
        tile = self.buf[:nbytes].view(self.dtype).reshape(bshape)
        if self.dtype != _native(self.dtype):  # e.g. big-endian '>f4': swapped in place
            tile = tile.byteswap(inplace=True).view(_native(self.dtype))
        return tile.T if self.fortran else tile

    def close(self):
        self.f.close()


def _read_exact(f, mv, offset):
    f.seek(offset)
    while len(mv):
        n = f.readinto(mv)
        if not n:
            raise ValueError(f"input {f.name!r} ends early (truncated .npy file?)")
        mv = mv[n:]


class _MemoryReader:
    """Tiles of an in-memory array: views, or native copies in one buffer."""

    def __init__(self, x, max_bytes):
        self.x, self.buf = x, None
        self.max_bytes = max_bytes

    def __call__(self, idx):
        src = self.x[idx]
        if src.flags.c_contiguous and src.dtype == _native(src.dtype):
            return src
        if self.buf is None:
            self.buf = np.empty(self.max_bytes, np.uint8)
        dt = _native(src.dtype)
        tile = self.buf[:src.size * dt.itemsize].view(dt).reshape(src.shape)
        np.copyto(tile, src)  # gathers and converts to native byte order
        return tile

    def close(self):
        self.buf = None


def _costs(x, axis, be, with_confidence, label_dtype, conf_dtype):
    """Bytes per pixel of the tiled loop's buffers. The rest is bounded
    whatever the tile (chunks of :data:`_CHUNK_PIXELS`, the kernels'
    scratch): the allowance of a few MiB the --max-memory help states."""
    C = x.shape[axis]
    score = x.dtype.itemsize
    per_pixel = C * score  # the tile buffer (pread, gather or byte-order conversion)
    if isinstance(x, np.memmap) and x.ndim > 1 and not x.flags.c_contiguous:
        per_pixel += C * score  # a Fortran-ordered file's tile, made C-contiguous
    if be == "numpy":
        per_pixel += C * _NUMPY_BYTES_PER_SCORE + 16
    elif be == "cuda":
        per_pixel += C * score + 16
    per_pixel += label_dtype.itemsize + (conf_dtype.itemsize if with_confidence else 0)
    if be == "cpu" and x.dtype.itemsize == 2:
        per_pixel += C * 4 + 8  # float32 copies of (at most) the tile, made by the API in chunks
    return per_pixel


#: Pixels counted (np.bincount's intp temporary) or turned into confidence
#: levels at once: the temporaries stay small whatever the tile.
_CHUNK_PIXELS = 1 << 15


def tile_pixels(x, axis, backend, *, with_confidence=True, label_dtype=None, max_memory=1 << 30,
                fixed_bytes=0):
    """Pixels per tile that keep :func:`classify_array` within ``max_memory``.

    Raises
    ------
    ValueError
        If not even one pixel fits.
    """
    C = x.shape[axis]
    label_dtype = np.dtype(label_dtype or narrowest_label_dtype(C))
    conf_dtype = preflight.compute_dtype(_native(x.dtype))
    per_pixel = _costs(x, axis, backend, with_confidence, label_dtype, conf_dtype)
    room = max_memory - fixed_bytes
    if room < per_pixel:
        need = fixed_bytes + per_pixel
        what = f"one pixel of {C} {x.dtype} classes"
        if fixed_bytes:
            what += f" plus {format_size(fixed_bytes)} for the data held whole in memory"
        raise ValueError(f"--max-memory {format_size(max_memory)} is too small: {what} needs "
                         f"about {format_size(need)}")
    return int(min(room // per_pixel, max(1, MAX_TILE_BYTES // (C * x.dtype.itemsize))))


def _count(counts, labels):
    """Add the labels' histogram to ``counts`` a chunk at a time (np.bincount
    makes an intp copy of what it counts)."""
    flat = labels.reshape(-1)
    C = len(counts)
    for i in range(0, flat.size, _CHUNK_PIXELS):
        counts += np.bincount(flat[i:i + _CHUNK_PIXELS], minlength=C)[:C]


def classify_array(x, axis, sinks, *, temperature=1.0, backend="cpu", with_confidence=True,
                   label_dtype=None, max_memory=1 << 30, fixed_bytes=0, progress=None):
    """Classify ``x`` tile by tile, handing each tile's results to ``sinks``.

    Parameters
    ----------
    x : ndarray or np.memmap
        Logits (validated by the caller), class axis ``axis`` (>= 0); any
        byte order. A memory map is read with ``pread``, never through the map.
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
        by the caller (see :func:`tile_pixels`).
    progress : object with ``update(n)``, optional
        Told the number of pixels of each finished tile.

    Returns
    -------
    dict
        ``tiles``, ``pixels``, ``class_counts`` (int64 (C,)).
    """
    C = x.shape[axis]
    label_dtype = np.dtype(label_dtype or narrowest_label_dtype(C))
    conf_dtype = preflight.compute_dtype(_native(x.dtype))
    max_pixels = tile_pixels(x, axis, backend, with_confidence=with_confidence,
                             label_dtype=label_dtype, max_memory=max_memory,
                             fixed_bytes=fixed_bytes)
    # reusable buffers, sized for the largest tile (np.empty: pages appear when used)
    labels_buf = np.empty(max_pixels, label_dtype)
    conf_buf = np.empty(max_pixels, conf_dtype) if with_confidence else None
    mapped = isinstance(x, np.memmap) and getattr(x, "filename", None)
    read = (_FileReader if mapped else _MemoryReader)(x, max_pixels * C * x.dtype.itemsize)
    counts = np.zeros(C, np.int64)
    tiles = pixels = 0
    try:
        for idx in plan_tiles(x.shape, x.strides, axis, max_pixels):
            tile = read(idx)
            rshape = preflight.reduced_shape(tile.shape, axis)
            n = preflight.size_of(rshape)
            labels = labels_buf[:n].reshape(rshape)
            conf = conf_buf[:n].reshape(rshape) if with_confidence else None
            classify_into(tile, axis, labels, conf, temperature, backend)
            _count(counts, labels)
            ridx = idx[:axis] + idx[axis + 1:]
            for sink in sinks:
                sink(ridx, labels, conf)
            tiles += 1
            pixels += n
            if progress is not None:
                progress.update(n)
    finally:
        read.close()
    return {"tiles": tiles, "pixels": pixels, "class_counts": counts}


def classify_into(x, axis, labels, conf, temperature, backend):
    """``x``'s labels (and confidence, unless ``conf`` is None) into the
    host buffers ``labels`` and ``conf`` (x's shape without the class axis).

    One call of :func:`fastlogits.classify` (:func:`fastlogits.argmax`
    without confidence) on a resolved ``backend``; the CUDA backend's
    host results are copied into the buffers.
    """
    from fastlogits import api

    if x.ndim > 1 and not x.flags.c_contiguous:  # e.g. a Fortran-ordered file's tile
        x = np.ascontiguousarray(x)
    if backend == "cuda":  # host tile -> device -> host; results copied into the buffers
        if conf is not None:
            lab, cf = api.classify(x, axis, temperature=temperature, backend="cuda")
            labels[...], conf[...] = lab, cf
        else:
            labels[...] = api.argmax(x, axis, backend="cuda")
    elif conf is not None:
        api.classify(x, axis, temperature=temperature, out=(labels, conf), backend=backend)
    else:
        api.argmax(x, axis, out=labels, backend=backend)


# --------------------------------------------------------------------------
# outputs: written under an exclusive temporary, renamed at the end
# --------------------------------------------------------------------------

class _NpyOutput:
    """Labels or confidence as ``.npy``: the header, then each tile written
    with ``pwrite`` at its place (no memory map: its pages would count in RSS)."""

    def __init__(self, path, shape, dtype, which, option):
        self.path, self.which, self.shape = os.fspath(path), which, shape
        self.itemsize = np.dtype(dtype).itemsize
        self.out = files.AtomicOutput(path, option)
        try:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                      "fortran_order": False, "shape": tuple(shape)}
            with self.out._errors():
                try:
                    np.lib.format.write_array_header_1_0(self.out.file, header)
                except ValueError:  # a header over 64 KiB
                    np.lib.format.write_array_header_2_0(self.out.file, header)
                self.out.file.flush()
                self.data_offset = self.out.file.tell()
                # the full size now: a sparse file, filled in by the tiles
                os.ftruncate(self.out.file.fileno(),
                             self.data_offset + preflight.size_of(shape) * self.itemsize)
        except BaseException:
            self.out.abort()
            raise

    def __call__(self, idx, labels, conf):
        data = np.ascontiguousarray(labels if self.which == "labels" else conf).reshape(-1)
        mv = memoryview(data.view(np.uint8))
        pos = 0
        for off, n in _runs(self.shape, idx, self.itemsize):
            self.out.pwrite(mv[pos:pos + n], self.data_offset + off)
            pos += n

    def finish(self):
        """Everything is written already."""

    def commit(self):
        self.out.commit()

    def abort(self):
        self.out.abort()


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


class _PngOutput:
    """A PNG of labels (palette colours) or confidence (heat map); the map is
    kept in memory as one index per pixel until :meth:`finish` encodes it."""

    def __init__(self, path, rshape, which, option, C=None, palette=None, style="heat"):
        self.path, self.which = os.fspath(path), which
        self.image_shape = _png_shape(rshape, self.path)
        if which == "labels":
            self.palette = palette if palette is not None else palettes.for_classes(C)
            idx_dtype = np.uint8 if C <= 256 else narrowest_label_dtype(C)
        else:
            self.palette = palettes.confidence_lut(style)
            idx_dtype = np.uint8
        self.index = np.empty(rshape, idx_dtype)
        self.out = files.AtomicOutput(path, option)  # now: an unwritable place fails first

    @staticmethod
    def map_bytes(rshape, which, C):
        n = preflight.size_of(rshape)
        itemsize = 1 if which != "labels" or C <= 256 else narrowest_label_dtype(C).itemsize
        return n * itemsize

    @staticmethod
    def encoder_bytes(image_shape, which, C):
        rgb = which != "labels" or C > 256
        itemsize = 1 if which != "labels" or C <= 256 else narrowest_label_dtype(C).itemsize
        return png.encoder_bytes(*image_shape, 3 if rgb else 1, itemsize)

    def __call__(self, idx, labels, conf):
        if self.which == "labels":
            self.index[idx] = labels
        else:
            palettes.confidence_levels(conf, out=self.index[idx + (Ellipsis,)],
                                       chunk=_CHUNK_PIXELS)

    def finish(self):
        """Encode the map into the temporary."""
        img = self.index.reshape(self.image_shape)
        with self.out._errors():
            if self.which == "labels" and len(self.palette) <= 256:
                png.write_indexed(self.out.file, img, self.palette)
            else:  # more than 256 colours: RGB, coloured block by block
                blocks = (self.palette[b] for b in png._row_blocks(img))
                png.write_png(self.out.file, img.shape[0], img.shape[1], "RGB", blocks)
        self.index = None

    def commit(self):
        self.out.commit()

    def abort(self):
        self.index = None
        self.out.abort()


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------

def _check_output_path(path, option):
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
        Bound, in bytes (see :func:`parse_size`), on the memory the command
        takes above what importing fastlogits and compiling its kernels
        takes: the tile buffers, an ``.npz`` array, the PNG maps and their
        encoder. The input's page cache is not counted (it is never mapped).
    labels_dtype : str or dtype, optional
        Integer dtype of ``.npy`` labels (default the narrowest unsigned).
    palette : str, optional
        Palette file for ``.png`` labels (see :func:`fastlogits.tools.palettes.load`).
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
    t0 = time.perf_counter()
    input_path = os.fspath(input_path)
    if labels is None and confidence is None:
        raise ValueError("nothing to write: give --labels OUT and/or --confidence OUT (.npy or .png)")
    if not os.path.exists(input_path):
        raise ValueError(f"input {input_path!r} does not exist")
    lab_ext = _check_output_path(labels, "--labels") if labels is not None else None
    conf_ext = _check_output_path(confidence, "--confidence") if confidence is not None else None
    # no output may name a file read (by name, hard link or symlink), nor another output
    files.check_distinct([("--labels", labels), ("--confidence", confidence)],
                          [("input", input_path), ("--palette", palette)])
    if labels_dtype is not None and lab_ext != ".npy":
        raise ValueError("--labels-dtype applies to .npy labels only")
    if palette is not None and lab_ext != ".png":
        raise ValueError("--palette applies to .png labels only")
    preflight.check_temperature(temperature)
    be = preflight.resolve_backend(backend)

    x, in_memory = open_logits(input_path, key)
    # any byte order: tiles are converted to native as they are read
    preflight.check_logits_dtype(_native(x.dtype), name=f"input {input_path!r}")
    try:
        ax = preflight.normalize_axis(axis, x.ndim, name="--axis")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc} (input {input_path!r} has shape {x.shape})") from None
    if x.shape[ax] == 0:
        raise ValueError(f"input {input_path!r} has no classes: axis {ax} of shape {x.shape} is empty")
    C = x.shape[ax]
    rshape = preflight.reduced_shape(x.shape, ax)
    if labels_dtype is not None:
        try:
            ldt = np.dtype(labels_dtype)
        except TypeError:
            raise ValueError(f"--labels-dtype {labels_dtype!r} is not a NumPy dtype") from None
        preflight.check_label_dtype(ldt, C, name="--labels-dtype")
    else:
        ldt = narrowest_label_dtype(C)
    pal = None
    if palette is not None:
        pal = palettes.load(palette, name="--palette")
        if len(pal) < C:
            raise ValueError(f"--palette {palette!r} has {len(pal)} colours, but the map has {C} classes")
    # PNG maps live in memory until encoded: they count against max_memory.
    fixed, encoder = in_memory, 0
    for ext, which in ((lab_ext, "labels"), (conf_ext, "confidence")):
        if ext == ".png":
            shape2 = _png_shape(rshape, labels if which == "labels" else confidence)
            fixed += _PngOutput.map_bytes(rshape, which, C)
            encoder = max(encoder, _PngOutput.encoder_bytes(shape2, which, C))
    fixed += encoder  # PNGs are encoded one at a time, after the tiles
    if fixed > max_memory:
        what = "the .npz array" if in_memory else "a PNG of the map"
        raise ValueError(f"{what} needs {format_size(fixed)} in memory, more than --max-memory "
                         f"{format_size(max_memory)}; use .npy files (processed in tiles) "
                         "or raise --max-memory")

    conf_dt = preflight.compute_dtype(_native(x.dtype))
    budget = dict(with_confidence=confidence is not None, label_dtype=ldt, max_memory=max_memory,
                  fixed_bytes=fixed)
    tile_pixels(x, ax, be, **budget)  # raises before any file is created

    outputs = []
    bar = None
    try:
        for path, ext, which in ((labels, lab_ext, "labels"), (confidence, conf_ext, "confidence")):
            if path is None:
                continue
            option = f"--{which}"
            if ext == ".npy":
                dt = ldt if which == "labels" else conf_dt
                outputs.append(_NpyOutput(path, rshape, dt, which, option))
            else:
                outputs.append(_PngOutput(path, rshape, which, option, C=C, palette=pal,
                                          style=confidence_style))
        total = preflight.size_of(rshape)
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
