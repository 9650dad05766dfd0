"""The numba backend's GEMMs (op ``matmul``): NumPy's OpenBLAS, called on Numba's threads.

Numba's threads run everything, the GEMMs included.
Each GEMM is split into one slab of output rows (or columns: see
:func:`matmul`) per thread, and each thread calls NumPy's OpenBLAS for its
slab with OpenBLAS's own threading off for that call
(``openblas_set_num_threads_local(1)``, restored after). With OpenBLAS's pool
idle, the second core is free for the other kernels between the GEMMs: with
OpenBLAS's own threads, its workers spin between GEMMs and Numba's threads only
fight them. The split GEMMs run at OpenBLAS's own multi-thread speed
(docs/performance.md, "Numba's threads run the GEMMs"). This needs NumPy's
OpenBLAS with 64-bit integers and ``openblas_set_num_threads_local`` (NumPy's
wheels ship both); without them (:data:`OWN_GEMMS` False) the GEMMs are
``numpy.matmul`` and the kernels run on one thread. Numba's thread
count is otherwise its own (every core, ``NUMBA_NUM_THREADS``,
``numba.set_num_threads``; data-parallel training sets it to the cores per
rank).
"""

from __future__ import annotations

import ctypes

import llvmlite.binding
import numba
import numpy as np
from numba import njit, prange, types

_JIT = dict(cache=True, nogil=True)

# CBLAS's enums, and NumPy's OpenBLAS entry points under the names the kernels call them by.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_OPENBLAS_SYMBOLS = {
    "tinyvae_sgemm": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
    "tinyvae_dgemm": ("scipy_cblas_dgemm64_", "cblas_dgemm64_"),
    "tinyvae_blas_threads_local": ("openblas_set_num_threads_local",),
}


def _bind_openblas() -> bool:
    """Register NumPy's OpenBLAS ``cblas_sgemm`` and ``cblas_dgemm`` (the 64-bit integer interface)
    and ``openblas_set_num_threads_local`` with LLVM under the names of :data:`_OPENBLAS_SYMBOLS`, so
    that compiled code (cached too) calls them by name; False where NumPy's BLAS lacks one of them."""
    from .blas import numpy_blas

    info = numpy_blas()
    if not info or info.get("internal_api") != "openblas":
        return False
    try:
        lib = ctypes.CDLL(info["filepath"])
    except OSError:
        return False
    found = {}
    for name, candidates in _OPENBLAS_SYMBOLS.items():
        symbol = next((getattr(lib, c) for c in candidates if hasattr(lib, c)), None)
        if symbol is None:
            return False
        found[name] = ctypes.cast(symbol, ctypes.c_void_p).value
    for name, address in found.items():
        llvmlite.binding.add_symbol(name, address)
    return True


OWN_GEMMS = _bind_openblas()  # see the module doc
if not OWN_GEMMS:
    numba.set_num_threads(1)


# Addresses travel as integers: in the C calling convention a pointer and a 64-bit integer take the
# same register or stack slot.
_GEMM_ARGS = (types.int32, types.int32, types.int32, types.int64, types.int64, types.int64)
_sgemm = types.ExternalFunction("tinyvae_sgemm", types.void(*_GEMM_ARGS, types.float32, types.intp, types.int64,
                                                             types.intp, types.int64, types.float32, types.intp,
                                                             types.int64))
_dgemm = types.ExternalFunction("tinyvae_dgemm", types.void(*_GEMM_ARGS, types.float64, types.intp, types.int64,
                                                             types.intp, types.int64, types.float64, types.intp,
                                                             types.int64))
_blas_threads_local = types.ExternalFunction("tinyvae_blas_threads_local", types.int32(types.int32))


@njit(inline="always", **_JIT)
def _blas_layout(x):
    """``(transpose flag, leading dimension)`` of a 2-D operand BLAS reads in place (unit stride along its
    rows, or along its columns: a transposed view such as ``W.T``), ``(0, 0)`` for any other layout."""
    item = x.itemsize
    if x.strides[1] == item and x.strides[0] >= max(1, x.shape[1]) * item:
        return _NO_TRANS, max(1, x.strides[0] // item)
    if x.strides[0] == item and x.strides[1] >= max(1, x.shape[0]) * item:
        return _TRANS, max(1, x.strides[1] // item)
    return 0, 0


@njit(inline="always", **_JIT)
def _apart(x, y):
    """Whether the memory spans of 2-D arrays ``x`` and ``y`` (positive strides) do not overlap."""
    x0, y0 = x.ctypes.data, y.ctypes.data
    x1 = x0 + (x.shape[0] - 1) * x.strides[0] + (x.shape[1] - 1) * x.strides[1] + x.itemsize
    y1 = y0 + (y.shape[0] - 1) * y.strides[0] + (y.shape[1] - 1) * y.strides[1] + y.itemsize
    return x1 <= y0 or y1 <= x0


@njit(parallel=True, **_JIT)
def _gemm(a, b, out, parts):
    # out (M, N) = a (M, K) @ b (K, N) by BLAS, one slab of out's rows (or columns) per part (Numba's
    # thread count: numba.get_num_threads() here would keep the kernel from its cache), each
    # slab one BLAS call on its thread with OpenBLAS's own threads off for it. False (nothing done) for
    # shapes that do not match, empty arrays, negative strides or layouts BLAS cannot read in place,
    # and overlapping arrays: the caller then takes numpy.matmul.
    M, K = a.shape
    N = b.shape[1]
    ta, lda = _blas_layout(a)
    tb, ldb = _blas_layout(b)
    if (b.shape[0] != K or out.shape[0] != M or out.shape[1] != N or M == 0 or N == 0 or K == 0 or ta == 0
            or tb == 0 or out.strides[1] != out.itemsize or out.strides[0] < N * out.itemsize
            or not _apart(out, a) or not _apart(out, b)):
        return False
    ldc = out.strides[0] // out.itemsize
    size = out.itemsize
    # Slabs of rows, unless the output is wider than tall, the slabs would be under 128 rows and the
    # inner dimension K is over 128: then of columns, which keeps each thread's BLAS call large enough to
    # run at full speed. Over a short K, row slabs are the faster (a latent-width layer's GEMMs). The rule
    # picks the faster split for every GEMM of the MLP and conv VAEs (measured in docs/performance.md).
    by_rows = M >= N or M // parts >= 128 or K <= 128
    n = M if by_rows else N
    pa0, pb0, pc0 = a.ctypes.data, b.ctypes.data, out.ctypes.data
    # OpenBLAS's "thread-local" count is one variable for the whole process in some builds (NumPy's
    # pthreads OpenBLAS among them): every part sets it to 1 for its call, and the caller's value is put
    # back once, after all of them, by the calling thread.
    before = _blas_threads_local(np.int32(1))
    for t in prange(parts):
        lo, hi = t * n // parts, (t + 1) * n // parts
        if hi > lo:
            if by_rows:
                m_part, n_part, pb, pc = hi - lo, N, pb0, pc0 + lo * ldc * size
                pa = pa0 + (lo * lda if ta == _NO_TRANS else lo) * size
            else:
                m_part, n_part, pa, pc = M, hi - lo, pa0, pc0 + lo * size
                pb = pb0 + (lo if tb == _NO_TRANS else lo * ldb) * size
            _blas_threads_local(np.int32(1))
            if size == 8:
                _dgemm(np.int32(_ROW_MAJOR), np.int32(ta), np.int32(tb), m_part, n_part, K, 1.0, pa, lda, pb, ldb,
                       0.0, pc, ldc)
            else:
                _sgemm(np.int32(_ROW_MAJOR), np.int32(ta), np.int32(tb), m_part, n_part, K, np.float32(1.0), pa,
                       lda, pb, ldb, np.float32(0.0), pc, ldc)
    _blas_threads_local(before)
    return True


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def matmul(a, b, out):
    """``out = a @ b`` split over Numba's threads, one BLAS call each (see the module doc, "Threads").
    Float32 or float64 2-D operands of one dtype and matching shapes, each with unit stride along its
    rows or its columns, ``out`` apart from them; any other case (or no :data:`OWN_GEMMS`) is
    ``numpy.matmul``, which raises ``ValueError`` for shapes that do not match. The checks run in the
    compiled code, where they cost a third of what they cost in Python."""
    t = out.dtype
    if not (OWN_GEMMS and t in _FLOATS and a.dtype == t and b.dtype == t and a.ndim == b.ndim == out.ndim == 2
            and _gemm(a, b, out, numba.get_num_threads())):
        np.matmul(a, b, out=out)
