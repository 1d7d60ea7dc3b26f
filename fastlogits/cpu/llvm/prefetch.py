"""Software prefetch: ``prefetch(a, i)`` asks for the cache line holding
``a.flat[i]`` (a C-contiguous array) without waiting for it.

The LinearHead kernels compute for long enough on each block of features
that the hardware prefetchers, which stop at 4 KiB page boundaries, leave
every new block to start with cache misses: measured on one thread, the
channels-last product ran at 60 GFLOP/s on cached features and 30 GFLOP/s
streaming them from memory. Prefetching the block a few steps ahead
overlaps the memory traffic with the arithmetic, provided the prefetches
are spread over the block's work: the 64 lines of a 4-pixel block issued
in one burst filled the line-fill buffers and stalled the running loads
(a share before each class block ran 1.4x faster; docs/perf/cpu-015,
cpu-016).

``llvm.prefetch`` never faults, so an index past the end of the array is
harmless (the address is formed without ``inbounds``).

The channels-last kernels of the core ops, losses and confusion matrix
are in the same position (docs/perf/cpu-022): without help, a
thread's memory stream and its arithmetic ran one after the other. The
row kernels prefetch a fixed distance ahead (:func:`prefetch_row`), the
transposed tiles the next tile, a share per class of each pass
(:func:`prefetch_share`); ``tuning.override(cpu_prefetch_bytes=0)`` turns both
off.

The channels-first kernels read a line from each of C class planes per
block (or a row from each per tile), more streams than the hardware
prefetcher follows: their blocks prefetch each plane a few blocks ahead
(:func:`prefetch_planes`), their tiles the row a few classes ahead
(:func:`plane_rows_region`), into L2 (docs/perf/cpu-037;
``tuning.override(cpu_prefetch_plane_bytes=0)`` turns both off).

Measured, and not used: prefetching the next channels-first tile, of the
head (256 feature rows) or of the core ops (C class rows), each row in its
own page: both slower (docs/perf/cpu-015, cpu-022).
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from fastlogits.tuning import FASTMATH
from fastlogits.cpu.llvm.irutil import element_ptr, loop


#: Bytes of a cache line: a prefetch every this many bytes covers a range.
LINE_BYTES = 64


@intrinsic
def prefetch(typingctx, arr, index):
    """Prefetch ``arr.flat[index]`` for reading into every cache level (L1 on)."""
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        _prefetch_call(builder, element_ptr(context, builder, signature.args[0], args[0], args[1]))
        return context.get_dummy_value()

    return types.none(arr, index), codegen


#: ``llvm.prefetch`` localities: into every cache level (``prefetcht0``),
#: or into L2 and below (``prefetcht1``), leaving L1 alone.
EVERY_LEVEL, L2_DOWN = 3, 2


def _prefetch_call(builder, ptr, locality=EVERY_LEVEL):
    """``llvm.prefetch`` of the line holding ``ptr``."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    # rw = 0 (read), locality, cache = 1 (data)
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, locality),
                      ir.Constant(i32, 1)])


def _span_intrinsic(locality):
    @intrinsic
    def prefetch_span(typingctx, arr, a, b):
        """Prefetch the cache lines whose first byte lies in ``arr.flat[a:b]``
        (a C-contiguous array): consecutive spans then request every line
        once, and a span's partial first line is left to the span before it
        (a row kernel's previous row, a channels-first tile's previous tile),
        which has already brought it in."""
        if not (isinstance(arr, types.Array) and isinstance(a, types.Integer)
                and isinstance(b, types.Integer)):
            return None
        return types.none(arr, a, b), _span_codegen(arr, locality)
    return prefetch_span


def _span_codegen(arr, locality):
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        size = ir.Constant(i64, context.get_abi_sizeof(context.get_data_type(arr.dtype)))
        lo, hi = (builder.sext(v, i64) if v.type.width < 64 else v for v in args[1:])
        base = builder.ptrtoint(ary.data, i64)
        start = builder.add(base, builder.mul(lo, size))
        stop = builder.add(base, builder.mul(hi, size))
        first = builder.and_(builder.add(start, ir.Constant(i64, LINE_BYTES - 1)),
                             ir.Constant(i64, -LINE_BYTES))

        def body(addr, carried):
            _prefetch_call(builder, builder.inttoptr(addr, ir.IntType(8).as_pointer()), locality)
            return []

        loop(builder, first, stop, LINE_BYTES, [], body, "prefetch")
        return context.get_dummy_value()

    return codegen


#: ``prefetch_span(arr, a, b)``: the lines into every cache level.
prefetch_span = _span_intrinsic(EVERY_LEVEL)
#: The same into L2 and below (see :func:`prefetch_planes`).
prefetch_span_l2 = _span_intrinsic(L2_DOWN)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def rows_ahead(C, itemsize, ahead_bytes):
    """How many rows of C scores ahead of the current one the row kernels
    prefetch: ``ahead_bytes`` (``cpu_prefetch_bytes``; 0 turns it
    off) worth, at least one row."""
    if ahead_bytes <= 0:
        return 0
    return max(1, ahead_bytes // max(1, C * itemsize))


@intrinsic
def line_elements(typingctx, arr):
    """Elements of ``arr``'s dtype per cache line, as a compile-time
    constant (Numba reads ``arr.itemsize`` at run time)."""
    if not isinstance(arr, types.Array):
        return None
    n = max(1, LINE_BYTES // (arr.dtype.bitwidth // 8))

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(64), n)

    return types.int64(arr), codegen


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def prefetch_row(x2, r, ahead):
    """Prefetch row ``r + ahead`` of the C-contiguous (rows, C) ``x2``, if
    there is one (``ahead`` from :func:`rows_ahead`; 0 does nothing).

    ``max(1, row bytes // 64)`` prefetches a line apart from the row's
    start: the same count for every row (a loop whose trip count varied
    from row to row, one prefetch per line exactly, mispredicted and
    measured slower), and a line they miss is the next row's first.
    """
    rows, C = x2.shape
    q = r + ahead
    if ahead > 0 and q < rows:
        step = line_elements(x2)
        start = q * C
        for k in range(max(1, C // step)):
            prefetch(x2, start + k * step)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def prefetch_rows(x2, r, n, ahead):
    """Prefetch rows ``[r + ahead, r + ahead + n)`` of the C-contiguous
    (rows, C) ``x2`` (``ahead`` from :func:`rows_ahead`; 0 does nothing):
    one span, so calls for consecutive groups of rows request every line
    once (a group of 8 short rows is not a whole number of lines)."""
    if ahead > 0:
        C = x2.shape[1]
        prefetch_span(x2, (r + ahead) * C, (r + ahead + n) * C)


#: The channels-first blocks of fewer classes are not prefetched: the
#: hardware prefetcher follows that many streams (8 classes ran no faster
#: with the prefetch, 19 and 40 1.1-1.5x; docs/perf/cpu-037).
PLANES_PREFETCH_MIN_CLASSES = 16


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def planes_ahead(x, ahead_bytes):
    """How many pixels ahead of the current block the channels-first
    register blocks prefetch: ``ahead_bytes``
    (``cpu_prefetch_plane_bytes``; 0 turns it off) worth of a class
    plane of x; none below :data:`PLANES_PREFETCH_MIN_CLASSES` classes."""
    if x.shape[1] < PLANES_PREFETCH_MIN_CLASSES:
        return 0
    return max(0, ahead_bytes) // x.itemsize


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def prefetch_planes(x, start, n, ahead):
    """Prefetch, in every class plane of the C-contiguous (outer, C, inner)
    x, the ``n`` scores ``ahead`` pixels past the block at flat index
    ``start`` (see :mod:`fastlogits.cpu.blocks.planeblock`); ``ahead`` 0 does
    nothing.

    The hardware prefetcher follows a few streams, not the C of a
    channels-first block (each a plane apart): with each block's lines
    requested a few blocks ahead, the 19-class classify took 1.1-1.3x
    less time on AMD Zen 4 (docs/perf/cpu-037). Into L2, not L1:
    in planes a multiple of 4 KiB apart (1024 x 2048 pixels, ...) the C
    lines of a block share one L1 set, and prefetched into L1 they evicted
    the lines being read (then the same prefetch made the 19-class argmax
    1.2x slower)."""
    if ahead > 0:
        C, inner = x.shape[1], x.shape[2]
        for c in range(C):
            a = start + c * inner + ahead
            prefetch_span_l2(x, a, a + n)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def tile_region(arr, start, length, nshares):
    """A region to prefetch in ``nshares`` shares while a tile is worked on
    (see :func:`prefetch_share`): ``arr.flat[start:start + length]`` of a
    C-contiguous ``arr``."""
    return (arr, start, length, 0, nshares, 0)


#: Classes ahead of the current one that a channels-first tile prefetches
#: (:func:`plane_rows_region`): 4 and 8 measured about alike, 2 less good
#: (the argmax tile loops at 150 and 19 classes, docs/perf/cpu-037).
TILE_CLASSES_AHEAD = 8


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def plane_rows_region(x, o, i0, P, ahead):
    """The prefetch region of the channels-first tile ``x[o, :, i0:i0 +
    P]`` (x (outer, C, inner)): share c, taken at class c of the tile's
    first pass, is the tile's row of class c + :data:`TILE_CLASSES_AHEAD`,
    prefetched into L2 (as :func:`prefetch_planes`, for the same reasons);
    the first classes of a tile are not prefetched, nor anything in later
    passes (prefetching them again there measured no faster: the ops with
    a second pass, 150 classes, 0.96-1.02x). Empty for a strided x,
    ``ahead`` 0 (the blocks' distance, :func:`planes_ahead`: 0 turns both
    off) or fewer than :data:`PLANES_PREFETCH_MIN_CLASSES` classes.

    (The next tile's rows, prefetched instead, measured slower
    (docs/perf/cpu-022): all C of them at the same offsets of their planes.)"""
    C, inner = x.shape[1], x.shape[2]
    if ahead <= 0 or C < PLANES_PREFETCH_MIN_CLASSES or not x.flags.c_contiguous:
        return no_region(x)
    k = TILE_CLASSES_AHEAD
    return (x, (o * C + k) * inner + max(i0, 0), P, 0, C - k, inner)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def no_region(arr):
    """An empty :func:`tile_region`: the calls of :func:`prefetch_share` on
    it do nothing (strided input, a chunk's last tile, cached scratch)."""
    return (arr, 0, 0, 0, 1, 0)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def region_from(pf, k0):
    """``pf`` whose shares are numbered from ``k0`` (the second pass over a
    tile continues where the first stopped)."""
    return (pf[0], pf[1], pf[2], k0, pf[4], pf[5])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def share_bounds(total, j, nshares):
    """``[a, b)``: share ``j`` of ``nshares`` of ``range(total)`` (empty
    for j outside [0, nshares) or an empty range)."""
    if total <= 0 or j < 0 or j >= nshares:
        return 0, 0
    return j * total // nshares, (j + 1) * total // nshares


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def prefetch_share(pf, k):
    """Prefetch share ``pf[3] + k`` of the ``pf[4]`` shares of a region.

    A tile kernel calls this once per class of each pass over its tile, so
    the next tile's lines are requested evenly over the current tile's
    work: a burst of them at once fills the line-fill buffers and stalls
    the running loads. A region of rows (``pf[5]``, their stride, not 0:
    :func:`plane_rows_region`) has one row of ``pf[2]`` elements per
    share, prefetched into L2.
    """
    arr, start, length, k0, nk, stride = pf
    j = k0 + k
    if stride > 0:
        if 0 <= j < nk:
            a = start + j * stride
            prefetch_span_l2(arr, a, a + length)
        return
    a, b = share_bounds(length, j, nk)
    prefetch_span(arr, start + a, start + b)
