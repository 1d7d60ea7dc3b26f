"""Software prefetch (fastlogits.cpu.llvm.prefetch): the share arithmetic, and
the channels-last kernels giving the same results with it on and off."""

import numpy as np
import pytest
from numba import njit

import fastlogits as fl
from fastlogits import _cpuinfo, reference, tuning
from fastlogits.cpu.llvm.prefetch import (PLANES_PREFETCH_MIN_CLASSES, TILE_CLASSES_AHEAD,
                                          plane_rows_region, planes_ahead, prefetch_planes,
                                          prefetch_row, prefetch_span, rows_ahead, share_bounds)

from tests.helpers import specials_array


@pytest.mark.parametrize("total,nshares", [(0, 3), (1, 38), (7, 3), (4864, 38), (100, 1)])
def test_shares_partition_the_region(total, nshares):
    spans = [share_bounds(total, j, nshares) for j in range(nshares)]
    covered = [i for a, b in spans for i in range(a, b)]
    assert covered == list(range(total))  # every element once, in order
    assert share_bounds(total, nshares, nshares) == (0, 0)
    assert share_bounds(total, -1, nshares) == (0, 0)


def test_rows_ahead():
    assert rows_ahead(19, 4, 4096) == 4096 // 76
    assert rows_ahead(5000, 8, 4096) == 1  # at least the next row
    assert rows_ahead(19, 4, 0) == 0  # off


def test_long_rows_are_left_to_the_hardware_prefetcher(tune, monkeypatch):
    from fastlogits.cpu.plan import _row_prefetch_bytes

    limit = tuning.current().cpu.row_prefetch_max_bytes
    assert limit == (768 if _cpuinfo.vendor() == "amd" else 3072)  # measured per vendor
    assert _row_prefetch_bytes(150, 4) == tuning.current().cpu.prefetch_bytes  # 600-byte rows
    assert _row_prefetch_bytes(limit // 8, 8) == tuning.current().cpu.prefetch_bytes
    assert _row_prefetch_bytes(limit // 8 + 1, 8) == 0
    assert _row_prefetch_bytes(1000, 4) == 0 and _row_prefetch_bytes(32000, 4) == 0
    tune(cpu_row_prefetch_max_bytes=10 ** 9)
    assert _row_prefetch_bytes(32000, 4) == tuning.current().cpu.prefetch_bytes


def test_prefetch_past_the_end_is_harmless():
    # llvm.prefetch never faults: rows past the last one, and spans past
    # the end, are asked for without a crash (or skipped).
    x = np.ones((5, 19), np.float32)
    for r in range(5):
        prefetch_row(x, r, 3)
        prefetch_row(x, r, 10**6)
    spans(x, 90, 10**4)
    spans(x, 50, 10)  # empty


@njit
def spans(x, a, b):
    prefetch_span(x, a, b)  # an intrinsic: callable from Numba code only


@njit
def _planes(x, start, ahead):
    prefetch_planes(x, start, 16, ahead)


def test_channels_first_prefetch_regions():
    """The blocks' distance in pixels, and the tiles' rows: classes
    TILE_CLASSES_AHEAD .. C - 1 of the tile (one share each, at the
    tile's first classes), none for few classes, strided x or 0."""
    x = np.ones((2, 40, 100), np.float32)
    assert planes_ahead(x, 256) == 64 and planes_ahead(x, 0) == 0
    assert planes_ahead(x[:, :PLANES_PREFETCH_MIN_CLASSES - 1], 256) == 0
    arr, start, length, k0, nk, stride = plane_rows_region(x, 1, 30, 48, 64)
    first = (40 + TILE_CLASSES_AHEAD) * 100 + 30  # image 1, the class ahead, pixel 30
    assert arr is x and (start, length, k0, stride) == (first, 48, 0, 100)
    assert nk == 40 - TILE_CLASSES_AHEAD
    for region in (plane_rows_region(x, 1, 30, 48, 0), plane_rows_region(x[:, :, ::2], 0, 0, 8, 64),
                   plane_rows_region(x[:, :8], 0, 0, 8, 64)):
        assert region[4] == 1 and region[2] == 0  # empty
    _planes(x, 190, 64)  # past the end of the planes: harmless
    _planes(x, 0, 0)


@pytest.mark.parametrize("C,row_min,block_max",
                         [(19, 10**9, 0), (150, 1, 0), (19, 10**9, 10**9)])  # tiles, rows, blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_same_results_prefetch_on_and_off(tune, rng, monkeypatch, C, row_min, block_max,
                                                        dtype):
    """Several tiles per chunk (so next-tile regions and chunk ends are
    exercised) and rows far enough apart for the row prefetch to run."""
    tune(cpu_row_min_classes=row_min)
    tune(cpu_row_argmax_min_classes=row_min)
    tune(cpu_row_block_max_classes=block_max)
    tune(cpu_row_block_xent_max_classes=block_max)
    tune(cpu_row_block_expnorm_max_classes=block_max)
    tune(cpu_serial_below=0)
    x = specials_array(rng, (3001, C), -1, dtype)
    t = rng.integers(0, C, 3001)
    t[::7] = 255
    runs = {}
    for ahead in (0, tuning.current().cpu.prefetch_bytes):
        tune(cpu_prefetch_bytes=ahead)
        labels, conf = fl.classify(x)
        loss, grad = fl.cross_entropy(x, t, ignore_index=255, return_grad=True)
        runs[ahead] = (fl.argmax(x), labels, conf, fl.softmax(x), fl.logsumexp(x), loss, grad,
                       fl.confusion_matrix(x, t, ignore_index=255),
                       fl.cross_entropy(x, t, ignore_index=255, reduction="none"))
    for off, on in zip(*runs.values()):
        np.testing.assert_array_equal(off, on)
    np.testing.assert_array_equal(runs[0][0], reference.argmax(x))
    np.testing.assert_array_equal(runs[0][7], reference.confusion_matrix(x, t, ignore_index=255))


def test_cpuinfo_fields():
    assert _cpuinfo.vendor() in ("amd", "intel", "")
    assert _cpuinfo.field("no such field") == ""
    # "model" must not match "model name" (the key is compared whole).
    assert ":" not in _cpuinfo.field("model")


def _fake_cache(root, *indices):
    """A sysfs cache directory: ``(level, type, size)`` per index."""
    root.mkdir()
    for i, (level, kind, size) in enumerate(indices):
        d = root / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return str(root)


def test_l2_bytes_from_sysfs(tmp_path):
    """The L2's size is read from sysfs (data or unified, never the
    instruction cache), and 0 where it cannot be: config falls back then."""
    fake = _fake_cache(tmp_path / "a", (1, "Data", "48K"), (1, "Instruction", "64K"),
                       (2, "Unified", "2048K"), (3, "Unified", "480M"))
    assert _cpuinfo.l2_bytes(fake) == 2 << 20
    fake = _fake_cache(tmp_path / "b", (2, "Instruction", "1M"), (2, "Data", "1M"))
    assert _cpuinfo.l2_bytes(fake) == 1 << 20
    assert _cpuinfo.l2_bytes(_fake_cache(tmp_path / "c", (2, "Unified", "big"))) == 0
    assert _cpuinfo.l2_bytes(_fake_cache(tmp_path / "d", (1, "Data", "32K"))) == 0
    assert _cpuinfo.l2_bytes(str(tmp_path / "missing")) == 0
    assert _cpuinfo._cache_size("512") == 512 and _cpuinfo._cache_size("1G") == 1 << 30
    assert tuning.current().cpu.cf_tile_bytes == (_cpuinfo.l2_bytes() or 1 << 20) // 2
