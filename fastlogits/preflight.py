"""The checks and shapes an application runs before it reads a file.

An application built on fastlogits (``fastlogits.tools``: ``fastlogits
classify`` of a ``.npy`` file, a directory of maps, a zarr store) checks
its arguments, the file's dtype and shape and the outputs it will write
before it reads a byte of the logits, with the same rules and the same
error messages as the public functions. This module is that surface; each
function here calls the one implementation the public functions use
(:mod:`fastlogits._checks`, :mod:`fastlogits._layout`,
:mod:`fastlogits._frontend`), so the rules cannot drift apart.

Everything here works on shapes and dtypes only, never on array data.
"""

from fastlogits import _checks, _frontend, _layout

__all__ = [
    "check_logits_dtype",
    "normalize_axis",
    "check_temperature",
    "check_backend_name",
    "check_label_dtype",
    "compute_dtype",
    "reduced_shape",
    "size_of",
    "resolve_backend",
    "cuda_status",
]


def check_logits_dtype(dtype, name="x"):
    """Check that logits of ``dtype`` are accepted.

    Parameters
    ----------
    dtype : numpy.dtype
        The logits' dtype, in native byte order.
    name : str, default "x"
        How the error message names the logits (e.g. ``"input 'a.npy'"``).

    Raises
    ------
    TypeError
        Unless ``dtype`` is float16, float32 or float64 (bfloat16 is read
        as its bits and checked apart).
    """
    _checks.check_logits_dtype(dtype, name=name)


def normalize_axis(axis, ndim, name="axis"):
    """The class axis ``axis`` of an array of ``ndim`` dimensions, in ``[0, ndim)``.

    Parameters
    ----------
    axis : int
        The class axis; negative values count from the end.
    ndim : int
        Dimensions of the array.
    name : str, default "axis"
        How the error message names the axis (e.g. ``"--axis"``).

    Returns
    -------
    int
        ``axis`` as a non-negative Python int.

    Raises
    ------
    TypeError
        If ``axis`` is not an integer (a bool is not one).
    ValueError
        If ``ndim`` is 0 or ``axis`` is out of range.
    """
    return _checks.normalize_axis(axis, ndim, name=name)


def check_temperature(temperature):
    """Check a temperature as the public functions do.

    Parameters
    ----------
    temperature : real number
        Scores are ``x / temperature``.

    Returns
    -------
    float
        ``temperature`` as a Python float.

    Raises
    ------
    TypeError
        If ``temperature`` is not a real number (a bool is not one).
    ValueError
        Unless it is finite and > 0.
    """
    return _checks.check_temperature(temperature)


def check_backend_name(backend):
    """Check that ``backend`` names a backend (available or not).

    Parameters
    ----------
    backend : str
        One of ``"auto"``, ``"numpy"``, ``"cpu"``, ``"cuda"``.

    Raises
    ------
    ValueError
        For any other value.
    """
    _checks.check_backend_name(backend)


def check_label_dtype(dtype, classes, name="labels"):
    """Check that an integer ``dtype`` holds every label of ``classes`` classes.

    The rule of a labels ``out=`` of :func:`fastlogits.argmax` and
    :func:`fastlogits.classify`, for an output not created yet.

    Parameters
    ----------
    dtype : numpy.dtype
        The labels' dtype.
    classes : int
        C, the number of classes (labels run from 0 to C - 1).
    name : str, default "labels"
        How the error message names the output (e.g. ``"--labels-dtype"``).

    Raises
    ------
    TypeError
        If ``dtype`` is not an integer dtype.
    ValueError
        If it cannot hold the label C - 1.
    """
    _checks.check_out_meta((), dtype, (), classes - 1, name=name, kind="label")


def compute_dtype(dtype):
    """The dtype logits of ``dtype`` are computed in.

    Parameters
    ----------
    dtype : numpy.dtype
        The logits' dtype (float16, float32 or float64).

    Returns
    -------
    numpy.dtype
        float64 for float64 logits, else float32 (float16 included): the
        dtype of the confidence :func:`fastlogits.classify` returns.
    """
    return _checks.compute_dtype(dtype)


def reduced_shape(shape, axis):
    """The shape of a per-pixel result: ``shape`` without the class axis.

    Parameters
    ----------
    shape : tuple of int
        The logits' shape.
    axis : int
        The class axis, in ``[0, len(shape))`` (see :func:`normalize_axis`).

    Returns
    -------
    tuple of int
        The shape of labels, confidence or logsumexp.
    """
    return _layout.reduced_shape(shape, axis)


def size_of(shape):
    """The number of elements of an array of ``shape``.

    Parameters
    ----------
    shape : sequence of int

    Returns
    -------
    int
        A Python int (1 for ``()``), exact for any size.
    """
    return _layout.size_of(shape)


def resolve_backend(backend, gpu=False):
    """The backend a call with ``backend=backend`` runs on, here and now.

    ``"auto"`` follows ``FASTLOGITS_BACKEND`` when set, else the array's
    place (``"cuda"`` for a GPU array, ``"cpu"`` for a host array).

    Parameters
    ----------
    backend : {"auto", "numpy", "cpu", "cuda"}
    gpu : bool, default False
        Whether the logits will be a GPU array.

    Returns
    -------
    str
        ``"numpy"``, ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    ValueError
        For an unknown name (or ``FASTLOGITS_BACKEND`` value), for
        ``"cuda"`` where it is not usable (the message says why), and for
        a GPU array on a host backend.
    """
    return _frontend.resolve_backend(backend, None, gpu=bool(gpu))


def cuda_status():
    """Whether the CUDA backend is usable, and why (probed once per process).

    Returns
    -------
    usable : bool
    reason : str
        The GPU or simulator found, or what is missing.
    """
    return _frontend.cuda_status()
