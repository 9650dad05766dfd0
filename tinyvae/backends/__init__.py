"""Backends: an array module plus an implementation of each named op.

The model is written once against ``backend.xp`` (numpy or cupy) and calls the
hot paths through ``backend.<op>``. The ops are listed in :data:`OPS`; their
reference implementations, and the meaning of each argument, are in
:mod:`tinyvae.backends.reference` (and the modules it imports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BackendUnavailable, SettingsError

OPS = (
    "philox4x32_10",
    "draw_normal",
    "gather_pixels",
    "take_rows",
    "corrupt",
    "bce_with_logits",
    "gaussian_nll",
    "importance_weights",
    "importance_weights_backward",
    "reparameterize_kl",
    "reparameterize_kl_draw",
    "reparameterize_kl_backward",
    "nearest_code",
    "matmul",
    "matmul_pair",
    "bias_act",
    "bias_act_backward",
    "unfold",
    "fold",
    "adam_step",
    "sgd_step",
)

BACKENDS = ("numpy", "numba", "cuda", "cuda-sim")
CHOICES = ("auto", *BACKENDS)  # what the command lines take; auto: cuda where it can run, else numba, else numpy


@dataclass(frozen=True)
class Backend:
    """A named array module and one implementation of each op in :data:`OPS`."""

    name: str
    xp: Any
    philox4x32_10: Callable
    draw_normal: Callable
    gather_pixels: Callable
    take_rows: Callable
    corrupt: Callable
    bce_with_logits: Callable
    gaussian_nll: Callable
    importance_weights: Callable
    importance_weights_backward: Callable
    reparameterize_kl: Callable
    reparameterize_kl_draw: Callable
    reparameterize_kl_backward: Callable
    nearest_code: Callable
    matmul: Callable
    matmul_pair: Callable
    bias_act: Callable
    bias_act_backward: Callable
    unfold: Callable
    fold: Callable
    adam_step: Callable
    sgd_step: Callable

    def to_host(self, a):
        """The array ``a`` as a NumPy array (a no-op on host backends)."""
        return a.get() if hasattr(a, "get") else a


def _from_module(name, xp, module) -> Backend:
    return Backend(name=name, xp=xp, **{op: getattr(module, op) for op in OPS})


def _cuda() -> Backend:
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailable(
            f"the cuda backend needs CuPy ({e}); pip install -e '.[cuda13]' (or '.[cuda12]') on a machine "
            "with an NVIDIA GPU"
        ) from e
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises CUDARuntimeError, or an ImportError-like error without a driver
        raise BackendUnavailable(f"the cuda backend found no usable CUDA device ({e})") from e
    if n_devices == 0:
        raise BackendUnavailable("the cuda backend found no CUDA device")
    from . import cuda_ops

    return _from_module("cuda", cupy, cuda_ops.CudaOps(cuda_ops.gpu_module))


def _cuda_sim() -> Backend:
    import numpy

    from . import cuda_ops, cudasim

    cudasim.compiler()
    return _from_module("cuda-sim", numpy, cuda_ops.CudaOps(cudasim.module))


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`, or ``auto``: the first of cuda and numba
    that can run here, else numpy).

    ``cuda-sim`` runs the cuda backend's kernels on NumPy arrays in tinyvae's CPU
    simulator of the CUDA execution model (:mod:`tinyvae.backends.cudasim`): slow,
    for testing the kernels where no GPU is at hand.

    Raises:
        SettingsError: for an unknown name.
        BackendUnavailable: when the backend cannot run here (not built yet, a
            missing package, no usable GPU); the message says what is missing.
    """
    if name == "auto":
        for candidate in ("cuda", "numba"):
            try:
                return get_backend(candidate)
            except BackendUnavailable:
                continue
        return get_backend("numpy")
    if name == "numpy":
        import numpy

        from . import reference

        return _from_module("numpy", numpy, reference)
    if name == "numba":
        import importlib.util

        import numpy

        if importlib.util.find_spec("numba") is None:
            raise BackendUnavailable("the numba backend needs the numba package: pip install numba")
        from . import numba_ops

        return _from_module("numba", numpy, numba_ops)
    if name == "cuda":
        return _cuda()
    if name == "cuda-sim":
        return _cuda_sim()
    raise SettingsError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}")
