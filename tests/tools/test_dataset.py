"""``fastlogits classify DIR|STORE.zarr``: a dataset of maps, per-map
outputs, resumable (fastlogits.tools.dataset).

Most runs go through :func:`fastlogits.tools.cli.main` in-process (the
same code as the command); one runs ``python -m fastlogits ... --workers 2``
as a user does, on a LocalCluster of two processes; one runs on a
scheduler given by address (a cluster of threads in this process).
Maps are tiny and few: float32 channels-last and channels-first, one
float64, so few kernel variants compile (the in-process runs compile
before the worker processes start, which then find the kernels in Numba's
on-disk cache).
"""

import os
import subprocess
import sys
from pathlib import Path

import distributed
import numpy as np
import pytest
import zarr

import fastlogits.reference as ref
from fastlogits.tools import cli, dataset

ROOT = Path(__file__).resolve().parents[2]


def _logits(rng, shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 4.0).astype(dtype)


def run_main(argv, capsys):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err


def _npy_dataset(rng, root, shapes=((5, 7, 19), (3, 11, 19), (1, 1, 19)), axis=-1):
    """A directory of .npy maps named m0, m1, ... ; returns {name: logits}."""
    os.makedirs(root, exist_ok=True)
    maps = {}
    for i, shape in enumerate(shapes):
        x = _logits(rng, shape)
        np.save(os.path.join(root, f"m{i}.npy"), x)
        maps[f"m{i}"] = x
    return maps


def _check_against_reference(maps, axis, labels, confidence, temperature=1.0):
    for name, x in maps.items():
        want_l, want_c = ref.classify(x, axis, temperature=temperature)
        got_l, got_c = labels(name), confidence(name)
        assert got_l.dtype == np.uint8 and got_l.shape == want_l.shape
        np.testing.assert_array_equal(got_l, want_l)
        assert got_c.dtype == (np.float64 if x.dtype == np.float64 else np.float32)
        np.testing.assert_allclose(got_c, want_c, rtol=2e-6, atol=2e-6)


def _mtimes(root):
    return {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)}


def _temporaries(root):
    return [f for f in os.listdir(root) if "fastlogits-tmp" in f]


# --------------------------------------------------------------------------
# a directory of .npy maps, in this process; resuming
# --------------------------------------------------------------------------

def test_npy_directory_in_process_then_resume(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    maps = _npy_dataset(rng, "maps")
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                             "--confidence", "conf.zarr", "--temperature", "1.5"], capsys)
    assert rc == 0, err
    assert "classified 3 map(s)" in out and "in-process" in out and "0 finished before" in out
    conf = zarr.open_group("conf.zarr", mode="r")
    _check_against_reference(maps, -1, lambda n: np.load(f"lab/{n}.npy"), lambda n: conf[n][...],
                             temperature=1.5)
    assert sorted(os.listdir("lab")) == [".fastlogits.json", "m0.npy", "m1.npy", "m2.npy"]
    assert all(conf[n].attrs["fastlogits"] == {"complete": True} for n in maps)

    # one output deleted, one truncated, one zarr array unmarked: only those maps run again
    os.unlink("lab/m0.npy")
    with open("lab/m1.npy", "r+b") as f:
        f.truncate(os.path.getsize("lab/m1.npy") - 3)
    zarr.open_array("conf.zarr", path="m2", mode="r+").attrs["fastlogits"] = {"complete": False}
    kept = os.stat("lab/m2.npy").st_mtime_ns
    calls = []
    real = dataset.run_job
    monkeypatch.setattr(dataset, "run_job", lambda job, threads=None: (
        calls.append((job.source.name, sorted(o.which for o in job.outputs))), real(job, threads))[1])
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                             "--confidence", "conf.zarr", "--temperature", "1.5"], capsys)
    assert rc == 0, err
    assert sorted(calls) == [("m0", ["labels"]), ("m1", ["labels"]), ("m2", ["confidence"])]
    assert "classified 3 map(s)" in out and "0 finished before" in out
    assert os.stat("lab/m2.npy").st_mtime_ns == kept  # finished: not written again
    conf = zarr.open_group("conf.zarr", mode="r")
    _check_against_reference(maps, -1, lambda n: np.load(f"lab/{n}.npy"), lambda n: conf[n][...],
                             temperature=1.5)

    calls.clear()
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                             "--confidence", "conf.zarr", "--temperature", "1.5"], capsys)
    assert rc == 0 and calls == [] and "all 3 map(s) were finished before" in out

    # another temperature into the same confidence store: refused, nothing touched
    before = _mtimes("lab")
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                             "--confidence", "conf.zarr", "--temperature", "2"], capsys)
    _one_line_error(rc, err)
    assert "--confidence 'conf.zarr' holds the maps of another run" in err and "temperature" in err
    assert _mtimes("lab") == before


def test_interrupted_run_resumes(rng, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the third map is written: rc 130, two maps finished, no
    temporary left; the rerun computes the others only."""
    monkeypatch.chdir(tmp_path)
    maps = _npy_dataset(rng, "maps", shapes=[(4, 6, 19)] * 5)
    real_write = dataset.NpyDirOutput.write
    written = []

    def write(self, name, arr):
        if len(written) == 2:
            def interrupted(f):
                f.write(b"\x93NUMPY half")
                raise KeyboardInterrupt
            from fastlogits.tools import files
            files.write_atomic(self.path(name), interrupted, self.option)
        written.append(name)
        real_write(self, name, arr)

    monkeypatch.setattr(dataset.NpyDirOutput, "write", write)
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab"], capsys)
    assert rc == 130
    assert err.strip() == ("fastlogits classify: interrupted; finished maps are kept: "
                           "run the same command again to resume")
    assert sorted(os.listdir("lab")) == [".fastlogits.json", "m0.npy", "m1.npy"]
    monkeypatch.setattr(dataset.NpyDirOutput, "write", real_write)
    before = _mtimes("lab")
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab", "--quiet"],
                            capsys)
    assert rc == 0 and out == "" and err == ""
    after = _mtimes("lab")
    assert {f: after[f] for f in before} == before
    assert sorted(after) == [".fastlogits.json"] + [f"m{i}.npy" for i in range(5)]
    for name, x in maps.items():
        np.testing.assert_array_equal(np.load(f"lab/{name}.npy"), np.argmax(x, -1))


def test_stale_temporaries_are_removed(rng, tmp_path, monkeypatch, capsys):
    """A temporary a killed worker left is removed by the next run."""
    monkeypatch.chdir(tmp_path)
    _npy_dataset(rng, "maps", shapes=[(2, 3, 19)])
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab"], capsys)
    assert rc == 0, err
    os.unlink("lab/m0.npy")
    Path("lab/.m0.npy.abc123.fastlogits-tmp.npy").write_bytes(b"\x93NUMPY")
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab"], capsys)
    assert rc == 0, err
    assert sorted(os.listdir("lab")) == [".fastlogits.json", "m0.npy"]


# --------------------------------------------------------------------------
# zarr inputs: an array of maps (channels-first), a group of maps
# --------------------------------------------------------------------------

def test_zarr_array_of_maps_channels_first(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x = _logits(rng, (11, 19, 3, 5))  # N x C x H x W: 11 maps, names 00 .. 10
    z = zarr.create_array("maps.zarr", shape=x.shape, chunks=(1, 19, 3, 5), dtype=x.dtype)
    z[...] = x
    rc, out, err = run_main(["classify", "maps.zarr", "--axis", "1", "--labels", "lab.zarr",
                             "--confidence", "conf"], capsys)
    assert rc == 0, err
    names = [f"{i:02d}" for i in range(11)]
    lab = zarr.open_group("lab.zarr", mode="r")
    assert sorted(lab.array_keys()) == names
    _check_against_reference({n: x[i] for i, n in enumerate(names)}, 0, lambda n: lab[n][...],
                             lambda n: np.load(f"conf/{n}.npy"))
    rec = lab.attrs["fastlogits"]
    assert rec["what"] == "labels" and rec["axis"] == 1
    assert rec["input"] == os.path.realpath("maps.zarr")


def test_zarr_group_of_maps_float64(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    g = zarr.open_group("maps.zarr", mode="w")
    maps = {"a": _logits(rng, (3, 2, 19), np.float64), "b": _logits(rng, (5, 1, 19), np.float64)}
    for k, v in maps.items():
        g.create_array(k, data=v)
    g.create_group("not-a-map")
    rc, out, err = run_main(["classify", "maps.zarr", "--axis", "-1", "--labels", "lab",
                             "--labels-dtype", "int32", "--confidence", "conf.zarr"], capsys)
    assert rc == 0, err
    assert sorted(os.listdir("lab")) == [".fastlogits.json", "a.npy", "b.npy"]
    conf = zarr.open_group("conf.zarr", mode="r")
    assert sorted(conf.array_keys()) == ["a", "b"]
    for k, v in maps.items():
        want_l, want_c = ref.classify(v)
        got = np.load(f"lab/{k}.npy")
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want_l)
        assert conf[k].dtype == np.float64
        np.testing.assert_allclose(conf[k][...], want_c, rtol=1e-12)


#: zarr layouts of a stack of 3 maps (5, 6, 4), map 2 never written (fill
#: values): whether each map's chunk file holds exactly its bytes.
ZARR_LAYOUTS = {
    "v3 bytes": (dict(chunks=(1, 5, 6, 4), dtype="f4", compressors=None), True),
    "v3 big-endian": (dict(chunks=(1, 5, 6, 4), dtype="f4", compressors=None,
                           serializer=zarr.codecs.BytesCodec(endian="big")), True),
    "v2 raw": (dict(chunks=(1, 5, 6, 4), dtype=">f4", compressors=None, zarr_format=2), True),
    "v3 zstd": (dict(chunks=(1, 5, 6, 4), dtype="f4"), False),
    "v3 map in two chunks": (dict(chunks=(1, 5, 3, 4), dtype="f4", compressors=None), False),
    "v3 sharded": (dict(chunks=(1, 5, 6, 4), shards=(3, 5, 6, 4), dtype="f4",
                        compressors=None), False),
}


@pytest.mark.parametrize("layout", list(ZARR_LAYOUTS))
def test_zarr_maps_read_mapped_where_the_chunk_is_the_map(rng, tmp_path, layout):
    """An uncompressed one-chunk map is a read-only memory map of its chunk
    file; every other layout (and a never-written chunk) is read by zarr:
    the values are the same either way, native byte order."""
    kwargs, mapped = ZARR_LAYOUTS[layout]
    x = _logits(rng, (3, 5, 6, 4))
    z = zarr.create_array(str(tmp_path / "maps.zarr"), shape=x.shape, **kwargs)
    z[:2] = x[:2]
    want = [x[0], x[1], np.zeros_like(x[0])]
    for i in range(3):
        m = dataset.mapped_chunk(z, (i,))
        if mapped and i < 2:
            assert isinstance(m, np.memmap) and not m.flags.writeable
            np.testing.assert_array_equal(m, x[i])
        else:
            assert m is None
    kind, maps = dataset.open_dataset(str(tmp_path / "maps.zarr"), -1)
    for src, w in zip(maps, want):
        got = src.read()
        assert got.dtype == np.float32 and got.dtype.isnative
        np.testing.assert_array_equal(got, w)


def test_zarr_group_map_read_mapped(rng, tmp_path):
    g = zarr.open_group(str(tmp_path / "maps.zarr"), mode="w")
    x = _logits(rng, (4, 3, 19))
    g.create_array("a", data=x, chunks=x.shape, compressors=None)
    kind, (src,) = dataset.open_dataset(str(tmp_path / "maps.zarr"), -1)
    assert isinstance(dataset.mapped_chunk(g["a"], ()), np.memmap)
    np.testing.assert_array_equal(src.read(), x)


# --------------------------------------------------------------------------
# on dask: two local worker processes, as a user runs it; a scheduler address
# --------------------------------------------------------------------------

def test_scheduler_address_and_thread_share(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    maps = _npy_dataset(rng, "maps", shapes=[(3, 4, 19), (2, 2, 19)])
    with dataset.local_cluster(2, processes=False) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            threads = dataset.threads_per_worker(client)
            assert sorted(threads) == sorted(client.scheduler_info(n_workers=-1)["workers"])
            # the workers of one host share its cores: no more Numba threads than cores
            assert sum(threads.values()) <= max(dataset.usable_cores(), len(threads))
            assert all(n >= 1 for n in threads.values())
        rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                                 "--confidence", "conf", "--scheduler", cluster.scheduler_address],
                                capsys)
    assert rc == 0, err
    assert f"scheduler {cluster.scheduler_address}" in out
    _check_against_reference(maps, -1, lambda n: np.load(f"lab/{n}.npy"),
                             lambda n: np.load(f"conf/{n}.npy"))


def test_two_local_workers_from_the_command(rng, tmp_path):
    maps = _npy_dataset(rng, tmp_path / "maps", shapes=[(6, 5, 19), (4, 9, 19), (7, 3, 19)])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTLOGITS_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "fastlogits", "classify", "maps", "--axis", "-1",
                        "--labels", "lab.zarr", "--confidence", "conf", "--workers", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "classified 3 map(s)" in r.stdout and "2 local worker process(es)" in r.stdout
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr  # quiet workers
    lab = zarr.open_group(tmp_path / "lab.zarr", mode="r")
    _check_against_reference(maps, -1, lambda n: lab[n][...],
                             lambda n: np.load(tmp_path / "conf" / f"{n}.npy"))
    assert _temporaries(tmp_path / "conf") == []


def test_a_task_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.mkdir("maps")
    np.save("maps/m.npy", np.ones((2, 3, 19), np.float32) * 3.5)
    with dataset.local_cluster(1, processes=False) as cluster:
        # the map changes between the check and the task
        monkeypatch.setattr(dataset.MapSource, "read", lambda self: (_ for _ in ()).throw(
            ValueError(f"map {self.name!r} changed")))
        rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                                 "--scheduler", cluster.scheduler_address], capsys)
    _one_line_error(rc, err)
    assert "map 'm' changed" in err
    assert sorted(os.listdir("lab")) == [".fastlogits.json"]


# --------------------------------------------------------------------------
# errors: one line, exit 2, nothing written
# --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, match", [
    (["maps", "--axis", "-1", "--labels", "maps"], "is the input 'maps'"),
    (["maps", "--axis", "-1", "--labels", "maps/out"], "lies in it or holds it"),
    (["maps/..", "--axis", "-1", "--labels", "other"], "lies in it or holds it"),
    (["maps", "--axis", "-1", "--labels", "link-to-maps"], "is the input"),
    (["maps", "--axis", "-1", "--labels", "a", "--confidence", "a/b"], "overlap"),
    (["maps", "--axis", "-1", "--labels", "l.npy"], "a dataset's output is a directory or a .zarr"),
    (["maps", "--axis", "-1", "--labels", "no/dir/lab"], "does not exist"),
    (["maps", "--axis", "-1", "--labels", "lab", "--max-memory", "1G"],
     "--max-memory applies to a single .npy/.npz file"),
    (["maps", "--axis", "-1", "--labels", "lab", "--key", "k"], "--key applies to a single"),
    (["maps", "--axis", "3", "--labels", "lab"], "--axis=3 is out of range"),
    (["maps", "--axis", "-1"], "nothing to write"),
    (["maps", "--axis", "-1", "--labels", "lab", "--labels-dtype", "float32"], "integer dtype"),
    (["maps", "--axis", "-1", "--labels", "lab", "--labels-dtype", "int8", "--workers", "2"],
     "--labels-dtype"),
    (["maps", "--axis", "-1", "--labels", "lab", "--workers", "0"], "at least 1"),
    (["maps", "--axis", "-1", "--labels", "lab", "--workers", "1", "--scheduler", "tcp://x:1"],
     "not allowed with argument"),
    (["m.npy", "--axis", "-1", "--labels", "l.npy", "--workers", "2"],
     "--workers applies to a dataset"),
    (["empty", "--axis", "-1", "--labels", "lab"], "holds no .npy files"),
    (["ints", "--axis", "-1", "--labels", "lab"], "float16, float32 or float64"),
    (["maps", "--axis", "-1", "--labels", "mine"], "a directory that fastlogits did not write"),
    (["maps", "--axis", "-1", "--labels", "afile"], "is a file"),
    (["stack.zarr", "--axis", "0", "--labels", "lab"], "axis 0 of the zarr array"),
    (["maps", "--axis", "-1", "--labels", "plain.zarr"], "not a zarr group that fastlogits wrote"),
])
def test_errors_are_one_line_exit_2(argv, match, rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _npy_dataset(rng, "maps", shapes=[(2, 3, 200)])  # 200 classes: int8 labels do not fit
    np.save("m.npy", _logits(rng, (2, 3, 4)))
    os.symlink("maps", "link-to-maps")
    os.mkdir("empty")
    os.mkdir("ints")
    np.save("ints/i.npy", np.ones((2, 3), np.int32))
    os.mkdir("mine")
    Path("mine/notes.txt").write_text("mine")
    Path("afile").write_text("x")
    os.mkdir("a")
    zarr.create_array("stack.zarr", shape=(2, 3, 4), dtype="f4")[...] = 1.5
    zarr.create_array("plain.zarr", shape=(2,), dtype="f4")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    rc, out, err = run_main(["classify", *argv], capsys)
    _one_line_error(rc, err)
    assert match in err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_output_linked_to_an_input_file_is_refused(rng, tmp_path, monkeypatch, capsys):
    """A map's output path that is a hard link or symlink to an input map."""
    monkeypatch.chdir(tmp_path)
    _npy_dataset(rng, "maps", shapes=[(2, 3, 19), (2, 2, 19)])
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab"], capsys)
    assert rc == 0, err
    for link in (os.link, os.symlink):
        os.unlink("lab/m0.npy")
        link(os.path.abspath("maps/m1.npy"), "lab/m0.npy")
        data = Path("maps/m1.npy").read_bytes()
        rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab"], capsys)
        _one_line_error(rc, err)
        assert "--labels 'lab/m0.npy' is the input file input 'maps/m1.npy'" in err
        assert Path("maps/m1.npy").read_bytes() == data


def test_unreachable_scheduler_writes_nothing(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dataset, "CONNECT_TIMEOUT", "1s")
    _npy_dataset(rng, "maps", shapes=[(2, 3, 19)])
    rc, out, err = run_main(["classify", "maps", "--axis", "-1", "--labels", "lab",
                             "--scheduler", "tcp://127.0.0.1:9"], capsys)
    _one_line_error(rc, err)
    assert "--scheduler 'tcp://127.0.0.1:9': cannot connect" in err
    assert not os.path.exists("lab")


def test_batches_hold_about_task_bytes_and_keep_every_thread_busy():
    jobs = list(range(100))
    size = {j: 300 for j in jobs}
    got = dataset.batches(jobs, 2, nbytes=size.get, task_bytes=1000)
    assert [j for b in got for j in b] == jobs  # every job once, in order
    assert [len(b) for b in got] == [4] * 25  # 1000 bytes reached at the 4th job
    # few jobs: each of 4 dask threads still gets 4 tasks (or every job alone)
    assert [len(b) for b in dataset.batches(jobs[:40], 4, nbytes=size.get, task_bytes=10**9)] \
        == [2] * 20
    assert [len(b) for b in dataset.batches(jobs[:5], 4, nbytes=size.get)] == [1] * 5
    assert dataset.batches([], 2, nbytes=size.get) == []
