"""Calls of a compiled kernel through its address, its arguments packed.

A parallel launch (:func:`fastlogits.cpu.threads.fan_out`) runs the
kernel's tasks from a ``prange`` loop. Numba compiles such a loop per
argument types, 0.25-0.35 s each (a gufunc and two wrappers, optimized
and emitted), so the loop must not see the kernel's arguments: it passes
the address of a buffer that holds them, and every kernel's launch uses
the loop's one compiled signature (docs/perf/cpu-078). Three parts:

- :func:`store_args` (in a small function compiled per argument types,
  :func:`fastlogits.cpu.threads.pack`) writes the arguments into a byte
  buffer, in the layout of Numba's data model for their tuple;
- :func:`packed_entry` builds, per kernel and argument types, an entry
  ``entry(task, ntasks, argp)`` in Numba's calling convention: it loads
  the arguments from ``argp`` and calls the kernel at its address;
- :func:`call_packed` calls such an entry from the loop, and tells
  whether it failed (a thread cannot raise to the caller).

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

import itertools

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

_LEAF = (types.Number, types.Boolean, types.NoneType)


def packable(ty):
    """Whether an argument of Numba type ``ty`` can be packed (see the
    module docstring)."""
    if isinstance(ty, types.Array) or isinstance(ty, _LEAF):
        return True
    return isinstance(ty, types.BaseTuple) and all(isinstance(t, _LEAF) for t in ty.types)


def packed_size(context, argtys):
    """Bytes of the buffer :func:`store_args` fills for ``argtys``."""
    return context.get_abi_sizeof(context.get_data_type(types.Tuple(tuple(argtys))))


@intrinsic
def store_args(typingctx, buf, args):
    """Writes the tuple ``args`` into the byte array ``buf`` (uint8,
    C-contiguous, of at least :func:`packed_size` bytes, else ValueError),
    arrays without their owner (see the module docstring)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and buf.ndim == 1
            and buf.layout == "C" and isinstance(args, types.BaseTuple)):
        return None
    bad = [t for t in args.types if not packable(t)]
    if bad:
        raise TypeError(f"a fanned-out kernel takes arrays, numbers, booleans, None and tuples"
                        f" of numbers; cannot pack {bad[0]}")
    tupty = types.Tuple(tuple(args.types))

    def codegen(context, builder, sig, llargs):
        bufv, tup = llargs
        null = context.get_constant_null(types.voidptr)
        items = []
        for i, ty in enumerate(args.types):
            v = builder.extract_value(tup, i)
            if isinstance(ty, types.Array):
                ary = make_array(ty)(context, builder, value=v)
                ary.meminfo = null
                ary.parent = ary.parent.type(None)
                v = ary._getvalue()
            items.append(v)
        data = context.data_model_manager[tupty].as_data(
            builder, context.make_tuple(builder, tupty, items))
        arr = make_array(sig.args[0])(context, builder, value=bufv)
        size = context.get_constant(types.intp, context.get_abi_sizeof(data.type))
        with cgutils.if_unlikely(builder, builder.icmp_signed("<", arr.nitems, size)):
            context.call_conv.return_user_exc(builder, ValueError,
                                              ("buffer too small for the packed arguments",))
        builder.store(data, builder.bitcast(arr.data, data.type.as_pointer()))
        return context.get_dummy_value()

    return types.none(buf, args), codegen


_ENTRY_ARGS = (types.int64, types.int64, types.voidptr)
_names = itertools.count()


def packed_entry(context, kernel_addr, argtys):
    """``(library, address)`` of a new entry ``entry(task, ntasks, argp)``
    (Numba's calling convention, returning nothing) that calls the kernel
    compiled at ``kernel_addr`` for ``(int64, int64, *argtys)`` with the
    arguments :func:`store_args` wrote at ``argp``. The library must stay
    alive while the address is used."""
    argtys = tuple(argtys)
    tupty = types.Tuple(argtys)
    kernel_argtys = (types.int64, types.int64) + argtys
    codegen = context.codegen()
    name = f"fastlogits_packed_entry_{next(_names)}"
    library = codegen.create_library(name)
    module = library.create_ir_module(name)
    fn = ir.Function(module, context.call_conv.get_function_type(types.none, _ENTRY_ARGS), name)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    task, ntasks, argp = context.call_conv.decode_arguments(builder, _ENTRY_ARGS, fn)
    data = builder.load(builder.bitcast(argp, context.get_data_type(tupty).as_pointer()))
    tup = context.data_model_manager[tupty].from_data(builder, data)
    items = [task, ntasks] + [builder.extract_value(tup, i) for i in range(len(argtys))]
    kfnty = context.call_conv.get_function_type(types.none, kernel_argtys)
    kernel = builder.inttoptr(ir.Constant(ir.IntType(64), kernel_addr), kfnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, kernel, types.none, kernel_argtys, items)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    context.call_conv.return_value(builder, context.get_dummy_value())
    with global_compiler_lock:  # Numba's codegen is not thread-safe
        library.add_ir_module(module)
        library.finalize()
        return library, library.get_pointer_to_function(name)


@intrinsic
def call_packed(typingctx, entry, task, ntasks, buf):
    """``entry(task, ntasks, buf's data)`` for an entry from
    :func:`packed_entry` (an integer address) and the byte array ``buf``
    :func:`store_args` filled; 1 if the call failed (raised), else 0.

    The error is not passed on: a parallel loop's threads cannot raise
    (Numba's threads set the exception in a thread state the caller never
    reads, and the call then returns as if it had not failed), so the
    caller counts failures and raises by running the kernel again on its
    own thread (:class:`fastlogits.cpu.threads._FanOut`)."""
    if not (isinstance(entry, types.Integer) and isinstance(buf, types.Array)):
        return None

    def codegen(context, builder, sig, llargs):
        e, p, n, bufv = llargs
        argp = builder.bitcast(make_array(sig.args[3])(context, builder, value=bufv).data,
                               context.get_value_type(types.voidptr))
        items = [context.cast(builder, p, task, types.int64),
                 context.cast(builder, n, ntasks, types.int64), argp]
        fnty = context.call_conv.get_function_type(types.none, _ENTRY_ARGS)
        fn = builder.inttoptr(e, fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, _ENTRY_ARGS, items)
        return builder.zext(status.is_error, ir.IntType(64))

    return types.int64(entry, task, ntasks, buf), codegen
