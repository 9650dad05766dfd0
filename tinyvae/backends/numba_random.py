"""The numba backend's random draws: Philox4x32-10 and its consumers, each drawing inside its own kernel.

The layout (counters, keys, uniforms, Box-Muller normals) is :mod:`tinyvae.rng`'s, whose NumPy functions
are the reference: the words agree bit for bit, the normals to the rounding of ``log``, ``cos`` and ``sin``.

The rounds work on ``uint32`` words, each 32 x 32 -> 64-bit product taken in ``uint64``: at half the
width of ``uint64`` words masked to 32 bits, LLVM computes several blocks of a row at once
(docs/performance.md, "The random draws", has the figures). A signed index mixed into the arithmetic would make
Numba type the result as ``float64`` and lose the words' bits, so every index is cast first.

The kernels are compiled without fastmath: a contracted Box-Muller would leave the reference's rounding.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .reference import CORRUPTION_CODES

_JIT = dict(cache=True, nogil=True)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LOW, _SHIFT = np.uint64(0xFFFFFFFF), np.uint64(32)
_TWO_PI = 2.0 * math.pi


@njit(inline="always", **_JIT)
def philox_block(c0, c1, c2, c3, k0, k1):
    """The four ``uint32`` words of counter ``(c0, c1, c2, c3)`` under key ``(k0, k1)``, ten rounds."""
    for _ in range(10):
        p0, p1 = _M0 * np.uint64(c0), _M1 * np.uint64(c2)
        c0, c2 = np.uint32(p1 >> _SHIFT) ^ c1 ^ k0, np.uint32(p0 >> _SHIFT) ^ c3 ^ k1
        c1, c3 = np.uint32(p1 & _LOW), np.uint32(p0 & _LOW)
        k0, k1 = np.uint32(k0 + _W0), np.uint32(k1 + _W1)
    return c0, c1, c2, c3


@njit(inline="always", **_JIT)
def _counter(example, step):
    """The counter words ``(c1, c2, c3)`` of ``example`` at ``step`` (an int64 and a uint64)."""
    return np.uint32(example & 0xFFFFFFFF), np.uint32(step & _LOW), np.uint32(step >> _SHIFT)


@njit(inline="always", **_JIT)
def _row_words(w, first, blocks, example, step, k0, k1):
    """Blocks ``first .. first + blocks - 1`` of ``example`` at ``step`` into ``w[0 : 4 blocks]``."""
    c1, c2, c3 = _counter(example, step)
    for q in range(blocks):
        a0, a1, a2, a3 = philox_block(np.uint32(first + q), c1, c2, c3, k0, k1)
        w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3] = a0, a1, a2, a3


@njit(inline="always", **_JIT)
def _uniform(w):
    return (np.float64(w) + 0.5) * 2.0**-32


@njit(inline="always", **_JIT)
def _box_muller(wa, wb):
    r = math.sqrt(-2.0 * math.log(_uniform(wa)))
    angle = _TWO_PI * _uniform(wb)
    return r * math.cos(angle), r * math.sin(angle)


@njit(parallel=True, **_JIT)
def _philox(counter, k0, k1, out):
    for i in prange(counter.shape[0]):
        w = philox_block(counter[i, 0], counter[i, 1], counter[i, 2], counter[i, 3], k0, k1)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = w


def philox4x32_10(counter, key, out):
    _philox(counter, np.uint32(key[0]), np.uint32(key[1]), out)


@njit(inline="always", **_JIT)
def _draw_row(out, n, B, rows, step, k0, k1):
    """Row ``n`` of ``out`` ``(L*B, K)``: elements ``l K .. l K + K - 1`` of example ``rows[b]``, ``n = l B + b``."""
    K = out.shape[1]
    l, b = n // B, n % B
    c1, c2, c3 = _counter(rows[b], step)
    for q in range(l * K // 4, (l * K + K + 3) // 4):
        w0, w1, w2, w3 = philox_block(np.uint32(q), c1, c2, c3, k0, k1)
        for pair in range(2):
            e = 4 * q + 2 * pair - l * K  # the pair's first element in the row
            if -2 < e < K:
                za, zb = _box_muller(w0, w1) if pair == 0 else _box_muller(w2, w3)
                if e >= 0:
                    out[n, e] = za
                if e + 1 < K:
                    out[n, e + 1] = zb


@njit(parallel=True, **_JIT)
def _draw_normal(k0, k1, step, rows, out):
    for n in prange(out.shape[0]):
        _draw_row(out, n, rows.shape[0], rows, step, k0, k1)


def draw_normal(key, step, rows, out):
    _draw_normal(np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), rows, out)


@njit(parallel=True, **_JIT)
def _reparameterize_kl_draw(heads, k0, k1, step, rows, eps_out, z_out, kl_out):
    N, K = eps_out.shape
    one, half = heads.dtype.type(1.0), heads.dtype.type(0.5)
    for n in prange(N):
        _draw_row(eps_out, n, rows.shape[0], rows, step, k0, k1)
        acc = heads.dtype.type(0.0)
        for k in range(K):
            m, lv = heads[n, k], heads[n, K + k]
            std = math.exp(half * lv)
            z_out[n, k] = m + std * eps_out[n, k]
            acc += one + lv - m * m - std * std
        kl_out[n] = -half * acc


def reparameterize_kl_draw(heads, key, step, rows, eps_out, z_out, kl_out):
    _reparameterize_kl_draw(heads, np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), rows, eps_out, z_out,
                            kl_out)


@njit(parallel=True, **_JIT)
def _binarize(pixels, rows, scale, out, k0, k1, step, words):
    N, D = pixels.shape
    if out.shape[0] != rows.shape[0] or out.shape[1] != D:
        raise ValueError("out must have shape (len(rows), pixels.shape[1])")
    for i in range(rows.shape[0]):
        if rows[i] < -N or rows[i] >= N:
            raise IndexError("a row index is out of range")
    for i in prange(rows.shape[0]):
        r = rows[i] + N if rows[i] < 0 else rows[i]
        w = words[i]
        _row_words(w, 0, (D + 3) // 4, r, step, k0, k1)
        for d in range(D):
            p = np.float64(np.float32(pixels[r, d]) * scale)
            out[i, d] = 1.0 if _uniform(w[d]) < p else 0.0


def binarize(pixels, rows, scale, out, key, step):
    """``out = u < pixels[rows] * scale``: the binarising gather (the reference ``gather_pixels`` with
    ``binarize=(key, step)``)."""
    words = scratch("binarize", rows.shape[0], (pixels.shape[1] + 3) // 4 * 4)
    _binarize(pixels, rows, np.float32(scale), out, np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), words)


@njit(inline="always", **_JIT)
def _smallest_key(w, D, m, keys):
    """The ``m``-th smallest (1-based) of the keys ``w[d] 2^32 + d`` of ``w[0:D]``, found by the histogram of
    the words' top bytes (the m-th key's byte), then a selection among that byte's few keys in ``keys``."""
    counts = np.zeros(256, np.int64)
    for d in range(D):
        counts[w[d] >> 24] += 1
    top, below = 0, 0
    while below + counts[top] < m:
        below += counts[top]
        top += 1
    n = 0
    for d in range(D):
        if w[d] >> 24 == top:
            keys[n] = (np.uint64(w[d]) << _SHIFT) | np.uint64(d)
            n += 1
    for i in range(1, n):  # insertion sort: D / 256 keys expected
        v, j = keys[i], i - 1
        while j >= 0 and keys[j] > v:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = v
    return keys[m - below - 1]


@njit(parallel=True, **_JIT)
def _corrupt(x, k0, k1, step, rows, kind, noise, m, out, words, keys):
    B, D = x.shape
    for b in prange(B):
        w = words[b]
        _row_words(w, 0, ((2 * D if kind == 2 else D) + 3) // 4, rows[b], step, k0, k1)  # coins: salt-and-pepper
        if kind == 0:  # gaussian: each Box-Muller pair once
            for d in range(0, D, 2):
                za, zb = _box_muller(w[d], w[d + 1])
                out[b, d] = x[b, d] + x.dtype.type(noise) * x.dtype.type(za)
                if d + 1 < D:
                    out[b, d + 1] = x[b, d + 1] + x.dtype.type(noise) * x.dtype.type(zb)
            continue
        threshold = _smallest_key(w, D, m, keys[b]) if m else np.uint64(0)  # the m pixels of smallest key
        for d in range(D):
            if m == 0 or ((np.uint64(w[d]) << _SHIFT) | np.uint64(d)) > threshold:
                out[b, d] = x[b, d]
            elif kind == 1:
                out[b, d] = 0.0
            else:
                out[b, d] = 1.0 if w[D + d] < np.uint32(2**31) else 0.0


def corrupt(x, key, step, rows, kind, noise, out):
    B, D = x.shape
    words, keys = scratch("corrupt", B, (2 * D + 3) // 4 * 4), scratch("corrupt keys", B, D, np.uint64)
    _corrupt(x, np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), rows, CORRUPTION_CODES[kind], float(noise),
             round(noise * D), out, words, keys)


_SCRATCH: dict = {}


def scratch(name: str, rows: int, cols: int, dtype=np.uint32) -> np.ndarray:
    """A ``(rows, cols)`` buffer for ``name``'s words, keys or partial sums, made once per shape and kept."""
    key = (name, rows, cols, np.dtype(dtype))
    if key not in _SCRATCH:
        _SCRATCH[key] = np.empty((rows, cols), dtype)
    return _SCRATCH[key]
