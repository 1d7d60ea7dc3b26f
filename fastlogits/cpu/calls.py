"""Nested kernel calls typed without literal values: one specialization per
argument type.

Numba types a constant argument of a call from compiled code by its value
(``Literal[int](0)``, ``Literal[bool](False)``, a tuple holding literal
zeros) and compiles the callee again for it: ``_tile(buf, 0, 0, ...)`` next
to ``_tile(x, o, i0, ...)``, ``_lse(ROWS, ...)`` next to ``_lse(P, ...)``.
33 of the 87 nested specializations a channels-first first call of the
five ops compiled were such twins (docs/perf/cpu-073). LLVM inlines the
callees into the drivers, where the constants propagate all the same, so
the twins bought no faster code, only compile time.

:func:`share_literal_calls` makes the dispatchers of the given modules
type such calls by the values' plain types. The modules of the CPU
backend are passed by :mod:`fastlogits.cpu.plan` and
:mod:`fastlogits.cpu.head_host` once imported (the drivers and every
function they call are defined by then).
"""

import sys

from numba.core import types
from numba.core.dispatcher import Dispatcher


def _plain(t):
    """``t`` without literal values, in tuples too."""
    t = types.unliteral(t)
    if isinstance(t, types.BaseTuple) and not isinstance(t, types.BaseNamedTuple):
        return types.BaseTuple.from_types([_plain(e) for e in t])
    return t


def _plain_call_template(dispatcher):
    template = type(dispatcher).get_call_template

    def get_call_template(args, kws):
        return template(dispatcher, tuple(_plain(a) for a in args),
                        {k: _plain(v) for k, v in kws.items()})

    get_call_template.shares_literals = True
    return get_call_template


def share_literal_calls(prefix="fastlogits.cpu."):
    """Type calls from compiled code to every Numba dispatcher defined in an
    imported module named ``prefix...`` by their arguments' plain types."""
    for name, mod in list(sys.modules.items()):
        if not name.startswith(prefix) or mod is None:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, Dispatcher) and not getattr(
                    obj.__dict__.get("get_call_template"), "shares_literals", False):
                obj.get_call_template = _plain_call_template(obj)
