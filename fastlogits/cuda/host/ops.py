"""Host side of the CUDA backend's logits ops (called through :mod:`fastlogits.cuda.host`).

Each op receives the original ``x`` and its validated ``_frontend.Logits``; here
``out=`` is validated (GPU outputs through their ``__cuda_array_interface__``
metadata, before any kernel runs), the canonical (outer, C, inner) device
view of x is built, the regime and launch configuration are read from
:mod:`fastlogits.tuning` (at call time; tests shrink them by its override), the
kernel is queued on the caller's stream, and the results come back in the
caller's library: a PyTorch tensor in, PyTorch tensors out; CuPy in, CuPy
out; Numba device arrays (or any other GPU array) in, Numba device arrays
out; NumPy in (``backend="cuda"``), NumPy out (copied back).

Regimes (see :func:`plan`): ``"cf"`` channels-first, a thread per pixel,
also channels-last with C <= ``cuda_cl_pixel_max_c`` for the ops that
reduce the class axis (each thread reading its pixel's contiguous scores);
``"tile"`` channels-last with C <= ``cuda_tile_max_c`` otherwise, a thread
per pixel over a shared-memory tile; ``"rows"`` a warp per row (C <= ``cuda_large_c``)
or a block per row (larger C), also for channels-first inputs with large C
and few pixels.
"""

import numpy as np

from fastlogits import _checks as chk
from fastlogits import _layout, pool, tuning
from fastlogits._modes import LOG_SOFTMAX, LOGSUMEXP, SOFTMAX
from fastlogits.cuda import runtime

WARP = 32


# --------------------------------------------------------------------------
# Launch plan
# --------------------------------------------------------------------------

class Plan:
    """Kernel regime and launch configuration for one canonical shape."""

    def __init__(self, regime, blocks, threads, group=0, pitch=0, shared_bytes=0, shuffle=False):
        self.regime = regime
        self.blocks = blocks
        self.threads = threads
        self.group = group
        self.pitch = pitch
        self.shared_bytes = shared_bytes
        self.shuffle = shuffle

    def __repr__(self):
        return (f"Plan({self.regime!r}, blocks={self.blocks}, threads={self.threads}, "
                f"group={self.group}, pitch={self.pitch}, shared_bytes={self.shared_bytes}, "
                f"shuffle={self.shuffle})")


def _threads_per_block():
    t = int(tuning.current().cuda.threads_per_block)
    if t < WARP or t > 1024 or t % WARP:
        raise ValueError(
            f"tuning knob cuda_threads_per_block={t} must be a multiple of {WARP} in "
            f"[{WARP}, 1024]")
    return t


def _blocks(work, per_block):
    return int(max(1, min(-(-work // per_block), int(tuning.current().cuda.max_blocks))))


def _config_key():
    """The configuration :func:`plan` reads (tests change it between calls)."""
    return (tuning.current().cuda.threads_per_block, tuning.current().cuda.max_blocks, tuning.current().cuda.large_c,
            tuning.current().cuda.cf_min_pixels, tuning.current().cuda.cl_pixel_max_c, tuning.current().cuda.tile_max_c,
            tuning.current().cuda.tile_shared_bytes, tuning.current().cuda.warp_shuffle)


_PLANS = {}


def plan(shape3, itemsize, writes_scores=False):
    """:func:`make_plan`, cached per (shape, itemsize, op kind, configuration):
    the regime, grid and block are computed once per geometry (issue 36,
    per-call host cost)."""
    key = (shape3, itemsize, writes_scores, _config_key(), runtime.warp_shuffles())
    p = _PLANS.get(key)
    if p is None:
        p = make_plan(shape3, itemsize, writes_scores)
        if len(_PLANS) >= 1024:
            _PLANS.pop(next(iter(_PLANS)), None)
        _PLANS[key] = p
    return p


def make_plan(shape3, itemsize, writes_scores=False):
    """Choose the regime and launch configuration for an (outer, C, inner)
    input of ``itemsize``-byte scores, from the current :mod:`fastlogits.tuning`.

    ``writes_scores``: the op writes an output of x's shape (softmax,
    log_softmax). Channels-last, such an op keeps the shared tile, which
    stores coalesced: a thread per pixel writing its own C scores ran 1.56x
    slower (H200, docs/perf/cuda-042), while for the reductions it is 1.5-2.6x
    faster than the tile."""
    outer, C, inner = shape3
    T = _threads_per_block()
    npix = outer * inner
    shuffle = bool(tuning.current().cuda.warp_shuffle) and runtime.warp_shuffles()
    if inner > 1 and not (C > tuning.current().cuda.large_c and npix < tuning.current().cuda.cf_min_pixels):
        return Plan("cf", _blocks(npix, T), T)
    if inner == 1 and C <= tuning.current().cuda.cl_pixel_max_c and not writes_scores:
        return Plan("cf", _blocks(npix, T), T)  # a thread per pixel, its scores contiguous
    if inner == 1 and C <= tuning.current().cuda.tile_max_c:
        pitch = C | 1  # odd pitch: a warp's row starts fall in distinct banks
        per_row = pitch * itemsize
        tile_threads = min(T, int(tuning.current().cuda.tile_shared_bytes) // per_row // WARP * WARP)
        if tile_threads >= WARP:
            return Plan("tile", _blocks(npix, tile_threads), tile_threads, pitch=pitch,
                        shared_bytes=tile_threads * per_row)
    # Large C: the block's largest power-of-two share (the whole block for
    # the usual 128, 256, 512, 1024 threads); the tree needs a power of two.
    G = (T & -T) if C > tuning.current().cuda.large_c else WARP
    return Plan("rows", _blocks(npix, T // G), T, group=G, shuffle=shuffle)


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------

class _Output:
    """One output: what the caller gets back and the device array kernels write.

    ``out`` is the caller's array (GPU, or NumPy for a host input) or None
    (allocate in the caller's library). :meth:`view` gives a no-copy
    device view of another shape, or a temporary that :meth:`finish`
    copies back (on the stream).
    """

    def __init__(self, caller, out, shape, dtype):
        self.caller = caller
        self.host_out = None  # the caller's NumPy out, filled after the copy back
        self.temps = []
        # Results computed here for a host input go back to the host; a GPU
        # out given with a host input stays where it is.
        self.to_host = not caller.gpu and not chk.is_gpu_array(out)
        if out is None:
            self.obj, self.dev = caller.empty(shape, dtype)
        elif chk.is_gpu_array(out):
            empty = not all(runtime.interface(out)["shape"])
            self.obj, self.dev = out, None if empty else runtime.as_device(out)
        else:
            self.host_out = out
            self.obj, self.dev = caller.empty(shape, dtype)

    def view(self, shape):
        v = runtime.reshape(self.dev, shape)
        if v is None:
            _, v = self.caller.empty(shape, self.dev.dtype)
            self.temps.append(v)
        return v

    def finish(self):
        for tmp in self.temps:
            runtime.copy_into(self.dev, runtime.reshape(tmp, self.dev.shape), self.caller.stream)


def _host_target(o):
    """Where a host result lands: the caller's NumPy ``out`` itself when the
    device array can be copied into it (C-contiguous, same shape and
    dtype), else a new array (reused blocks for large results, as the CPU
    backend's: :mod:`fastlogits.pool`)."""
    out, dev = o.host_out, o.dev
    if (out is not None and out.flags.c_contiguous and out.shape == tuple(dev.shape)
            and out.dtype == dev.dtype):
        return out
    return pool.empty(dev.shape, dev.dtype)


def _finish(caller, outputs):
    """The objects to hand back, in the caller's library; host results are
    copied back (into the caller's NumPy ``out`` where given: straight
    when its layout allows, else through a temporary)."""
    for o in outputs:
        o.finish()
    pending = [(o, o.dev.copy_to_host(_host_target(o), stream=caller.stream))
               for o in outputs if o.to_host]
    if pending:
        caller.stream.synchronize()
    host = {id(o): h for o, h in pending}
    results = []
    for o in outputs:
        if not o.to_host:
            results.append(o.obj)
        elif o.host_out is not None:
            if host[id(o)] is not o.host_out:
                o.host_out[...] = host[id(o)]
            results.append(o.host_out)
        else:
            results.append(host[id(o)])
    return results


def _check_out(caller, lg, out, shape, dtype, name, kind="float", in_place_ok=False):
    """Validate a user ``out=`` for the CUDA backend (None passes); returns it."""
    if out is None:
        return None
    if not chk.is_gpu_array(out):
        if caller.gpu:
            raise TypeError(
                f"{name} must be a GPU array (with __cuda_array_interface__) for a GPU input x, "
                f"got {type(out).__name__}")
        chk.check_out(out, shape, dtype, name, kind)
        if out is not lg.array and out is not caller.x:
            chk.check_no_partial_overlap(out, lg.array, name)
        return out
    cai = runtime.interface(out)
    oshape, odtype = tuple(int(n) for n in cai["shape"]), np.dtype(cai["typestr"])
    chk.check_out_meta(oshape, odtype, shape, dtype, name, kind)
    if cai["data"][1]:
        raise ValueError(f"{name} is read-only")
    if caller.gpu and oshape and all(oshape):
        xcai = caller.cai
        same = (cai["data"][0] == xcai["data"][0] and oshape == tuple(xcai["shape"])
                and np.dtype(cai["typestr"]) == np.dtype(xcai["typestr"])
                and _strides(cai) == _strides(xcai))
        if same and not in_place_ok:
            raise ValueError(f"{name} is x itself; this op cannot write its result in place")
        if not same:
            lo, hi = runtime.byte_range(cai)
            xlo, xhi = runtime.byte_range(xcai)
            if lo < xhi and xlo < hi:
                raise ValueError(
                    f"{name} overlaps x without being x itself; pass out=x for in place")
    return out


def _strides(cai):
    st = cai.get("strides")
    if st is None:
        return runtime.contiguous_strides(tuple(cai["shape"]), np.dtype(cai["typestr"]).itemsize)
    return tuple(st)


def _check_pairwise(outs, names):
    """The outputs of one call must not overlap each other."""
    cais = [(runtime.interface(o), n) for o, n in zip(outs, names)
            if o is not None and chk.is_gpu_array(o)]
    for a in range(len(cais)):
        for b in range(a + 1, len(cais)):
            lo, hi = runtime.byte_range(cais[a][0])
            lo2, hi2 = runtime.byte_range(cais[b][0])
            if lo < hi2 and lo2 < hi:
                raise ValueError(f"{cais[a][1]} and {cais[b][1]} overlap")


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def _input3(caller, lg, shape3=None):
    """The canonical (outer, C, inner) device view of x (a copy only if its
    strides forbid a view, or for a host input): from x's interface as
    read once by the caller, at the cached geometry (:func:`runtime.geometry`)."""
    if shape3 is None:
        shape3 = split_shape(lg.shape, lg.axis)
    if not caller.gpu:
        return caller.to_device(_layout.canonical(lg.array, lg.axis))
    v = runtime.reshape_cai(caller.cai, caller.x, shape3)
    if v is None:
        _, tmp = caller.contiguous(runtime.view_of(caller.cai, caller.x))
        v = runtime.reshape(tmp, shape3)
    return v


_SPLITS = {}


def split_shape(shape, axis):
    """:func:`_layout.split_shape`, cached (a geometry)."""
    key = (shape, axis)
    s3 = _SPLITS.get(key)
    if s3 is None:
        if len(_SPLITS) >= 1024:
            _SPLITS.clear()
        s3 = _SPLITS[key] = _layout.split_shape(shape, axis)
    return s3


def _cdt(lg, caller=None):
    return runtime.stand_in(lg.compute_dtype, 1, None if caller is None else caller.ctx)


_INV_T = {}


def _inv_t(lg, temperature):
    """The checked temperature's scale (cached for plain Python numbers)."""
    if type(temperature) not in (float, int):
        return chk.inv_temperature(temperature, lg.dtype)
    key = (temperature, lg.dtype)
    v = _INV_T.get(key)
    if v is None:
        v = chk.inv_temperature(temperature, lg.dtype)
        if len(_INV_T) >= 256:
            _INV_T.clear()
        _INV_T[key] = v
    return v


def _launch(kernel, p, caller, *args):
    runtime.launch(kernel, p.blocks, p.threads, caller.stream, p.shared_bytes, *args)


# --------------------------------------------------------------------------
# softmax, log_softmax, logsumexp
# --------------------------------------------------------------------------

def _expnorm(mode, x, lg, temperature, out):
    inv_t = _inv_t(lg, temperature)
    caller = runtime.Caller(x, lg.cai)
    reduces = mode == LOGSUMEXP
    shape = lg.reduced_shape if reduces else lg.shape
    out = _check_out(caller, lg, out, shape, lg.dtype, "out", in_place_ok=not reduces)
    with caller.activate():
        res = _Output(caller, out, shape, lg.dtype)
        if not lg.empty:
            from fastlogits.cuda.kernels import softmax as k

            outer, C, inner = shape3 = split_shape(lg.shape, lg.axis)
            x3 = _input3(caller, lg, shape3)
            if reduces:
                out3 = runtime.stand_in(lg.dtype, 3, caller.ctx)
                red2 = res.view((outer, inner))
            else:
                out3 = res.view(shape3)
                red2 = runtime.stand_in(lg.dtype, 2, caller.ctx)
            p = plan(shape3, lg.dtype.itemsize, writes_scores=not reduces)
            cdt = _cdt(lg, caller)
            if p.regime == "cf":
                _launch(k.expnorm_cf, p, caller, x3, out3, red2, cdt, inv_t, mode)
            elif p.regime == "tile":
                _launch(k.expnorm_cl_tile, p, caller, x3, out3, red2, cdt, inv_t, mode, p.pitch)
            else:
                _launch(k.expnorm_rows, p, caller, x3, out3, red2, cdt, inv_t, mode, p.group,
                        p.shuffle)
        return _finish(caller, [res])[0]


def softmax(x, lg, temperature=1.0, out=None):
    """CUDA softmax; see :func:`fastlogits.softmax` (``lg`` validated by the API)."""
    return _expnorm(SOFTMAX, x, lg, temperature, out)


def log_softmax(x, lg, temperature=1.0, out=None):
    """CUDA log_softmax; see :func:`fastlogits.log_softmax`."""
    return _expnorm(LOG_SOFTMAX, x, lg, temperature, out)


def logsumexp(x, lg, temperature=1.0, out=None):
    """CUDA logsumexp; see :func:`fastlogits.logsumexp`."""
    return _expnorm(LOGSUMEXP, x, lg, temperature, out)


# --------------------------------------------------------------------------
# argmax, classify
# --------------------------------------------------------------------------

def _labels_conf(x, lg, temperature, labels, conf, with_conf):
    inv_t = _inv_t(lg, temperature)
    caller = runtime.Caller(x, lg.cai)
    labels = _check_out(caller, lg, labels, lg.reduced_shape, lg.C - 1,
                        "out[0] (labels)" if with_conf else "out", kind="label")
    if with_conf:
        conf = _check_out(caller, lg, conf, lg.reduced_shape, lg.compute_dtype,
                          "out[1] (confidence)")
        _check_pairwise([labels, conf], ["out[0] (labels)", "out[1] (confidence)"])
    with caller.activate():
        outputs = [_Output(caller, labels, lg.reduced_shape, np.int64)]
        if with_conf:
            outputs.append(_Output(caller, conf, lg.reduced_shape, lg.compute_dtype))
        if not lg.empty:
            from fastlogits.cuda.kernels import argmax as k

            outer, C, inner = shape3 = split_shape(lg.shape, lg.axis)
            x3 = _input3(caller, lg, shape3)
            lab2 = outputs[0].view((outer, inner))
            conf2 = outputs[1].view((outer, inner)) if with_conf else runtime.stand_in(
                lg.compute_dtype, 2, caller.ctx)
            p = plan(shape3, lg.dtype.itemsize)
            cdt = _cdt(lg, caller)
            if p.regime == "cf":
                _launch(k.argmax_cf, p, caller, x3, lab2, conf2, cdt, inv_t, with_conf)
            elif p.regime == "tile":
                _launch(k.argmax_cl_tile, p, caller, x3, lab2, conf2, cdt, inv_t, with_conf,
                        p.pitch)
            else:
                _launch(k.argmax_rows, p, caller, x3, lab2, conf2, cdt, inv_t, with_conf,
                        p.group, p.shuffle)
        return _finish(caller, outputs)


def argmax(x, lg, out=None):
    """CUDA argmax; see :func:`fastlogits.argmax`."""
    return _labels_conf(x, lg, 1.0, out, None, False)[0]


def classify(x, lg, temperature=1.0, out=None):
    """CUDA classify; see :func:`fastlogits.classify`. Returns ``(labels, confidence)``."""
    labels, conf = out if out is not None else (None, None)
    return tuple(_labels_conf(x, lg, temperature, labels, conf, True))


# --------------------------------------------------------------------------
# Signatures (for the PTX test: compile every kernel without a GPU)
# --------------------------------------------------------------------------
