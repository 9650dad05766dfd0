"""The fused backends the tests compare with the numpy reference, and how a test gets one.

``cuda`` runs on a GPU (marker ``gpu``), ``cuda-sim`` runs the same kernels in the CPU
simulator (marker ``cudasim``); each skips, saying why, where it cannot run.
"""

import pytest

from tinyvae.backends import BackendUnavailable, get_backend

CUDA_BACKENDS = [pytest.param("cuda", marks=pytest.mark.gpu), pytest.param("cuda-sim", marks=pytest.mark.cudasim)]
FUSED_BACKENDS = [pytest.param("numba"), *CUDA_BACKENDS]


def backend_or_skip(name: str):
    """The backend called ``name``, or a skip that gives the reason it cannot run here."""
    try:
        return get_backend(name)
    except BackendUnavailable as e:
        pytest.skip(str(e))
