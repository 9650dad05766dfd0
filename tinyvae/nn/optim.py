"""Optimisers over a flat parameter buffer: each step is one op call over ``(P,)`` arrays.

:data:`OPTIMIZERS` names them for the ``--optimizer`` setting; :func:`make` builds the one a run asks for.
"""

from __future__ import annotations

from ..backends import Backend
from ..errors import SettingsError
from .params import FlatParams


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) with PyTorch's defaults and bias correction.

    Args:
        params: the model's :class:`FlatParams`; updated in place.
        backend: supplies the ``adam_step`` op.
        lr, betas, eps: as ``torch.optim.Adam`` (1e-3, (0.9, 0.999), 1e-8).

    Raises:
        SettingsError: for lr <= 0, betas outside [0, 1) or eps < 0.
    """

    name = "adam"

    def __init__(self, params: FlatParams, backend: Backend, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if not lr > 0 or not all(0 <= b < 1 for b in betas) or eps < 0:
            raise SettingsError(f"invalid Adam settings lr={lr}, betas={betas}, eps={eps}")
        self.params, self.backend = params, backend
        self.lr, self.betas, self.eps = float(lr), tuple(float(b) for b in betas), float(eps)
        self.m, self.v = params.zeros_like(), params.zeros_like()
        self.t = 0

    def step(self, grad):
        """Apply one update with the flat gradient ``grad`` ``(P,)``."""
        self.t += 1
        self.backend.adam_step(self.params.data, grad, self.m, self.v, self.lr, *self.betas, self.eps, self.t)

    def state(self) -> tuple[dict, dict]:
        """``(arrays, scalars)``: the moment buffers by name, and the step count."""
        return {"m": self.m, "v": self.v}, {"t": self.t}

    def load_state(self, arrays: dict, scalars: dict):
        self.m[...], self.v[...] = arrays["m"], arrays["v"]
        self.t = int(scalars["t"])


class SGD:
    """SGD with (optionally Nesterov) momentum, as ``torch.optim.SGD`` with dampening 0.

    Args:
        params: the model's :class:`FlatParams`; updated in place.
        backend: supplies the ``sgd_step`` op.
        lr, momentum, nesterov: as ``torch.optim.SGD``.

    Raises:
        SettingsError: for lr <= 0 or momentum outside [0, 1).
    """

    name = "sgd"

    def __init__(self, params: FlatParams, backend: Backend, lr=1e-2, momentum=0.9, nesterov=False):
        if not lr > 0 or not 0 <= momentum < 1:
            raise SettingsError(f"invalid SGD settings lr={lr}, momentum={momentum}")
        self.params, self.backend = params, backend
        self.lr, self.momentum, self.nesterov = float(lr), float(momentum), bool(nesterov)
        self.buf = params.zeros_like()

    def step(self, grad):
        """Apply one update with the flat gradient ``grad`` ``(P,)``."""
        self.backend.sgd_step(self.params.data, grad, self.buf, self.lr, self.momentum, self.nesterov)

    def state(self) -> tuple[dict, dict]:
        """``(arrays, scalars)``: the momentum buffer, and no scalars."""
        return {"momentum_buffer": self.buf}, {}

    def load_state(self, arrays: dict, scalars: dict):
        self.buf[...] = arrays["momentum_buffer"]


OPTIMIZERS = ("adam", "sgd")


def make(name: str, params: FlatParams, backend: Backend, lr: float, momentum: float = 0.9,
         nesterov: bool = False):
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params``; ``momentum`` and ``nesterov``
    are SGD's."""
    if name == "adam":
        return Adam(params, backend, lr=lr)
    if name == "sgd":
        return SGD(params, backend, lr=lr, momentum=momentum, nesterov=nesterov)
    raise SettingsError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
