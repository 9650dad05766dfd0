"""Fused CPU implementations of the named ops, compiled with Numba.

Same names, signatures and formulas as :mod:`tinyvae.backends.reference` (read
the formulas and their sources there); each op here makes one pass over its
arrays where the reference makes several, and allocates nothing. Per-row sums
accumulate in float64 whatever the array dtype.

``cache=True`` stores the compiled machine code beside this file (in
``__pycache__``), so a second process does not recompile.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, nogil=True)


@njit(parallel=True, **_JIT)
def bce_with_logits(logits, x, scale, loss_out, dlogits_out):
    B, D = logits.shape
    for b in prange(B):
        acc = 0.0
        for d in range(D):
            l, t = logits[b, d], x[b, d]
            e = math.exp(-abs(l))
            acc += max(l, 0.0) - l * t + math.log1p(e)
            inv = 1.0 / (1.0 + e)
            sig = inv if l >= 0 else e * inv
            dlogits_out[b, d] = scale * (sig - t)
        loss_out[b] = acc


@njit(**_JIT)
def reparameterize_kl(mu, logvar, eps, z_out, kl_out):
    B, K = mu.shape
    for b in range(B):
        acc = 0.0
        for k in range(K):
            m, lv = mu[b, k], logvar[b, k]
            std = math.exp(0.5 * lv)
            z_out[b, k] = m + std * eps[b, k]
            acc += 1.0 + lv - m * m - math.exp(lv)
        kl_out[b] = -0.5 * acc


@njit(**_JIT)
def reparameterize_kl_backward(dz, mu, logvar, eps, kl_scale, dmu_out, dlogvar_out):
    B, K = mu.shape
    for b in range(B):
        for k in range(K):
            lv, g = logvar[b, k], dz[b, k]
            dmu_out[b, k] = g + kl_scale * mu[b, k]
            dlogvar_out[b, k] = 0.5 * g * eps[b, k] * math.exp(0.5 * lv) + 0.5 * kl_scale * (math.exp(lv) - 1.0)


@njit(parallel=True, **_JIT)
def bias_act(out, b, relu):
    B, H = out.shape
    for r in prange(B):
        for j in range(H):
            v = out[r, j] + b[j]
            out[r, j] = max(v, 0.0) if relu else v


_COLS = 16  # columns per parallel task of relu_backward_bias


@njit(parallel=True, **_JIT)
def relu_backward_bias(dh, h, db_out):
    B, H = dh.shape
    for c in prange((H + _COLS - 1) // _COLS):
        for j in range(c * _COLS, min(H, (c + 1) * _COLS)):
            acc = 0.0
            for r in range(B):
                v = dh[r, j] if h[r, j] > 0 else 0.0
                dh[r, j] = v
                acc += v
            db_out[j] = acc


@njit(parallel=True, **_JIT)
def _adam(p, g, m, v, beta1, beta2, step_size, sqrt_bc2, eps):
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + (1 - beta1) * gi
        vi = beta2 * v[i] + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) / sqrt_bc2 + eps)


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    dt = p.dtype.type
    _adam(p, g, m, v, dt(beta1), dt(beta2), dt(lr / (1 - beta1**step)), dt((1 - beta2**step) ** 0.5), dt(eps))


@njit(parallel=True, **_JIT)
def _sgd(p, g, buf, lr, momentum, nesterov):
    for i in prange(p.shape[0]):
        b = momentum * buf[i] + g[i]
        buf[i] = b
        p[i] -= lr * (g[i] + momentum * b if nesterov else b)


def sgd_step(p, g, buf, lr, momentum, nesterov):
    dt = p.dtype.type
    _sgd(p, g, buf, dt(lr), dt(momentum), bool(nesterov))


def threads() -> int:
    """Numba's thread count (``NUMBA_NUM_THREADS``, default: the number of cores)."""
    return numba.get_num_threads()
