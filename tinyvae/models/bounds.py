"""Bounds on a trained VAE's log-likelihood, and its active latent units.

* :func:`importance_weighted`: with ``k`` draws of z for each image, the importance-weighted bound (IWAE;
  Burda, Grosse & Salakhutdinov 2015, "Importance Weighted Autoencoders", eq. 8), under the model's prior
  (``model.log_prior``: N(0, I), or a VampPrior)

      log p(x) >= L_k = log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z|x)

  and, from the same draws, the ELBO (the mean of the same log weights with the KL in closed form, K&W
  eq. 10, where the prior has one; else the mean of the draws' ``log q - log p``). L_k >= ELBO, so the
  IWAE NLL is at most the ELBO's.
* :func:`active_units`: the latent units with ``Cov_x(E_q[z_u]) > 0.01`` over a test set (Burda et al.
  2015, Sec. 5.2); E_q[z] is mu.

The log weights are ``log w = log p(x|z) + log p(z) - log q(z|x)``, with ``z = mu + sigma * eps`` and
``log q(z|x) = -0.5 sum (log 2 pi + logvar + eps^2)``.
Their mean over k is taken as a running log-sum-exp (max shift), ``chunk`` draws at a time, so k = 5000
needs no more memory than k = chunk. Draw ``j`` of an image is elements ``j K .. j K + K - 1`` of its
example in the ``evaluate`` stream at its ``iwae`` step (:mod:`tinyvae.rng`), whatever the chunks.
"""

from __future__ import annotations

import math

import numpy as np

from .. import rng
from ..errors import DataError, SettingsError
from .vae import VAE

ACTIVE_THRESHOLD = 0.01
MAX_ROWS = 1 << 15  # decoder rows per chunk: bounds memory whatever k is


def importance_weighted(model: VAE, x, k: int, y=None, seed: int | None = None, rows=None,
                        chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IWAE bound and ELBO of each image, from the same ``k`` draws of z.

    Args:
        model: a trained :class:`VAE`.
        x: ``(B, D)`` images (host or backend array), checked like training data.
        k: draws of z per image, >= 1.
        y: ``(B,)`` labels for a conditional model (the bounds are then of log p(x|y)).
        seed: the seed of the ``evaluate`` stream the draws come from (default: the model's).
        rows: ``(B,)`` the images' indices in their dataset, which address their draws (default: 0 .. B - 1).
        chunk: draws per decoder pass (default: as many as fit ``MAX_ROWS`` rows).

    Returns:
        ``(iwae, elbo)``: two ``(B,)`` float64 host arrays of log-likelihood
        bounds in nats (negate for an NLL); ``iwae >= elbo`` element-wise.

    Raises:
        SettingsError: for k < 1, or a bad seed. DataError: bad ``x`` or ``y`` (as :meth:`VAE.loss_and_grad`),
            or ``rows`` that are not ``(B,)`` indices >= 0.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise SettingsError(f"k must be an int >= 1, got {k!r}")
    xp, dt, cfg = model.xp, model.dtype, model.config
    B, K, C = np.shape(x)[0], cfg.latent_dim, cfg.n_classes
    mu, logvar = model.encode(x, y)  # checks x and y
    rows = np.arange(B) if rows is None else np.asarray(rows)
    if rows.shape != (B,) or rows.dtype.kind not in "iu" or (rows < 0).any():
        raise DataError(f"rows must be the ({B},) indices >= 0 of the images, got {rows.dtype} {rows.shape}")
    key = rng.stream_key(model.seed if seed is None else seed, "evaluate")
    x = xp.asarray(x, dtype=dt)
    c = max(1, min(k, chunk or MAX_ROWS // B))
    n_rows = c * B
    zin = xp.zeros((n_rows, K + C), dt)
    if C:
        model.labels_into(zin, model.as_labels(y, B))
    outs = model.decoder.buffers(xp, n_rows, dt)
    nll, dout = xp.empty(n_rows, dt), xp.empty((n_rows, cfg.input_dim), dt)
    mu64, logvar64 = mu.astype(np.float64), logvar.astype(np.float64)
    std = np.exp(0.5 * logvar64)
    shift = np.full(B, -np.inf)     # running max of the log weights
    total = np.zeros(B)             # sum of exp(log w - shift)
    mean_log_px = np.zeros(B)       # running sum of log p(x|z) for the ELBO
    sampled_kl = np.zeros(B)        # running sum of log q(z|x) - log p(z), for a prior without a closed-form KL
    done = 0
    while done < k:
        n = min(c, k - done)
        eps = rng.normals(key, rng.EVALUATE_STEPS["iwae"], rows, n * K, done * K).reshape(B, n, K).transpose(1, 0, 2)
        z = mu64 + std * eps
        zin[:n * B, :K] = xp.asarray(z.reshape(n * B, K).astype(dt))
        out = model.decoder.forward(model.backend, zin, outs)
        model.nll(out[:n * B], x, 0.0, nll[:n * B], dout[:n * B])
        log_px = -model.backend.to_host(nll[:n * B]).astype(np.float64).reshape(n, B)
        log_q = -0.5 * (K * math.log(2 * math.pi) + (eps * eps).sum(-1) + logvar64.sum(-1))
        log_prior = model.log_prior(z.reshape(n * B, K)).reshape(n, B)
        log_w = log_px + log_prior - log_q
        sampled_kl += (log_q - log_prior).sum(axis=0)
        new_shift = np.maximum(shift, log_w.max(axis=0))
        total = total * np.exp(shift - new_shift) + np.exp(log_w - new_shift).sum(axis=0)
        shift = new_shift
        mean_log_px += log_px.sum(axis=0)
        done += n
    iwae = shift + np.log(total) - math.log(k)
    kl = model.kl_closed_form(mu64, logvar64)
    return iwae, mean_log_px / k - (sampled_kl / k if kl is None else kl)


def active_units(mu: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, np.ndarray]:
    """Active latent units: ``(count, per-unit variance)`` of ``mu`` ``(N, K)`` over the N images.

    A unit u is active when ``Cov_x(E_q[z_u]) = Var_x(mu_u) > threshold`` (Burda et al. 2015, Sec. 5.2).
    """
    var = np.asarray(mu, np.float64).var(axis=0)
    return int((var > threshold).sum()), var
