"""A call of a compiled kernel through its address, never inlined.

:func:`call_at` calls the Numba-compiled function at ``addr`` (its
entry in Numba's own calling convention, from
:func:`fastlogits.cpu.threads.kernel_address`) with ``(task, ntasks,
*args)``, and passes on an error status the way a nested call does.

The address is a run-time value, so the caller's module neither links
nor inlines the kernel: :func:`fastlogits.cpu.threads.fan_out`'s parallel
region stays a few instructions. Numba's ``prange`` lowering optimizes
and emits a loop body four times (the gufunc, two wrappers around it and
the caller), so a kernel inlined into it cost its driver's first call
1.6x the kernel's own compile time (docs/perf/cpu-077). Caching is
unaffected: the address is an argument, never a constant.
"""

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def call_at(typingctx, addr, task, ntasks, args):
    """``kernel(task, ntasks, *args)`` for the kernel compiled at ``addr``
    (an integer) for exactly those argument types, ``task`` and
    ``ntasks`` int64. The kernel returns nothing (checked by
    :func:`fastlogits.cpu.threads.kernel_address`)."""
    if not isinstance(args, types.BaseTuple) or not isinstance(addr, types.Integer):
        return None
    argtys = (types.int64, types.int64) + tuple(args.types)

    def codegen(context, builder, sig, llargs):
        a, p, n, tup = llargs
        items = [context.cast(builder, p, task, types.int64),
                 context.cast(builder, n, ntasks, types.int64)]
        items += [builder.extract_value(tup, i) for i in range(len(args.types))]
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = builder.inttoptr(a, fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtys, items)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(addr, task, ntasks, args), codegen
