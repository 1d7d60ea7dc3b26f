"""Non-temporal ("streaming") stores for outputs larger than the caches.

An ordinary store to a line that is not in cache first reads the line
from memory (a read for ownership), then writes it back when it is
evicted: writing softmax's x-sized output costs a read and a write of it.
A non-temporal store fills a whole line in a write-combining buffer and
sends it to memory without reading it first, and without evicting the
cached lines a kernel still works on. Measured on AMD Zen 4 (2 threads,
160 MB float32): an ordinary copy 11.4 ms, the same copy with
non-temporal stores 6.6 ms (docs/perf/cpu-038).

Only worth it for outputs that do not fit in the caches anyway
(``cpu_stream_min_bytes``): a small output written this way is
not in cache when the caller reads it next.

:func:`stream_copy` copies a contiguous run of elements from a scratch
(in L1) to the output: ordinary stores up to the output's first 64-byte
line boundary and after its last, non-temporal 64-byte stores in between
(they must be aligned). Non-temporal stores are weakly ordered: a
kernel calls :func:`stream_fence` after its last ones (at the end of each
chunk of work), so they are visible before the threads join, like every
other store.
"""

import platform

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastlogits.cpu.llvm.irutil import I64, const, i64, intrinsic_fn, lane_mask, loop, splat, vector_of
from fastlogits.cpu.llvm.prefetch import LINE_BYTES as LINE
from fastlogits.cpu.llvm.scores import ScoreIR, compute_type, is_score_array


def mark_nontemporal(builder, store):
    """Mark an IR store non-temporal (``!nontemporal !{i32 1}``)."""
    one = ir.Constant(ir.IntType(32), 1)
    store.set_metadata("nontemporal", builder.module.add_metadata([one]))


def _stream_codegen(transform):
    """Codegen of ``dst.flat[d0 + k] = transform(src.flat[s0 + k])`` for k <
    n, args ``(src, s0, dst, d0, n, *scalars)``: ordinary stores up to
    dst's first 64-byte line boundary and after its last, non-temporal
    64-byte stores in between. ``transform(builder, v, scalars)`` maps an
    element or a line's vector of elements (``scalars``: the extra args),
    in the type src's and dst's scores are computed in (either may hold
    float16 bits, :mod:`.scores`: widened as loaded, rounded as stored)."""
    def codegen(context, builder, sig, args):
        b = builder
        src, dst = ScoreIR(context, sig.args[0].dtype), ScoreIR(context, sig.args[2].dtype)
        size = dst.size
        per_line = LINE // size
        sdata = context.make_array(sig.args[0])(context, b, args[0]).data
        ddata = context.make_array(sig.args[2])(context, b, args[2]).data
        s0, d0, n = (i64(b, a) for a in (args[1], args[3], args[4]))
        ctype = compute_type(sig.args[0].dtype)
        scalars = [context.cast(b, a, t, ctype) for a, t in zip(args[5:], sig.args[5:])]

        def elements(lo, hi):
            """The hi - lo (< per_line) elements from lo: for a float16 dst
            one masked vector (up to 31 elements: channels-first tile rows
            are mostly off their lines, where a scalar loop slowed float16);
            else a scalar loop (the masked vector slowed float32;
            docs/perf/cpu-066)."""
            if dst.half:
                count = b.sub(hi, lo)
                with b.if_then(b.icmp_signed(">", count, const(0))):
                    mask = lane_mask(b, per_line, count)
                    zero = vector_of(ir.VectorType(src.elem, per_line), 0.0)
                    v = src.masked_load(b, sdata, b.add(s0, lo), mask, zero)
                    v = transform(b, v, [splat(b, v.type, a) for a in scalars])
                    dst.masked_store(b, v, ddata, b.add(d0, lo), mask)
                return

            def body(k, carried):
                v = src.load(b, sdata, b.add(s0, k), 1)
                dst.store(b, transform(b, v, [splat(b, v.type, a) for a in scalars]), ddata,
                          b.add(d0, k))
                return carried

            loop(b, lo, hi, 1, [], body, "elements")

        # Elements before dst's first line boundary (dst is element-aligned).
        addr = b.ptrtoint(b.gep(ddata, [d0]), I64)
        head = b.udiv(b.and_(b.sub(const(0), addr), const(LINE - 1)), const(size))
        head = b.select(b.icmp_signed("<", head, n), head, n)
        body_end = b.add(head, b.mul(b.sdiv(b.sub(n, head), const(per_line)), const(per_line)))
        elements(const(0), head)

        def line(k, carried):
            v = src.load(b, sdata, b.add(s0, k), per_line)
            v = transform(b, v, [splat(b, v.type, a) for a in scalars])
            mark_nontemporal(b, dst.store(b, v, ddata, b.add(d0, k), align=LINE))
            return carried

        loop(b, head, body_end, per_line, [], line, "lines")
        elements(body_end, n)
        return context.get_dummy_value()

    return codegen


def _stream_args_ok(src, s0, dst, d0, n):
    """C-contiguous arrays of scores (floats or float16 bits) computed in
    one type, and integer offsets."""
    return (is_score_array(src) and is_score_array(dst)
            and compute_type(src.dtype) == compute_type(dst.dtype)
            and all(isinstance(a, types.Integer) for a in (s0, d0, n)))


@intrinsic
def stream_copy(typingctx, src, s0, dst, d0, n):
    """``dst.flat[d0:d0 + n] = src.flat[s0:s0 + n]`` (C-contiguous arrays of
    one float dtype, or float32 and float16 bits, :mod:`.scores`), the
    whole 64-byte lines of dst by non-temporal stores (:func:`stream_fence`
    after the last). Nothing is bounds-checked."""
    if not _stream_args_ok(src, s0, dst, d0, n):
        return None
    return types.none(src, s0, dst, d0, n), _stream_codegen(lambda b, v, scalars: v)


def _affine(builder, v, scalars):
    shift, scale, offset = scalars
    return builder.fsub(builder.fmul(builder.fsub(v, shift), scale), offset)


@intrinsic
def stream_affine(typingctx, src, s0, dst, d0, n, shift, scale, offset):
    """``dst.flat[d0 + k] = (src.flat[s0 + k] - shift) * scale - offset``
    for k < n, stored as :func:`stream_copy` stores (the scalars are
    converted to the arrays' dtype): a log_softmax row from x's (shift
    its max, scale 1 / T, offset log s), a softmax row from its
    exponentials (0, 1 / s, 0). Nothing is bounds-checked."""
    if not (_stream_args_ok(src, s0, dst, d0, n)
            and all(isinstance(a, types.Float) for a in (shift, scale, offset))):
        return None
    return types.none(src, s0, dst, d0, n, shift, scale, offset), _stream_codegen(_affine)


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def stream_fence(typingctx):
    """Order the non-temporal stores before every later store: ``sfence`` on
    x86 (LLVM's release fence is no instruction there, and does not order
    them), a sequentially consistent fence elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            builder.call(intrinsic_fn(builder, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen
