"""Every entry of :data:`fastlogits.registry.ENTRIES` (each public op,
loss, metric and LinearHead method) against its reference, on the CPU
and NumPy backends, both layouts, odd sizes, float32 and float64."""

import numpy as np
import pytest

from fastlogits.registry import ENTRIES, Inputs, make_inputs
from tests.helpers import assert_close

#: (shape, axis): channels-last and channels-first, sizes that are no
#: multiple of any tile; 19 classes (Cityscapes) and 3 (few).
CASES = [((5, 7, 19), -1), ((2, 19, 3, 5), 1), ((11, 3), -1), ((3, 3, 13), 1)]
#: LinearHead logits are accumulated in the compute dtype: (N + 2) u sum|W f|.
HEAD_TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _check(entry, got, want, inputs, dtype):
    got = list(got) if isinstance(got, tuple) else [got]
    want = list(want) if isinstance(want, tuple) else [want]
    assert len(got) == len(want)
    head = entry.name.startswith("head.")
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if entry.compare == "exact" or g.dtype.kind in "iu":
            if head and g.ndim and g.shape == inputs.t.shape:  # labels: only clear margins
                keep = inputs.t != Inputs.IGNORE
                np.testing.assert_array_equal(g[keep], w[keep])
            else:
                np.testing.assert_array_equal(g, w)
        elif entry.compare == "loss":
            tol = {np.float32: 2e-5, np.float64: 1e-10}[dtype]
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       rtol=tol, atol=tol)
        elif head:
            tol = HEAD_TOL[dtype]
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       rtol=tol, atol=tol)
        else:
            assert_close(g, w.astype(g.dtype) if w.dtype != g.dtype else w, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("name", list(ENTRIES))
def test_entry_matches_reference(rng, name, backend, shape, axis, dtype):
    entry = ENTRIES[name]
    inputs = make_inputs(rng, shape, axis, dtype)
    _check(entry, entry.call(inputs, backend), entry.reference(inputs), inputs, dtype)


def test_registry_covers_the_public_api():
    import fastlogits as fl

    public_ops = {"softmax", "log_softmax", "logsumexp", "argmax", "classify",
                  "cross_entropy", "confusion_matrix", "iou"}
    assert public_ops <= {n.split(".")[0] for n in ENTRIES}
    methods = {n for n in dir(fl.LinearHead) if not n.startswith("_")
               and callable(getattr(fl.LinearHead, n))}
    assert {f"head.{m}" for m in methods} <= set(ENTRIES)
