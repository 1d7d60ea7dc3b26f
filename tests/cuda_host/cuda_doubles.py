"""Test doubles of numba-cuda's launch objects, built from the installed
library's real signatures (``inspect.signature`` of the real methods),
never from a hand-written guess: a call the real object would refuse
with ``TypeError`` is refused by the double too.

Issue 36: a double that mocked a five-argument ``CUDADispatcher.call``
kept CI green while every launch on a GPU raised ``TypeError``.
"""

import inspect


def _real_launch_classes():
    from numba.cuda import dispatcher

    return dispatcher.CUDADispatcher, dispatcher._LaunchConfiguration


def _checked(real_method, name):
    """A function that binds its arguments as ``real_method`` would."""
    sig = inspect.signature(real_method)

    def check(*args, **kwargs):
        try:
            return sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}{sig}: {exc}") from exc

    return check


class RecordingKernel:
    """A stand-in ``CUDADispatcher`` that records its launches.

    Every method the real dispatcher has with the same name (``call``,
    ``__getitem__``, ``configure``, ``forall``, ``specialize``) binds its
    arguments against the real signature first; the configured launch it
    returns binds ``__call__`` against ``_LaunchConfiguration.__call__``.
    ``calls`` holds ``(griddim, blockdim, stream, sharedmem, args)``.
    """

    def __init__(self):
        self.calls = []
        self.configured = 0
        dispatcher_cls, config_cls = _real_launch_classes()
        self._bind = {name: _checked(getattr(dispatcher_cls, name), f"CUDADispatcher.{name}")
                      for name in ("call", "__getitem__", "configure", "forall", "specialize")}
        self._bind_launch = _checked(config_cls.__call__, "_LaunchConfiguration.__call__")
        self._bind_config_init = _checked(config_cls.__init__, "_LaunchConfiguration.__init__")

    def call(self, *args, **kwargs):
        self._bind["call"](self, *args, **kwargs)
        raise AssertionError("fastlogits must launch through kernel[...](*args), not .call")

    def __getitem__(self, key):
        self._bind["__getitem__"](self, key)
        if not isinstance(key, tuple) or not 2 <= len(key) <= 4:
            raise ValueError("must specify at least the griddim and blockdim")
        return self.configure(*key)

    def configure(self, griddim, blockdim, stream=0, sharedmem=0):
        self._bind["configure"](self, griddim, blockdim, stream, sharedmem)
        self._bind_config_init(None, self, griddim, blockdim, stream, sharedmem)
        self.configured += 1
        kernel = self

        class Launch:
            def __call__(self, *args):
                kernel._bind_launch(self, *args)
                kernel.calls.append((griddim, blockdim, stream, sharedmem, args))

        return Launch()
