"""The plan cache of repeated host calls (``fastlogits._frontend.planned_call``)
and the serial launches of small calls (``fastlogits.cpu.threads.driver_for``).

A repeated call of one geometry runs a plan made at its first call; these
tests check that it gives the first call's results (and the reference's),
that every check the plan skips is still made where it matters (x
read-only, another tuning, FASTLOGITS_BACKEND, a bad temperature or target,
an axis of another type), and that a kernel launched whole on the calling
thread computes what its tasks fanned out on one thread do, bit for bit.
"""

import numba
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _frontend, reference
from tests.helpers import assert_close, logits, specials_array

# (shape, axis, strided): channels-last and channels-first, odd sizes, and
# an x whose strides forbid a view (a slice along the pixels).
GEOMETRIES = [((7, 13, 19), -1, False), ((2, 19, 5, 7), 1, False), ((9, 125), -1, False),
              ((6, 11, 19), -1, True), ((2, 19, 9, 7), 1, True)]


def _x(rng, shape, axis, strided, dtype):
    x = specials_array(rng, shape, axis, dtype)
    if strided:  # every other pixel along the last pixel axis
        big = list(shape)
        pix = len(shape) - 1 if axis != len(shape) - 1 and axis != -1 else len(shape) - 2
        big[pix] *= 2
        wide = np.empty(big, dtype)
        index = [slice(None)] * len(shape)
        index[pix] = slice(None, None, 2)
        wide[tuple(index)] = x
        x = wide[tuple(index)]
    return x


def _calls(x, axis, t):
    return {
        "softmax": lambda a: fl.softmax(a, axis, temperature=1.5),
        "log_softmax": lambda a: fl.log_softmax(a, axis),
        "logsumexp": lambda a: fl.logsumexp(a, axis, temperature=0.5),
        "argmax": lambda a: fl.argmax(a, axis),
        "classify": lambda a: fl.classify(a, axis, temperature=2.0),
        "cross_entropy": lambda a: fl.cross_entropy(a, t, axis, label_smoothing=0.1),
        "cross_entropy_grad": lambda a: fl.cross_entropy(a, t, axis, reduction="sum",
                                                         return_grad=True),
        "cross_entropy_none": lambda a: fl.cross_entropy(a, t, axis, reduction="none"),
    }


def _reference(name, x, axis, t):
    if name == "softmax":
        return reference.softmax(x, axis, temperature=1.5)
    if name == "log_softmax":
        return reference.log_softmax(x, axis)
    if name == "logsumexp":
        return reference.logsumexp(x, axis, temperature=0.5)
    if name == "argmax":
        return reference.argmax(x, axis)
    if name == "classify":
        return reference.classify(x, axis, temperature=2.0)
    if name == "cross_entropy":
        return reference.cross_entropy(x, t, axis, label_smoothing=0.1)
    if name == "cross_entropy_grad":
        return reference.cross_entropy(x, t, axis, reduction="sum", return_grad=True)
    return reference.cross_entropy(x, t, axis, reduction="none")


def _same(a, b, dtype=None):
    """Bit-for-bit equal results (arrays, tuples of them, scalars)."""
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
        return
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint8) if a.dtype.kind == "f" else a,
                                  b.view(np.uint8) if b.dtype.kind == "f" else b)


def _close(got, want, dtype):
    if isinstance(got, tuple):
        for g, w in zip(got, want):
            _close(g, w, dtype)
        return
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        assert_close(got, want.astype(got.dtype), dtype)


def _target(rng, x, axis):
    ax = axis % x.ndim
    reduced = x.shape[:ax] + x.shape[ax + 1:]
    return rng.integers(0, x.shape[ax], reduced)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis, strided", GEOMETRIES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "argmax", "classify",
                                  "cross_entropy", "cross_entropy_grad", "cross_entropy_none"])
def test_repeated_calls_give_the_first_calls_results(rng, name, shape, axis, strided, dtype):
    """The second and third calls (the plan, on fresh x of the same
    geometry) match the reference; the plan's run on the first x gives its
    first results bit for bit."""
    x = _x(rng, shape, axis, strided, dtype)
    if name.startswith("cross_entropy"):  # finite logits: the losses' specials are tested apart
        x[...] = np.where(np.isfinite(x), x, dtype(1.5))
    t = _target(rng, x, axis)
    call = _calls(x, axis, t)[name]
    # The same memory both times: channels-first tiles start on x's lines,
    # so another copy of x may be summed in other blocks (within ulps), as
    # a strided x is (copied at each call).
    first = call(x)
    again = call(x)
    (_close if strided else _same)(again, first, dtype)
    for _ in range(2):
        y = _x(rng, shape, axis, strided, dtype)
        if name.startswith("cross_entropy"):
            y[...] = np.where(np.isfinite(y), y, dtype(-0.5))
        _close(call(y), _reference(name, y, axis, t), dtype)
    assert any(k[0] == name.split("_grad")[0].split("_none")[0] or k[0] == name
               for k in _frontend._CALL_PLANS), "no plan was made"


def test_read_only_x_after_a_writeable_one(rng):
    """A read-only x of a planned geometry goes the full way (through its
    writeable alias) and gives the same results."""
    x = logits(rng, (8, 33))
    want = fl.softmax(x)
    fl.softmax(x)
    ro = x.copy()
    ro.flags.writeable = False
    _same(fl.softmax(ro), want)
    _same(fl.argmax(ro), fl.argmax(x))


def test_environment_backend_is_read_at_each_call(rng, monkeypatch):
    """FASTLOGITS_BACKEND set after a planned call takes effect at the next
    one (numpy: the reference's float64 arithmetic, not the kernels')."""
    x = logits(rng, (8, 21), np.float32)
    fl.logsumexp(x)
    fl.logsumexp(x)
    calls = []
    from fastlogits import _numpy_backend

    real = _numpy_backend.expnorm

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_numpy_backend, "expnorm", spy)
    _frontend.implementation.cache_clear()
    try:
        monkeypatch.setenv("FASTLOGITS_BACKEND", "numpy")
        fl.logsumexp(x)
        assert calls == ["logsumexp"]
        monkeypatch.setenv("FASTLOGITS_BACKEND", "nonsense")
        with pytest.raises(ValueError, match="FASTLOGITS_BACKEND"):
            fl.logsumexp(x)
        monkeypatch.delenv("FASTLOGITS_BACKEND")
        fl.logsumexp(x)
        assert calls == ["logsumexp"]
    finally:
        monkeypatch.undo()
        _frontend.implementation.cache_clear()


def test_another_tuning_makes_another_plan(rng, tune):
    """A plan is made under one tuning; under an override the call is
    planned again (here: the transposed tiles instead of the rows)."""
    x = logits(rng, (40, 19))
    want = fl.softmax(x)
    key = ("softmax", x.shape, x.strides, x.dtype, -1, "auto", None)
    before = _frontend._CALL_PLANS[key][0]
    tune(cpu_row_min_classes=10_000, cpu_row_block_expnorm_max_classes=0)
    assert_close(fl.softmax(x), want, np.float32)
    assert _frontend._CALL_PLANS[key][0] is not before


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_on_a_planned_call(rng, bad):
    x = logits(rng, (8, 17))
    fl.classify(x)
    fl.softmax(x)
    with pytest.raises(ValueError, match="temperature"):
        fl.classify(x, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        fl.softmax(x, temperature=bad)


def test_bad_axis_type_on_a_planned_call(rng):
    """``axis=True`` hashes as 1: it must not find axis=1's plan."""
    x = logits(rng, (2, 7, 5))
    fl.argmax(x, 1)
    fl.argmax(x, 1)
    with pytest.raises(TypeError):
        fl.argmax(x, True)
    with pytest.raises(TypeError):
        fl.softmax(x, 1.0)


def test_bad_targets_on_a_planned_call(rng):
    """Target values out of range raise on a planned call as on the first;
    a target of another shape or dtype is checked."""
    x = logits(rng, (6, 11))
    t = rng.integers(0, 11, 6)
    fl.cross_entropy(x, t)
    fl.cross_entropy(x, t, return_grad=True)
    bad = t.copy()
    bad[3] = 11
    with pytest.raises(ValueError, match="target"):
        fl.cross_entropy(x, bad)
    with pytest.raises(ValueError, match="target"):
        fl.cross_entropy(x, bad, return_grad=True)
    with pytest.raises(ValueError, match="shape"):
        fl.cross_entropy(x, t[:5])
    with pytest.raises(TypeError, match="integer"):
        fl.cross_entropy(x, t.astype(np.float64))
    with pytest.raises(TypeError):
        fl.cross_entropy(x, t, ignore_index=True)
    assert fl.cross_entropy(x, t.astype(np.uint8)) == pytest.approx(fl.cross_entropy(x, t))


@pytest.mark.parametrize("name", ["softmax", "logsumexp", "argmax", "classify", "cross_entropy",
                                  "cross_entropy_grad", "cross_entropy_none"])
@pytest.mark.parametrize("shape, axis", [((5, 9, 19), -1), ((3, 19, 6, 5), 1), ((6, 3), -1),
                                         ((4, 300), -1)])
def test_serial_launch_matches_the_fanned_out_one(rng, tune, name, shape, axis):
    """A small input runs its kernel whole on the calling thread; launched
    in parallel (``cpu_serial_below=0``) on one thread it gives the same
    bits (on more, its chunks split the rows elsewhere: within ulps)."""
    x = specials_array(rng, shape, axis, np.float32)
    if name.startswith("cross_entropy"):
        x[...] = np.where(np.isfinite(x), x, np.float32(2.0))
    t = _target(rng, x, axis)
    call = _calls(x, axis, t)[name]
    serial = call(x)
    tune(cpu_serial_below=0)
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _same(call(x), serial)
    finally:
        numba.set_num_threads(n)
    _close(call(x), serial, np.float32)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "argmax"])
@pytest.mark.parametrize("shape, axis", [((7, 13, 19), -1), ((2, 19, 5, 7), 1)])
def test_planned_calls_with_out(rng, op, shape, axis):
    """``out=`` arrays of one geometry: the repeated calls write them as
    the first did (and return them); in place too for the exp ops."""
    fn = getattr(fl, op)
    x = logits(rng, shape)
    reduced = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    if op == "argmax":
        outs = [np.empty(reduced, dt) for dt in (np.uint8, np.int64, np.int8)]
    else:
        outs = [np.empty(reduced if op == "logsumexp" else shape, np.float32)]
    for out in outs:
        want = fn(x, axis)
        for _ in range(3):
            out[...] = 0
            assert fn(x, axis, out=out) is out
            _same(out, want.astype(out.dtype))
    if op in ("softmax", "log_softmax"):
        want = fn(x, axis)
        for _ in range(3):
            y = x.copy()  # other memory: channels-first tiles may split elsewhere (ulps)
            assert fn(y, axis, out=y) is y
            _close(y, want, np.float32)


def test_planned_out_checks(rng):
    """A planned call checks its ``out=``'s memory: read-only, or partly
    over x, raise as on the first call; a strided out gets the results."""
    x = logits(rng, (8, 19))
    out = np.empty_like(x)
    fl.softmax(x, out=out)
    fl.softmax(x, out=out)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fl.softmax(x, out=ro)
    big = np.empty((9, 19), np.float32)
    big[:8] = x
    shifted = big[1:]  # x's geometry, overlapping x = big[:8] partly
    with pytest.raises(ValueError, match="overlaps"):
        fl.softmax(big[:8], out=shifted)
    with pytest.raises(ValueError, match="overlaps"):
        fl.softmax(big[:8], out=shifted)
    with pytest.raises(ValueError, match="temperature"):
        fl.softmax(x, out=out, temperature=-1.0)
    wide = np.empty((8, 38), np.float32)[:, ::2]
    for _ in range(2):
        assert fl.softmax(x, out=wide) is wide
        # (strided out rows take the transposed tiles: within ulps of the rows)
        _close(np.ascontiguousarray(wide), fl.softmax(x), np.float32)
    labels = np.empty(8, np.uint8)
    fl.argmax(x, out=labels)
    ro_labels = np.empty(8, np.uint8)
    ro_labels.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fl.argmax(x, out=ro_labels)
