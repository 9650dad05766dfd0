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
