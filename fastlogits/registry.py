"""One registry of the per-pixel ops: drives the tests and the benchmarks.

Each entry names the public function, its reference, what it returns and
which keyword arguments it takes, so a new op is one entry here and is
then tested against its reference and benchmarked everywhere.
"""

from dataclasses import dataclass
from typing import Callable

from fastlogits import api, reference


@dataclass(frozen=True)
class Op:
    """A per-pixel op over the class axis."""

    name: str
    public: Callable
    reference: Callable
    #: "full" (x's shape), "reduced" (class axis dropped) or "pair" (labels, confidence)
    output: str
    #: takes ``temperature=``
    tempered: bool
    #: results must equal the reference exactly (integer labels)
    exact: bool = False


OPS = {
    op.name: op
    for op in (
        Op("softmax", api.softmax, reference.softmax, "full", True),
        Op("log_softmax", api.log_softmax, reference.log_softmax, "full", True),
        Op("logsumexp", api.logsumexp, reference.logsumexp, "reduced", True),
        Op("argmax", api.argmax, reference.argmax, "reduced", False, exact=True),
        Op("classify", api.classify, reference.classify, "pair", True),
    )
}
