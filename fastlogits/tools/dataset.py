"""Classify a dataset of maps, one task per map, resumably (``fastlogits classify DIR``).

Inputs (``INPUT``, a directory):

- a directory of ``.npy`` files: each ``NAME.npy`` in it (not hidden, not
  in subdirectories) is a map named ``NAME``; ``--axis`` is each file's
  class axis;
- a zarr store (a directory holding ``zarr.json``, ``.zgroup`` or
  ``.zarray``, or named ``*.zarr``), either a group, each of whose arrays
  (not subgroups) is a map named by its key, ``--axis`` being each
  array's class axis, or one array whose leading axis indexes the maps,
  named ``0``, ``1``, ... (zero-padded), ``--axis`` being the class axis
  of the whole array (1 for N×C×H×W, -1 for N×H×W×C; never 0).

Outputs (``--labels OUT``, ``--confidence OUT``): ``OUT`` ending in
``.zarr`` is a zarr group with one array per map, named as the map;
otherwise a directory with one ``NAME.npy`` per map.

Runs: in this process, a plain loop over the maps (all Numba threads on
each); ``--workers N``, a ``dask.distributed.LocalCluster`` of N worker
processes of one thread each; ``--scheduler ADDRESS``, an existing
cluster (its workers need fastlogits and, for zarr, zarr). A task runs
a few maps in turn (:func:`batches`: about 1 GiB of logits, every dask
thread still getting 4 tasks or more), each map by :func:`run_job`: the
worker reads the map (a memory map of the ``.npy``, or of the zarr chunk
file where that file is the map's raw bytes, :func:`mapped_chunk`; else
zarr reads it), classifies it with :func:`fastlogits.classify` with as
many Numba threads as its host's cores shared among the dask threads
there, and writes its outputs.

Resuming: each output records the run's settings (``OUT/.fastlogits.json``,
or the zarr group's attribute ``"fastlogits"``), written before any map;
a later run with other settings (input, axis, temperature, labels dtype)
is refused, so an output never mixes two runs. A map's ``.npy`` is written
under an exclusive temporary and renamed when complete; a map's zarr array
is written, then marked complete (its attribute ``"fastlogits"``). A map
whose outputs are there, complete (renamed or marked) and of the right
shape and dtype, is finished and skipped; any other (missing, unmarked,
truncated, unreadable) is computed again.
"""

import json
import math
import os
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fastlogits import preflight
from fastlogits.tools import files
from fastlogits.tools.tiled import _native, classify_into, narrowest_label_dtype, open_logits

__all__ = ["MapSource", "NpyDirOutput", "ZarrOutput", "Job", "is_zarr_store", "open_dataset",
           "open_output", "plan", "run_job", "classify_dataset", "usable_cores",
           "threads_per_worker", "set_task_threads", "local_cluster"]

#: The settings record of a directory output.
RECORD = ".fastlogits.json"
#: The zarr attribute of an output group (settings) and of a map's array (completion).
ATTR = "fastlogits"
#: Version of the record's layout.
RECORD_FORMAT = 1
#: How long ``--scheduler`` waits for the scheduler to answer.
CONNECT_TIMEOUT = "10s"
#: Names of the temporaries :class:`fastlogits.tools.files.AtomicOutput` makes for ``.npy`` outputs.
_TEMP_NPY = re.compile(r"^\..+\.fastlogits-tmp\.npy$")


def usable_cores():
    """The cores this process may run on (its affinity; the CPU count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError("zarr stores need zarr: pip install 'zarr>=3,<4'") from None
    return zarr


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def is_zarr_store(path):
    """Whether the directory ``path`` is (or is named as) a zarr store."""
    path = os.fspath(path)
    if os.path.basename(os.path.normpath(path)).lower().endswith(".zarr"):
        return True
    return any(os.path.exists(os.path.join(path, f)) for f in ("zarr.json", ".zgroup", ".zarray"))


@dataclass(frozen=True)
class MapSource:
    """One map of a dataset: where it is and what it is (picklable).

    ``kind`` is ``"npy"`` (``key`` the file name in ``root``),
    ``"zarr-group"`` (``key`` the array's key in the group ``root``) or
    ``"zarr-stack"`` (``key`` the index along the leading axis of the
    array ``root``). ``shape`` and ``axis`` are the map's own.
    """

    kind: str
    root: str
    key: object
    name: str
    shape: tuple
    dtype: str
    axis: int

    @property
    def nbytes(self):
        """The map's size in bytes."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def path(self):
        """The map's file or array (for messages and the input checks)."""
        if self.kind == "zarr-stack":
            return f"{self.root}[{self.key}]"
        return os.path.join(self.root, self.key)

    def read(self):
        """The map as a NumPy array (a memory map for ``.npy``), native byte order."""
        if self.kind == "npy":
            x = np.load(self.path, mmap_mode="r", allow_pickle=False)
        else:
            zarr = _zarr()
            if self.kind == "zarr-group":
                arr, lead = zarr.open_array(self.root, path=self.key, mode="r"), ()
            else:
                arr, lead = zarr.open_array(self.root, mode="r"), (self.key,)
            x = mapped_chunk(arr, lead)
            if x is None:
                x = arr[lead] if lead else arr[...]
        x = np.asarray(x)
        if x.shape != self.shape:
            raise ValueError(f"map {self.path!r} changed: shape {x.shape}, was {self.shape}")
        if x.dtype != _native(x.dtype):
            x = x.astype(_native(x.dtype))
        return x


def mapped_chunk(arr, lead):
    """The map ``arr[lead]`` (``lead`` ``()`` for the whole array, ``(i,)``
    for map i of a stack) as a read-only memory map of its chunk file,
    where that file holds exactly the map's bytes in C order: a local
    store, the map one chunk, no compression, filters, sharding or
    transpose (zarr v3: the ``bytes`` codec alone; v2: no compressor, no
    filters, order "C"). None otherwise, or where the chunk file is missing
    (a fill-value chunk) or not the map's size: zarr reads those.

    zarr's own read of such a chunk copies it several times (a 159 MB map:
    about 340 ms, against 16 ms for fastlogits to classify it); the map
    gives the kernels the page cache's pages instead."""
    store, meta = arr.store, arr.metadata
    if not isinstance(store, _zarr().storage.LocalStore):
        return None
    root = store.root
    shape = tuple(arr.shape[len(lead):])
    chunks = getattr(getattr(meta, "chunk_grid", None), "chunk_shape", None)
    if chunks is None or tuple(chunks) != (1,) * len(lead) + shape:
        return None
    if meta.zarr_format == 3:
        codecs = tuple(meta.codecs)
        if len(codecs) != 1 or type(codecs[0]).__name__ != "BytesCodec":
            return None
        endian = getattr(codecs[0].endian, "value", None)
        dtype = np.dtype(arr.dtype)
        if endian is not None and dtype.itemsize > 1:
            dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    elif meta.zarr_format == 2:
        if meta.compressor is not None or meta.filters or meta.order != "C":
            return None
        dtype = np.dtype(arr.dtype)
    else:
        return None
    if dtype.hasobject or dtype.kind not in "fiub":
        return None
    key = meta.encode_chunk_key(tuple(lead) + (0,) * len(shape))
    path = os.path.join(str(root), *[p for p in arr.path.split("/") if p], *key.split("/"))
    try:
        if os.path.getsize(path) != dtype.itemsize * math.prod(shape):
            return None
        return np.memmap(path, dtype, "r", shape=shape)
    except (OSError, ValueError):  # no chunk file (fill values), unreadable, empty: zarr decides
        return None


def _check_map(where, shape, dtype, axis):
    """The map's class axis (normalized); ValueError naming ``where``."""
    preflight.check_logits_dtype(_native(np.dtype(dtype)), name=f"input {where!r}")
    try:
        ax = preflight.normalize_axis(axis, len(shape), name="--axis")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc} (input {where!r} has shape {tuple(shape)})") from None
    if shape[ax] == 0:
        raise ValueError(f"input {where!r} has no classes: axis {ax} of shape {tuple(shape)} is empty")
    return ax


def _npy_maps(root, shown, axis):
    names = sorted(f for f in os.listdir(root)
                   if f.endswith(".npy") and not f.startswith(".")
                   and os.path.isfile(os.path.join(root, f)))
    if not names:
        raise ValueError(f"input {shown!r} holds no .npy files (nor is it a zarr store)")
    maps = []
    for f in names:
        path = os.path.join(shown, f)
        x, in_memory = open_logits(os.path.join(root, f))
        if in_memory:
            raise ValueError(f"input {path!r} is a .npz archive named .npy; a dataset's maps are "
                             ".npy files")
        shape, dtype = tuple(x.shape), x.dtype.str
        del x  # the header is all the client needs
        ax = _check_map(path, shape, dtype, axis)
        maps.append(MapSource("npy", root, f, f[:-len(".npy")], shape, dtype, ax))
    return maps


def _zarr_maps(root, shown, axis):
    zarr = _zarr()
    try:
        node = zarr.open(root, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
        raise ValueError(f"cannot read input {shown!r} as a zarr store: {exc}") from None
    if isinstance(node, zarr.Array):
        if node.ndim < 2:
            raise ValueError(f"input {shown!r} is a zarr array of shape {node.shape}: its leading "
                             "axis indexes the maps, so it needs 2 axes or more")
        ax = _check_map(shown, node.shape, node.dtype.str, axis)
        if ax == 0:
            raise ValueError(f"--axis {axis}: axis 0 of the zarr array {shown!r} (shape {node.shape}) "
                             "indexes the maps; give the class axis of the whole array "
                             "(1 for N,C,H,W; -1 for N,H,W,C)")
        n = node.shape[0]
        width = len(str(max(0, n - 1)))
        shape = tuple(node.shape[1:])
        return [MapSource("zarr-stack", root, i, f"{i:0{width}d}", shape, node.dtype.str, ax - 1)
                for i in range(n)]
    maps = []
    for key, arr in sorted(node.arrays(), key=lambda kv: kv[0]):
        where = os.path.join(shown, key)
        ax = _check_map(where, arr.shape, arr.dtype.str, axis)
        maps.append(MapSource("zarr-group", root, key, key, tuple(arr.shape), arr.dtype.str, ax))
    if not maps:
        raise ValueError(f"input {shown!r} is a zarr group with no arrays")
    return maps


def open_dataset(path, axis):
    """The maps of a directory of ``.npy`` files or of a zarr store.

    Returns
    -------
    kind : str
        ``"npy"`` or ``"zarr"``.
    maps : list of MapSource
        In name order, every map checked (dtype, axis, classes).

    Raises
    ------
    ValueError
        An unreadable store or file, a map of a bad dtype or axis.
    """
    shown = os.fspath(path)
    root = os.path.abspath(shown)  # the tasks may run elsewhere
    if not os.path.isdir(root):
        raise ValueError(f"input {shown!r} is not a directory")
    if is_zarr_store(root):
        return "zarr", _zarr_maps(root, shown, axis)
    return "npy", _npy_maps(root, shown, axis)


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------

def _same_record(a, b):
    return json.loads(json.dumps(a, sort_keys=True)) == json.loads(json.dumps(b, sort_keys=True))


def _record_mismatch(option, path, old, new):
    diff = [f"{k} {old.get(k)!r} (this run: {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return ValueError(f"{option} {path!r} holds the maps of another run ({'; '.join(diff)}); "
                      "choose another output, or remove it to start again")


@dataclass(frozen=True)
class NpyDirOutput:
    """A directory of ``NAME.npy`` maps (picklable; written by the tasks)."""

    root: str  # absolute: the tasks may run elsewhere
    which: str  # "labels" or "confidence"
    option: str
    shown: str  # as the user gave it, for messages

    def path(self, name):
        return os.path.join(self.root, name + ".npy")

    def check(self, record):
        """Raise unless this output can take (or resume) a run of ``record``."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ValueError(f"{self.option} {self.shown!r} is a file; a dataset's output is a "
                             "directory or a .zarr store")
        if not os.path.isdir(self.root):
            return
        rec = os.path.join(self.root, RECORD)
        if os.path.exists(rec):
            try:
                with open(rec) as f:
                    old = json.load(f)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.option} {self.shown!r}: cannot read {RECORD}: {exc}") from None
            if not _same_record(old, record):
                raise _record_mismatch(self.option, self.shown, old, record)
        elif any(not _TEMP_NPY.match(f) for f in os.listdir(self.root)):
            raise ValueError(f"{self.option} {self.shown!r} is a directory that fastlogits did not "
                             f"write (no {RECORD}); choose a new or empty directory")

    def prepare(self, record):
        """Create the directory and its record; remove temporaries of an interrupted run."""
        with _errors(self.option, self.shown):
            os.makedirs(self.root, exist_ok=True)
        if not os.path.exists(os.path.join(self.root, RECORD)):
            files.write_atomic(os.path.join(self.root, RECORD),
                               lambda f: f.write(json.dumps(record, indent=1).encode()), self.option)
        self.remove_temporaries()

    def remove_temporaries(self):
        """Remove what a killed task left: only this writer's temporaries' names."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for f in names:
            if _TEMP_NPY.match(f):
                try:
                    os.unlink(os.path.join(self.root, f))
                except OSError:
                    pass

    def finished(self, name, shape, dtype):
        """Whether the map's file is there, whole, of this shape and dtype."""
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                fshape, fortran, fdtype = read(f)
                offset = f.tell()
            size = os.path.getsize(path)
        except (OSError, ValueError, EOFError):
            return False
        return (tuple(fshape) == tuple(shape) and fdtype == np.dtype(dtype) and not fortran
                and size == offset + preflight.size_of(shape) * np.dtype(dtype).itemsize)

    def write(self, name, arr):
        files.write_atomic(self.path(name),
                           lambda f: np.lib.format.write_array(f, arr, allow_pickle=False),
                           f"{self.option} map")

    def describe(self):
        return f"{self.option} {self.shown!r} (a directory of .npy)"


@dataclass(frozen=True)
class ZarrOutput:
    """A zarr group of one array per map (picklable; written by the tasks)."""

    root: str
    which: str
    option: str
    shown: str

    def check(self, record):
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ValueError(f"{self.option} {self.shown!r} is a file, not a zarr store")
        if not os.path.isdir(self.root) or not os.listdir(self.root):
            return
        zarr = _zarr()
        try:
            group = zarr.open_group(self.root, mode="r")
            old = group.attrs.get(ATTR)
        except Exception:  # noqa: BLE001 - not a group, or not zarr at all
            old = None
        if old is None:
            raise ValueError(f"{self.option} {self.shown!r} is not a zarr group that fastlogits wrote "
                             f"(no attribute {ATTR!r}); choose a new store")
        if not _same_record(old, record):
            raise _record_mismatch(self.option, self.shown, old, record)

    def prepare(self, record):
        zarr = _zarr()
        with _errors(self.option, self.shown):
            group = zarr.open_group(self.root, mode="a")
            if ATTR not in group.attrs:
                group.attrs[ATTR] = record

    def remove_temporaries(self):
        """Nothing to remove: an unmarked array is computed again."""

    def _group(self, mode):
        return _zarr().open_group(self.root, mode=mode)

    def finished(self, name, shape, dtype, group=None):
        try:
            arr = (group or self._group("r"))[name]
            done = (arr.attrs.get(ATTR) or {}).get("complete") is True
            return done and tuple(arr.shape) == tuple(shape) and arr.dtype == np.dtype(dtype)
        except Exception:  # noqa: BLE001 - missing, not an array, unreadable metadata
            return False

    def write(self, name, arr):
        with _errors(f"{self.option} map {name!r} in", self.shown):
            group = self._group("r+")
            out = group.create_array(name, shape=arr.shape, dtype=arr.dtype, overwrite=True)
            out[...] = arr
            out.attrs[ATTR] = {"complete": True}  # last: an unmarked array is unfinished

    def describe(self):
        return f"{self.option} {self.shown!r} (a zarr group)"


class _errors:
    """OSError -> WriteError naming the output as the user gave it."""

    def __init__(self, what, path):
        self.what, self.path = what, path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, OSError) and not isinstance(exc, files.WriteError):
            raise files.WriteError(f"cannot write {self.what} {self.path!r}: "
                                   f"{exc.strerror or exc}") from None
        return False


def open_output(path, which):
    """The output ``path`` of ``--labels`` / ``--confidence``: a zarr group
    (a name ending in ``.zarr``) or a directory of ``.npy``."""
    option = f"--{which}"
    path = os.fspath(path)
    root = os.path.abspath(path)
    ext = os.path.splitext(os.path.normpath(path))[1].lower()
    if ext in (".npy", ".png", ".npz"):
        raise ValueError(f"{option} {path!r}: a dataset's output is a directory or a .zarr store, "
                         f"one map in each, not a {ext} file")
    parent = os.path.dirname(root)
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK) and not os.path.isdir(root):
        raise ValueError(f"{option} {path!r}: directory {parent!r} is not writable")
    return (ZarrOutput if ext == ".zarr" else NpyDirOutput)(root, which, option, path)


def _inside(a, b):
    """Whether the resolved path ``a`` is ``b`` or inside it."""
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _check_paths(input_path, maps, outputs):
    """No output is, holds or lies in the input or another output (names
    resolved, links followed), nor names an input file by a (hard) link."""
    real_in = os.path.realpath(input_path)
    reals = [(o, os.path.realpath(o.root)) for o in outputs]
    for o, r in reals:
        if _inside(r, real_in) or _inside(real_in, r):
            raise ValueError(f"{o.option} {o.shown!r} is the input {os.fspath(input_path)!r}, lies in "
                             "it or holds it (by name or link); an output never touches an input: "
                             "choose another place")
    for (o1, r1), (o2, r2) in zip(reals, reals[1:]):
        if _inside(r1, r2) or _inside(r2, r1):
            raise ValueError(f"{o1.option} {o1.shown!r} and {o2.option} {o2.shown!r} overlap")
    if maps and maps[0].kind == "npy":
        ins = [("input", os.path.join(os.fspath(input_path), m.key)) for m in maps]
        for o, r in reals:  # a map file linked from elsewhere into an output
            for _, p in ins:
                if _inside(os.path.realpath(p), r):
                    raise ValueError(f"input {p!r} lies in {o.option} {o.shown!r} (by a link)")
        outs = [(o.option, os.path.join(o.shown, m.name + ".npy")) for o in outputs
                if isinstance(o, NpyDirOutput) for m in maps]
        files.check_distinct(outs, ins)


# --------------------------------------------------------------------------
# the tasks
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One task: a map and the outputs it still lacks (picklable)."""

    source: MapSource
    outputs: tuple  # (NpyDirOutput | ZarrOutput, ...)
    labels_dtype: str
    conf_dtype: str
    temperature: float
    backend: str


def set_task_threads(table=None):
    """Give the calling dask task the Numba threads its worker's share of
    the host allows: ``table[worker address]`` (see :func:`threads_per_worker`),
    else the host's cores over this worker's dask threads. Outside a dask
    worker nothing changes. Numba's count is thread-local: other tasks
    and threads keep theirs.

    Returns
    -------
    int or None
        The thread count set, or None outside a worker.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    import numba

    n = (table or {}).get(worker.address)
    if n is None:
        n = max(1, usable_cores() // max(1, getattr(worker.state, "nthreads", 1)))
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


_buffers = threading.local()


def task_buffer(which, shape, dtype):
    """An output array of ``shape`` and ``dtype`` for a map's results, the
    same memory for every map of this thread while shape and dtype repeat
    (its contents written out before the next map).

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which
    stops glibc from keeping freed blocks of this size: a fresh array per
    map faulted in 10 MB of pages, 2 ms of a Cityscapes map's 11
    (docs/perf/cpu-075)."""
    held = getattr(_buffers, which, None)
    if held is None or held.shape != tuple(shape) or held.dtype != np.dtype(dtype):
        held = np.empty(shape, dtype)
        setattr(_buffers, which, held)
    return held


def run_job(job, threads=None):
    """Read, classify and write one map (the task; also the in-process loop's body).

    Parameters
    ----------
    job : Job
    threads : dict, optional
        Numba threads per worker address (see :func:`threads_per_worker`);
        outside a dask worker the thread count is left as it is.

    Returns
    -------
    dict
        ``name``, ``pixels``, ``seconds``.
    """
    t0 = time.perf_counter()
    set_task_threads(threads)
    backend = preflight.resolve_backend(job.backend)
    src = job.source
    x = src.read()
    rshape = preflight.reduced_shape(x.shape, src.axis)
    want = {o.which for o in job.outputs}
    labels = task_buffer("labels", rshape, job.labels_dtype)
    conf = task_buffer("confidence", rshape, job.conf_dtype) if "confidence" in want else None
    classify_into(x, src.axis, labels, conf, job.temperature, backend)
    del x
    for o in job.outputs:
        o.write(src.name, labels if o.which == "labels" else conf)
    return {"name": src.name, "pixels": preflight.size_of(rshape),
            "seconds": time.perf_counter() - t0}


def plan(maps, outputs, *, temperature=1.0, backend="cpu", labels_dtype=None):
    """The jobs of the maps not finished yet (each with the outputs it lacks)."""
    groups = {}
    for o in outputs:
        if isinstance(o, ZarrOutput) and os.path.isdir(o.root):
            try:
                groups[o] = o._group("r")
            except Exception:  # noqa: BLE001 - an empty directory: nothing finished
                pass
    jobs = []
    for m in maps:
        C = m.shape[m.axis]
        rshape = preflight.reduced_shape(m.shape, m.axis)
        ldt = np.dtype(labels_dtype) if labels_dtype is not None else narrowest_label_dtype(C)
        cdt = preflight.compute_dtype(_native(np.dtype(m.dtype)))
        todo = []
        for o in outputs:
            dt = ldt if o.which == "labels" else cdt
            if isinstance(o, ZarrOutput):
                done = o in groups and o.finished(m.name, rshape, dt, groups[o])
            else:
                done = o.finished(m.name, rshape, dt)
            if not done:
                todo.append(o)
        if todo:
            jobs.append(Job(m, tuple(todo), ldt.str, cdt.str, float(temperature), backend))
    return jobs


# --------------------------------------------------------------------------
# running the jobs
# --------------------------------------------------------------------------

def threads_per_worker(client):
    """Numba threads per worker address: each host's usable cores shared
    among the dask threads of all its workers (no oversubscription)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(usable_cores)
    per_host = defaultdict(int)
    for w in workers.values():
        per_host[w["host"]] += w["nthreads"]
    return {a: max(1, cores[a] // max(1, per_host[w["host"]]))
            for a, w in workers.items() if a in cores}


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("--workers and --scheduler need dask.distributed: "
                         "pip install 'fastlogits[dask]'") from None
    return distributed


def local_cluster(workers, processes=True):
    """The LocalCluster of ``--workers``: ``workers`` processes (threads
    with ``processes=False``) of one dask thread each, no dashboard, quiet logs."""
    import logging

    # no dashboard; the scheduler's HTTP server (always started) on a free
    # port, not 8787, which another cluster may hold (a warning on stderr)
    return _distributed().LocalCluster(n_workers=workers, threads_per_worker=1,
                                       processes=processes, dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": ":0"},
                                       silence_logs=logging.ERROR)


class _Cluster:
    """A dask client: on a :func:`local_cluster` of ``workers``, or connected
    to ``scheduler``; closed on exit."""

    def __init__(self, workers=None, scheduler=None):
        self.workers, self.scheduler = workers, scheduler
        self.client = self.cluster = None

    def __enter__(self):
        Client = _distributed().Client
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ValueError(f"--scheduler {self.scheduler!r}: cannot connect: {exc}") from None
        else:
            self.cluster = local_cluster(self.workers)
            self.client = Client(self.cluster, set_as_default=False)
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            if self.cluster is not None and exc[0] is None:
                # Our own workers, their work done: a heartbeat in flight as
                # the scheduler closes logs a traceback (dask/distributed's
                # known shutdown noise), which would end a clean run.
                try:
                    self.client.run(_quiet_worker_logs)
                except Exception:  # noqa: BLE001 - a worker already gone: nothing to quiet
                    pass
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


def _quiet_worker_logs():
    """Run on each worker of a closing :func:`local_cluster`: its own log
    records below CRITICAL are dropped from now on."""
    import logging

    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


#: The logits one dask task reads, about (a task costs the scheduler and
#: the worker 2-3 ms; a Cityscapes map, 159 MB, classifies in 12 ms on 2
#: cores: docs/perf/cpu-075).
TASK_BYTES = 1 << 30


def batches(jobs, dask_threads, nbytes=lambda job: job.source.nbytes, task_bytes=TASK_BYTES):
    """``jobs`` grouped into tasks of about ``task_bytes`` of logits each
    (``nbytes(job)`` a job's), in order, while every one of the cluster's
    ``dask_threads`` still gets at least 4 tasks (the load balanced,
    progress shown often)."""
    most = max(1, len(jobs) // (4 * max(1, dask_threads)))
    out, cur, size = [], [], 0
    for job in jobs:
        cur.append(job)
        size += nbytes(job)
        if size >= task_bytes or len(cur) >= most:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def run_jobs(jobs, threads=None):
    """:func:`run_job` for each job in turn (one dask task); their results."""
    return [run_job(job, threads) for job in jobs]


def _run_dask(client, jobs, bar):
    from distributed import as_completed

    threads = threads_per_worker(client)
    dask_threads = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
    futures = [client.submit(run_jobs, batch, threads, pure=False,
                             key=f"fastlogits-classify-{batch[0].source.name}-{os.urandom(4).hex()}")
               for batch in batches(jobs, dask_threads)]
    try:
        with client.as_current():  # as_completed finds its client there
            for fut in as_completed(futures):
                done = fut.result()  # a task's error raised here, as it was raised there
                if bar is not None:
                    bar.update(len(done))
    except BaseException:
        client.cancel(futures)
        raise


def classify_dataset(input_path, axis, labels=None, confidence=None, *, temperature=1.0,
                     backend="auto", labels_dtype=None, workers=None, scheduler=None,
                     progress=None):
    """Classify every map of a dataset into per-map outputs, resuming a
    previous run (see the module's description).

    Parameters
    ----------
    input_path : str
        A directory of ``.npy`` files or a zarr store.
    axis : int
        The class axis (of each map; of the whole array for a zarr array of maps).
    labels, confidence : str, optional
        Output directories or ``.zarr`` stores; at least one.
    temperature : float
    backend : {"auto", "cpu", "numpy", "cuda"}
        Resolved in each task (on its worker).
    labels_dtype : str or dtype, optional
        Integer dtype of the labels (default the narrowest unsigned type holding C - 1).
    workers : int, optional
        Run on a LocalCluster of this many processes.
    scheduler : str, optional
        Run on the cluster of this scheduler address.
    progress : callable, optional
        ``progress(total_maps)`` returning an object with ``update(n)`` and ``close()``.

    Returns
    -------
    dict
        ``maps``, ``done`` (computed now), ``skipped`` (finished before),
        ``pixels`` (computed now), ``seconds``, ``runner``, ``outputs``.

    Raises
    ------
    ValueError, TypeError
        Every problem with the arguments, inputs and outputs, before
        anything is written.
    """
    t0 = time.perf_counter()
    if labels is None and confidence is None:
        raise ValueError("nothing to write: give --labels OUT and/or --confidence OUT "
                         "(a directory or a .zarr store)")
    if workers is not None and scheduler is not None:
        raise ValueError("give --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    preflight.check_temperature(temperature)
    preflight.check_backend_name(backend)
    if scheduler is None:  # the backend is this machine's: check it now
        preflight.resolve_backend(backend)
    if labels_dtype is not None:
        try:
            ldt = np.dtype(labels_dtype)
        except TypeError:
            raise ValueError(f"--labels-dtype {labels_dtype!r} is not a NumPy dtype") from None
    outputs = [open_output(p, w) for p, w in ((labels, "labels"), (confidence, "confidence"))
               if p is not None]
    kind, maps = open_dataset(input_path, axis)
    if labels_dtype is not None:
        for m in maps:
            preflight.check_label_dtype(ldt, m.shape[m.axis], name="--labels-dtype")
    _check_paths(input_path, maps, outputs)
    base = {"format": RECORD_FORMAT, "input": os.path.realpath(input_path), "axis": int(axis)}
    records = {}
    for o in outputs:
        rec = dict(base, what=o.which)
        if o.which == "labels":
            rec["labels_dtype"] = None if labels_dtype is None else ldt.str
        else:
            rec["temperature"] = float(temperature)
        records[o] = rec
        o.check(rec)
    jobs = plan(maps, outputs, temperature=temperature, backend=backend, labels_dtype=labels_dtype)
    runner = ("in-process" if workers is None and scheduler is None
              else f"{workers} local worker process(es)" if workers is not None
              else f"scheduler {scheduler}")
    result = {"maps": len(maps), "done": 0, "skipped": len(maps) - len(jobs), "pixels": 0,
              "runner": runner, "input_kind": kind,
              "outputs": [o.describe() for o in outputs]}
    if not jobs:
        result["seconds"] = time.perf_counter() - t0
        return result
    bar = None
    cluster = _Cluster(workers, scheduler) if runner != "in-process" else None
    try:
        if cluster is not None:
            cluster.__enter__()  # a failed connection writes nothing
        for o in outputs:
            o.prepare(records[o])
        bar = progress(len(jobs)) if progress is not None else None
        if cluster is None:
            for job in jobs:
                run_job(job)
                if bar is not None:
                    bar.update(1)
        else:
            _run_dask(cluster.client, jobs, bar)
    finally:
        if bar is not None:
            bar.close()
        if cluster is not None:
            cluster.__exit__(None, None, None)
            if cluster.cluster is not None:  # its workers are gone: what they left half-way
                for o in outputs:
                    o.remove_temporaries()
    result.update(done=len(jobs), seconds=time.perf_counter() - t0,
                  pixels=sum(preflight.size_of(preflight.reduced_shape(j.source.shape, j.source.axis))
                             for j in jobs))
    return result
