"""Which kernels NumPy's BLAS runs, and a hint where it leaves AVX-512 unused.

The GEMMs are most of a CPU training step. OpenBLAS picks its kernels once, when
NumPy loads it: for the CPU, or as the environment variable ``OPENBLAS_CORETYPE``
says, and on a CPU with AVX-512 its AVX2 kernels (``Haswell``, ``Zen``) are the
slower ones (measured in docs/performance.md, "OpenBLAS on AVX-512 CPUs").
tinyvae does not change the setting: a library cannot once NumPy is loaded, and
the environment is the user's. The training command prints :func:`avx512_hint`
instead, where it applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# OpenBLAS core names (as threadpoolctl reports them, any case) whose kernels stop at AVX2.
AVX2_CORES = frozenset({"haswell", "zen"})


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``avx2``, ``avx512f``, ...); empty where ``path`` is missing."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def numpy_blas(infos: list[dict] | None = None) -> dict | None:
    """threadpoolctl's record of the BLAS library NumPy calls, or None where it finds none.

    The record has the keys ``internal_api`` (``"openblas"``, ``"mkl"``, ...),
    ``architecture`` (OpenBLAS's core name, e.g. ``"Haswell"``), ``version``,
    ``num_threads`` and ``filepath``. Where several BLAS libraries are loaded
    (SciPy brings its own), the one inside NumPy's package wins.

    Args:
        infos: ``threadpoolctl.threadpool_info()``'s list; read now when None.
    """
    if infos is None:
        from threadpoolctl import threadpool_info

        infos = threadpool_info()
    blas = [i for i in infos if i.get("user_api") == "blas"]
    mine = [i for i in blas if f"{os.sep}numpy" in str(i.get("filepath", ""))]
    return (mine or blas or [None])[0]


def avx512_hint(blas: dict | None, flags: frozenset[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """One line for the user where OpenBLAS runs its AVX2 kernels on a CPU with AVX-512, else None.

    Args:
        blas: :func:`numpy_blas`'s record.
        flags: :func:`cpu_flags`.
        environ: the environment, for ``OPENBLAS_CORETYPE``.
    """
    if not blas or blas.get("internal_api") != "openblas" or "avx512f" not in flags:
        return None
    core = str(blas.get("architecture", ""))
    if core.lower() not in AVX2_CORES:
        return None
    forced = environ.get("OPENBLAS_CORETYPE")
    why, fix = ((f"OPENBLAS_CORETYPE={forced} in the environment selects them",
                 "unset it, or set it to SkylakeX,") if forced else
                ("OpenBLAS chose them for this CPU", "set OPENBLAS_CORETYPE=SkylakeX"))
    return (f"note: NumPy's OpenBLAS runs its AVX2 kernels ({core}) on a CPU with AVX-512; {why}. "
            f"To use its faster AVX-512 kernels, {fix} before Python starts (docs/performance.md, "
            "'OpenBLAS on AVX-512 CPUs').")
