"""Fused CPU implementations of the named ops, compiled with Numba.

Same names, signatures and formulas as :mod:`tinyvae.backends.reference` (read
the formulas and their sources there); each op here makes one pass over its
arrays where the reference makes several, and allocates nothing. The GEMMs, the
random draws and the likelihoods have modules of their own, imported here.

Vectorisation: LLVM vectorises a loop only if it may reorder the loop's sum,
so the kernels allow reassociation (``fastmath`` flags reassoc, contract, nsz,
arcp; never nnan/ninf: NaN and inf keep their meaning). Float32 kernels take
their exp and log1p from :mod:`tinyvae.backends.numba_math`, which says why. Every
constant takes the arrays' dtype: a bare ``0.5`` or ``1 - beta1`` is float64 and
silently turns a float32 loop into a float64 one, at over twice the time. The
latent ops read the encoder's ``(B, 2K)`` output ``[mu | logvar]`` whole: given
``mu``/``logvar`` as its column views, Numba types them as non-contiguous and
the loops stay scalar. The figures behind these choices are in
docs/performance.md, "Why the numba kernels are written as they are".

Threads: Numba's threads run every kernel and, through :func:`matmul`
(:mod:`tinyvae.backends.numba_gemm`), the GEMMs too, on every core; that
module says how, and what it took. The kernels are compiled with ``parallel=True`` also for what
parfor lowering does to a loop: it outlines the loop body into a function whose array arguments are
marked as not aliasing, which is what lets LLVM vectorise a loop that writes several arrays; compiled
serially, Adam's and the BCE's loops stay scalar. Serial, and vectorised anyway: ``gaussian_nll``, whose
column sums would race across rows, and ``gather_pixels``, which writes one array only.

``cache=True`` stores the compiled machine code beside this file (in
``__pycache__``), so a second process does not recompile. Kernels are plain
module-level functions for that reason: kernels made by a factory (closures)
got a new cache key in every process and were compiled again each time.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_gemm import matmul, matmul_pair  # noqa: F401 (the GEMM ops of this backend)
from .numba_likelihood import (bce_with_logits, gaussian_nll, importance_weights,  # noqa: F401
                               importance_weights_backward)
from .numba_math import JIT as _JIT
from .numba_math import exp as _exp
from .numba_random import binarize as _binarize
from .numba_random import corrupt, draw_normal, philox4x32_10  # noqa: F401
from .numba_random import scratch


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the CPU to start loading the cache line of ``arr[i, j]`` (LLVM's ``llvm.prefetch``:
    a read, kept in the outer caches, ``prefetcht1`` on x86). A hint: it never faults, and
    the program goes on without waiting for the line."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, args[1:])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])  # read, locality 2, data
        return context.get_dummy_value()

    return types.void(arr, types.intp, types.intp), codegen


@njit(**_JIT)
def _gather_pixels(pixels, rows, scale, out, next_rows):
    # Serial: one array written, so LLVM vectorises the widening loop behind a
    # runtime alias check. The rows of a shuffled batch come from memory (a
    # training set larger than the caches); prefetching the next batch's rows
    # here lets them load while the step's GEMMs run.
    N, D = pixels.shape
    if out.shape[0] != rows.shape[0] or out.shape[1] != D:
        raise ValueError("out must have shape (len(rows), pixels.shape[1])")
    for i in range(rows.shape[0]):
        r = rows[i] + N if rows[i] < 0 else rows[i]
        if r < 0 or r >= N:
            raise IndexError("a row index is out of range")
        for d in range(D):
            out[i, d] = np.float32(pixels[r, d]) * scale
    step = max(1, 64 // pixels.itemsize)  # elements per 64-byte cache line
    for i in range(next_rows.shape[0]):
        r = next_rows[i] + N if next_rows[i] < 0 else next_rows[i]
        if 0 <= r < N:
            for d in range(0, D, step):
                _prefetch(pixels, r, d)
            _prefetch(pixels, r, D - 1)  # the row's last line, when it starts mid-line


_NO_ROWS = np.empty(0, np.int64)


def gather_pixels(pixels, rows, scale, out, next_rows=None, binarize=None):
    if binarize is None:
        _gather_pixels(pixels, rows, np.float32(scale), out, _NO_ROWS if next_rows is None else next_rows)
    else:
        _binarize(pixels, rows, scale, out, *binarize)


@njit(parallel=True, **_JIT)
def _take_rows(a, rows, scale, scaled, out):
    N, D = a.shape
    if out.shape[0] != rows.shape[0] or out.shape[1] != D or (scaled and scale.shape[0] != N):
        raise ValueError("take_rows: a, rows, scale and out do not match")
    for i in range(rows.shape[0]):
        if rows[i] < 0 or rows[i] >= N:
            raise IndexError("take_rows: a row index is out of range")
    for i in prange(rows.shape[0]):
        r = rows[i]
        s = scale[r] if scaled else a.dtype.type(1.0)
        for d in range(D):
            out[i, d] = a[r, d] * s


_NO_SCALE = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def take_rows(a, rows, scale, out):
    # A copy is a product by 1, which is exact: one kernel for both.
    _take_rows(a, rows, _NO_SCALE[a.dtype] if scale is None else scale, scale is not None, out)


@njit(parallel=True, **_JIT)
def reparameterize_kl(heads, eps, z_out, kl_out):
    B, K = eps.shape
    one, half = heads.dtype.type(1.0), heads.dtype.type(0.5)
    for b in prange(B):
        acc = heads.dtype.type(0.0)
        for k in range(K):
            m, lv = heads[b, k], heads[b, K + k]
            std = _exp(half * lv)
            z_out[b, k] = m + std * eps[b, k]
            acc += one + lv - m * m - std * std
        kl_out[b] = -half * acc


def reparameterize_kl_draw(heads, key, step, rows, eps_out, z_out, kl_out):
    # Two passes: the draw's, then reparameterize_kl's (vectorised, its exp ours); one pass doing both took
    # longer, its exp libm's. z is the same as reparameterize_kl's of the same eps.
    draw_normal(key, step, rows, eps_out)
    reparameterize_kl(heads, eps_out, z_out, kl_out)


@njit(parallel=True, **_JIT)
def reparameterize_kl_backward(dz, heads, eps, kl_scale, dheads_out):
    B, K = eps.shape
    one, half = heads.dtype.type(1.0), heads.dtype.type(0.5)
    sc = heads.dtype.type(kl_scale)
    for b in prange(B):
        for k in range(K):
            g, std = dz[b, k], _exp(half * heads[b, K + k])
            dheads_out[b, k] = g + sc * heads[b, k]
            dheads_out[b, K + k] = half * (g * eps[b, k] * std + sc * (std * std - one))


@njit(parallel=True, cache=True, nogil=True)  # no fastmath: each distance summed along d, as the reference
def nearest_code(z, codebook, idx_out, dist_out):
    N, D = z.shape
    K = codebook.shape[0]
    for n in prange(N):
        best, arg = z.dtype.type(0.0), -1
        for k in range(K):
            d2 = z.dtype.type(0.0)
            for d in range(D):
                diff = z[n, d] - codebook[k, d]
                d2 += diff * diff
            if arg < 0 or d2 < best:
                best, arg = d2, k
        idx_out[n] = arg
        dist_out[n] = best


@njit(parallel=True, **_JIT)
def bias_act(out, b, relu):
    B, H = out.shape
    zero = out.dtype.type(0.0)
    for r in prange(B):
        for j in range(H):
            v = out[r, j] + b[j]
            out[r, j] = max(v, zero) if relu else v


# Rows per partial column sum of the bias gradient: a fixed split, so that the threads share the rows without
# racing and the sum does not depend on how many threads there are. Up to two blocks run on one thread: the
# threads' start costs more than such a batch's rows.
_BIAS_ROWS, _BIAS_SERIAL_BLOCKS = 64, 2


@njit(inline="always", **_JIT)
def _bias_block(dout, out, relu, partial, blk):
    # One pass over the block's rows: each row's (masked) values are stored and added to the block's column
    # sums in the same vector loop, faster than a masking kernel followed by NumPy's column sum.
    acc = partial[blk]
    acc[:] = dout.dtype.type(0.0)
    for r in range(blk * _BIAS_ROWS, min(dout.shape[0], (blk + 1) * _BIAS_ROWS)):
        if relu:
            for j in range(dout.shape[1]):
                v = dout[r, j] if out[r, j] > dout.dtype.type(0.0) else dout.dtype.type(0.0)
                dout[r, j] = v
                acc[j] += v
        else:
            for j in range(dout.shape[1]):
                acc[j] += dout[r, j]


@njit(parallel=True, **_JIT)
def _bias_blocks_threaded(dout, out, relu, partial):
    for blk in prange(partial.shape[0]):
        _bias_block(dout, out, relu, partial, blk)


@njit(**_JIT)
def _bias_blocks(dout, out, relu, partial, db_out, threaded):
    # Fewer than 8 columns (a one-channel image's pixels as rows, at the conv decoder's output) go column by
    # column instead, each a vectorised sum down the rows: the row loop's inner loop is then too short to
    # vectorise. Otherwise the blocks (here, unless ``threaded`` ran them on every thread), then their sums
    # in order.
    zero = dout.dtype.type(0.0)
    R, H = dout.shape
    if H < 8:
        for j in range(H):
            acc = zero
            for r in range(R):
                v = dout[r, j] if (not relu or out[r, j] > zero) else zero
                dout[r, j] = v
                acc += v
            db_out[j] = acc
        return
    if not threaded:
        for blk in range(partial.shape[0]):
            _bias_block(dout, out, relu, partial, blk)
    db_out[:] = zero
    for blk in range(partial.shape[0]):
        for j in range(H):
            db_out[j] += partial[blk, j]


def bias_act_backward(dout, out, relu, db_out):
    partial = scratch("bias_act_backward", -(-dout.shape[0] // _BIAS_ROWS), dout.shape[1], dout.dtype)
    threaded = dout.shape[1] >= 8 and partial.shape[0] > _BIAS_SERIAL_BLOCKS
    if threaded:
        _bias_blocks_threaded(dout, out, relu, partial)
    _bias_blocks(dout, out, relu, partial, db_out, threaded)


@njit(inline="always", **_JIT)
def _u(i):
    # An index as unsigned: Numba wraps a negative signed index around (``a[-1]``), a compare and
    # select per access that LLVM cannot drop when the index is a sum like ``start + t`` and that kept
    # the copies below from vectorising. The callers compute only indices >= 0.
    return np.uint64(i)


@njit(parallel=True, **_JIT)
def _unfold(x, H, W, C, kh, kw, s, p, Ho, Wo, cols):
    # A row per window position, in kh runs of kw * C values, each a contiguous run of the image where
    # the window row lies inside it. With PyTorch's (c, i, j) column order the runs are one value long,
    # and each loop order is good for one geometry only.
    run = kw * C
    zero = cols.dtype.type(0.0)
    for r in prange(x.shape[0] * Ho):
        b, oy = r // Ho, r % Ho
        img = x[b]
        for ox in range(Wo):
            row = cols[r * Wo + ox]
            x0 = ox * s - p
            for i in range(kh):
                iy = oy * s - p + i
                if iy < 0 or iy >= H:
                    for t in range(run):
                        row[_u(i * run + t)] = zero
                elif x0 >= 0 and x0 + kw <= W:
                    start = (iy * W + x0) * C
                    for t in range(run):
                        row[_u(i * run + t)] = img[_u(start + t)]
                else:
                    for j in range(kw):
                        ix = x0 + j
                        for c in range(C):
                            row[_u((i * kw + j) * C + c)] = img[_u((iy * W + ix) * C + c)] if 0 <= ix < W else zero


def unfold(x, g, cols_out):
    _unfold(x, g.H, g.W, g.C, g.kh, g.kw, g.stride, g.padding, g.H_out, g.W_out, cols_out)


@njit(parallel=True, **_JIT)
def _fold(cols, H, W, C, kh, kw, s, p, Ho, Wo, x):
    # Each image is summed on its own (no two iterations write one pixel), patch by patch in the
    # order unfold wrote them, a window row's kw * C values at a time (faster than gathering each
    # pixel's terms).
    run = kw * C
    for b in prange(x.shape[0]):
        img = x[b]
        img[:] = 0
        for oy in range(Ho):
            for ox in range(Wo):
                row = cols[(b * Ho + oy) * Wo + ox]
                x0 = ox * s - p
                for i in range(kh):
                    iy = oy * s - p + i
                    if iy < 0 or iy >= H:
                        continue
                    if x0 >= 0 and x0 + kw <= W:
                        start = (iy * W + x0) * C
                        for t in range(run):
                            img[_u(start + t)] += row[_u(i * run + t)]
                    else:
                        for j in range(kw):
                            ix = x0 + j
                            if 0 <= ix < W:
                                for c in range(C):
                                    img[_u((iy * W + ix) * C + c)] += row[_u((i * kw + j) * C + c)]


def fold(cols, g, x_out):
    _fold(cols, g.H, g.W, g.C, g.kh, g.kw, g.stride, g.padding, g.H_out, g.W_out, x_out)


# The optimisers store a moment smaller in magnitude than the dtype's smallest normal number
# (``tiny``: 1.2e-38 in float32) as 0. A weight whose gradient is 0 step after step (one fed by a
# pixel that is 0 in every image of the batch) has its first moment m decay by beta1 = 0.9 a step
# into the subnormal range, where it sticks: 0.9 k units of the last place rounds back to k. After
# 1,500 steps of the default VAE a fifth of its m are subnormal, and on Intel CPUs each operation on a
# subnormal number is a microcode assist, which makes Adam several times slower. Such a moment cannot
# move its weight (the
# update is at most lr * tiny / eps, 1e-33, far below any weight's rounding step), so the numbers
# stay those of the reference, which keeps the subnormals. ``x < tiny`` is False for NaN: a NaN
# still reaches the weights, where the trainer's check finds it.
@njit(parallel=True, **_JIT)
def _adam(p, g, m, v, beta1, beta2, step_size, inv_sqrt_bc2, eps, tiny):
    one, zero = p.dtype.type(1.0), p.dtype.type(0.0)
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        mi = zero if abs(mi) < tiny else mi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        vi = zero if vi < tiny else vi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    # Every scalar is cast to the buffer's dtype: one float64 constant would
    # turn the float32 loop into a float64 one at half the vector width.
    dt = p.dtype.type
    _adam(p, g, m, v, dt(beta1), dt(beta2), dt(lr / (1 - beta1**step)), dt((1 - beta2**step) ** -0.5), dt(eps),
          np.finfo(p.dtype).tiny)


@njit(parallel=True, **_JIT)
def _sgd(p, g, buf, lr, momentum, nesterov, tiny):
    zero = p.dtype.type(0.0)
    for i in prange(p.shape[0]):
        b = momentum * buf[i] + g[i]
        b = zero if abs(b) < tiny else b  # as Adam's moments (above)
        buf[i] = b
        p[i] -= lr * (g[i] + momentum * b if nesterov else b)


def sgd_step(p, g, buf, lr, momentum, nesterov):
    dt = p.dtype.type
    _sgd(p, g, buf, dt(lr), dt(momentum), bool(nesterov), np.finfo(p.dtype).tiny)
