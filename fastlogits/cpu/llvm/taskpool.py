"""Tasks on Numba's threading layer without a ``prange`` loop: :func:`run_tasks`.

A parallel launch (:func:`fastlogits.cpu.threads.fan_out`) runs a
kernel's tasks ``0 .. ntasks - 1`` through an entry that
:mod:`.indirect` packed. A ``prange`` loop can do that, but Numba
compiles it through its parfor passes into a gufunc and two wrappers,
each optimized and emitted: 0.15-0.2 s of the first call of every op in
a process whose cache is empty (docs/perf/cpu-081), for a loop of one
line. The loop ends in one call of the threading layer's
``numba_parallel_for`` (the symbol Numba binds when it starts its
threads; ``build_gufunc_kernel`` in ``numba/np/ufunc/parallel.py`` calls
it the same way); :func:`run_tasks` emits that call and the small
ufunc-style loop it runs, inside an ordinary ``@njit`` function.

``numba_parallel_for(fn, args, dims, steps, data, inner_ndim,
array_count, num_threads)`` splits the ``dims[0]`` items among its
threads (TBB, OpenMP and workqueue alike) and calls ``fn(args', dims',
steps, data)`` on each share: ``dims'[0]`` items from ``args'[j] =
args[j] + steps[j] * first``. Here the one array is the tasks' status
(int64, one per task), so a share's first task is its status pointer's
offset from the first status, and ``data`` holds the entry, the task
count and the packed arguments.

The call does not hold the GIL: the caller is compiled ``nogil``.
"""

from llvmlite import ir
from numba import get_num_threads, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from fastlogits.cpu.llvm.indirect import call_entry

_I8P = ir.IntType(8).as_pointer()
_I64 = ir.IntType(64)
_I64P = _I64.as_pointer()
_I32 = ir.IntType(32)
#: What the tasks' loop reads through ``data``: the entry's address, the
#: task count, the packed arguments, the first task's status.
_DATA = ir.LiteralStructType([_I64, _I64, _I8P, _I64P])
_LOOP_NAME = "fastlogits.taskpool.loop"


def _tasks_loop(context, module):
    """The ufunc-style loop ``void loop(char **args, intp *dims, intp
    *steps, void *data)`` that ``numba_parallel_for`` calls on each
    thread's share (see the module docstring), in ``module``: each task's
    status (1 if the entry raised, else 0) into its slot of ``args[0]``."""
    fnty = ir.FunctionType(ir.VoidType(), [_I8P.as_pointer(), _I64P, _I64P, _I8P])
    fn = cgutils.get_or_insert_function(module, fnty, _LOOP_NAME)
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args, dims, _, data = fn.args
    d = b.load(b.bitcast(data, _DATA.as_pointer()))
    entry, ntasks, argp, first = (b.extract_value(d, i) for i in range(4))
    status = b.bitcast(b.load(args), _I64P)
    # This share's first task: its status slot's offset from task 0's.
    task0 = b.ptrtoint(status, _I64)
    task0 = b.sdiv(b.sub(task0, b.ptrtoint(first, _I64)), _I64(8))
    with cgutils.for_range(b, b.load(dims)) as loop:
        failed = call_entry(context, b, entry, b.add(task0, loop.index), ntasks, argp)
        b.store(failed, b.gep(status, [loop.index]))
    b.ret_void()
    return fn


@intrinsic
def run_tasks(typingctx, entry, buf, status):
    """Runs ``entry(task, ntasks, buf's data)`` for every task ``0 ..
    ntasks - 1`` (``ntasks = len(status)``, any count) on Numba's
    threading layer, split among the launching thread's thread count
    (``numba.get_num_threads()``) of threads, and stores into
    ``status[task]`` 1 if the task raised, else 0. ``entry`` and ``buf``
    come from :func:`fastlogits.cpu.llvm.indirect.store_args`; ``status``
    is a C-contiguous int64 array. The threads cannot raise: the caller
    counts the failures (:func:`fastlogits.cpu.threads.fan_out`).

    Numba's threads must be running before the compiled code loads (any
    call of ``numba.get_num_threads`` starts them and binds the layer's
    symbols); the codegen starts them for the compile."""
    if not (isinstance(entry, types.Integer) and isinstance(buf, types.Array)
            and isinstance(status, types.Array) and status.dtype == types.int64
            and status.ndim == 1 and status.layout == "C"):
        return None

    def codegen(context, builder, sig, llargs):
        get_num_threads()  # starts the threads: binds numba_parallel_for
        e, bufv, statusv = llargs
        b = builder
        argp = b.bitcast(make_array(sig.args[1])(context, b, value=bufv).data, _I8P)
        st = make_array(sig.args[2])(context, b, value=statusv)
        ntasks = b.extract_value(st.shape, 0)
        data = cgutils.alloca_once(b, _DATA)
        for i, v in enumerate((context.cast(b, e, entry, types.int64), ntasks, argp,
                               b.bitcast(st.data, _I64P))):
            b.store(v, b.gep(data, [_I32(0), _I32(i)]))
        args = cgutils.alloca_once(b, _I8P)
        b.store(b.bitcast(st.data, _I8P), args)
        dims = cgutils.alloca_once(b, _I64)
        b.store(ntasks, dims)
        steps = cgutils.alloca_once(b, _I64)
        b.store(_I64(8), steps)
        # Declared as Numba declares them (numba/np/ufunc/parallel.py), so
        # that no module holds two types for one symbol.
        pfty = ir.FunctionType(ir.VoidType(), [_I8P] * 5 + [_I64] * 3)
        parallel_for = cgutils.get_or_insert_function(b.module, pfty, "numba_parallel_for")
        nthreads = b.call(cgutils.get_or_insert_function(b.module, ir.FunctionType(_I64, []),
                                                         "get_num_threads"), [])
        loop = _tasks_loop(context, b.module)
        with cgutils.if_likely(b, b.icmp_signed(">", ntasks, _I64(0))):
            # inner_ndim 0 (dims holds the count only), one array (the
            # status), the calling thread's thread count: the layer splits
            # the tasks among that many threads (workqueue needs at most
            # its pool's size, whatever the task count).
            b.call(parallel_for, [b.bitcast(loop, _I8P), b.bitcast(args, _I8P), b.bitcast(dims, _I8P),
                                  b.bitcast(steps, _I8P), b.bitcast(data, _I8P), _I64(0), _I64(1),
                                  nthreads])
        return context.get_dummy_value()

    return types.none(entry, buf, status), codegen
