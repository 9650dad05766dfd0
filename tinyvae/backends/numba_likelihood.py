"""The numba backend's likelihood ops: the decoder's negative log-likelihoods with their gradients, and the
IWAE's importance weights and their gradient at the encoder. Their formulas and sources are the reference's
(:mod:`tinyvae.backends.reference_likelihood`); the CUDA kernels are ``kernels/likelihood.cu``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .numba_math import JIT as _JIT
from .numba_math import exp, exp_neg, log1p_unit
from .reference_likelihood import check_draws, check_draws_backward


@njit(inline="always", **_JIT)
def _check_targets(x, n):  # the likelihoods' targets: n rows, or B rows read for each of n / B draws
    if x.shape[0] != n and (x.shape[0] == 0 or n % x.shape[0] != 0):
        raise ValueError("the target rows are not a whole number of draws' outputs")


@njit(parallel=True, **_JIT)
def bce_with_logits(logits, x, scale, loss_out, dlogits_out):
    B, D = logits.shape
    _check_targets(x, B)
    zero, one = logits.dtype.type(0.0), logits.dtype.type(1.0)
    sc = logits.dtype.type(scale)
    for b in prange(B):
        acc = zero
        xb = b % x.shape[0]
        for d in range(D):
            l, t = logits[b, d], x[xb, d]
            e = exp_neg(abs(l))
            acc += max(l, zero) - l * t + log1p_unit(e)
            inv = one / (one + e)
            sig = inv if l >= zero else e * inv
            dlogits_out[b, d] = sc * (sig - t)
        loss_out[b] = acc


@njit(**_JIT)
def gaussian_nll(mean, x, logvar, scale, loss_out, dmean_out, dlogvar_out):
    B, D = mean.shape
    dt = mean.dtype.type
    half, one, sc = dt(0.5), dt(1.0), dt(scale)
    log_2pi_half = dt(0.5 * math.log(2 * math.pi)) * D
    _check_targets(x, B)
    if dlogvar_out is not None:
        dlogvar_out[:] = dt(0.0)
    for b in range(B):
        acc = dt(0.0)
        xb = b % x.shape[0]
        for d in range(D):
            inv_var = exp(-logvar[d])
            r = x[xb, d] - mean[b, d]
            r2 = r * r * inv_var
            acc += r2 + logvar[d]
            dmean_out[b, d] = -sc * r * inv_var
            if dlogvar_out is not None:
                dlogvar_out[d] += sc * half * (one - r2)
        loss_out[b] = half * acc + log_2pi_half


@njit(parallel=True, **_JIT)
def _importance_weights(nll, heads, eps, z, scale, cut, weights_out, bound_out):
    # One example a loop: its k log weights (kept in weights_out), their largest, the log-sum-exp after it,
    # then the normalised weights in place.
    N, K = z.shape
    B = bound_out.shape[0]
    k = N // B
    dt = nll.dtype.type
    half, zero, log_k = dt(0.5), dt(0.0), dt(math.log(k))
    for b in prange(B):
        top = zero
        for j in range(k):
            n = j * B + b
            s = zero
            for i in range(K):
                s += eps[n, i] * eps[n, i] - z[n, i] * z[n, i] + heads[n, K + i]
            log_w = half * s - nll[n]
            weights_out[n] = log_w
            top = log_w if j == 0 else max(top, log_w)
        total = zero
        for j in range(k):
            e = exp(weights_out[j * B + b] - top)
            weights_out[j * B + b] = e
            total += e
        bound_out[b] = -(top + math.log(total) - log_k)
        for j in range(k):
            w = weights_out[j * B + b] / total
            weights_out[j * B + b] = zero if w < cut else w * scale


def importance_weights(nll, heads, eps, z, scale, weights_out, bound_out):
    check_draws(nll, heads, eps, z, weights_out, bound_out)
    dt = nll.dtype.type
    _importance_weights(nll, heads, eps, z, dt(scale), np.finfo(nll.dtype).eps, weights_out, bound_out)


@njit(parallel=True, **_JIT)
def _importance_weights_backward(dz, weights, heads, eps, z, dheads_out):
    # One example a loop: its k draws' g and g eps added into its row in turn (the loops over the K elements
    # vectorise), then the logvar half finished with one exp per element.
    N, K = z.shape
    B = dheads_out.shape[0]
    dt = z.dtype.type
    half, zero = dt(0.5), dt(0.0)
    for b in prange(B):
        dheads_out[b, :] = zero
        total = zero
        for n in range(b, N, B):
            w = weights[n]
            total += w
            for i in range(K):
                g = dz[n, i] + w * z[n, i]
                dheads_out[b, i] += g
                dheads_out[b, K + i] += g * eps[n, i]
        for i in range(K):
            dheads_out[b, K + i] = half * (exp(half * heads[b, K + i]) * dheads_out[b, K + i] - total)


def importance_weights_backward(dz, weights, heads, eps, z, dheads_out):
    check_draws_backward(dz, weights, heads, eps, z, dheads_out)
    _importance_weights_backward(dz, weights, heads, eps, z, dheads_out)
