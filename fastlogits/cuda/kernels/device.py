"""Device functions shared by every CUDA kernel family.

A pixel's (or a row's) state while its scores stream by is
``(m, s, comp, idx)``: the running max ``m`` (NaN once a NaN is seen),
the exp-sum ``s = sum exp((v - m) * inv_t)`` relative to that max over
every class but the first maximum (SciPy's rule: the first maximum's
exp(0) = 1 is left out, so ``log1p(s)`` keeps a logsumexp near 0 exact to
the last bit; ties at the max still add 1 each), Kahan
compensated by ``comp``, so a float32 sum over hundreds of thousands of
classes stays accurate without any float64 arithmetic), and the index
``idx`` of the first maximum (or of the first NaN). One read of the scores
gives max, sum and label together ("online softmax"); a new max rescales
the sum once instead of needing a second pass.

Typed constants: kernels are generic over float16/32/64, and a Python
float literal would turn float32 arithmetic into float64. Every constant is
built from ``cdt.dtype.type`` where ``cdt`` is a 1-element array of the
compute dtype (float32 for float16/float32 input, float64 for float64)
passed to every kernel; the PTX test fails on any ``.f64`` instruction in
a float16/float32 kernel.

bfloat16 logits come as their bits (uint16: CUDA's float16 is a type of
its own, so uint16 scores are never anything else) and are widened in
registers as they are read (:func:`score`), outputs of their dtype
rounded once as they are stored (:func:`stored`); every kernel reads x
through the one and writes x-shaped results through the other. Both
choose by type with ``isinstance``, which Numba decides while compiling
(the other branch is not compiled: a float16 kernel's PTX holds no
integer widening) and the simulator while running, so both run the same
code.

Group reductions (several threads own one pixel's classes) combine states
with :func:`combine`, either with warp shuffles (real GPUs) or through a
shared-memory tree (the CUDA simulator has no shuffles; tests on a real GPU
run both).
"""

import math

import numpy as np
from numba import cuda

#: Largest block the kernels accept; static shared scratch is this long.
MAX_THREADS = 1024

#: Lanes of a warp (every CUDA GPU so far).
WARP = 32

_FULL_MASK = 0xFFFFFFFF


_U32 = np.uint32


@cuda.jit(device=True)
def bfloat16_value(b):
    """The float32 value of the bfloat16 bits ``b`` (uint16): exact, the
    bits shifted into float32's upper half."""
    return _U32(_U32(b) << _U32(16)).view(np.float32)


@cuda.jit(device=True)
def bfloat16_bits(v):
    """The bfloat16 bits (uint16) of the float32 ``v``, rounded to the
    nearest, ties to even (``0x7FFF`` plus the kept half's last bit added
    before the shift); NaN stays NaN, its quiet bit set; infinities stay.
    The same rule as :func:`fastlogits._bfloat16.round_bits` on the host."""
    b = np.float32(v).view(np.uint32)
    if _U32(b & _U32(0x7FFFFFFF)) > _U32(0x7F800000):
        return np.uint16(_U32(b | _U32(0x00400000)) >> _U32(16))
    lsb = _U32(_U32(b >> _U32(16)) & _U32(1))
    return np.uint16(_U32(b + _U32(_U32(0x7FFF) + lsb)) >> _U32(16))


@cuda.jit(device=True)
def score(v, ct):
    """A score ``v`` read from x, in the compute type ``ct``: bfloat16 bits
    (uint16) widened exactly (:func:`bfloat16_value`), a float converted."""
    if isinstance(v, np.uint16):
        return bfloat16_value(v)
    return ct(v)


@cuda.jit(device=True)
def stored(a, v):
    """The computed ``v`` as stored into ``a``, an array of x's dtype: the
    bfloat16 bits of ``v`` for bfloat16 bits (uint16), rounded once
    (:func:`bfloat16_bits`); else ``v`` (the store converts it)."""
    if isinstance(a.dtype.type(0), np.uint16):
        return bfloat16_bits(v)
    return v


@cuda.jit(device=True)
def is_finite(v):
    """True for a finite float: ``v - v`` is 0 for finite v, NaN for NaN/inf
    (no literal, so no float64 promotion)."""
    d = v - v
    return d == d


@cuda.jit(device=True)
def kahan_add(s, comp, e):
    """Compensated ``s + e``; returns the new ``(s, comp)``."""
    y = e - comp
    t = s + y
    return t, (t - s) - y


@cuda.jit(device=True)
def fold(m, s, comp, idx, v, c, inv_t, one, with_sum):
    """Fold score ``v`` of class ``c`` into the state ``(m, s, comp, idx)``.

    Rules (DESIGN.md): the first NaN wins the index and keeps ``m`` NaN;
    else the first maximum wins (strict ``>``, so ties keep the earlier
    class). ``s`` leaves the first maximum out (start a pixel at its first
    score with ``s = 0``, or at ``m = -inf`` with the empty state's
    ``s = -1``); a new maximum turns the old one into a term:
    ``s = (s + 1) * exp((m - v) * inv_t)``, the scores always shifted
    before the scale (``(m - v) * inv_t``, never ``m * inv_t - v * inv_t``,
    which overflows for a tiny temperature). Later scores equal to ``m``
    count exp(0) = 1 without computing ``(v - m)``, which keeps an all -inf
    prefix finite (-inf - -inf would be NaN): when a finite score arrives
    the count is rescaled by exp(-inf) = 0. Whatever ``s`` holds once
    ``m`` is NaN or +inf is garbage the callers mask. ``with_sum=False``
    (plain argmax) skips exp.
    """
    if v > m:
        if with_sum:
            scale = math.exp((m - v) * inv_t)
            s, comp = kahan_add(s * scale, comp * scale, scale)
        m = v
        idx = c
    elif v == m:
        if with_sum:
            s, comp = kahan_add(s, comp, one)
    elif v != v:
        if m == m:
            m = v
            idx = c
    elif with_sum:
        s, comp = kahan_add(s, comp, math.exp((v - m) * inv_t))
    return m, s, comp, idx


@cuda.jit(device=True)
def combine(m1, s1, i1, m2, s2, i2, inv_t, one):
    """Merge two partial states over disjoint classes; returns ``(m, s, idx)``.

    NaN beats numbers and the smaller index wins among NaNs or equal
    maxima. Each ``s`` leaves its own first maximum out (:func:`fold`):
    the winner's sum is kept as it is, the loser's maximum becomes a term,
    ``(1 + s) * exp((m_loser - m) * inv_t)``, unscaled when its max
    equals the result's (ties and equal infinities, without computing
    inf - inf); an identity partial (m = -inf, s = -1) adds nothing.
    """
    if m1 != m1 or m2 != m2:
        if m2 != m2 and (m1 == m1 or i2 < i1):
            return m2, s2, i2
        return m1, s1, i1
    if m2 > m1 or (m2 == m1 and i2 < i1):
        m, idx, keep, lm, ls = m2, i2, s2, m1, s1
    else:
        m, idx, keep, lm, ls = m1, i1, s1, m2, s2
    lost = one + ls if lm == m else (one + ls) * math.exp((lm - m) * inv_t)
    return m, keep + lost, idx


@cuda.jit(device=True)
def _warp_reduce(m, s, idx, inv_t, one):
    """Combine the states of a full warp with shuffles; lane 0 holds the
    result (other lanes hold partial garbage)."""
    off = WARP // 2
    while off > 0:
        m2 = cuda.shfl_down_sync(_FULL_MASK, m, off)
        s2 = cuda.shfl_down_sync(_FULL_MASK, s, off)
        i2 = cuda.shfl_down_sync(_FULL_MASK, idx, off)
        m, s, idx = combine(m, s, idx, m2, s2, i2, inv_t, one)
        off //= 2
    return m, s, idx


@cuda.jit(device=True)
def group_reduce(m, s, idx, inv_t, G, shuffle, sm_m, sm_s, sm_i, ninf, one, big):
    """Combine the states of each group of ``G`` consecutive threads (``G``
    a power of two dividing the block, >= 32 with ``shuffle``) and return the
    group's result to all of its threads.

    Every thread of the block must call this (it holds ``syncthreads``).
    ``sm_*`` are shared arrays of at least ``blockDim.x`` entries; a
    thread with no classes passes the identity ``(ninf, -one, big)``.
    ``shuffle=False`` runs the shared-memory tree (the simulator's path);
    ``shuffle=True`` reduces warps with ``shfl_down_sync``, then the group's
    warp results through shared memory.
    """
    tid = cuda.threadIdx.x
    lane = tid % G
    base = tid - lane
    if shuffle:
        m, s, idx = _warp_reduce(m, s, idx, inv_t, one)
        if G > WARP:
            # Warp results to shared slots, then the group's first warp
            # reduces them (identity for lanes past the group's warps).
            warp = tid // WARP
            if tid % WARP == 0:
                sm_m[warp] = m
                sm_s[warp] = s
                sm_i[warp] = idx
            cuda.syncthreads()
            if lane < WARP:
                nw = G // WARP
                if lane < nw:
                    w = base // WARP + lane
                    m, s, idx = sm_m[w], sm_s[w], sm_i[w]
                else:
                    m, s, idx = ninf, -one, big
                m, s, idx = _warp_reduce(m, s, idx, inv_t, one)
            cuda.syncthreads()
        # Broadcast lane 0 of the group through shared slot `base`.
        if lane == 0:
            sm_m[base] = m
            sm_s[base] = s
            sm_i[base] = idx
        cuda.syncthreads()
    else:
        sm_m[tid] = m
        sm_s[tid] = s
        sm_i[tid] = idx
        cuda.syncthreads()
        stride = G // 2
        while stride > 0:
            # Threads below the stride merge their partner's slot; partners
            # are idle this step, so no slot is read while written.
            if lane < stride:
                m, s, idx = combine(m, s, idx, sm_m[tid + stride], sm_s[tid + stride],
                                    sm_i[tid + stride], inv_t, one)
                sm_m[tid] = m
                sm_s[tid] = s
                sm_i[tid] = idx
            cuda.syncthreads()
            stride //= 2
    m, s, idx = sm_m[base], sm_s[base], sm_i[base]
    # Everyone has read the result before the slots are reused.
    cuda.syncthreads()
    return m, s, idx


@cuda.jit(device=True)
def fold_strided(x, o, i, c, C, step, m, s, comp, idx, inv_t, one, with_sum, cdt):
    """Fold classes ``c, c + step, ...`` (< C) of pixel (o, i) of the 3-D
    view ``x`` into the state. Four independent loads are issued before
    their folds, so each thread keeps four requests in flight (one would
    leave the memory system idle between a load and its use)."""
    ct = cdt.dtype.type
    while c + 3 * step < C:
        v0 = score(x[o, c, i], ct)
        v1 = score(x[o, c + step, i], ct)
        v2 = score(x[o, c + 2 * step, i], ct)
        v3 = score(x[o, c + 3 * step, i], ct)
        m, s, comp, idx = fold(m, s, comp, idx, v0, c, inv_t, one, with_sum)
        m, s, comp, idx = fold(m, s, comp, idx, v1, c + step, inv_t, one, with_sum)
        m, s, comp, idx = fold(m, s, comp, idx, v2, c + 2 * step, inv_t, one, with_sum)
        m, s, comp, idx = fold(m, s, comp, idx, v3, c + 3 * step, inv_t, one, with_sum)
        c += 4 * step
    while c < C:
        m, s, comp, idx = fold(m, s, comp, idx, score(x[o, c, i], ct), c, inv_t, one, with_sum)
        c += step
    return m, s, comp, idx


@cuda.jit(device=True)
def expsum_strided(x, o, i, c, C, step, m, s, comp, inv_t, skip, zero, cdt):
    """Add ``exp((v - m) * inv_t)`` of classes ``c, c + step, ...`` (< C)
    but ``skip`` (the first maximum's index: SciPy's rule, :func:`fold`)
    of pixel (o, i) to the Kahan-compensated ``(s, comp)``, for the pixel's
    finite max ``m`` (from :func:`fold_strided` without sums, which
    neither exponentiates nor rescales):
    every term is at most 1, so no rescaling; the scores are re-read from
    L1/L2, where the first pass just brought them."""
    ct = cdt.dtype.type
    while c + 3 * step < C:
        v0 = score(x[o, c, i], ct)
        v1 = score(x[o, c + step, i], ct)
        v2 = score(x[o, c + 2 * step, i], ct)
        v3 = score(x[o, c + 3 * step, i], ct)
        s, comp = kahan_add(s, comp, zero if c == skip else math.exp((v0 - m) * inv_t))
        s, comp = kahan_add(s, comp, zero if c + step == skip else math.exp((v1 - m) * inv_t))
        s, comp = kahan_add(s, comp, zero if c + 2 * step == skip else math.exp((v2 - m) * inv_t))
        s, comp = kahan_add(s, comp, zero if c + 3 * step == skip else math.exp((v3 - m) * inv_t))
        c += 4 * step
    while c < C:
        if c != skip:
            s, comp = kahan_add(s, comp, math.exp((score(x[o, c, i], ct) - m) * inv_t))
        c += step
    return s, comp


@cuda.jit(device=True)
def pixel_two_pass(x, o, i, C, inv_t, with_sum, one, zero, cdt):
    """``(m, s, idx)`` of pixel (o, i) of the (outer, C, inner) view
    ``x``, for a thread that owns the pixel: the max and its first index
    (:func:`fold_strided` without sums: no exponential, no rescaling),
    then, with ``with_sum``, ``s = sum exp((x - m) * inv_t)`` over the
    classes but ``idx`` (:func:`expsum_strided`, the scores re-read from
    L1/L2). ``s`` is 0 where m is not finite, which the callers turn into NaN. Two passes
    because a one-pass fold rescales its sum whenever a thread meets a new
    max, and the threads of a warp meet theirs at different classes: the
    warp would run both branches (docs/perf/cuda-046)."""
    m, _, _, idx = fold_strided(x, o, i, 1, C, 1, score(x[o, 0, i], cdt.dtype.type), one, zero,
                                0, inv_t, one, False, cdt)
    s = zero
    if with_sum and is_finite(m):
        s, comp = expsum_strided(x, o, i, 0, C, 1, m, zero, zero, inv_t, idx, zero, cdt)
        s = s - comp
    return m, s, idx


@cuda.jit(device=True)
def _next_cell(r, c, dr, dc, C):
    """Advance (row, class) of a tile by ``blockDim.x`` scores."""
    r += dr
    c += dc
    if c >= C:
        c -= C
        r += 1
    return r, c


@cuda.jit(device=True)
def tile_copy(x, tile, r0, n, C, pitch, to_tile):
    """Copy rows ``r0 .. r0 + n`` of the (rows, C, 1) view ``x`` into the
    shared ``tile`` (row pitch ``pitch``), or back (``to_tile=False``).

    The block walks the tile's ``n * C`` scores in memory order, thread t
    taking scores t, t + T, ... (T = blockDim.x): consecutive threads touch
    consecutive addresses (coalesced). The (row, class) of a score advances
    without division; four copies per step keep four loads in flight.
    """
    T = cuda.blockDim.x
    tid = cuda.threadIdx.x
    dr = T // C
    dc = T - dr * C
    r = tid // C
    c = tid - r * C
    k = tid
    total = n * C
    while k + 3 * T < total:
        ra, ca = r, c
        rb, cb = _next_cell(ra, ca, dr, dc, C)
        rc, cc = _next_cell(rb, cb, dr, dc, C)
        rd, cd = _next_cell(rc, cc, dr, dc, C)
        if to_tile:
            va = x[r0 + ra, ca, 0]
            vb = x[r0 + rb, cb, 0]
            vc = x[r0 + rc, cc, 0]
            vd = x[r0 + rd, cd, 0]
            tile[ra * pitch + ca] = va
            tile[rb * pitch + cb] = vb
            tile[rc * pitch + cc] = vc
            tile[rd * pitch + cd] = vd
        else:
            x[r0 + ra, ca, 0] = tile[ra * pitch + ca]
            x[r0 + rb, cb, 0] = tile[rb * pitch + cb]
            x[r0 + rc, cc, 0] = tile[rc * pitch + cc]
            x[r0 + rd, cd, 0] = tile[rd * pitch + cd]
        r, c = _next_cell(rd, cd, dr, dc, C)
        k += 4 * T
    while k < total:
        if to_tile:
            tile[r * pitch + c] = x[r0 + r, c, 0]
        else:
            x[r0 + r, c, 0] = tile[r * pitch + c]
        r, c = _next_cell(r, c, dr, dc, C)
        k += T


@cuda.jit(device=True)
def group_sum(v, G, shuffle, sm, zero):
    """Sum ``v`` over each group of ``G`` consecutive threads (as
    :func:`group_reduce`: every thread of the block calls it, every thread
    of a group gets its group's sum). ``sm`` is a shared array of at least
    ``blockDim.x`` entries of v's type; ``zero`` is v's type's 0."""
    tid = cuda.threadIdx.x
    lane = tid % G
    base = tid - lane
    if shuffle:
        off = WARP // 2
        while off > 0:
            v += cuda.shfl_down_sync(_FULL_MASK, v, off)
            off //= 2
        if G > WARP:
            if tid % WARP == 0:
                sm[tid // WARP] = v
            cuda.syncthreads()
            if lane < WARP:
                nw = G // WARP
                v = sm[base // WARP + lane] if lane < nw else zero
                off = WARP // 2
                while off > 0:
                    v += cuda.shfl_down_sync(_FULL_MASK, v, off)
                    off //= 2
            cuda.syncthreads()
        if lane == 0:
            sm[base] = v
        cuda.syncthreads()
    else:
        sm[tid] = v
        cuda.syncthreads()
        stride = G // 2
        while stride > 0:
            if lane < stride:
                v += sm[tid + stride]
                sm[tid] = v
            cuda.syncthreads()
            stride //= 2
    v = sm[base]
    cuda.syncthreads()
    return v


@cuda.jit(device=True)
def block_total(v, sm):
    """Sum of ``v`` over the whole block, returned to thread 0 (other
    threads get partial sums). Any block size; ``sm`` holds ``blockDim.x``
    entries. A pairwise tree: the rounding error grows with log2 of the
    block size, not with its length."""
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    sm[tid] = v
    cuda.syncthreads()
    stride = 1
    while stride < T:
        stride *= 2
    stride //= 2
    while stride > 0:
        if tid < stride and tid + stride < T:
            v += sm[tid + stride]
            sm[tid] = v
        cuda.syncthreads()
        stride //= 2
    return v
