"""Nested kernel calls: inlined at Numba IR level, and where still called,
typed without literal values (one specialization per argument type).

Numba compiles a function a kernel calls on its own (optimized and
emitted by LLVM, with a Python wrapper and cache files of its own), then
links it into the caller, where LLVM inlines and optimizes it again. So
:func:`share_literal_calls` sets ``inline="always"`` on the CPU backend's
helpers that are small, called from one place, or called once by each
kernel that calls them (not on the kernels the host launches, nor on
parallel functions): they are typed, lowered and optimized once, inside
their caller (docs/perf/cpu-077, cpu-078).

Where a function is still called (a kernel, a function that asks
``inline="never"``: those :func:`fastlogits.cpu.blocks.planeblock.on_c_planes`
wraps, called with ``*args``), Numba types a constant argument by its
value (``Literal[int](0)``, ``Literal[bool](False)``, a tuple holding
literal zeros) and compiles the callee again for it; 33 of the 87 nested
specializations a channels-first first call of the five ops compiled were
such twins (docs/perf/cpu-073). LLVM inlines the callees, where the
constants propagate all the same, so the twins bought no faster code, only
compile time: the dispatchers type such calls by the values' plain types.

The modules of the CPU backend are passed by :mod:`fastlogits.cpu.plan`
and :mod:`fastlogits.cpu.head_host` once imported (the kernels and every
function they call are defined by then).
"""

import dis
import sys
import types

from numba.core import types as nbtypes
from numba.core.dispatcher import Dispatcher

from fastlogits.cpu.threads import is_kernel
from fastlogits.tuning import FASTMATH


def _plain(t):
    """``t`` without literal values, in tuples too."""
    t = nbtypes.unliteral(t)
    if isinstance(t, nbtypes.BaseTuple) and not isinstance(t, nbtypes.BaseNamedTuple):
        return nbtypes.BaseTuple.from_types([_plain(e) for e in t])
    return t


def _plain_call_template(dispatcher):
    template = type(dispatcher).get_call_template

    def get_call_template(args, kws):
        return template(dispatcher, tuple(_plain(a) for a in args),
                        {k: _plain(v) for k, v in kws.items()})

    get_call_template.shares_literals = True
    return get_call_template


#: Bytes of bytecode up to which a helper is inlined at every call site
#: (prefetch, bounds, small arithmetic): duplicated, it costs less than a
#: function compiled on its own (docs/perf/cpu-077).
SMALL_HELPER_BYTES = 240


def share_literal_calls(prefix="fastlogits.cpu."):
    """Prepare every Numba dispatcher defined in an imported module named
    ``prefix...`` for calls from compiled code: inlined into its callers
    at Numba IR level where :func:`_inlined_into_callers` says so, and
    typed by its arguments' plain types where it is still called."""
    sites = _call_sites(prefix)
    for name, mod in list(sys.modules.items()):
        if not name.startswith(prefix) or mod is None:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, Dispatcher) and not getattr(
                    obj.__dict__.get("get_call_template"), "shares_literals", False):
                obj.get_call_template = _plain_call_template(obj)
                if _inlined_into_callers(obj, sites.get(obj, {})):
                    obj.targetoptions.setdefault("inline", "always")


def _inlined_into_callers(dispatcher, sites):
    """Whether a call of ``dispatcher`` (named at ``sites`` places in the
    backend's code) is inlined at Numba IR level: not a kernel (launched
    by the host, :func:`fastlogits.cpu.threads.is_kernel`) nor a parallel
    function, compiled with the kernels' flags (:func:`_kernel_flags`),
    and either small (:data:`SMALL_HELPER_BYTES`), called from one place
    only, or called once by each of its callers, all of them kernels: so
    that inlining never copies a large body twice into one kernel.
    ``sites``: ``{caller: places}`` (:func:`_call_sites`).

    Numba compiles a called function on its own (LLVM optimizes and emits
    it, with a Python wrapper and cache files), then links it into each
    caller, where LLVM inlines and optimizes it again; inlined in Numba's
    IR, it is typed, lowered and optimized once, inside its caller. Every
    helper inlined made the channels-first first calls 2.6-3.1x slower (a
    tile function called from two places, inside another called from
    two, is typed four times); this rule made a first cross_entropy 0.66x
    channels-last and 0.79x channels-first (docs/perf/cpu-077), and its
    kernels-only clause a first softmax about 0.95x (docs/perf/cpu-078).
    The machine code is LLVM's inlining either way.
    """
    options = dispatcher.targetoptions
    if is_kernel(dispatcher) or options.get("parallel") or not _kernel_flags(options):
        return False
    if sum(sites.values()) <= 1 or len(dispatcher.py_func.__code__.co_code) <= SMALL_HELPER_BYTES:
        return True
    return all(n == 1 and isinstance(c, Dispatcher) and is_kernel(c) for c, n in sites.items())


def _kernel_flags(options):
    """Whether a function compiled with ``options`` has the kernels' own
    floating-point flags (``FASTMATH``, the NumPy error model). An inlined
    body takes its caller's flags: the exact exp and log
    (:mod:`fastlogits.cpu.llvm.fastexp`, :mod:`~fastlogits.cpu.llvm.fastlog`) are compiled
    without ``reassoc``, which would undo their range reduction, so they
    must stay functions of their own (inlined, ``exp`` lost its overflow to
    inf and ``log1p`` its relative precision)."""
    fastmath = options.get("fastmath")
    return (isinstance(fastmath, (set, frozenset)) and set(fastmath) == set(FASTMATH)
            and options.get("error_model") == "numpy")


def _call_sites(prefix):
    """``{dispatcher: {caller: places}}``: where the code of the modules
    named ``prefix...`` (functions, compiled or not, and the functions
    nested in them, counted as their outer function) names each
    dispatcher, as a global or a module's attribute."""
    sites = {}
    seen = set()
    modules = [(name, mod) for name, mod in list(sys.modules.items())
               if name.startswith(prefix) and mod is not None]
    # Names a dispatcher is reached by as a module's attribute: code that
    # names none of these nor a global dispatcher is not decoded (the
    # decoding is most of this scan's 0.15 s, paid at a first call).
    attributes = {n for _, mod in modules for n, v in vars(mod).items()
                  if isinstance(v, Dispatcher)}

    def names_one(code, namespace):
        return any(n in attributes or isinstance(namespace.get(n), Dispatcher)
                   for n in code.co_names)

    def scan(code, namespace, caller):
        before = None
        for ins in (dis.get_instructions(code) if names_one(code, namespace) else ()):
            target = None
            if ins.opname == "LOAD_GLOBAL":
                target = namespace.get(ins.argval)
            elif ins.opname == "LOAD_ATTR" and isinstance(before, types.ModuleType):
                target = getattr(before, ins.argval, None)
            if isinstance(target, Dispatcher):
                where = sites.setdefault(target, {})
                where[caller] = where.get(caller, 0) + 1
            before = target
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                scan(const, namespace, caller)

    for name, mod in modules:
        for obj in vars(mod).values():
            func = obj.py_func if isinstance(obj, Dispatcher) else obj
            if (isinstance(func, types.FunctionType) and func.__module__ == name
                    and id(func) not in seen):
                seen.add(id(func))
                scan(func.__code__, func.__globals__, obj)
    return sites
