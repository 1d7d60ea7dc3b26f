"""Calls of a compiled kernel through its address, its arguments packed.

A parallel launch (:func:`fastlogits.cpu.threads.fan_out`) runs the
kernel's tasks on the threading layer's threads. Compiled per argument
types, such a launch cost 0.25-0.35 s each (a ``prange`` loop's gufunc
and two wrappers, optimized and emitted), so the launch must not see
the kernel's arguments: it passes the address of a buffer that holds
them, and every kernel's launch uses its one compiled signature
(docs/perf/cpu-078). Two parts:

- :func:`store_args` (in a small function compiled and cached per
  argument types, :func:`fastlogits.cpu.threads.pack`) writes the
  kernel's address and its arguments into a byte buffer, in the layout
  of Numba's data model, and returns the address of an entry
  ``entry(task, ntasks, argp)`` (Numba's calling convention) compiled
  into the same module: it loads the arguments back from ``argp`` and
  calls the kernel at the address stored there;
- :func:`call_entry` emits a call of such an entry (in the tasks' loop of
  :mod:`.taskpool`), and tells whether it failed (a thread cannot raise
  to the caller).

The kernel is called through its address, never linked or inlined
(Numba's ``prange`` lowering optimizes and emits a loop body four times:
a kernel inlined into it cost its first call 1.6x the kernel's own
compile time, docs/perf/cpu-077), and the address is a run-time value,
so cached code stays valid.

The buffer borrows the arguments: arrays are stored without their
reference-counted owner (Numba's ``meminfo``, set to NULL: the kernel
neither counts references on them nor frees them), so the caller keeps
the arrays alive until the tasks have run. Only arrays, numbers,
booleans, None and tuples of numbers can be packed; an array inside a
tuple (whose owner would be stored) is refused.
"""

import zlib

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

_LEAF = (types.Number, types.Boolean, types.NoneType)
_I64 = ir.IntType(64)
_ENTRY_ARGS = (types.int64, types.int64, types.voidptr)


def _packable(ty):
    """Whether an argument of Numba type ``ty`` can be packed (see the
    module docstring)."""
    if isinstance(ty, types.Array) or isinstance(ty, _LEAF):
        return True
    return isinstance(ty, types.BaseTuple) and all(isinstance(t, _LEAF) for t in ty.types)


def check_packable(argtys, who="a fanned-out kernel"):
    """Raises TypeError unless every Numba type of ``argtys`` can be packed."""
    bad = [t for t in argtys if not _packable(t)]
    if bad:
        raise TypeError(f"{who} takes arrays, numbers, booleans, None and tuples of numbers,"
                        f" not {bad[0]}")


def _packed_type(context, argtys):
    """The IR type of the buffer: the kernel's address, then the data of
    the arguments' tuple."""
    return ir.LiteralStructType([_I64, context.get_data_type(types.Tuple(tuple(argtys)))])


def packed_size(context, argtys):
    """Bytes of the buffer :func:`store_args` fills for ``argtys``."""
    return context.get_abi_sizeof(_packed_type(context, argtys))


def _entry(context, module, argtys):
    """The entry for ``argtys`` in ``module`` (defined at its first use):
    loads the kernel's address and arguments from ``argp`` and calls
    ``kernel(task, ntasks, *args)``, passing on its status."""
    tupty = types.Tuple(argtys)
    name = f"fastlogits.packed_entry.{zlib.crc32(str(tupty).encode()):08x}.{len(argtys)}"
    fnty = context.call_conv.get_function_type(types.none, _ENTRY_ARGS)
    fn = cgutils.get_or_insert_function(module, fnty, name)
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    task, ntasks, argp = context.call_conv.decode_arguments(builder, _ENTRY_ARGS, fn)
    packed = builder.load(builder.bitcast(argp, _packed_type(context, argtys).as_pointer()))
    tup = context.data_model_manager[tupty].from_data(builder, builder.extract_value(packed, 1))
    kernel_argtys = (types.int64, types.int64) + argtys
    items = [task, ntasks] + [builder.extract_value(tup, i) for i in range(len(argtys))]
    kfnty = context.call_conv.get_function_type(types.none, kernel_argtys)
    kernel = builder.inttoptr(builder.extract_value(packed, 0), kfnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, kernel, types.none, kernel_argtys, items)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    context.call_conv.return_value(builder, context.get_dummy_value())
    return fn


@intrinsic
def store_args(typingctx, buf, kernel, args):
    """Writes ``kernel`` (the address of a kernel compiled for ``(int64,
    int64, *args' types)``, returning nothing) and the tuple ``args`` into
    the byte array ``buf`` (uint8, C-contiguous, of at least
    :func:`packed_size` bytes, else ValueError), arrays without their owner
    (see the module docstring); returns the address of the entry that
    runs a task from it (:func:`call_packed`)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and buf.ndim == 1
            and buf.layout == "C" and isinstance(kernel, types.Integer)
            and isinstance(args, types.BaseTuple)):
        return None
    check_packable(args.types)
    argtys = tuple(args.types)
    tupty = types.Tuple(argtys)

    def codegen(context, builder, sig, llargs):
        bufv, addr, tup = llargs
        null = context.get_constant_null(types.voidptr)
        items = []
        for i, ty in enumerate(argtys):
            v = builder.extract_value(tup, i)
            if isinstance(ty, types.Array):
                ary = make_array(ty)(context, builder, value=v)
                ary.meminfo = null
                ary.parent = ary.parent.type(None)
                v = ary._getvalue()
            items.append(v)
        data = context.data_model_manager[tupty].as_data(
            builder, context.make_tuple(builder, tupty, items))
        packedty = _packed_type(context, argtys)
        packed = builder.insert_value(ir.Constant(packedty, ir.Undefined),
                                      context.cast(builder, addr, kernel, types.int64), 0)
        packed = builder.insert_value(packed, data, 1)
        arr = make_array(sig.args[0])(context, builder, value=bufv)
        size = context.get_constant(types.intp, context.get_abi_sizeof(packedty))
        with cgutils.if_unlikely(builder, builder.icmp_signed("<", arr.nitems, size)):
            context.call_conv.return_user_exc(builder, ValueError,
                                              ("buffer too small for the packed arguments",))
        builder.store(packed, builder.bitcast(arr.data, packedty.as_pointer()))
        return builder.ptrtoint(_entry(context, builder.module, argtys), _I64)

    return types.int64(buf, kernel, args), codegen


def call_entry(context, builder, entry, task, ntasks, argp):
    """IR: ``entry(task, ntasks, argp)`` for the entry (an i64 address)
    :func:`store_args` returned, ``argp`` (i8*) the data of the buffer it
    filled, ``task`` and ``ntasks`` i64; returns an i64, 1 if the call
    failed (raised), else 0.

    The error is not passed on: a parallel launch's threads cannot raise,
    so the caller counts failures and raises by running the kernel again
    on its own thread (:class:`fastlogits.cpu.threads._FanOut`)."""
    fnty = context.call_conv.get_function_type(types.none, _ENTRY_ARGS)
    fn = builder.inttoptr(entry, fnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, fn, types.none, _ENTRY_ARGS,
                                                [task, ntasks, argp])
    return builder.zext(status.is_error, _I64)
