"""The CUDA backend's host side; this package holds the entries of the
frontend's dispatch tables: the op functions of :mod:`.ops`, :mod:`.losses`
and :mod:`.head` behind the signatures every backend shares (the
frontend's validated logits or features; outputs checked, on the device,
by those modules), which launch the kernels of
:mod:`fastlogits.cuda.kernels`."""

from fastlogits.cuda.host import head as _head
from fastlogits.cuda.host import losses as _losses
from fastlogits.cuda.host import ops as _ops


def expnorm(op, lg, temperature, out):
    return getattr(_ops, op)(lg.array, lg, temperature=temperature, out=out)


def argmax(lg, out):
    return _ops.argmax(lg.array, lg, out=out)


def classify(lg, temperature, out):
    return _ops.classify(lg.array, lg, temperature=temperature, out=out)


def cross_entropy(lg, target, *, grad_out=None, **options):
    return _losses.cross_entropy(lg.array, target, lg, grad_out=grad_out, **options)


def confusion_matrix(lg, target, *, ignore_index, out):
    return _losses.confusion_matrix(lg.array, target, lg, ignore_index=ignore_index, out=out)


def head_expnorm(head, op, fv, temperature, out):
    options = dict(out=out) if op == "logits" else dict(temperature=temperature, out=out)
    return getattr(_head, op)(head, fv.array, fv, **options)


def head_argmax(head, fv, temperature, out, with_conf):
    if with_conf:
        return _head.classify(head, fv.array, fv, temperature=temperature, out=out)
    return _head.argmax(head, fv.array, fv, out=out)


def head_cross_entropy(head, fv, target, **options):
    return _head.cross_entropy(head, fv.array, fv, target=target, **options)


def head_confusion_matrix(head, fv, target, *, ignore_index, out):
    return _head.confusion_matrix(head, fv.array, fv, target=target, ignore_index=ignore_index,
                                  out=out)
