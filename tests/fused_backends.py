"""The fused backends the tests compare with the numpy reference, and how a test gets one.

``cuda`` runs on a GPU (marker ``gpu``, and skipped, saying why, where none is usable); ``cuda-sim`` runs
the same kernels in the CPU simulator (marker ``cudasim``) and numba on the CPU: those two must run
wherever the tests do.
"""

import pytest

from tinyvae.backends import BackendUnavailable, get_backend

CUDA_BACKENDS = [pytest.param("cuda", marks=pytest.mark.gpu), pytest.param("cuda-sim", marks=pytest.mark.cudasim)]
FUSED_BACKENDS = [pytest.param("numba"), *CUDA_BACKENDS]


def backend_or_skip(name: str):
    """The backend called ``name``; for ``cuda`` where no GPU is usable, a skip that gives the reason."""
    try:
        return get_backend(name)
    except BackendUnavailable as e:
        if name != "cuda":
            raise
        pytest.skip(str(e))


def assert_same_step(build, be, x, grad_rtol: float = 1e-5, **loss):
    """A float32 model of ``build(backend=...)`` on ``be`` and on numpy, from the same weights: the same loss
    of ``x`` to 1e-5 and the same gradient to ``grad_rtol`` norm-wise (``loss``: ``loss_and_grad``'s keywords)."""
    import numpy as np

    ref, fused = build(backend="numpy"), build(backend=be)
    a, b = ref.loss_and_grad(x, **loss), fused.loss_and_grad(x, **loss)
    assert b.loss == pytest.approx(a.loss, rel=1e-5)
    g, h = be.to_host(fused.grad), ref.grad
    assert np.linalg.norm(g - h) / np.linalg.norm(h) < grad_rtol
