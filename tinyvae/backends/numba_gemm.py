"""The numba backend's GEMMs (ops ``matmul`` and ``matmul_pair``): NumPy's OpenBLAS, called on Numba's threads.

Numba's threads run everything, the GEMMs included.
Each GEMM is split into one slab of output rows (or columns, or rows of
the transposed product: see :func:`matmul`) per thread (two independent GEMMs, :func:`matmul_pair`,
each on half of the threads), and each thread calls
NumPy's OpenBLAS for its slab with OpenBLAS's own threading off for that call
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
import functools

import llvmlite.binding
import numba
import numpy as np
from numba import njit, prange, types

from .numba_random import scratch

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


@njit(inline="always", **_JIT)
def _sgemm_or_dgemm(ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc, size):
    """One BLAS call, ``C (m, n) = op(A) op(B)`` row-major, on addresses; the dtype's by ``size``."""
    if size == 8:
        _dgemm(np.int32(_ROW_MAJOR), np.int32(ta), np.int32(tb), m, n, k, 1.0, pa, lda, pb, ldb, 0.0, pc, ldc)
    else:
        _sgemm(np.int32(_ROW_MAJOR), np.int32(ta), np.int32(tb), m, n, k, np.float32(1.0), pa, lda, pb, ldb,
               np.float32(0.0), pc, ldc)


@njit(inline="always", **_JIT)
def _plan(a, b, out, parts, product_t):
    # How out (M, N) = a (M, K) @ b (K, N) splits into one slab per part: (n, by_rows, transposed), n the
    # length of the split dimension; n = 0 (nothing to do) for shapes that do not match, empty arrays,
    # negative strides or layouts BLAS cannot read in place, and overlapping arrays: the caller then takes
    # numpy.matmul. With product_t of shape (N, M) (the caller's choice, matmul's doc), each part computes
    # its rows of out^T = b^T a^T there and copies them, transposed, into its columns of out.
    M, K = a.shape
    N = b.shape[1]
    ta = _blas_layout(a)[0]
    tb = _blas_layout(b)[0]
    if (b.shape[0] != K or out.shape[0] != M or out.shape[1] != N or M == 0 or N == 0 or K == 0 or ta == 0
            or tb == 0 or out.strides[1] != out.itemsize or out.strides[0] < N * out.itemsize
            or not _apart(out, a) or not _apart(out, b)):
        return 0, False, False
    transposed = product_t.shape[0] == N and product_t.shape[1] == M
    # Slabs of rows, unless the output is wider than tall, the slabs would be under 128 rows and the
    # inner dimension K is over 128: then of columns, which keeps each thread's BLAS call large enough to
    # run at full speed. Over a short K, row slabs are the faster (a latent-width layer's GEMMs). The rule
    # picks the faster split for every GEMM of the MLP and conv VAEs (measured in docs/performance.md).
    by_rows = not transposed and (M >= N or M // parts >= 128 or K <= 128)
    return (M if by_rows else N), by_rows, transposed


@njit(inline="always", **_JIT)
def _slab(a, b, out, product_t, by_rows, transposed, lo, hi):
    # Rows (or columns) lo:hi of out as one BLAS call on this thread, OpenBLAS's own threads off for it.
    M, K = a.shape
    N = b.shape[1]
    ta, lda = _blas_layout(a)
    tb, ldb = _blas_layout(b)
    size = out.itemsize
    ldc = out.strides[0] // size
    pa0, pb0, pc0 = a.ctypes.data, b.ctypes.data, out.ctypes.data
    flip = _NO_TRANS + _TRANS  # the flag of an operand's transpose
    _blas_threads_local(np.int32(1))
    if by_rows:
        pa = pa0 + (lo * lda if ta == _NO_TRANS else lo) * size
        _sgemm_or_dgemm(ta, tb, hi - lo, N, K, pa, lda, pb0, ldb, pc0 + lo * ldc * size, ldc, size)
    else:
        pb = pb0 + (lo if tb == _NO_TRANS else lo * ldb) * size
        if transposed:  # rows lo:hi of b^T a^T, then each of their 32-row blocks into out's columns
            _sgemm_or_dgemm(flip - tb, flip - ta, hi - lo, M, K, pb, ldb, pa0, lda,
                            product_t.ctypes.data + lo * M * size, M, size)
            for j0 in range(lo, hi, 32):
                for i in range(M):
                    for j in range(j0, min(hi, j0 + 32)):
                        out[i, j] = product_t[j, i]
        else:
            _sgemm_or_dgemm(ta, tb, M, hi - lo, K, pa0, lda, pb, ldb, pc0 + lo * size, ldc, size)


# The GEMM kernels take matrices of any layout ('A'; the operands also read-only and unaligned): one signature
# per dtype (:func:`_kernels`), rather than one for each combination of C, F and strided operands, each of
# which took seconds to compile.
_MATRICES = [(types.Array(t, 2, "A", readonly=True, aligned=False), types.Array(t, 2, "A"))
             for t in (types.float32, types.float64)]


# OpenBLAS's "thread-local" count is one variable for the whole process in some builds (NumPy's pthreads
# OpenBLAS among them): every part sets it to 1 for its call (_slab), and the caller's value is put back
# once, after all of them, by the calling thread (_gemm and _gemm_pair).
@njit(parallel=True, **_JIT)
def _gemm(a, b, out, parts, product_t):
    # out = a @ b by BLAS, one slab (_plan) per part (Numba's thread count: numba.get_num_threads() here
    # would keep the kernel from its cache); False (nothing done) where _plan finds no split.
    n, by_rows, transposed = _plan(a, b, out, parts, product_t)
    if n == 0:
        return False
    before = _blas_threads_local(np.int32(1))
    for t in prange(parts):
        lo, hi = t * n // parts, (t + 1) * n // parts
        if hi > lo:
            _slab(a, b, out, product_t, by_rows, transposed, lo, hi)
    _blas_threads_local(before)
    return True


@njit(parallel=True, **_JIT)
def _gemm_pair(a1, b1, out1, parts1, product1_t, a2, b2, out2, parts2, product2_t):
    # out1 = a1 @ b1 on parts1 parts and, at the same time, out2 = a2 @ b2 on the other parts2; False
    # (nothing done) where either has no split or an output overlaps any other array.
    n1, by_rows1, transposed1 = _plan(a1, b1, out1, parts1, product1_t)
    n2, by_rows2, transposed2 = _plan(a2, b2, out2, parts2, product2_t)
    if (n1 == 0 or n2 == 0 or not _apart(out1, a2) or not _apart(out1, b2) or not _apart(out1, out2)
            or not _apart(out2, a1) or not _apart(out2, b1)):
        return False
    before = _blas_threads_local(np.int32(1))
    for t in prange(parts1 + parts2):
        if t < parts1:
            lo, hi = t * n1 // parts1, (t + 1) * n1 // parts1
            if hi > lo:
                _slab(a1, b1, out1, product1_t, by_rows1, transposed1, lo, hi)
        else:
            u = t - parts1
            lo, hi = u * n2 // parts2, (u + 1) * n2 // parts2
            if hi > lo:
                _slab(a2, b2, out2, product2_t, by_rows2, transposed2, lo, hi)
    _blas_threads_local(before)
    return True


@functools.cache
def _kernels():
    """``(_gemm, _gemm_pair)``, compiled (or loaded from Numba's cache) for their one signature per dtype on the
    first GEMM rather than at import, which would cost every process that imports the backend half a second;
    no other signature is compiled after that: every call converts to these."""
    for x, w in _MATRICES:
        _gemm.compile((x, x, w, types.intp, w))
        _gemm_pair.compile((x, x, w, types.intp, w, x, x, w, types.intp, w))
    _gemm.disable_compile()
    _gemm_pair.disable_compile()
    return _gemm, _gemm_pair


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NO_PRODUCT = {t: np.empty((0, 0), t) for t in _FLOATS}  # _gemm's product_t where out is computed directly


def matmul(a, b, out):
    """``out = a @ b`` split over Numba's threads, one BLAS call each (see the module doc).
    Float32 or float64 2-D operands of one dtype and matching shapes, each with unit stride along its
    rows or its columns, ``out`` apart from them; any other case (or no :data:`OWN_GEMMS`) is
    ``numpy.matmul``, which raises ``ValueError`` for shapes that do not match. The checks run in the
    compiled code, where they cost a third of what they cost in Python.

    Where ``b`` is a transposed view (a layer's ``W.T``) and its columns would be split (K over 128, the
    output wider than tall and its row slabs under 128 rows), the threads compute ``out^T = b^T a^T`` by
    rows into a buffer kept for the shape, and copy it back transposed: OpenBLAS reads ``W`` row by row
    faster than as a transposed view (a layer's forward GEMM at batch 128, docs/performance.md)."""
    if not _blas_operands(a, b, out):
        np.matmul(a, b, out=out)
        return
    parts = numba.get_num_threads()
    if not _kernels()[0](a, b, out, parts, _product_t("matmul", a, b, parts)):
        np.matmul(a, b, out=out)


def matmul_pair(a1, b1, out1, a2, b2, out2):
    """``out1 = a1 @ b1`` and ``out2 = a2 @ b2`` at the same time, each on half of Numba's threads (the first
    gets the smaller half), split as :func:`matmul` splits it: two products run side by side at one thread's
    speed each, faster than one after the other at two threads' speed (a layer's weight and input
    gradients, docs/performance.md). As :func:`matmul` for what each takes; with one thread, or where an
    output overlaps any other operand, one after the other, each a :func:`matmul`."""
    parts = numba.get_num_threads()
    if not (parts > 1 and _blas_operands(a1, b1, out1) and _blas_operands(a2, b2, out2)
            and _kernels()[1](a1, b1, out1, parts // 2, _product_t("matmul", a1, b1, parts // 2),
                           a2, b2, out2, parts - parts // 2, _product_t("matmul_pair", a2, b2, parts - parts // 2))):
        matmul(a1, b1, out1)
        matmul(a2, b2, out2)


def _blas_operands(a, b, out) -> bool:
    """Whether ``a``, ``b`` and ``out`` are 2-D of one float dtype BLAS takes, ``out`` writeable and aligned (and
    :data:`OWN_GEMMS`)."""
    t = out.dtype
    return (OWN_GEMMS and t in _FLOATS and a.dtype == t and b.dtype == t and a.ndim == b.ndim == out.ndim == 2
            and out.flags.writeable and out.flags.aligned)


def _product_t(name, a, b, parts):
    """The buffer ``(N, M)`` of the transposed product of ``a @ b`` on ``parts`` threads where :func:`matmul`'s
    doc says it is used (kept under ``name`` for the shape: two products computed at once need two), else
    an empty array."""
    (M, K), N, t = a.shape, b.shape[1], a.dtype
    if b.strides[0] == b.itemsize and M < N and M // parts < 128 and K > 128 and parts > 1:
        return scratch(name, N, M, t)
    return _NO_PRODUCT[t]
