"""Input makers and comparison rules shared by the test modules."""

import numpy as np

#: Absolute tolerance of each input dtype against the float64 reference,
#: for probabilities and log-probabilities (DESIGN.md: 2e-6 for float32).
ATOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}
#: logsumexp and log_softmax grow with |x|: also a relative part.
RTOL = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}


def logits(rng, shape, dtype=np.float32, scale=3.0, offset=0.0):
    """Fresh normal logits (std ``scale``, never zeros) of ``dtype``."""
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def sprinkle_specials(rng, x, axis, frac=0.05):
    """Put NaN, +inf and -inf in some pixels, all -inf in some others, and
    exact ties in others (in place; returns x)."""
    xm = np.moveaxis(x, axis, -1)
    flat = xm.reshape(-1, xm.shape[-1]) if xm.flags.c_contiguous else None
    if flat is None:
        raise ValueError("sprinkle_specials needs a class-axis-last contiguous view")
    n, C = flat.shape
    k = max(1, int(n * frac))
    for value in (np.nan, np.inf, -np.inf):
        rows = rng.choice(n, k)
        cols = rng.integers(0, C, k)
        flat[rows, cols] = value
    flat[rng.choice(n, k)] = -np.inf  # whole pixel -inf
    tie_rows = rng.choice(n, k)
    if C > 1:
        flat[tie_rows, -1] = flat[tie_rows].max(axis=1)  # a tie with the max
    return x


def specials_array(rng, shape, axis, dtype):
    """C-contiguous logits of ``shape`` (class axis ``axis``) with special
    values. (Contiguous: a moved view of channels-last memory would send
    a channels-first ``shape`` through the channels-last kernels.)"""
    base = np.moveaxis(logits(rng, shape, dtype), axis, -1).copy()
    sprinkle_specials(rng, base, -1)
    return np.ascontiguousarray(np.moveaxis(base, -1, axis))


def assert_close(actual, expected, dtype):
    """Same shape, dtype, NaN pattern and infinities; finite values close."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg="NaN pattern differs")
    inf = np.isinf(e) | np.isinf(a)
    np.testing.assert_array_equal(a[inf], e[inf], err_msg="infinities differ")
    fin = ~np.isnan(e) & ~inf
    key = np.dtype(dtype).type
    np.testing.assert_allclose(a[fin], e[fin], atol=ATOL[key], rtol=RTOL[key])


def at_line_offset(shape, dtype, offset):
    """An empty C-contiguous array whose data start ``offset`` bytes past a
    64-byte cache line (the channels-first kernels write differently where
    an output's lines line up with x's)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(n + 128, np.uint8)
    first = -buf.ctypes.data % 64 + offset
    return buf[first:first + n].view(dtype).reshape(shape)


def stream_every_row(tune, monkeypatch, kernels, name, flag_at, block_knob):
    """Send channels-last rows of any length through the row kernels
    (``block_knob`` the register blocks' class limit, set to 0) with every
    output streamed (``cpu_stream_min_bytes`` and ``cpu_stream_row_min_bytes``
    0); returns the list to which each call of
    the kernel ``kernels.<name>`` appends its stream flag (argument
    ``flag_at`` after ``task, ntasks``)."""
    tune(cpu_stream_min_bytes=0)
    tune(cpu_stream_row_min_bytes=0)
    # serial launches at any size: the spy is called as the kernel itself
    # (a parallel launch calls the compiled kernel through its address)
    tune(cpu_serial_below=1 << 62)
    tune(cpu_row_min_classes=1)
    tune(**{block_knob: 0})
    flags = []
    kernel = getattr(kernels, name)

    def spy(task, ntasks, *args):
        flags.append(args[flag_at])
        return kernel(task, ntasks, *args)

    monkeypatch.setattr(kernels, name, spy)
    return flags


def exp_rest(t, axis=-1):
    """The kernels' exp-sum of shifted scores ``t`` (float64): the sum of
    ``exp(t)`` less the first max's term, exactly 1 (``log s = log1p`` of
    it, SciPy's rule; ``fastlogits.cpu.blocks.tiles.rest``)."""
    t = np.asarray(t, np.float64)
    e = np.exp(t)
    first = np.expand_dims(np.argmax(np.where(np.isnan(t), -np.inf, t), axis=axis), axis)
    np.put_along_axis(e, first, 0.0, axis=axis)
    return e.sum(axis=axis)


def to_bfloat16(a):
    """float32/float64 values as an ml_dtypes bfloat16 array, each rounded
    once (:func:`fastlogits._bfloat16.round_bits`)."""
    import ml_dtypes

    from fastlogits import _bfloat16

    return _bfloat16.round_bits(np.asarray(a)).view(ml_dtypes.bfloat16)


def _ordered(bits):
    """bfloat16 bits as integers in the order of their values (-0 == +0)."""
    b = bits.astype(np.int32)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def assert_bfloat16_close(got, want, atol=0.0):
    """Two ml_dtypes bfloat16 arrays: the same shape and NaN pattern, and
    every other value within one bfloat16 step (infinities equal) or
    ``atol`` (a gradient's terms that cancel: the float64 reference's
    1 - 0.9 - 0.1 is -2.8e-17, not 0)."""
    from fastlogits import _bfloat16

    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype.name == want.dtype.name == "bfloat16", (got.dtype, want.dtype)
    assert got.shape == want.shape
    g, w = got.view(np.uint16), want.view(np.uint16)
    gf, wf = _bfloat16.widen(g), _bfloat16.widen(w)
    np.testing.assert_array_equal(np.isnan(gf), np.isnan(wf), err_msg="NaN pattern differs")
    ok = ~np.isnan(wf)
    np.testing.assert_array_equal(np.isinf(gf[ok]), np.isinf(wf[ok]))
    steps = np.abs(_ordered(g[ok]) - _ordered(w[ok]))
    with np.errstate(invalid="ignore"):  # inf - inf
        near = np.abs(gf[ok].astype(np.float64) - wf[ok]) <= atol
    assert np.where(near, 0, steps).max(initial=0) <= 1, "more than one bfloat16 step apart"


def run_in_threads(work, n=4):
    """``work(k)`` for k in range(n), each in a thread of its own, all
    started before any is joined; the exceptions they raised."""
    import threading

    errors = []

    def guarded(k):
        try:
            work(k)
        except Exception as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def run_python(code, *args, timeout=600, **env):
    """``code`` run by a child Python in the repository's root (so it can
    import ``fastlogits`` and ``tests``), with ``env`` added to this
    process's environment (a value of None removes the variable); the
    completed process, its output as text. For what must start fresh:
    Numba's threading layer, its allocation statistics."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env = dict(os.environ)
    for key, value in env.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    return subprocess.run([sys.executable, "-c", code, *args], env=child_env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)
