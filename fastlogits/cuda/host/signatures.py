"""Every CUDA kernel with the argument types the host code launches it
with: what the PTX test (tests/cuda_host/test_cuda_ptx.py) compiles for
sm_90 without a GPU. :func:`kernel_signatures` for the logits ops and
losses, :func:`head_kernel_signatures` for the LinearHead's (a module of
its own, so the ops import none of the losses)."""

def kernel_signatures():
    """``[(name, kernel, argtypes, single_precision)]`` for every kernel as
    the ops launch it: x float16/32/64 and bfloat16 (its bits, uint16),
    C-contiguous views and strided ('A') views, several label dtypes.
    ``single_precision`` marks kernels that must not contain float64
    instructions (float16/bfloat16/float32 input)."""
    from numba import types

    from fastlogits.cuda.kernels import argmax as ka
    from fastlogits.cuda.kernels import errflag
    from fastlogits.cuda.kernels import losses as kl
    from fastlogits.cuda.kernels import softmax as ks

    i64, b1 = types.int64, types.boolean
    sigs = []
    variants = [(types.float16, "C", types.int64), (types.float32, "C", types.int64),
                (types.float64, "C", types.int64), (types.float32, "A", types.uint8),
                (types.uint16, "C", types.int64)]  # uint16: bfloat16's bits
    for xt, layout, lt in variants:
        ct = types.float64 if xt == types.float64 else types.float32

        def arr(dt, nd, lay=layout):
            return types.Array(dt, nd, lay)

        tag = f"{xt}-{layout}"
        expnorm = (arr(xt, 3), arr(xt, 3), arr(xt, 2), arr(ct, 1, "C"), ct, i64)
        labels = (arr(xt, 3), arr(lt, 2), arr(ct, 2), arr(ct, 1, "C"), ct, b1)
        single = ct == types.float32
        sigs += [
            (f"expnorm_cf[{tag}]", ks.expnorm_cf, expnorm, single),
            (f"expnorm_cl_tile[{tag}]", ks.expnorm_cl_tile, expnorm + (i64,), single),
            (f"expnorm_rows[{tag}]", ks.expnorm_rows, expnorm + (i64, b1), single),
            (f"argmax_cf[{tag}-{lt}]", ka.argmax_cf, labels, single),
            (f"argmax_cl_tile[{tag}-{lt}]", ka.argmax_cl_tile, labels + (i64,), single),
            (f"argmax_rows[{tag}-{lt}]", ka.argmax_rows, labels + (i64, b1), single),
        ]
        tt = types.uint8 if layout == "A" else types.int64
        ce = (arr(xt, 3), arr(tt, 2), arr(ct, 1, "C"), arr(ct, 2, "C"), arr(xt, 3),
              arr(ct, 2, "C"), arr(i64, 1, "C"), arr(ct, 1, "C"), i64, ct, ct, ct,
              arr(ct, 1, "C"), b1, b1)
        ce_loss = (arr(xt, 3), arr(tt, 2), arr(ct, 1, "C"), arr(ct, 2, "C"), arr(ct, 2, "C"),
                   arr(i64, 1, "C"), arr(ct, 1, "C"), i64, b1)
        sigs += [
            (f"cross_entropy_pixels[{tag}-{tt}]", kl.cross_entropy_pixels, ce, single),
            (f"cross_entropy_loss_pixels[{tag}-{tt}]", kl.cross_entropy_loss_pixels, ce_loss,
             single),
            (f"cross_entropy_rows[{tag}-{tt}]", kl.cross_entropy_rows, ce + (i64, b1), single),
            (f"confusion_pixels[{tag}-{tt}]", kl.confusion_pixels,
             (arr(xt, 3), arr(tt, 2), types.Array(i64, 2, "C"), arr(i64, 1, "C"),
              arr(ct, 1, "C"), i64, b1), single),
        ]
        if xt in (types.float32, types.float64):  # x's dtype is not in these
            sigs += [
                (f"target_weights[{ct}-{tt}]", kl.target_weights,
                 (arr(tt, 2), arr(ct, 1, "C"), arr(ct, 2, "C"), arr(i64, 1, "C"), arr(ct, 1, "C"),
                  i64, i64), single),
                # Totals in float64 by design (not a single-precision kernel).
                (f"sum_rows[{ct}]", kl.sum_rows,
                 (arr(ct, 2, "C"), arr(types.float64, 1, "C"), arr(ct, 1, "C"), b1), False),
            ]
    i2 = types.Array(i64, 2, "C")
    sigs += [
        ("confusion_count", kl.confusion_count,
         (types.Array(types.int32, 2, "C"), types.Array(types.uint8, 2, "A"), i2,
          types.Array(i64, 1, "C"), i64, b1), True),
        ("add_into", kl.add_into, (i2, i2), True),
        ("errflag.reset_flag", errflag.reset_flag, (types.Array(i64, 1, "C"),), True),
    ]
    from fastlogits.cuda.kernels import copy as kc

    for dt in (types.float16, types.float32, types.float64, types.int64, types.uint8,
               types.uint16):
        a6 = types.Array(dt, 6, "A")
        single = dt != types.float64  # a float64 copy moves float64 values
        sigs += [(f"copy6[{dt}]", kc.copy6, (a6, a6), single),
                 (f"fill_zero[{dt}]", kc.fill_zero, (types.Array(dt, 1, "C"),), single)]
    return sigs


def head_kernel_signatures():
    """``[(name, kernel, argtypes, single_precision)]`` for the head kernels
    as the host side launches them: features float16/32/64 (C-contiguous)
    and float32 strided ('A') views, weights in the compute dtype."""
    from numba import types

    from fastlogits.cuda.kernels import head as kh

    i64, b1 = types.int64, types.boolean
    tail = (i64, i64, b1, b1, i64)
    sigs = []
    variants = [(types.float16, "C", types.int64), (types.float32, "C", types.int64),
                (types.float64, "C", types.int64), (types.float32, "A", types.uint8)]
    for ft, layout, lt in variants:
        ct = types.float64 if ft == types.float64 else types.float32
        single = ct == types.float32

        def arr(dt, nd, lay=layout):
            return types.Array(dt, nd, lay)

        tag = f"{ft}-{layout}"
        wb = (arr(ct, 2, "C"), arr(ct, 1, "C"))
        cdt = arr(ct, 1, "C")
        sigs += [
            (f"head_expnorm[{tag}]", kh.head_expnorm,
             (arr(ft, 3),) + wb + (arr(ft, 3), arr(ft, 2), cdt, ct, i64) + tail, single),
            (f"head_argmax[{tag}-{lt}]", kh.head_argmax,
             (arr(ft, 3),) + wb + (arr(lt, 2), arr(ct, 2), cdt, ct, b1) + tail, single),
            (f"head_xent[{tag}-{lt}]", kh.head_xent,
             (arr(ft, 3),) + wb + (arr(lt, 2), arr(ct, 1, "C"), arr(ct, 2), arr(ct, 3),
                                   arr(ct, 2, "C"), arr(i64, 1, "C"), cdt, i64, ct, ct, ct, ct,
                                   b1, b1) + tail, single),
            (f"head_confusion[{tag}-{lt}]", kh.head_confusion,
             (arr(ft, 3),) + wb + (arr(lt, 2), types.Array(i64, 2, "C"), arr(i64, 1, "C"), cdt,
                                   i64, b1) + tail, single),
        ]
    for src, dst in ((types.float64, types.float32), (types.float16, types.float32),
                     (types.float32, types.float16)):
        sigs.append((f"cast3[{src}->{dst}]", kh.cast3,
                     (types.Array(src, 3, "A"), types.Array(dst, 3, "C")),
                     types.float64 not in (src, dst)))
    return sigs
