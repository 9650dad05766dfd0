"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted
Autoencoders"): the VAE's networks, trained on a tighter bound than the ELBO.

With ``k`` draws ``z_j = mu + sigma eps_j`` of q(z|x) for each example (the rows ``j B + b`` of the
batch's ``(k B, .)`` arrays, as the VAE's L draws), the log weights are

    log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x)
            = -nll_j - |z_j|^2 / 2 + |eps_j|^2 / 2 + sum(logvar) / 2

(the log(2 pi) terms of p and q cancel), and the bound (Burda et al., eq. 8) is

    L_k = log (1/k) sum_j w_j  <=  log p(x);   L_1 is the ELBO, and L_k rises with k (their Theorem 1).

The loss minimised is the batch mean of ``-L_k``, in nats; the log-sum-exp is taken after its largest
term. Its gradient (their eq. 14, derived by hand in docs/derivations.md) is the softmax-weighted sum of
the draws' gradients of ``-log w_j``, with the normalised weights ``w~_j = w_j / sum_i w_i``:

* each draw's decoder output gets ``w~_j / B`` times its likelihood's gradient (0 where ``w~_j`` is below the
  dtype's epsilon: docs/derivations.md);
* ``z_j`` gets, besides what comes back through the decoder, ``w~_j z_j / B`` (from the prior);
* ``mu`` and ``logvar`` get the reparameterisation's ``dz`` and ``0.5 sigma eps dz`` (as the VAE's), and
  ``logvar`` also ``-w~_j / 2B`` from q's normaliser; the k copies' gradients add up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import SettingsError
from .vae import VAE, VAEWorkspace


class IWAETerms(NamedTuple):
    """Batch means, in nats per data point: ``loss`` = ``-L_k``, and the ELBO's terms from the same draws,
    ``nll`` (their mean) and ``kl`` (in closed form); in expectation over the draws ``loss <= nll + kl``."""

    loss: float
    nll: float
    kl: float


class IWAE(VAE):
    """A VAE trained on the importance-weighted bound with ``config.k`` draws (see the module doc); its
    config is a :class:`~tinyvae.models.config.VAEConfig` of ``model="iwae"``. Everything else (encode,
    decode, sample, the evaluation's IWAE bound) is the VAE's."""

    def workspace(self, batch: int) -> VAEWorkspace:
        """The VAE's buffers, and the ``(B,)`` bound and ``(k B, 1)`` weights of :meth:`bound_rows`."""
        ws = super().workspace(batch)
        if ws.bound is None:
            ws.bound, ws.weights = self.xp.empty(batch, self.dtype), self.xp.empty((ws.eps.shape[0], 1), self.dtype)
        return ws

    def bound_rows(self, ws: VAEWorkspace, scale: float = 1.0):
        """``ws.bound`` ``(B,)``, ``-L_k`` of each example of the last pass (its ``nll`` written), and ``ws.weights``
        ``(k B, 1)``, ``scale`` times the normalised weights (a draw whose weight is below the dtype's epsilon as
        0: it adds less than the dtype resolves to the gradient, and left in, its products with the
        likelihood's gradient fall to subnormal floats, which x86 CPUs compute in microcode in every GEMM that
        reads them: docs/performance.md); the backend's ``importance_weights`` op."""
        self.backend.importance_weights(ws.nll, ws.heads, ws.eps, ws.z, scale, ws.weights[:, 0], ws.bound)
        return ws.bound, ws.weights

    def forward_loss(self, x, y=None, eps=None, noise=None) -> VAEWorkspace:
        """The VAE's :meth:`~tinyvae.models.vae.VAE.forward_loss`, and ``ws.bound``."""
        ws = super().forward_loss(x, y, eps, noise)
        self.bound_rows(ws)
        return ws

    def output_grad(self, ws: VAEWorkspace, x):
        """``ws.nll`` and ``ws.bound``, the normalised weights divided by B (``ws.weights``), and each row's
        likelihood gradient times its weight (the module doc's step 1)."""
        xp = self.xp
        self.nll(ws.decoder_out, x, 1.0, ws.nll, ws.decoder_dout)  # the gradient of each row's nll
        self.bound_rows(ws, 1.0 / ws.batch)
        self.backend.scale_rows(ws.decoder_dout, ws.weights[:, 0])
        if self.decoder_dlogvar is not None:  # d nll / d logvar_d = (1 - (x - mean)^2 exp(-logvar_d)) / 2
            k, B = self.config.k, ws.batch
            resid = x - ws.decoder_out.reshape(k, B, -1)
            self.decoder_dlogvar[...] = (ws.weights.reshape(k, B, 1) * 0.5
                                         * (1 - resid * resid * xp.exp(-self.decoder_logvar))).sum(axis=(0, 1))

    def latent_grad(self, ws: VAEWorkspace, beta: float):
        """The prior's ``w~ z / B`` added to ``ws.dz``, the path derivative, and q's normaliser's
        ``-w~ / 2B`` at ``logvar`` (the module doc's steps 3 and 4)."""
        K = self.config.latent_dim
        ws.dz[...] += ws.weights * ws.z
        self.backend.reparameterize_kl_backward(ws.dz, ws.heads, ws.eps, 0.0, ws.dheads)
        ws.dheads[:, K:] -= 0.5 * ws.weights

    def objective_sum(self, ws: VAEWorkspace, beta: float):
        """``-L_k`` summed over the batch (``ws.bound`` of the last pass), a 0-d backend array."""
        return ws.bound.sum()

    def loss_rows(self, ws: VAEWorkspace):
        """``(B,)`` host float64 terms whose sum is the batch mean of ``-L_k`` (gradient checks)."""
        return np.asarray(self.backend.to_host(ws.bound / ws.batch), np.float64)

    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, eps=None) -> IWAETerms:
        """As :meth:`tinyvae.models.vae.VAE.loss_and_grad` (``eps`` ``(k B, K)``), for the batch mean of
        ``-L_k``; returns :class:`IWAETerms`.

        Raises:
            SettingsError: also ``beta`` other than 1 (the bound has no KL term to weigh).
        """
        self.check_beta(beta)
        terms = super().loss_and_grad(x, y, beta=beta, noise_seed=noise_seed, eps=eps)
        return IWAETerms(*terms)

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, eps=None):
        self.check_beta(beta)
        return super().loss_rows_forward(x, y, beta=beta, noise_seed=noise_seed, eps=eps)

    loss_rows_forward.__doc__ = VAE.loss_rows_forward.__doc__

    def check_beta(self, beta: float) -> None:
        """``SettingsError`` unless ``beta`` is 1: the bound has no KL term to weigh."""
        if beta != 1:
            raise SettingsError(f"the importance-weighted bound has no KL term to weigh: beta must be 1, got {beta}")

    def metrics(self, sums: dict) -> dict:
        """The VAE's test metrics (:meth:`tinyvae.models.vae.VAE.metrics`, from the same ``k`` draws of the
        ``evaluate`` stream), with ``test_loss`` the mean of ``-L_k``, the objective, and ``test_elbo_loss``
        the negative ELBO beside it."""
        vae = super().metrics(sums)
        return {"test_loss": sums["objective"] / sums["n"], "test_elbo_loss": vae.pop("test_loss"), **vae}
