"""Non-temporal ("streaming") stores for outputs larger than the caches.

An ordinary store to a line that is not in cache first reads the line
from memory (a read for ownership), then writes it back when it is
evicted: writing softmax's x-sized output costs a read and a write of it.
A non-temporal store fills a whole line in a write-combining buffer and
sends it to memory without reading it first, and without evicting the
cached lines a kernel still works on. Measured on AMD Zen 4 (2 threads,
160 MB float32): an ordinary copy 11.4 ms, the same copy with
non-temporal stores 6.6 ms (bench/RESULTS.md, log 38).

Only worth it for outputs that do not fit in the caches anyway
(``config.CPU_STREAM_MIN_BYTES``): a small output written this way is
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

from fastlogits.cpu.irutil import I64, const, i64, intrinsic_fn, loop, vptr
from fastlogits.cpu.prefetch import LINE_BYTES as LINE


def mark_nontemporal(builder, store):
    """Mark an IR store non-temporal (``!nontemporal !{i32 1}``)."""
    one = ir.Constant(ir.IntType(32), 1)
    store.set_metadata("nontemporal", builder.module.add_metadata([one]))


def _copy_elements(builder, src, s0, dst, d0, lo, hi):
    """``dst[d0 + k] = src[s0 + k]`` for k in [lo, hi), one element at a time."""
    def body(k, carried):
        v = builder.load(builder.gep(src, [builder.add(s0, k)]))
        builder.store(v, builder.gep(dst, [builder.add(d0, k)]))
        return carried

    loop(builder, lo, hi, 1, [], body, "elements")


@intrinsic
def stream_copy(typingctx, src, s0, dst, d0, n):
    """``dst.flat[d0:d0 + n] = src.flat[s0:s0 + n]`` (C-contiguous arrays of
    one float dtype), the whole 64-byte lines of dst by non-temporal
    stores (:func:`stream_fence` after the last). Nothing is
    bounds-checked."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.layout == "C" and dst.layout == "C" and src.dtype == dst.dtype
            and isinstance(src.dtype, types.Float)
            and all(isinstance(a, types.Integer) for a in (s0, d0, n))):
        return None

    def codegen(context, builder, sig, args):
        b = builder
        elem = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        per_line = LINE // size
        vec = ir.VectorType(elem, per_line)
        sdata = context.make_array(sig.args[0])(context, b, args[0]).data
        ddata = context.make_array(sig.args[2])(context, b, args[2]).data
        s0, d0, n = (i64(b, a) for a in (args[1], args[3], args[4]))
        # Elements before dst's first line boundary (dst is element-aligned).
        addr = b.ptrtoint(b.gep(ddata, [d0]), I64)
        head = b.udiv(b.and_(b.sub(const(0), addr), const(LINE - 1)), const(size))
        head = b.select(b.icmp_signed("<", head, n), head, n)
        body_end = b.add(head, b.mul(b.sdiv(b.sub(n, head), const(per_line)), const(per_line)))
        _copy_elements(b, sdata, s0, ddata, d0, const(0), head)

        def line(k, carried):
            v = b.load(vptr(b, sdata, b.add(s0, k), vec), align=size)
            mark_nontemporal(b, b.store(v, vptr(b, ddata, b.add(d0, k), vec), align=LINE))
            return carried

        loop(b, head, body_end, per_line, [], line, "lines")
        _copy_elements(b, sdata, s0, ddata, d0, body_end, n)
        return context.get_dummy_value()

    return types.none(src, s0, dst, d0, n), codegen


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
