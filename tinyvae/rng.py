"""Counter-based random streams: Philox4x32-10, and the layout every backend draws with, word for word.

Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011;
the Random123 library) maps a 128-bit counter and a 64-bit key to 128 random bits by ten rounds of
multiplications and xors. A draw is therefore a pure function of where it is, not of what was drawn
before: no generator state, nothing shared between consumers, ranks or resumes.

The layout (docs/random.md says why):

* **Words.** ``philox4x32_10(counter, key)``: counter ``(n, 4)`` uint32 ``c0 c1 c2 c3``, key ``(2,)``
  uint32 ``k0 k1``; each round is ``(hi0, lo0) = M0 c0``, ``(hi1, lo1) = M1 c2`` (32 x 32 -> 64-bit
  products), ``c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``, and between rounds ``k0 += W0``,
  ``k1 += W1`` (mod 2^32), with ``M0 = 0xD2511F53``, ``M1 = 0xCD9E8D57``, ``W0 = 0x9E3779B9``,
  ``W1 = 0xBB67AE85``: Random123's ``philox4x32_10``, whose known answers the tests check.
* **Keys.** A stream's key is ``(k0, k1)`` of ``philox4x32_10((s, 0, 0, 0), (seed mod 2^32, seed >> 32))``,
  ``s`` the stream's number in :data:`STREAMS`; so each (seed, stream) has its own key.
* **Counters.** Element ``e`` of example ``i`` (its index in the dataset) at step ``t`` is word
  ``e mod 4`` of the block at counter ``(e div 4, i mod 2^32, t mod 2^32, t div 2^32)``.
* **Uniforms.** A word ``w`` is ``u = (w + 1/2) 2^-32`` in float64: in (0, 1), never 0 or 1, exact.
* **Normals.** Box-Muller (Box & Muller 1958) on a block's word pairs (0, 1) and (2, 3): with ``u_a, u_b``
  the pair's uniforms, ``r = sqrt(-2 log u_a)``, the even word's normal is ``r cos(2 pi u_b)`` and the odd
  word's ``r sin(2 pi u_b)``, in float64, then rounded to the consumer's dtype.

Backends compute the words in integers, so they agree bit for bit; the normals go through ``log``,
``cos`` and ``sin``, whose last bits differ between math libraries, and agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import SettingsError

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK = 0xFFFFFFFF
# The named streams: one consumer's draws can never shift another's.
STREAMS = {"eps": 1, "corruption": 2, "binarize": 3, "shuffle": 4, "pictures": 5, "evaluate": 6, "split": 7}
# The steps of the evaluate stream: each draw of an evaluation has its own, the same every epoch, so that
# two evaluations of one model at one seed draw the same numbers.
EVALUATE_STEPS = {"elbo": 0, "iwae": 1, "denoising": 2, "binarize": 3}


def philox4x32_10(counter, key) -> np.ndarray:
    """Random123's ``philox4x32_10``: ``(n, 4)`` uint32 words of ``counter`` ``(n, 4)`` uint32 under ``key``
    ``(2,)`` uint32 (see the module doc for the rounds)."""
    c = np.asarray(counter, np.uint32).reshape(-1, 4).astype(np.uint64)
    k0, k1 = (np.uint64(int(v)) for v in np.asarray(key, np.uint32).reshape(2))
    c0, c1, c2, c3 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    mask, m0, m1 = np.uint64(MASK), np.uint64(M0), np.uint64(M1)
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + np.uint64(W0)) & mask, (k1 + np.uint64(W1)) & mask
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & mask
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def check_seed(seed) -> int:
    """``seed`` as an int; :class:`~tinyvae.errors.SettingsError` unless it is an int in [0, 2^64)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) or not 0 <= int(seed) < 2**64:
        raise SettingsError(f"a seed must be an int in [0, 2^64), got {seed!r}")
    return int(seed)


def stream_key(seed: int, stream: str) -> np.ndarray:
    """The ``(2,)`` uint32 key of ``stream`` (one of :data:`STREAMS`) for ``seed``."""
    seed = check_seed(seed)
    return philox4x32_10([[STREAMS[stream], 0, 0, 0]], [seed & MASK, seed >> 32])[0, :2].copy()


def counters(step: int, rows, blocks: int, first: int = 0) -> np.ndarray:
    """The ``(len(rows) * blocks, 4)`` uint32 counters of blocks ``first .. first + blocks - 1`` of each example
    of ``rows`` (dataset indices, >= 0) at ``step``, example-major."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((rows.size, blocks, 4), np.uint32)
    out[:, :, 0] = np.arange(first, first + blocks, dtype=np.int64) & MASK
    out[:, :, 1] = (rows & MASK).astype(np.uint32)[:, None]
    out[:, :, 2], out[:, :, 3] = step & MASK, step >> 32
    return out.reshape(-1, 4)


def _blocks(key, step: int, rows, n: int, start: int) -> tuple[np.ndarray, int]:
    """The whole blocks holding elements ``start .. start + n - 1`` of each example of ``rows``, as
    ``(len(rows), 4 * blocks)`` words, and the offset of element ``start`` in them."""
    first, last = start // 4, -(-(start + n) // 4)
    rows = np.asarray(rows, np.int64)
    w = philox4x32_10(counters(step, rows, last - first, first), key)
    return w.reshape(rows.size, 4 * (last - first)), start - 4 * first


def words(key, step: int, rows, n: int, start: int = 0) -> np.ndarray:
    """``(len(rows), n)`` uint32: the words of elements ``start .. start + n - 1`` of each example of ``rows``
    at ``step``."""
    w, at = _blocks(key, step, rows, n, start)
    return w[:, at:at + n]


def uniform(w) -> np.ndarray:
    """Words as float64 uniforms ``(w + 1/2) 2^-32``, in (0, 1)."""
    return (np.asarray(w, np.float64) + 0.5) * 2.0**-32


def normal(w) -> np.ndarray:
    """Words ``(..., 4 m)`` (whole blocks) as float64 N(0, 1) draws, by Box-Muller on each block's pairs."""
    u = uniform(w).reshape(*np.shape(w)[:-1], -1, 2)
    r, angle = np.sqrt(-2.0 * np.log(u[..., 0])), 2.0 * math.pi * u[..., 1]
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=-1).reshape(np.shape(w))


def uniforms(key, step: int, rows, n: int, start: int = 0) -> np.ndarray:
    """``(len(rows), n)`` float64 uniforms of elements ``start .. start + n - 1`` of ``rows`` at ``step``."""
    return uniform(words(key, step, rows, n, start))


def normals(key, step: int, rows, n: int, start: int = 0) -> np.ndarray:
    """``(len(rows), n)`` float64 N(0, 1) draws of elements ``start .. start + n - 1`` of ``rows`` at ``step``
    (each from its block's Box-Muller pair, so the whole blocks are drawn)."""
    w, at = _blocks(key, step, rows, n, start)
    return normal(w)[:, at:at + n]


def generator(seed: int, stream: str, step: int) -> np.random.Generator:
    """A NumPy Generator (its Philox4x64-10 bit generator) keyed by ``stream``'s key for ``seed`` and by
    ``step``: for draws made on the host whole, such as an epoch's permutation of the training set."""
    k0, k1 = (int(v) for v in stream_key(seed, stream))
    return np.random.Generator(np.random.Philox(key=[k0 | k1 << 32, step]))
