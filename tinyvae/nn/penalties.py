"""The autoencoders' own loss terms and the sigmoid code, with their gradients derived by hand.

* :func:`sparsity_penalty`: the sparse autoencoder's ``weight * sum_j KL(rho || rho_hat_j)`` (Ng, "Sparse
  autoencoder", CS294A lecture notes 2011, Sec. 3);
* :func:`contractive_penalty`: the contractive autoencoder's ``weight * mean_b ||dh_b/dx||_F^2`` for a
  sigmoid encoder layer (Rifai et al. 2011, "Contractive Auto-Encoders").

Both are derived in docs/derivations.md and checked by finite differences in the tests.
"""

from __future__ import annotations

import math


def sigmoid_into(a, out, xp):
    """``out = sigmoid(a) = (1 + tanh(a / 2)) / 2``: no overflow for any finite a."""
    xp.multiply(a, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5


def _log_mean_exp(v, xp):
    """``log(mean(exp(v), axis=0))`` without overflow or underflow, ``(K,)``."""
    m = v.max(axis=0)
    return m + xp.log(xp.exp(v - m).mean(axis=0))


def sparsity_penalty(a, rho: float, weight: float, xp, da=None):
    """``weight * sum_j KL(rho || rho_hat_j)`` for ``h = sigmoid(a)``, ``rho_hat = mean_b h[b]``, in nats.

    KL between Bernoulli distributions: ``rho log(rho / rho_hat) + (1 - rho)
    log((1 - rho) / (1 - rho_hat))`` (Ng 2011, Sec. 3). Its gradient through
    rho_hat and the sigmoid, derived by hand:
    ``dP/da_bj = (weight / B) h_bj (1 - h_bj) ((1 - rho) / (1 - rho_hat_j) - rho / rho_hat_j)``.

    Everything is computed from ``log h = -softplus(-a)`` and ``log(1 - h) =
    -softplus(a)``, so a unit saturated over the whole batch (rho_hat rounding to
    0 or 1) still has a finite penalty and gradient.

    Args:
        a: ``(B, K)`` pre-activations of the code.
        da: optional ``(B, K)`` gradient wrt ``a``; the penalty's gradient is added to it.

    Returns:
        The penalty, a 0-d array (a property of the batch, not of one image).
    """
    log_h, log_1mh = -xp.logaddexp(0, -a), -xp.logaddexp(0, a)
    log_rho_hat, log_1m_rho_hat = _log_mean_exp(log_h, xp), _log_mean_exp(log_1mh, xp)
    value = weight * xp.sum(rho * (math.log(rho) - log_rho_hat) + (1 - rho) * (math.log1p(-rho) - log_1m_rho_hat))
    if da is not None:
        log_s = log_h + log_1mh  # log h (1 - h)
        da += (weight / a.shape[0]) * ((1 - rho) * xp.exp(log_s - log_1m_rho_hat) - rho * xp.exp(log_s - log_rho_hat))
    return value


def contractive_penalty(h, W, weight: float, xp, da=None):
    """``weight * mean_b ||J_b||_F^2`` for ``h = sigmoid(a)``, ``a = x W^T + b``.

    ``J_b = dh_b/dx = diag(s_b) W`` with ``s = h (1 - h)``, so
    ``||J_b||_F^2 = sum_j s_bj^2 ||W_j||^2`` (Rifai et al. 2011, the sigmoid case).

    Gradients of the penalty C, derived by hand (``n_j = ||W_j||^2``, ds/da = s (1 - 2h)):

    * through a: ``dC/da_bj = (2 weight / B) s_bj^2 (1 - 2 h_bj) n_j``, added to ``da``;
    * through the norms: ``dC/dW_ji = 2 weight mean_b(s_bj^2) W_ji``, returned as the
      row scales ``2 weight mean_b(s_bj^2)`` (the caller adds ``scale[:, None] * W``).

    Args:
        h: ``(B, K)`` sigmoid activations; W: ``(K, D)`` the layer's weight.
        da: optional ``(B, K)`` gradient wrt the pre-activation, added to.

    Returns:
        ``(C, row_scale)``: the penalty (0-d) and ``(K,)`` row scales for dC/dW.
    """
    s2 = h * (1 - h)
    s2 *= s2
    n = (W * W).sum(axis=1)
    value = weight * (s2 @ n).mean()
    if da is not None:
        da += (2 * weight / h.shape[0]) * s2 * (1 - 2 * h) * n
    return value, 2 * weight * s2.mean(axis=0)
