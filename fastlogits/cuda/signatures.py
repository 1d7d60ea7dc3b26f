"""Every CUDA kernel of the logits ops and losses with the argument types
the host code launches it with: what tests/cuda/test_ptx compiles for
sm_90 (a module of its own, so the ops import none of the losses)."""

def kernel_signatures():
    """``[(name, kernel, argtypes, single_precision)]`` for every kernel as
    the ops launch it: x float16/32/64, C-contiguous views and strided
    ('A') views, several label dtypes. ``single_precision`` marks kernels
    that must not contain float64 instructions (float16/float32 input)."""
    from numba import types

    from fastlogits.cuda import argmax as ka
    from fastlogits.cuda import errflag
    from fastlogits.cuda import losses as kl
    from fastlogits.cuda import softmax as ks

    i64, b1 = types.int64, types.boolean
    sigs = []
    variants = [(types.float16, "C", types.int64), (types.float32, "C", types.int64),
                (types.float64, "C", types.int64), (types.float32, "A", types.uint8)]
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
        if xt != types.float16:
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
        ("errflag._reset", errflag._reset, (types.Array(i64, 1, "C"),), True),
    ]
    from fastlogits.cuda import copy as kc

    for dt in (types.float16, types.float32, types.float64, types.int64, types.uint8):
        a6 = types.Array(dt, 6, "A")
        single = dt != types.float64  # a float64 copy moves float64 values
        sigs += [(f"copy6[{dt}]", kc.copy6, (a6, a6), single),
                 (f"fill_zero[{dt}]", kc.fill_zero, (types.Array(dt, 1, "C"),), single)]
    return sigs
