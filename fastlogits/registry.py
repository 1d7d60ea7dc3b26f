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


# --------------------------------------------------------------------------
# Every public operation and LinearHead method, on one set of inputs
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """The inputs every entry of :data:`ENTRIES` draws from: logits ``x``
    (class axis ``axis``), targets ``t`` (some ``ignore_index``), class
    weights ``w``, and a LinearHead ``head`` with features ``f`` (its
    ``N`` features along ``axis``) whose float64 logits are ``z``."""

    x: object
    axis: int
    t: object
    w: object
    head: object
    f: object
    z: object

    IGNORE = 255
    #: The head's pixels whose top-2 logits are nearer than this are
    #: ignored in ``t``: rounded to float32 they may swap, so only there
    #: may the head's labels differ from the float64 reference's.
    HEAD_MARGIN = 1e-3


def make_inputs(rng, shape, axis, dtype, features=8):
    """:class:`Inputs` of logits ``shape`` (normal, std 3) and ``dtype``."""
    import numpy as np

    from fastlogits.head import LinearHead

    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[axis]
    reduced = tuple(n for k, n in enumerate(shape) if k != axis % len(shape))
    t = rng.integers(0, C, reduced)
    t[rng.random(reduced) < 0.1] = Inputs.IGNORE
    w = rng.uniform(0.5, 2.0, C)
    W = (rng.standard_normal((C, features)) / np.sqrt(features) * 3).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    fshape = list(shape)
    fshape[axis] = features
    f = rng.standard_normal(fshape).astype(dtype)
    f64 = np.moveaxis(f.astype(np.float64), axis, -1)
    zl = f64 @ W.astype(np.float64).T + b.astype(np.float64)
    top2 = np.sort(zl, axis=-1)[..., -2:] if C > 1 else np.zeros(zl.shape[:-1] + (2,))
    t[top2[..., 1] - top2[..., 0] < Inputs.HEAD_MARGIN] = Inputs.IGNORE
    return Inputs(x, axis, t, w, LinearHead(W, b), f, np.moveaxis(zl, -1, axis))


@dataclass(frozen=True)
class Entry:
    """One public operation as the tests and benchmarks call it.

    ``call(inputs, backend)`` runs fastlogits, ``reference(inputs)`` the
    NumPy ground truth; ``compare`` says how results match: "close"
    (floats, by the input dtype's tolerance), "exact" (integers), "loss"
    (float64 sums of pixel losses)."""

    name: str
    call: Callable
    reference: Callable
    compare: str


def _loss_kw(i, **extra):
    return dict(ignore_index=Inputs.IGNORE, **extra)


def _entries():
    from fastlogits import losses

    per_pixel = [Entry(op.name, (lambda op: lambda i, be: op.public(i.x, i.axis, backend=be))(op),
                       (lambda op: lambda i: op.reference(i.x, i.axis))(op),
                       "exact" if op.exact else "close") for op in OPS.values()]
    smooth = dict(class_weight=None, label_smoothing=0.1)
    rest = [
        Entry("cross_entropy",
              lambda i, be: losses.cross_entropy(i.x, i.t, i.axis, backend=be, **_loss_kw(i)),
              lambda i: reference.cross_entropy(i.x, i.t, i.axis, **_loss_kw(i)), "loss"),
        Entry("cross_entropy.weighted_none",
              lambda i, be: losses.cross_entropy(i.x, i.t, i.axis, backend=be, reduction="none",
                                                 **_loss_kw(i, class_weight=i.w)),
              lambda i: reference.cross_entropy(i.x, i.t, i.axis, reduction="none",
                                                **_loss_kw(i, class_weight=i.w)), "loss"),
        Entry("cross_entropy.grad",
              lambda i, be: losses.cross_entropy(i.x, i.t, i.axis, backend=be, return_grad=True,
                                                 **_loss_kw(i, **smooth)),
              lambda i: reference.cross_entropy(i.x, i.t, i.axis, return_grad=True,
                                                **_loss_kw(i, **smooth)), "loss"),
        Entry("confusion_matrix",
              lambda i, be: losses.confusion_matrix(i.x, i.t, i.axis, backend=be,
                                                    ignore_index=Inputs.IGNORE),
              lambda i: reference.confusion_matrix(i.x, i.t, i.axis, ignore_index=Inputs.IGNORE),
              "exact"),
        Entry("iou",
              lambda i, be: losses.iou(losses.confusion_matrix(i.x, i.t, i.axis, backend=be,
                                                               ignore_index=Inputs.IGNORE)),
              lambda i: reference.iou(reference.confusion_matrix(i.x, i.t, i.axis,
                                                                 ignore_index=Inputs.IGNORE)),
              "close"),
        Entry("head.logits", lambda i, be: i.head.logits(i.f, i.axis, backend=be),
              lambda i: i.z, "close"),
    ]
    for name in ("softmax", "log_softmax", "logsumexp", "classify"):
        rest.append(Entry(f"head.{name}",
                          (lambda n: lambda i, be: getattr(i.head, n)(i.f, i.axis, backend=be))(name),
                          (lambda n: lambda i: getattr(reference, n)(i.z, i.axis))(name), "close"))
    rest += [
        Entry("head.argmax", lambda i, be: i.head.argmax(i.f, i.axis, backend=be),
              lambda i: reference.argmax(i.z, i.axis), "exact"),
        Entry("head.cross_entropy",
              lambda i, be: i.head.cross_entropy(i.f, i.t, i.axis, backend=be, **_loss_kw(i)),
              lambda i: reference.cross_entropy(i.z, i.t, i.axis, **_loss_kw(i)), "loss"),
        Entry("head.confusion_matrix",
              lambda i, be: i.head.confusion_matrix(i.f, i.t, i.axis, backend=be,
                                                    ignore_index=Inputs.IGNORE),
              lambda i: reference.confusion_matrix(i.z, i.t, i.axis, ignore_index=Inputs.IGNORE),
              "exact"),
    ]
    return {e.name: e for e in per_pixel + rest}


#: Every public operation (per-pixel ops, losses, metrics) and every
#: LinearHead method, by name: one table for the reference comparisons
#: (tests/test_registry.py) and the benchmarks (bench/bench_registry.py).
ENTRIES = _entries()
