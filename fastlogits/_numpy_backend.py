"""The ``"numpy"`` backend: :mod:`fastlogits.reference` behind the public
API's checks and ``out=`` semantics (the frontend's dispatch tables).

Each function takes the frontend's validated logits (or features) and
checked host outputs, as the CPU backend's host functions do.
"""

import numpy as np

from fastlogits import _bfloat16
from fastlogits import _checks as chk
from fastlogits import reference


def _x(lg):
    """The logits as the reference reads them (bfloat16 as its bits)."""
    return _bfloat16.Bits(lg.array) if lg.bfloat16 else lg.array


def _into(res, out):
    """``res``, or ``out`` holding it."""
    if out is None:
        return res
    out[...] = res
    return out


def expnorm(op, lg, temperature, out):
    """softmax, log_softmax or logsumexp (``op``) by the reference."""
    return _into(getattr(reference, op)(_x(lg), lg.axis, temperature=temperature), out)


def argmax(lg, out):
    return _into(reference.argmax(_x(lg), lg.axis), out)


def classify(lg, temperature, out):
    labels, conf = out or (None, None)
    res = reference.classify(_x(lg), lg.axis, temperature=temperature)
    return _into(res[0], labels), _into(res[1], conf)


def cross_entropy(lg, target, *, grad_out=None, **options):
    chk.check_target_values(target, lg.C, options["ignore_index"])
    res = reference.cross_entropy(_x(lg), target, lg.axis, **options)
    if grad_out is None:
        return res
    grad_out[...] = res[1]
    return res[0], grad_out


def confusion_matrix(lg, target, *, ignore_index, out):
    chk.check_target_values(target, lg.C, ignore_index)
    counts = reference.confusion_matrix(_x(lg), target, lg.axis, ignore_index=ignore_index)
    if out is None:
        return counts
    out += counts
    return out


# --------------------------------------------------------------------------
# LinearHead: the reference logits (F.linear in float64), then the reference
# --------------------------------------------------------------------------

def head_logits(head, fv):
    """float64 logits with the class axis at ``fv.axis``."""
    W = np.asarray(head.weight, dtype=np.float64)
    f = np.moveaxis(np.asarray(fv.array, dtype=np.float64), fv.axis, -1)
    with np.errstate(invalid="ignore", over="ignore"):  # inf features: NaN/inf logits
        z = f @ W.T
        if head.bias is not None:
            z = z + np.asarray(head.bias, dtype=np.float64)
    return np.moveaxis(z, -1, fv.axis)


def head_expnorm(head, op, fv, temperature, out):
    z = head_logits(head, fv)
    res = z if op == "logits" else getattr(reference, op)(z, fv.axis, temperature=temperature)
    return _into(np.asarray(res).astype(fv.dtype), out)


def head_argmax(head, fv, temperature, out, with_conf):
    labels, conf = (out or (None, None)) if with_conf else (out, None)
    z = head_logits(head, fv)
    if not with_conf:
        return _into(reference.argmax(z, fv.axis), labels)
    lab, cf = reference.classify(z, fv.axis, temperature=temperature)
    return _into(lab, labels), _into(cf.astype(fv.compute_dtype), conf)


def head_cross_entropy(head, fv, target, **options):
    chk.check_target_values(target, fv.C, options["ignore_index"])
    res = reference.cross_entropy(head_logits(head, fv), target, fv.axis, **options)
    none = options["reduction"] == "none"
    if not options["return_grad"]:
        return res.astype(fv.compute_dtype) if none else res
    loss, gz = res
    if none:
        loss = loss.astype(fv.compute_dtype)
    # d loss / d f = W^T d loss / d z, per pixel (float64).
    gf = np.moveaxis(gz, fv.axis, -1) @ np.asarray(head.weight, dtype=np.float64)
    return loss, np.moveaxis(gf, -1, fv.axis).astype(fv.dtype)


def head_confusion_matrix(head, fv, target, *, ignore_index, out):
    chk.check_target_values(target, fv.C, ignore_index)
    counts = reference.confusion_matrix(head_logits(head, fv), target, fv.axis,
                                        ignore_index=ignore_index)
    if out is None:
        return counts
    out += counts
    return out
