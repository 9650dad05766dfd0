"""tinyvae's one error family: every failure that bad input, a bad file or this machine can cause.

The command lines print a :class:`TinyVAEError` (and an ``OSError``, with its path) as one ``error:``
line and exit with status 2; anything else is a bug and keeps its traceback. Each class also derives
from the builtin exception it stands for, so that ``except ValueError`` (or ``RuntimeError``,
``ImportError``) written against earlier versions still catches it.
"""

from __future__ import annotations


class TinyVAEError(Exception):
    """The base of every expected failure tinyvae reports; its message is one line for the user."""


class SettingsError(TinyVAEError, ValueError):
    """A setting, argument or flag out of its range, of the wrong type, or one that does not apply to
    the model asked for; the message names it and says what is accepted."""


class DataError(TinyVAEError, ValueError):
    """Data that cannot be used: a data file that is missing, corrupt, truncated or inconsistent, or an
    array of the wrong shape, dtype or range; the message names the file or the array."""


class CheckpointError(TinyVAEError, ValueError):
    """A checkpoint or model file that is missing, unreadable, not tinyvae's, or holds a field or tensor
    that does not fit; the message names the file and the field."""


class BackendUnavailable(TinyVAEError, RuntimeError):
    """A backend that cannot run here (a missing package, no usable GPU, no compiler); the message says
    what is missing."""


class KernelBuildError(TinyVAEError, RuntimeError):
    """A CUDA kernel file that the simulator's host compiler could not build; the message names the
    compiler, the file and what the compiler printed."""


class MissingDependency(TinyVAEError, ImportError):
    """An optional package that a feature needs is not installed; the message says how to install it."""


class Diverged(TinyVAEError, RuntimeError):
    """Training met a non-finite number; the run stopped there, and its last good checkpoint is intact. The
    training command exits with status 1."""
