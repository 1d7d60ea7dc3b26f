"""The op modes, one definition for every backend.

``mode`` picks the op at run time in the kernels that share one compiled
specialization between softmax, log_softmax and logsumexp (and, for the
LinearHead, the plain logits): :func:`fastlogits.cpu.ops.softmax.expnorm_cf`
and its siblings, :func:`fastlogits.cpu.ops.head.head_expnorm`,
:mod:`fastlogits.cuda.kernels.softmax` and
:func:`fastlogits.cuda.kernels.head.head_expnorm`. Numba reads these
module-level ints as compile-time constants.
"""

SOFTMAX = 0
LOG_SOFTMAX = 1
LOGSUMEXP = 2

#: ``mode`` of the LinearHead's ``head_expnorm`` besides softmax's three:
#: the plain logits.
LOGITS = 3

#: The public op names of the exp ops to their modes.
MODES = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "logsumexp": LOGSUMEXP}
