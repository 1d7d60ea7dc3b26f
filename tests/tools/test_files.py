"""Output files: exclusive temporaries, permissions, clean-up, and no output
naming an input (fastlogits.tools.files, through every writer that uses it)."""

import errno
import os

import numpy as np
import pytest

import fastlogits as fl
from fastlogits.tools import files, png, tiled


def _logits(rng, shape):
    return (rng.standard_normal(shape) * 4.0).astype(np.float32)


def _old_temp(path):
    """The predictable temporary name fastlogits used before (issue 35)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.fastlogits-{os.getpid()}.tmp")


@pytest.mark.parametrize("ext", [".npy", ".png"])
def test_planted_symlink_is_neither_followed_nor_needed(ext, rng, tmp_path):
    x = _logits(rng, (9, 7, 5))
    np.save(tmp_path / "x.npy", x)
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    out = tmp_path / f"l{ext}"
    os.symlink(victim, _old_temp(out))
    tiled.classify_file(tmp_path / "x.npy", -1, labels=out, max_memory=4000)
    assert victim.read_text() == "someone else's file"
    assert os.path.islink(_old_temp(out))  # left alone
    lab = np.load(out) if ext == ".npy" else png.read_png(out)["array"]
    np.testing.assert_array_equal(lab, fl.classify(x)[0])


def test_write_atomic_ignores_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, _old_temp(tmp_path / "b.json"))
    files.write_atomic(tmp_path / "b.json", lambda f: f.write(b"{}"))
    assert victim.read_text() == "keep" and (tmp_path / "b.json").read_bytes() == b"{}"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_final_mode_is_what_open_gives(mask, rng, tmp_path):
    np.save(tmp_path / "x.npy", _logits(rng, (3, 4, 2)))
    old = os.umask(mask)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        tiled.classify_file(tmp_path / "x.npy", -1, tmp_path / "l.npy", tmp_path / "c.png")
        files.write_atomic(tmp_path / "d.json", lambda f: f.write(b"1"))
        assert files.umask() == mask
    finally:
        os.umask(old)
    want = os.stat(tmp_path / "plain").st_mode & 0o777
    assert want == 0o666 & ~mask
    for name in ("l.npy", "c.png", "d.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == want, name


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_no_temporary_left_after_an_error(exc, tmp_path):
    def write(f):
        f.write(b"half")
        raise exc

    with pytest.raises(type(exc)):
        files.write_atomic(tmp_path / "o.png", write)
    assert os.listdir(tmp_path) == []


def test_failed_write_names_the_users_path(rng, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", _logits(rng, (6, 5, 3)))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/.tmp")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(files.WriteError) as info:
        tiled.classify_file(tmp_path / "x.npy", -1, labels=tmp_path / "l.npy")
    msg = str(info.value)
    assert msg == f"cannot write --labels {str(tmp_path / 'l.npy')!r}: No space left on device"
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_check_distinct_links(tmp_path):
    a = tmp_path / "a.npy"
    a.write_bytes(b"a")
    os.link(a, tmp_path / "hard.npy")
    os.symlink(a, tmp_path / "soft.npy")
    os.symlink(tmp_path, tmp_path / "dirlink")
    for same in ("a.npy", "hard.npy", "soft.npy", "dirlink/a.npy", "./a.npy"):
        with pytest.raises(ValueError, match="is the input file"):
            files.check_distinct([("--out", tmp_path / same)], [("--in", a)])
        with pytest.raises(ValueError, match="name the same file"):
            files.check_distinct([("--o1", a), ("--o2", tmp_path / same)])
    files.check_distinct([("--o1", tmp_path / "new.npy"), ("--o2", a)], [("--in", None)])
    with pytest.raises(ValueError, match="name the same file"):  # neither exists yet
        files.check_distinct([("--o1", tmp_path / "new.npy"), ("--o2", tmp_path / "dirlink/new.npy")])
