"""Device-to-device copies and zero fills, as kernels.

numba-cuda's public copies (``copy_to_device``) need contiguous arrays on
both sides; the host code needs ``dst[...] = src`` for any strides (an
input with a negative stride, an ``out=`` no view can reach) and zeroed
counts. Kernels do both, and run the same under the simulator as on a GPU
(:func:`fastlogits.cuda.runtime.copy_into`, :func:`~fastlogits.cuda.runtime.fill_zero`).
"""

from numba import cuda


@cuda.jit(cache=True)
def copy6(src, dst):
    """``dst[...] = src`` for 6-D views of one shape (any strides): a thread
    per element, grid-stride."""
    n0, n1, n2, n3, n4, n5 = dst.shape
    total = n0 * n1 * n2 * n3 * n4 * n5
    for p in range(cuda.grid(1), total, cuda.gridsize(1)):
        q = p
        i5 = q % n5
        q //= n5
        i4 = q % n4
        q //= n4
        i3 = q % n3
        q //= n3
        i2 = q % n2
        q //= n2
        i1 = q % n1
        i0 = q // n1
        dst[i0, i1, i2, i3, i4, i5] = src[i0, i1, i2, i3, i4, i5]


@cuda.jit(cache=True)
def fill_zero(a):
    """``a[:] = 0`` for a 1-D array."""
    for p in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[p] = 0
