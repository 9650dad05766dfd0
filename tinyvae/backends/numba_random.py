"""The numba backend's random draws: Philox4x32-10 and its consumers, each drawing inside its own kernel.

The layout (counters, keys, uniforms, Box-Muller normals) is :mod:`tinyvae.rng`'s, whose NumPy functions
are the reference: the words agree bit for bit, the normals to the rounding of ``log``, ``cos`` and ``sin``.

The rounds work on ``uint32`` words, each 32 x 32 -> 64-bit product taken in ``uint64``: at half the
width of ``uint64`` words masked to 32 bits, LLVM computes several blocks of a row at once
(docs/performance.md, "The random draws", has the figures). A signed index mixed into the arithmetic would make
Numba type the result as ``float64`` and lose the words' bits, so every index is cast first.

The kernels are compiled without fastmath: a contracted Box-Muller would leave the reference's rounding.
Box-Muller's ``log``, ``cos`` and ``sin`` are ours (:func:`_log_uniform`, :func:`_cos_sin_turns`), polynomials
in float64: ``log u`` within 1.5 units in the last place, ``cos`` and ``sin`` within 4e-16, less than the
reference's own rounding of its angle (a test holds them to it on a million words). libm's calls do not
vectorise, and took most of a draw's time (docs/performance.md, "The random draws").
"""

from __future__ import annotations

import decimal
import math

import numpy as np
from numba import njit, prange

from .numba_math import bits_float64, float64_bits
from .reference import CORRUPTION_CODES

# NumPy's error model: a float division by zero gives inf or NaN instead of raising, so that no check
# stands in the way of vectorising Box-Muller's loop (no division here can have a zero divisor).
_JIT = dict(cache=True, nogil=True, error_model="numpy")
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


def _ln2_parts():
    """ln 2 as a float64 of 40 fractional bits, whose products with exponents up to 2^12 are exact, and the
    float64 nearest the rest (Cody & Waite's split), from ln 2 to 50 digits."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        ln2 = decimal.Decimal(2).ln()
        hi = int(ln2 * 2**40) / 2**40
        return hi, float(ln2 - decimal.Decimal(hi))


_LN2_HI, _LN2_LO = _ln2_parts()
_SQRT2 = math.sqrt(2.0)
_MANTISSA, _EXPONENT_ONE = np.int64((1 << 52) - 1), np.int64(1023 << 52)
# Coefficients of z^k, highest k first (Horner's order): 2 atanh(s) = 2 s + s sum_k 2 z^k / (2k + 1) with
# z = s^2 (k to 10: the next term is below 2^-60 of the sum for |s| <= 3 - 2 sqrt(2)); sin a = a + a sum_k
# (-1)^k z^k / (2k + 1)! and cos a = 1 + sum_k (-1)^k z^k / (2k)! with z = a^2 (k to 8: the next terms
# are below 2^-58 for |a| <= pi / 4).
_ATANH = tuple(2.0 / (2 * k + 1) for k in range(10, 0, -1))
_SIN = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(8, 0, -1))
_COS = tuple((-1) ** k / math.factorial(2 * k) for k in range(8, 0, -1))
_TURN = _TWO_PI * 2.0**-32  # the angle of one unit of a word: 2 pi / 2^32, exactly fl(2 pi) 2^-32


@njit(inline="always", **_JIT)
def _series(z, coefficients):
    """``sum_k c_k z^k`` for k from 1, the coefficients highest k first."""
    p = coefficients[0]
    for i in range(1, len(coefficients)):
        p = p * z + coefficients[i]
    return p * z


@njit(inline="always", **_JIT)
def _log_uniform(w):
    """log u of the uniform ``u = (w + 1/2) 2^-32`` of the uint32 word ``w``, in float64.

    ``w + 1/2 = 2^e m`` exactly, with m in [sqrt(1/2), sqrt(2)); ``log(1 + f) = 2 atanh(s)`` for ``f = m - 1``
    (exact) and ``s = f / (2 + f)``, written ``f - s (f - R)`` with ``R = s^-1 (2 atanh(s) - 2 s)`` so that
    the leading ``f`` carries no rounding; then ``(e - 32) ln 2`` added in two parts."""
    x = np.float64(w) + 0.5
    bits = float64_bits(x)
    e = (bits >> 52) - 1023
    m = bits_float64((bits & _MANTISSA) | _EXPONENT_ONE)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    n = np.float64(e - 32)
    return n * _LN2_HI + ((f - s * (f - _series(s * s, _ATANH))) + n * _LN2_LO)


@njit(inline="always", **_JIT)
def _cos_sin_turns(w):
    """``(cos, sin)`` of ``2 pi u`` for the uniform ``u = (w + 1/2) 2^-32`` of the uint32 word ``w``, float64.

    The angle is reduced in the word's integers, exactly: q, the nearest quarter turn, and ``t = (u - q/4)
    2^32``, so that ``a = t 2 pi 2^-32`` lies in [-pi/4, pi/4]; cos a and sin a by their series; then turned
    by q quarter turns."""
    q = (np.uint64(w) + np.uint64(1 << 29)) >> np.uint64(30)
    t = np.float64(np.int64(w) - np.int64(q << np.uint64(30))) + 0.5
    a = t * _TURN
    z = a * a
    s = a + a * _series(z, _SIN)
    c = 1.0 + _series(z, _COS)
    # q quarter turns: (c, s) -> (-s, c) -> (-c, -s) -> (s, -c), as two selects each (LLVM vectorises those,
    # not a chain of four cases).
    swap = (q & np.uint64(1)) != 0
    cos, sin = s if swap else c, c if swap else s
    cos = -cos if ((q + np.uint64(1)) & np.uint64(2)) != 0 else cos
    sin = -sin if (q & np.uint64(2)) != 0 else sin
    return cos, sin


@njit(inline="always", **_JIT)
def _box_muller(wa, wb):
    r = math.sqrt(-2.0 * _log_uniform(wa))
    cos, sin = _cos_sin_turns(wb)
    return r * cos, r * sin


@njit(parallel=True, **_JIT)
def _philox(counter, k0, k1, out):
    for i in prange(counter.shape[0]):
        w = philox_block(counter[i, 0], counter[i, 1], counter[i, 2], counter[i, 3], k0, k1)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = w


def philox4x32_10(counter, key, out):
    _philox(counter, np.uint32(key[0]), np.uint32(key[1]), out)


@njit(inline="always", **_JIT)
def _draw_row(out, n, B, rows, step, k0, k1, w, z):
    """Row ``n`` of ``out`` ``(L*B, K)``: elements ``l K .. l K + K - 1`` of example ``rows[b]``, ``n = l B + b``.
    Every pair of the row's Philox blocks is drawn into ``z`` (float64 scratch; ``w`` the words') in a loop
    without branches, which LLVM vectorises, and the row's K copied out of it."""
    K = out.shape[1]
    l, b = n // B, n % B
    first = l * K // 4
    blocks = (l * K + K + 3) // 4 - first
    _row_words(w, first, blocks, rows[b], step, k0, k1)
    for p in range(2 * blocks):
        z[2 * p], z[2 * p + 1] = _box_muller(w[2 * p], w[2 * p + 1])
    start = l * K - 4 * first
    for e in range(K):
        out[n, e] = z[start + e]


def _row_scratch(name, out):
    """The words and the normals of :func:`_draw_row`, a row of each per row of ``out``."""
    blocks = (out.shape[1] + 3) // 4 + 1  # a row may start inside a block
    return scratch(name, out.shape[0], 4 * blocks), scratch(name + " normals", out.shape[0], 4 * blocks, np.float64)


@njit(parallel=True, **_JIT)
def _draw_normal(k0, k1, step, rows, out, words, normals):
    for n in prange(out.shape[0]):
        _draw_row(out, n, rows.shape[0], rows, step, k0, k1, words[n], normals[n])


def draw_normal(key, step, rows, out):
    _draw_normal(np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), rows, out, *_row_scratch("draw_normal", out))


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
def _corrupt(x, k0, k1, step, rows, kind, noise, m, out, words, keys, normals):
    B, D = x.shape
    for b in prange(B):
        w = words[b]
        _row_words(w, 0, ((2 * D if kind == 2 else D) + 3) // 4, rows[b], step, k0, k1)  # coins: salt-and-pepper
        if kind == 0:  # gaussian: each Box-Muller pair once, in a loop without branches (it vectorises), then added
            z = normals[b]
            for p in range((D + 1) // 2):
                z[2 * p], z[2 * p + 1] = _box_muller(w[2 * p], w[2 * p + 1])
            for d in range(D):
                out[b, d] = x[b, d] + x.dtype.type(noise) * x.dtype.type(z[d])
            continue
        threshold = _smallest_key(w, D, m, keys[b]) if m else np.uint64(0)  # the m pixels of smallest key
        for d in range(D):
            if m == 0 or ((np.uint64(w[d]) << _SHIFT) | np.uint64(d)) > threshold:
                out[b, d] = x[b, d]
            elif kind == 1:
                out[b, d] = 0.0
            else:
                out[b, d] = 1.0 if w[D + d] < np.uint32(2**31) else 0.0


_NO_NORMALS = np.empty((0, 0))  # _corrupt's normals where the corruption draws none


def corrupt(x, key, step, rows, kind, noise, out):
    B, D = x.shape
    words, keys = scratch("corrupt", B, (2 * D + 3) // 4 * 4), scratch("corrupt keys", B, D, np.uint64)
    normals = scratch("corrupt normals", B, (D + 1) // 2 * 2, np.float64) if kind == "gaussian" else _NO_NORMALS
    _corrupt(x, np.uint32(key[0]), np.uint32(key[1]), np.uint64(step), rows, CORRUPTION_CODES[kind], float(noise),
             round(noise * D), out, words, keys, normals)


_SCRATCH: dict = {}


def scratch(name: str, rows: int, cols: int, dtype=np.uint32) -> np.ndarray:
    """A ``(rows, cols)`` buffer for ``name``'s words, keys, partial sums or products, made once per shape and kept."""
    key = (name, rows, cols, np.dtype(dtype))
    if key not in _SCRATCH:
        _SCRATCH[key] = np.empty((rows, cols), dtype)
    return _SCRATCH[key]
