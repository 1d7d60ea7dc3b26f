"""The ``fastlogits`` command, run as a user runs it.

Each command runs once as ``python -m fastlogits ...`` in a subprocess; the
many error cases run through :func:`fastlogits.tools.cli.main` in-process (the
same code path, without paying Numba's start-up for each).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastlogits as fl
from fastlogits.tools import cli, palettes, png

ROOT = Path(__file__).resolve().parents[2]


def fastlogits_cmd(*args, cwd, timeout=240):
    """Run ``python -m fastlogits ARGS`` in ``cwd``; returns the CompletedProcess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTLOGITS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fastlogits", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_main(argv, capsys):
    """``cli.main(argv)`` in-process: (exit status, stdout, stderr)."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors and --help
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _logits(rng, shape):
    return (rng.standard_normal(shape) * 4.0).astype(np.float32)


def _assert_one_line_error(rc, err):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0] and "Traceback" not in err


# --------------------------------------------------------------------------
# each command as a user runs it
# --------------------------------------------------------------------------

def test_info(tmp_path):
    r = fastlogits_cmd("info", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"fastlogits    {fl.__version__}" in out
    for key in ("numpy", "numba", "numba-cuda", "torch", "backends", "threads", "GPU",
                "fastexp", "output pool", "kernel cache", "cached", "row prefetch", "float16",
                "tiles"):
        assert any(line.startswith(key) for line in out.splitlines()), key
    assert "numpy, cpu" in out
    assert "threading layer" in out
    assert "vectorized polynomial exp (float32/float64)" in out
    assert "tuning knob cpu_cf_tile_bytes" in out


def test_demo_small(tmp_path):
    r = fastlogits_cmd("demo", "--size", "64,128", "--out", "pics", "--repeat", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fastlogits[cpu]" in r.stdout and "fastlogits[numpy]" in r.stdout
    assert "cpu vs numpy: 0 labels differ" in r.stdout and "agree" in r.stdout
    lab = png.read_png(tmp_path / "pics" / "labels.png")
    conf = png.read_png(tmp_path / "pics" / "confidence.png")
    assert lab["mode"] == "P" and lab["array"].shape == (64, 128)
    np.testing.assert_array_equal(lab["palette"], palettes.CITYSCAPES)
    assert conf["mode"] == "RGB" and conf["array"].shape == (64, 128, 3)
    # the labels are the argmax of the scene the demo synthesizes
    from fastlogits.tools.demo import synthesize

    x = synthesize(64, 128, seed=0)
    np.testing.assert_array_equal(lab["array"], np.argmax(x, -1))
    assert len(np.unique(lab["array"])) >= 8  # a scene, not one class
    assert sorted(os.listdir(tmp_path / "pics")) == ["confidence.png", "labels.png"]


def test_demo_scene_is_smooth_with_uncertain_boundaries():
    from fastlogits.tools.demo import synthesize

    x = synthesize(128, 256, seed=3)
    assert x.shape == (128, 256, 19) and x.dtype == np.float32
    np.testing.assert_array_equal(x, synthesize(128, 256, seed=3))  # deterministic
    labels, conf = fl.classify(x)
    boundary = np.zeros(labels.shape, bool)
    boundary[:-1] |= labels[:-1] != labels[1:]
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    # regions: few label changes between neighbours; boundaries less confident
    assert boundary.mean() < 0.1
    assert np.median(conf[boundary]) < np.median(conf[~boundary]) - 0.2
    assert labels[0].tolist().count(10) > 0.8 * 256  # sky at the top
    assert np.bincount(labels[-1], minlength=19).argmax() == 0  # road at the bottom


def test_classify_png_and_tiled_npy(rng, tmp_path):
    """PNG palette indices equal the argmax; a map many tiles large gives
    the in-memory result."""
    x = _logits(rng, (37, 45, 19))
    np.save(tmp_path / "x.npy", x)
    r = fastlogits_cmd("classify", "x.npy", "--axis", "-1", "--labels", "l.png",
                       "--confidence", "c.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote l.png" in r.stdout and "wrote c.png" in r.stdout
    ref_l, ref_c = fl.classify(x)
    lab = png.read_png(tmp_path / "l.png")
    assert lab["array"].shape == (37, 45)
    np.testing.assert_array_equal(lab["array"], ref_l)
    np.testing.assert_array_equal(lab["palette"], palettes.CITYSCAPES)
    conf = png.read_png(tmp_path / "c.png")["array"]
    np.testing.assert_array_equal(conf, palettes.confidence_lut()[palettes.confidence_levels(ref_c)])

    xc = np.ascontiguousarray(np.moveaxis(x, -1, 0))[None]  # 1×C×H×W
    np.save(tmp_path / "xc.npy", xc)
    r = fastlogits_cmd("classify", "xc.npy", "--axis", "1", "--labels", "l.npy",
                       "--confidence", "c.npy", "--max-memory", "2k", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    labels, confidence = np.load(tmp_path / "l.npy"), np.load(tmp_path / "c.npy")
    assert labels.dtype == np.uint8 and labels.shape == (1, 37, 45)
    np.testing.assert_array_equal(labels[0], ref_l)
    np.testing.assert_allclose(confidence[0], ref_c, rtol=1e-6)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_bench_pool_line():
    """The report says whether large outputs came from reused blocks."""
    from fastlogits.tools.benchmark import _pool_line

    assert "off (cpu_output_pool_bytes = 0): every output on fresh pages" in _pool_line(
        {"output_pool_bytes": 0})
    assert "outputs of 64 MiB or more reuse" in _pool_line(
        {"output_pool_bytes": 1 << 30, "output_pool_min_bytes": 64 << 20})
    assert _pool_line({}) == "outputs: allocated by each call"  # a report from before the pool


def test_bench_tiny(tmp_path):
    r = fastlogits_cmd("bench", "--shape", "6,10,5", "--ops", "softmax,classify", "--repeat", "2",
                       "--json", "b.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "memory bandwidth (measured in this run, best of 1 and all threads): read" in out
    assert "fastlogits[cpu]" in out and "numpy" in out
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["config"]["x_shape"] == [6, 10, 5] and rep["config"]["ops"] == ["softmax", "classify"]
    # Which outputs the timed calls got: the output pool's settings, and a line saying so.
    assert rep["config"]["output_pool_bytes"] == fl.tuning.current().cpu.output_pool_bytes
    assert "outputs of 32 MiB or more reuse the blocks" in out
    bw = rep["bandwidth_gbps"]
    assert bw["read"] > 0 and bw["copy"] > 0
    # Each ceiling is the best of the thread counts it was measured with.
    for kind in ("read", "copy"):
        by = bw[f"{kind}_by_threads"]
        assert "1" in by and bw[kind] == max(by.values())
    impls = {(row["op"], row["impl"]) for row in rep["rows"]}
    assert {("softmax", "fastlogits[cpu]"), ("softmax", "numpy"), ("classify", "numpy")} <= impls
    try:
        import torch  # noqa: F401

        assert ("classify", "torch") in impls
    except ImportError:
        pass
    for row in rep["rows"]:
        assert row["median_ms"] > 0 and row["gbps"] > 0 and row["runs"] >= 1
        assert row["read_bytes"] == 6 * 10 * 5 * 4
        assert row["vs_numpy"] is not None


def test_command_error_is_one_line(tmp_path):
    r = fastlogits_cmd("classify", "missing.npy", "--axis", "-1", "--labels", "l.npy", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "fastlogits classify: error: input 'missing.npy' does not exist"
    r = fastlogits_cmd("frobnicate", cwd=tmp_path)
    _assert_one_line_error(r.returncode, r.stderr)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# error cases, in-process
# --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, match", [
    (["classify", "missing.npy", "--axis", "-1", "--labels", "l.npy"], "does not exist"),
    (["classify", "x.npy", "--labels", "l.npy"], "required: --axis"),
    (["classify", "x.npy", "--axis", "3", "--labels", "l.npy"], "--axis=3 is out of range"),
    (["classify", "x.npy", "--axis", "one", "--labels", "l.npy"], "invalid int value"),
    (["classify", "x.npy", "--axis", "-1"], "nothing to write"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.jpg"], "must end in .npy or .png"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "no/dir/l.npy"], "does not exist"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--max-memory", "lots"], "not a size"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--max-memory", "10"], "too small"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--temperature", "-1"], "> 0"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--backend", "tpu"], "invalid choice"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--labels-dtype", "float32"],
     "integer dtype"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.npy", "--frobnicate"], "unrecognized"),
    (["classify", "ints.npy", "--axis", "-1", "--labels", "l.npy"], "float16, float32 or float64"),
    (["classify", "junk.npy", "--axis", "-1", "--labels", "l.npy"], "not a .npy or .npz"),
    (["classify", "x4.npy", "--axis", "1", "--labels", "l.png"], "PNG holds a 2-D map"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.png", "--max-memory", "100"],
     "PNG of the map needs"),
    (["classify", "two.npz", "--axis", "-1", "--labels", "l.npy"], "choose one with --key"),
    (["classify", "x.npy", "--axis", "-1", "--labels", "l.png", "--palette", "missing.txt"],
     "No such file"),
    (["bench", "--shape", "4,4"], "3 positive integers"),
    (["bench", "--layout", "whc"], "invalid choice"),
    (["bench", "--ops", "softmax,fft"], "unknown op 'fft'"),
    (["bench", "--backends", "tpu"], "not available"),
    (["bench", "--repeat", "0"], "at least 1"),
    (["bench", "--json", "no/dir/b.json"], "does not exist"),
    (["demo", "--size", "0,5"], "positive integers"),
    (["demo", "--backends", "tpu"], "not available"),
    (["nonsense"], "invalid choice"),
])
def test_errors_are_one_line_exit_2(argv, match, rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", _logits(rng, (12, 10, 3)))
    np.save("x4.npy", _logits(rng, (2, 3, 4, 5)))
    np.save("ints.npy", np.zeros((2, 3), np.int64))
    np.savez("two.npz", a=np.zeros(3), b=np.ones(3))
    Path("junk.npy").write_text("junk")
    before = sorted(os.listdir(tmp_path))
    rc, out, err = run_main(argv, capsys)
    _assert_one_line_error(rc, err)
    assert match in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even half


def test_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    rc, out, err = run_main(["bench", "--shape", "2,2,2", "--plot", "b.png"], capsys)
    _assert_one_line_error(rc, err)
    assert "pip install 'fastlogits[plot]'" in err
    assert os.listdir(tmp_path) == []


def test_plot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from fastlogits.tools import benchmark

    report = benchmark.run(shape=(4, 6, 3), ops=["argmax"], repeat=1, torch=False,
                           bandwidth_bytes=1 << 20)
    benchmark.plot(report, tmp_path / "b.png")
    assert png.read_png(tmp_path / "b.png")["array"].shape[0] > 100


def test_classify_options_in_process(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x = _logits(rng, (9, 7, 300))
    np.savez_compressed("x.npz", logits=x, other=x[..., :3])
    rc, out, err = run_main(["classify", "x.npz", "--key", "logits", "--axis", "-1",
                             "--labels", "l.npy", "--labels-dtype", "int32", "--temperature", "2",
                             "--confidence", "c.npy", "--backend", "numpy"], capsys)
    assert rc == 0, err
    assert "classified 63 pixels x 300 classes" in out
    ref_l, ref_c = fl.reference.classify(x, temperature=2.0)
    assert np.load("l.npy").dtype == np.int32
    np.testing.assert_array_equal(np.load("l.npy"), ref_l)
    np.testing.assert_allclose(np.load("c.npy"), ref_c, rtol=2e-6)
    rc, out, err = run_main(["classify", "x.npz", "--key", "other", "--axis", "-1",
                             "--labels", "l.png", "--confidence", "c.png",
                             "--confidence-map", "grey", "--quiet"], capsys)
    assert rc == 0 and out == "" and err == ""
    lab = png.read_png("l.png")
    np.testing.assert_array_equal(lab["array"], np.argmax(x[..., :3], -1))
    np.testing.assert_array_equal(lab["palette"], palettes.distinct(3))


def test_no_command_prints_help(capsys):
    rc, out, err = run_main([], capsys)
    assert rc == 0 and "classify" in out and "bench" in out and "demo" in out
    rc, out, err = run_main(["--version"], capsys)
    assert rc == 0 and fl.__version__ in out


def test_progress_bar_builtin():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    bar = cli._Bar(1000, "classify", "px", delay=0.0, stream=s)
    for _ in range(10):
        bar.update(100)
    bar.close()
    assert "100.0%" in s.getvalue() and "1.0k/1.0k px" in s.getvalue()
    quiet = io.StringIO()  # not a terminal: draws nothing
    bar = cli._Bar(10, "x", "px", delay=0.0, stream=quiet)
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------
# issue 35: outputs never name an input; clear lines for bad files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("conf", ["pal.npy", "hard.npy", "soft.npy", "./sub/../pal.npy"])
def test_output_never_replaces_an_input(conf, rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("good.npy", _logits(rng, (5, 4, 3)))
    np.save("pal.npy", palettes.distinct(3))
    os.link("pal.npy", "hard.npy")
    os.symlink("pal.npy", "soft.npy")
    os.mkdir("sub")
    before = Path("pal.npy").read_bytes()
    listing = sorted(os.listdir(tmp_path))
    rc, out, err = run_main(["classify", "good.npy", "--axis", "-1", "--labels", "l.png",
                             "--palette", "pal.npy", "--confidence", conf], capsys)
    _assert_one_line_error(rc, err)
    assert "--confidence" in err and "--palette 'pal.npy'" in err and "input" in err
    assert Path("pal.npy").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing


@pytest.mark.parametrize("argv, match", [
    (["--labels", "link.npy"], "--labels 'link.npy' is the input file input 'x.npy'"),
    (["--labels", "l.npy", "--confidence", "l-link.npy"], "name the same file"),
    (["--labels", "l.npy", "--confidence", "sub/../l.npy"], "name the same file"),
])
def test_inputs_and_outputs_by_link(argv, match, rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", _logits(rng, (5, 4, 3)))
    os.symlink("x.npy", "link.npy")
    os.symlink("l.npy", "l-link.npy")
    os.mkdir("sub")
    listing = sorted(os.listdir(tmp_path))
    rc, out, err = run_main(["classify", "x.npy", "--axis", "-1", *argv], capsys)
    _assert_one_line_error(rc, err)
    assert match in err
    assert sorted(os.listdir(tmp_path)) == listing


def test_binary_palette_is_one_clear_line(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", _logits(rng, (5, 4, 3)))
    with open("pal.png", "wb") as f:
        png.write_indexed(f, np.zeros((2, 2), np.uint8), palettes.distinct(3))
    rc, out, err = run_main(["classify", "x.npy", "--axis", "-1", "--labels", "l.png",
                             "--palette", "pal.png"], capsys)
    _assert_one_line_error(rc, err)
    assert "--palette 'pal.png'" in err and "codec" not in err
    assert not os.path.exists("l.png")


def test_unwritable_output_names_the_given_path(rng, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", _logits(rng, (5, 4, 3)))
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc")
    target = "/proc/o.npy"  # a directory nobody can create files in, root included
    rc, out, err = run_main(["classify", "x.npy", "--axis", "-1", "--labels", target], capsys)
    _assert_one_line_error(rc, err)
    assert f"--labels {target!r}" in err and ".tmp" not in err and "fastlogits-" not in err


def test_big_endian_logits_from_the_command(rng, tmp_path):
    x = _logits(rng, (1, 5, 9, 7))
    np.save(tmp_path / "le.npy", x)
    np.save(tmp_path / "be.npy", x.astype(">f4"))
    for name in ("le", "be"):
        r = fastlogits_cmd("classify", f"{name}.npy", "--axis", "1", "--labels", f"{name}-l.npy",
                           "--confidence", f"{name}-c.npy", "--max-memory", "1k", "--quiet",
                           cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    for kind in ("l", "c"):
        a, b = np.load(tmp_path / f"le-{kind}.npy"), np.load(tmp_path / f"be-{kind}.npy")
        assert a.dtype == b.dtype and a.dtype.isnative
        if kind == "l":
            np.testing.assert_array_equal(a, b)
        else:
            # A converted tile is contiguous, a native one a strided view of
            # the file: other kernels, other summation orders, a few ulp.
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=2e-6)


def test_demo_reference_on_a_centre_crop(tmp_path):
    """The NumPy reference classifies a centre crop of a large scene (the
    other backends are compared there); the pictures are of the whole
    scene; --full-reference runs it on all of it."""
    from fastlogits.tools import demo

    rows, cols = demo._crop(1024, 2048, False)
    assert (rows, cols) == (slice(384, 640), slice(768, 1280))
    assert demo._crop(1024, 2048, True) == (slice(0, 1024), slice(0, 2048))
    assert demo._crop(64, 128, False) == (slice(0, 64), slice(0, 128))
    lines = []
    res = demo.run(out_dir=str(tmp_path / "pics"), size=(600, 600), backends=["cpu", "numpy"],
                   repeat=1, echo=lines.append)
    assert res["agree"] and res["timings"]["numpy"]["pixels"] == 150 * 600
    assert res["timings"]["cpu"]["pixels"] == 600 * 600
    assert any("centre crop" in line and "0 labels differ" in line for line in lines)
    assert png.read_png(tmp_path / "pics" / "labels.png")["array"].shape == (600, 600)
