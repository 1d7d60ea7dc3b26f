"""The exponentials of one class's run of pixels in a tile, as vectors.

The transposed tiles (:mod:`fastlogits.cpu.blocks.tiles`) sum ``exp((x[o, c, i0 + p] - m[p]) /
T)`` over classes one class row at a time: a contiguous run of P pixels.
Written as a Numba loop, LLVM vectorizes the scalar exponential of
:func:`fastlogits.cpu.llvm.fastexp.fexp_shifted`, 13 vector operations per 16
float32 scores; the register blocks and row kernels take the exp2 form
on AVX-512 (:func:`fastlogits.cpu.llvm.fastexp.exp_shifted_ir` on whole
512-bit vectors: 8). This intrinsic gives the tiles the same vectors:
``part[p] += e_p`` (and, for the log ops, ``e_p`` unless exactly 1 into
the sum of the non-maximal terms, ``part[h + p]``,
:func:`fastlogits.cpu.blocks.tiles.rest`)
and optionally ``out[p] = e_p``, 64 bytes at a time,
a masked tail for the last P % L pixels.

Only for C-contiguous arrays: :func:`tile_exp_add` falls back to the
Numba loop for other layouts.
"""

from llvmlite import ir
from numba import types
from numba.core.extending import overload
from numba.extending import intrinsic

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.fastexp import exp_shifted_ir, fexp_shifted
from fastlogits.cpu.llvm.irutil import const, i64, lane_mask, loop, masked_load, masked_store, splat
from fastlogits.cpu.llvm.irutil import non_one, vector_of, vptr
from fastlogits.cpu.llvm.scores import BITS, ScoreIR, compute_type, is_score_array, score


@intrinsic
def vexp_add(typingctx, x, xo, m, inv_t, part, h, n, out, oo, store, exact):
    """``e = exp((x.flat[xo + p] - m[p]) * inv_t)``, ``part[p] += e``,
    with ``exact`` ``part[h + p] += e`` unless e is exactly 1
    (:func:`.irutil.non_one`) and,
    with ``store``, ``out.flat[oo + p] = e``, for p < n (C-contiguous
    arrays, ``m`` and ``part`` 1-D, ``m``, ``part`` and ``out`` in the
    type x's scores are computed in (:mod:`.scores`), or ``out`` of x's
    dtype or of float16 or bfloat16 bits: never written if that is such
    bits, which must not hold unscaled exponentials). Nothing is
    bounds-checked. Garbage where ``m[p]`` is not finite, as the tiles'
    loop (callers mask those pixels)."""
    ct = compute_type(x.dtype) if is_score_array(x) else None
    if not (ct is not None and all(is_score_array(a, 1) and a.dtype == ct for a in (m, part))
            and is_score_array(out) and (out.dtype in (ct, x.dtype) or out.dtype in BITS)
            and all(isinstance(a, types.Integer) for a in (xo, h, n, oo))
            and isinstance(inv_t, types.Float)
            and all(isinstance(a, (types.Boolean, types.Integer)) for a in (store, exact))):
        return None
    sig = types.none(x, xo, m, inv_t, part, h, n, out, oo, store, exact)

    def codegen(context, builder, signature, args):
        b = builder
        scores = ScoreIR(context, signature.args[0].dtype)
        dtype = compute_type(signature.args[0].dtype)
        size = scores.compute_size
        L = 64 // size  # one 512-bit vector (two 256-bit ones on AVX2)
        vec = ir.VectorType(scores.elem, L)
        writes = signature.args[7].dtype == dtype  # never float16 bits

        def data(k):
            return context.make_array(signature.args[k])(context, b, args[k]).data

        xd, md, pd, od = data(0), data(2), data(4), data(7)
        xo, n, oo = i64(b, args[1]), i64(b, args[6]), i64(b, args[8])
        pd1 = b.gep(pd, [i64(b, args[5])])
        xd = b.gep(xd, [xo])
        od = b.gep(od, [oo])
        tv = splat(b, vec, context.cast(b, args[3], signature.args[3], dtype))
        nfull = b.sub(n, b.srem(n, const(L)))
        storing = b.icmp_unsigned("!=", args[9], ir.Constant(args[9].type, 0))
        exacting = b.icmp_unsigned("!=", args[10], ir.Constant(args[10].type, 0))

        def step(load, load_x, put, k):
            e = exp_shifted_ir(b, b.fmul(b.fsub(load_x(k), load(md, k)), tv))
            put(b.fadd(load(pd, k), e), pd, k)
            with b.if_then(exacting):
                put(b.fadd(load(pd1, k), non_one(b, e)), pd1, k)
            if writes:
                with b.if_then(storing):
                    put(e, od, k)

        def full(k, carried):
            step(lambda d, i: b.load(vptr(b, d, i, vec), align=size),
                 lambda i: scores.load(b, xd, i, L),
                 lambda v, d, i: b.store(v, vptr(b, d, i, vec), align=size), k)
            return carried

        loop(b, const(0), nfull, L, [], full, "runexp")
        mask = lane_mask(b, L, b.sub(n, nfull))
        zero = vector_of(vec, 0.0)
        with b.if_then(b.icmp_signed("<", nfull, n)):
            step(lambda d, i: masked_load(b, d, i, mask, zero),
                 lambda i: scores.masked_load(b, xd, i, mask, zero),
                 lambda v, d, i: masked_store(b, v, d, i, mask), nfull)
        return context.get_dummy_value()

    return sig, codegen


def tile_exp_add(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
    """``part[p] += exp((x[o, c, i0 + p] - m[p]) * inv_t)`` for p < P (and,
    with ``exact``, into ``part[h + p]`` unless exactly 1, as :func:`vexp_add`) and,
    with ``store``, the exponentials into ``et[eo, c, ei0 + p]``: by
    :func:`vexp_add` where x and et are C-contiguous, else a Numba loop."""
    raise NotImplementedError("tile_exp_add is only callable from Numba code")


@overload(tile_exp_add, inline="always", fastmath=FASTMATH)
def _tile_exp_add_overload(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
    if x.layout == "C" and et.layout == "C":
        def vectors(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
            C, inner = x.shape[1], x.shape[2]
            vexp_add(x, (o * C + c) * inner + i0, m, inv_t, part, h, P, et,
                     (eo * et.shape[1] + c) * et.shape[2] + ei0, store, exact)
        return vectors

    if not isinstance(et.dtype, types.Float):  # float16 bits: never written
        def reads(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
            for p in range(P):
                e = fexp_shifted((score(x[o, c, i0 + p]) - m[p]) * inv_t)
                part[p] += e
                if exact:
                    part[h + p] += e - e if e == 1.0 else e  # (e - e: 0 in e's type)
        return reads

    def scalars(x, o, c, i0, m, inv_t, part, h, P, et, eo, ei0, store, exact):
        for p in range(P):
            e = fexp_shifted((score(x[o, c, i0 + p]) - m[p]) * inv_t)
            if store:
                et[eo, c, ei0 + p] = e
            part[p] += e
            if exact:
                part[h + p] += e - e if e == 1.0 else e  # (e - e: 0 in e's type)
    return scalars
