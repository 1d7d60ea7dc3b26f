"""The IR helpers of :mod:`fastlogits.cpu.llvm.irutil` that the kernels' tests
do not pin down on their own."""

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastlogits.cpu.llvm.irutil import masked_gather, vptr

LANES = 16


def _gather_kernel(index_bits):
    """``gather(x, idx, mask, out)``: ``out[l] = x[idx[l]]`` where
    ``mask[l]``, else -7, by one :func:`masked_gather` of LANES lanes with
    ``index_bits``-bit offsets."""

    @intrinsic
    def gather(typingctx, x, idx, mask, out):
        def codegen(context, b, sig, args):
            xa, ia, ma, oa = (context.make_array(t)(context, b, a) for t, a in zip(sig.args, args))
            elem = context.get_data_type(sig.args[0].dtype)
            vec = ir.VectorType(elem, LANES)
            ivec = ir.VectorType(ir.IntType(index_bits), LANES)
            zero = ir.Constant(ir.IntType(64), 0)
            at = b.load(vptr(b, ia.data, zero, ivec), align=index_bits // 8)
            on = b.icmp_signed("!=", b.load(vptr(b, ma.data, zero, ir.VectorType(ir.IntType(8),
                                                                                   LANES)), align=1),
                               ir.Constant(ir.VectorType(ir.IntType(8), LANES), [0] * LANES))
            got = masked_gather(b, xa.data, at, on, ir.Constant(vec, [-7.0] * LANES))
            b.store(got, vptr(b, oa.data, zero, vec), align=context.get_abi_sizeof(elem))
            return context.get_dummy_value()

        return types.none(x, idx, mask, out), codegen

    @njit
    def run(x, idx, mask, out):
        gather(x, idx, mask, out)

    return run


@pytest.mark.parametrize("index_bits", [32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_gather_reads_the_lanes_of_its_mask_only(rng, dtype, index_bits):
    """Each lane of the mask gets its element (any order, repeats, the
    last); the others keep the pass-through value and read nothing: their
    offsets point far outside x, where a read would fault."""
    run = _gather_kernel(index_bits)
    x = rng.standard_normal(1000).astype(dtype)
    itype = np.int32 if index_bits == 32 else np.int64
    far = np.iinfo(np.int32).max if index_bits == 32 else 1 << 40
    for _ in range(20):
        idx = rng.integers(0, x.size, LANES).astype(itype)
        idx[0] = x.size - 1
        mask = (rng.random(LANES) < 0.6).astype(np.uint8)
        idx[mask == 0] = far
        out = np.empty(LANES, dtype)
        run(x, idx, mask, out)
        expected = np.where(mask != 0, x[np.minimum(idx, x.size - 1)], dtype(-7.0))
        np.testing.assert_array_equal(out, expected)
