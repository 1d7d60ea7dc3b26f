"""Building blocks shared by the CPU kernels: work on one tile of pixels.

A tile is P pixels ``x[o, :, i0:i0 + P]`` of a C-contiguous 3-D array
``x`` (outer, C, inner), passed as the whole array plus offsets: Numba only
vectorizes loops over arrays whose layout it knows to be contiguous, and a
sliced view is typed 'A' (any layout), which keeps every loop scalar.

Every loop runs classes outside and pixels inside, so the inner loop is
elementwise across pixels (no reduction inside it) and vectorizes without
``nnan``: each pixel's running max, index and sum live in small scratch
vectors that stay in L1 for the whole tile.

- channels-first: the tile is read in place, a class row is contiguous;
- channels-last with few classes, or rows that are not contiguous:
  :func:`load_transposed` copies P rows into a (1, C, P) scratch first
  (the scores sit in L1 afterwards). Contiguous channels-last rows with
  enough classes (``cpu_row_min_classes``,
  ``cpu_row_argmax_min_classes``) go through the horizontal vector
  kernels of :mod:`fastlogits.cpu.blocks.rowvec` instead.

The exp-sums' inner loops (a class row's P exponentials) are vector
intrinsics (:mod:`fastlogits.cpu.llvm.runexp`), which take the register
blocks' cheaper exp2 form on AVX-512.
"""

from numba import njit
from numba.extending import overload

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.blocks.gather import BLOCK8, GATHER, gather16, transpose8
from fastlogits.cpu.blocks.planeblock import on_c_planes
from fastlogits.cpu.llvm.prefetch import LINE_BYTES, no_region, prefetch_share, tile_region
from fastlogits.cpu.llvm.rowcopy import copy_flat
from fastlogits.cpu.llvm.runexp import tile_exp_add
from fastlogits.cpu.llvm.scores import score, store_score
from fastlogits.cpu.llvm.stream import stream_copy

#: Classes summed in the input precision before the partial sum is added to
#: a float64 total: float32 sums stay accurate for C in the hundreds of
#: thousands while the inner loop runs at float32 width.
SUM_BLOCK = 128

#: Chunks of work per thread of a parallel launch (:func:`work_chunks`),
#: each allocating its scratch once.
CHUNKS_PER_THREAD = 4

#: Every offset a kernel adds to a loop index goes through ``max(i0, 0)``
#: first: Numba wraps negative indices around (``i + n if i < 0``), and
#: unless LLVM can prove ``i0 + p >= 0`` that select turns contiguous
#: loads into gathers.


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def work_chunks(njobs, nthreads):
    """Number of chunks to split ``njobs`` tiles into, which a launch's
    tasks share (:func:`chunk_bounds`): a few per thread (for balance),
    each allocating its scratch once; one on one
    thread (a small input's serial launch, where the scratch of four
    chunks cost the loss 8 of its 12 microseconds on 64 pixels).
    (``nthreads`` comes from the caller: ``numba.get_num_threads()`` inside
    a kernel would make it uncacheable.)"""
    if nthreads <= 1:
        return 1
    return max(1, min(njobs, CHUNKS_PER_THREAD * nthreads))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def chunk_bounds(chunk, nchunks, njobs):
    """``[j0, j1)``: the jobs of ``chunk`` out of ``nchunks``."""
    return chunk * njobs // nchunks, (chunk + 1) * njobs // nchunks


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def cf_tiles(x, tile):
    """Jobs per image of a channels-first driver over ``x`` (outer, C,
    inner) in tiles of ``tile`` pixels (see :func:`cf_tile`)."""
    return (x.shape[2] + tile - 1) // tile + 1


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def cf_chunks(x, tile, nthreads, task, ntasks):
    """``(per_image, njobs, nchunks, c0, c1)``: a channels-first driver's
    jobs over ``x`` (outer, C, inner) in tiles of ``tile`` pixels
    (:func:`cf_tiles`, :func:`cf_tile`), their chunks
    (:func:`work_chunks`) and task ``task``'s chunks ``[c0, c1)``
    (:func:`chunk_bounds`). ``task, ntasks`` come last: first, they mark a
    kernel the host launches (:func:`fastlogits.cpu.threads.is_kernel`),
    which is never inlined into its callers."""
    per_image = cf_tiles(x, tile)
    njobs = x.shape[0] * per_image
    nchunks = work_chunks(njobs, nthreads)
    c0, c1 = chunk_bounds(task, ntasks, nchunks)
    return per_image, njobs, nchunks, c0, c1


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def cf_tile(x, job, per_image, tile):
    """``(o, i0, P)``: image and pixels ``[i0, i0 + P)`` of channels-first
    job ``job`` (``per_image`` from :func:`cf_tiles`; P may be 0).

    An image's job 0 takes its first h pixels, those before the first one
    whose class-0 score starts a 64-byte line; its tiles start there, h +
    k * tile. NumPy puts large arrays 16 bytes past a page, and a vector
    load that spans two lines costs both: the register blocks of
    :mod:`.planeblock` took 1.7x longer on such loads (each line of a
    block is the next block's too, and the C planes' lines, a multiple of
    4 KiB apart, evict each other from L1 in between; docs/perf/cpu-037). Every class plane starts its lines at the same pixel when a
    plane is a whole number of lines (inner * itemsize % 64 == 0). ``tile``
    must be a multiple of 16 and of a line of x's scores
    (``cpu.plan._tile_pixels``: 16 float32, 32 float16): the non-temporal stores
    of the blocks rely on it, and the drivers' scratch of ``tile`` pixels
    takes job 0's h pixels too (up to a line's scores less one)."""
    inner = x.shape[2]
    o = job // per_image
    k = job - o * per_image
    size = x.itemsize
    addr = x.ctypes.data + o * x.shape[1] * inner * size
    h = min(inner, (-addr) % LINE_BYTES // size)
    if k == 0:
        return o, 0, h
    i0 = min(inner, h + (k - 1) * tile)
    return o, i0, min(inner, h + k * tile) - i0


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def next_tile_cl(x2, r0, tile, r_end, nshares, ahead_bytes):
    """Prefetch region of the channels-last tile after the one at row
    ``r0`` of ``x2`` (rows, C): rows ``[r0 + tile, r0 + 2 tile)`` up to
    ``r_end``, in ``nshares`` shares; empty for a strided ``x2`` or when
    ``ahead_bytes`` (``cpu_prefetch_bytes``) is 0. (The distance is
    always one tile; channels-first tiles are not prefetched: their C
    class segments, each in its own page, measured slower prefetched.)"""
    C = x2.shape[1]
    a = r0 + tile
    b = min(r_end, a + tile)
    if a >= b or ahead_bytes <= 0 or not x2.flags.c_contiguous:
        return no_region(x2)
    return tile_region(x2, a * C, (b - a) * C, nshares)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def load_transposed(x2, r0, P, buf):
    """Copy rows ``x2[r0:r0 + P]`` (P, C) into ``buf[0, :, :P]`` (C, P).

    From 8 classes on, 8 x 8 blocks transposed in registers
    (:func:`fastlogits.cpu.blocks.gather.transpose8`); below that, classes
    outside, the class-c scores of 16 pixels in one vector gather
    (:func:`fastlogits.cpu.blocks.gather.gather16`; LLVM would emit 16 scalar
    loads) and contiguous vector writes.
    ``buf`` must be C-contiguous, in the type x2's scores are computed in
    (:mod:`fastlogits.cpu.llvm.scores`); a strided ``x2`` (a non-contiguous view) takes the
    scalar loop.
    """
    r0 = max(r0, 0)
    C = x2.shape[1]
    T = buf.shape[2]
    if C >= BLOCK8 and x2.flags.c_contiguous:
        P8 = P - P % BLOCK8
        for p0 in range(0, P8, BLOCK8):
            for c0 in range(0, C, BLOCK8):
                transpose8(x2, (r0 + p0) * C + c0, C, min(BLOCK8, C - c0), buf, c0 * T + p0, T)
        for c in range(C):
            for p in range(P8, P):
                buf[0, c, p] = score(x2[r0 + p, c])
        return
    P16 = P - P % GATHER
    if not x2.flags.c_contiguous:  # a strided view: gather16 indexes flat memory
        P16 = 0
    for c in range(C):
        for p0 in range(0, P16, GATHER):
            gather16(x2, (r0 + p0) * C + c, C, buf, c * T + p0)
        for p in range(P16, P):
            buf[0, c, p] = score(x2[r0 + p, c])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def load_rows(x, o, i0, P, buf, pf):
    """Copy the channels-first tile ``x[o, :, i0:i0 + P]`` into ``buf[0,
    :, :P]`` (C, P), taking share c of the prefetch region ``pf`` at class
    c (:func:`fastlogits.cpu.llvm.prefetch.plane_rows_region`). ``buf`` must be
    C-contiguous, in the type x's scores are computed in (:mod:`fastlogits.cpu.llvm.scores`).

    The passes after the first then read the copy: x's class rows sit a
    plane apart, and planes a multiple of 4 KiB apart (of 1024, 65536,
    262144 pixels: most images) put a tile's rows in the same L1 sets,
    and a multiple of 128 KiB apart in the same L2 sets, so a tile of
    many classes did not stay in cache between its passes
    (docs/perf/cpu-068)."""
    i0 = max(i0, 0)
    for c in range(x.shape[1]):
        prefetch_share(pf, c)
        for p in range(P):
            buf[0, c, p] = score(x[o, c, i0 + p])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def store_transposed(buf, P, out2, r0):
    """Copy ``buf[0, :, :P]`` (C, P) back into rows ``out2[r0:r0 + P]``
    (float16 bits: rounded once, as stored; :mod:`fastlogits.cpu.llvm.scores`).

    Where :func:`load_transposed` goes by :func:`transpose8` blocks, so do
    the full 8-class blocks here (8 x 8 at a time, a whole 8-class segment
    of a row per store); the last C % 8 classes and the last P % 8 pixels
    are stored one by one (a partial row segment would need a masked
    store, microcoded on AMD Zen 3)."""
    r0 = max(r0, 0)
    C = out2.shape[1]
    T = buf.shape[2]
    c8 = 0
    P8 = 0
    if C >= BLOCK8 and out2.flags.c_contiguous:
        c8 = C - C % BLOCK8
        P8 = P - P % BLOCK8
        for p0 in range(0, P8, BLOCK8):
            for c0 in range(0, c8, BLOCK8):
                transpose8(buf, c0 * T + p0, T, BLOCK8, out2, (r0 + p0) * C + c0, C)
        for p in range(P8):
            for c in range(c8, C):
                out2[r0 + p, c] = store_score(out2, buf[0, c, p])
    for p in range(P8, P):
        for c in range(C):
            out2[r0 + p, c] = store_score(out2, buf[0, c, p])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _stream_rows_c(ebuf, out, o, i0, P):
    """:func:`tile_to_out` by non-temporal stores (C-contiguous out)."""
    C, inner, T = out.shape[1], out.shape[2], ebuf.shape[2]
    for c in range(C):
        stream_copy(ebuf, c * T, out, (o * C + c) * inner + i0, P)


#: :func:`_stream_rows_c` where out is C-contiguous; nothing otherwise (the
#: callers stream only into C-contiguous outputs).
_stream_rows = on_c_planes(_stream_rows_c)


def _class_rows_out(ebuf, out, o, i0, P):
    raise NotImplementedError("_class_rows_out is only callable from Numba code")


@overload(_class_rows_out, fastmath=FASTMATH)
def _class_rows_out_overload(ebuf, out, o, i0, P):
    """``out[o, :, i0:i0 + P] = ebuf[0, :, :P]`` by ordinary stores: one
    ``llvm.memcpy`` per class where out is C-contiguous in ebuf's dtype
    (:func:`fastlogits.cpu.llvm.rowcopy.copy_flat`; as a loop, LLVM
    vectorized it with aliasing checks in each kernel: docs/perf/cpu-080),
    else a loop rounding float16 bits as stored."""
    if out.layout == "C" and out.dtype == ebuf.dtype:
        def copy(ebuf, out, o, i0, P):
            C, inner, T = out.shape[1], out.shape[2], ebuf.shape[2]
            for c in range(C):
                copy_flat(ebuf, c * T, out, (o * C + c) * inner + i0, P)
        return copy

    def store(ebuf, out, o, i0, P):
        for c in range(out.shape[1]):
            for p in range(P):
                out[o, c, i0 + p] = store_score(out, ebuf[0, c, p])
    return store


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_to_out(ebuf, out, o, i0, P, stream):
    """``out[o, :, i0:i0 + P] = ebuf[0, :, :P]``: a channels-first tile's
    class rows from an L1 scratch (1, C, T) into the x-sized output (outer,
    C, inner; float16 bits: rounded once, as stored, :mod:`fastlogits.cpu.llvm.scores`), by
    non-temporal stores with ``stream``
    (:mod:`fastlogits.cpu.llvm.stream`: out must then be C-contiguous)."""
    i0 = max(i0, 0)
    if stream:
        _stream_rows(ebuf, out, o, i0, P)
        return
    _class_rows_out(ebuf, out, o, i0, P)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_max(x, o, i0, P, m, m2, pf):
    """Per-pixel max of the tile into ``m``; a NaN anywhere gives NaN.
    ``m2`` is scratch of at least P elements of m's dtype (see below). One
    share of the prefetch region ``pf`` per class (see
    :func:`fastlogits.cpu.llvm.prefetch.prefetch_share`).

    The running max alternates between ``m`` and ``m2`` class by class, so
    each pass reads one array and writes the other. Updated in place
    (``m[p] = v if ... else m[p]``), LLVM turns the store into a masked
    store of the lanes that changed: cheap with AVX-512, but microcoded on
    AVX2 CPUs such as AMD Zen 3, where it made this pass 10x slower
    (docs/perf/cpu-023). The start buffer is chosen so that the
    last pass writes ``m``.
    """
    i0 = max(i0, 0)
    C = x.shape[1]
    a, b = (m, m2) if C % 2 == 1 else (m2, m)
    prefetch_share(pf, 0)
    for p in range(P):
        a[p] = score(x[o, 0, i0 + p])
    for c in range(1, C):
        prefetch_share(pf, c)
        for p in range(P):
            v = score(x[o, c, i0 + p])
            mp = a[p]
            # Once m is NaN it stays NaN (v > NaN is False; a NaN v keeps NaN).
            b[p] = v if (v > mp) | (v != v) else mp
        a, b = b, a


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_argmax(x, o, i0, P, m, m2, idx, pf):
    """Per-pixel max into ``m`` and the index of its first occurrence into
    ``idx``; the first NaN wins over any number (NumPy's rule). ``m2`` is
    scratch, as for :func:`tile_max` (the running max alternates between
    ``m`` and ``m2``: no masked stores). One share of the prefetch region
    ``pf`` per class.

    Give ``idx`` as int32: the index select then runs at the lane count of
    float32 scores (int64 halves it; measured 1.6x faster on a tile in L1).
    """
    i0 = max(i0, 0)
    C = x.shape[1]
    a, b = (m, m2) if C % 2 == 1 else (m2, m)
    prefetch_share(pf, 0)
    for p in range(P):
        a[p] = score(x[o, 0, i0 + p])
        idx[p] = 0
    for c in range(1, C):
        prefetch_share(pf, c)
        for p in range(P):
            v = score(x[o, c, i0 + p])
            mp = a[p]
            ip = idx[p]
            take = (v > mp) | ((v != v) & (mp == mp))
            b[p] = v if take else mp
            idx[p] = c if take else ip
        a, b = b, a


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def rest(s, s1):
    """``s - 1`` from an exp-sum ``s`` (every term) and ``s1`` (the terms
    other than exactly 1.0): the sum of the terms but the first max's
    (exactly 1), as SciPy's logsumexp takes ``log1p`` of it. From 2 on,
    ``s - 1`` is as accurate as s; below, exactly one term is 1 (the max;
    ties give s >= 2), so s1 is that sum, with its own relative precision
    where ``s - 1`` would have lost it (``s = 1 + 4e-18`` rounds to 1)."""
    return s - 1.0 if s >= 2.0 else s1


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_exp_store(x, o, i0, P, m, inv_t, s, part, et, eo, ei0, store, exact, pf):
    """``s[p] = sum_c exp((x[o, c, i0 + p] - m[p]) * inv_t) - 1``,
    accumulated over blocks of SUM_BLOCK classes in x's precision
    (``part``), then in s's (float64, or x's dtype for the loss); with
    ``store`` the exponentials (the softmax numerators) also into
    ``et[eo, :, ei0:ei0 + P]`` (``et`` should not be ``x`` then: aliasing
    makes LLVM run the scalar fallback of the loop). With ``exact`` (the
    log ops) the sum of the terms but the first max's by :func:`rest`:
    ``s`` and ``part`` then hold at least 2 P elements each, their second
    halves the sums of the terms other than 1; without (softmax, classify:
    ``1 / (1 + s')`` needs s only) plain ``s - 1``, which loses nothing
    there (docs/perf/cpu-074). One share of the prefetch region ``pf`` per
    class.

    Pixels with a non-finite max get garbage here; callers mask them.
    """
    ei0 = max(ei0, 0)
    i0 = max(i0, 0)
    C = x.shape[1]
    h = part.size // 2  # the sums of the terms other than 1: part[h:], s[hs:]
    hs = s.size // 2
    for p in range(P):
        s[p] = 0.0
        if exact:
            s[hs + p] = 0.0
    for c0 in range(0, C, SUM_BLOCK):
        for p in range(P):
            part[p] = 0.0
            if exact:
                part[h + p] = 0.0
        for c in range(c0, min(c0 + SUM_BLOCK, C)):
            prefetch_share(pf, c)
            tile_exp_add(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact)
        for p in range(P):
            s[p] += part[p]
            if exact:
                s[hs + p] += part[h + p]
    for p in range(P):
        s[p] = rest(s[p], s[hs + p]) if exact else s[p] - 1.0


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_expsum(x, o, i0, P, m, inv_t, s, part, exact, pf):
    """:func:`tile_exp_store` without the stores."""
    tile_exp_store(x, o, i0, P, m, inv_t, s, part, x, o, i0, False, exact, pf)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def is_finite(v):
    """True for a finite float (a NaN or an inf gives v - v = NaN)."""
    return v - v == 0.0
