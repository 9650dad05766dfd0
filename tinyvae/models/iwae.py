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
  dtype's epsilon: docs/derivations.md); a draw of weight 0 adds nothing to any gradient, so the decoder's
  backward pass runs on the other draws only (:meth:`IWAE.decoder_grad`);
* ``z_j`` gets, besides what comes back through the decoder, ``w~_j z_j / B`` (from the prior);
* ``mu`` and ``logvar`` get the reparameterisation's ``dz`` and ``0.5 sigma eps dz`` (as the VAE's), and
  ``logvar`` also ``-w~_j / 2B`` from q's normaliser; the k copies' gradients add up.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class KeptDraws:
    """The buffers of the decoder's backward pass over the draws of nonzero weight (:meth:`IWAE.decoder_grad`),
    of the workspace's ``(N, .)`` shapes; a step uses the first n rows, one per kept draw."""

    every: object   # (N,) int64 arange(N): the rows kept where the draws are not counted
    zin: object     # (N, K) the kept draws' decoder input
    dzin: object
    hidden: list    # the decoder's hidden layers' outputs (not the output layer's: it has no activation)
    douts: list     # every layer's output gradient


class IWAE(VAE):
    """A VAE trained on the importance-weighted bound with ``config.k`` draws (see the module doc); its
    config is a :class:`~tinyvae.models.config.VAEConfig` of ``model="iwae"``. Everything else (encode,
    decode, sample, the evaluation's IWAE bound) is the VAE's."""

    latent_grad_per_draw = False  # its latent_grad sums each example's draws (importance_weights_backward)

    def workspace(self, batch: int) -> VAEWorkspace:
        """The VAE's buffers, the ``(B,)`` bound and ``(k B, 1)`` weights of :meth:`bound_rows`, and the
        :class:`KeptDraws` of :meth:`decoder_grad`."""
        ws = super().workspace(batch)
        if ws.bound is None:
            xp, dt, N = self.xp, self.dtype, ws.eps.shape[0]
            ws.bound, ws.weights = xp.empty(batch, dt), xp.empty((N, 1), dt)
            ws.kept = KeptDraws(every=xp.arange(N), zin=xp.empty_like(ws.zin), dzin=xp.empty_like(ws.dzin),
                                hidden=[xp.empty_like(o) for o in ws.dec_outs[:-1]],
                                douts=self.decoder.buffers(xp, N, dt))
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
        likelihood gradient, before its weight (:meth:`decoder_grad` takes the weight; the module doc's step 1)."""
        xp = self.xp
        self.nll(ws.decoder_out, x, 1.0, ws.nll, ws.decoder_dout)  # the gradient of each row's nll
        self.bound_rows(ws, 1.0 / ws.batch)
        if self.decoder_dlogvar is not None:  # d nll / d logvar_d = (1 - (x - mean)^2 exp(-logvar_d)) / 2
            k, B = self.config.k, ws.batch
            resid = x - ws.decoder_out.reshape(k, B, -1)
            self.decoder_dlogvar[...] = (ws.weights.reshape(k, B, 1) * 0.5
                                         * (1 - resid * resid * xp.exp(-self.decoder_logvar))).sum(axis=(0, 1))

    def decoder_grad(self, ws: VAEWorkspace):
        """The decoder's gradients, and ``ws.dzin``, from the draws of nonzero weight (:meth:`kept_rows`): a
        draw of weight 0 adds nothing to any gradient. Their rows of the likelihood's gradient, times their
        weights, and of the decoder's input and hidden activations are taken into ``ws.kept`` (the
        ``take_rows`` op); the decoder's backward pass runs on those rows; ``ws.dzin`` is 0 at the others."""
        kept, take = ws.kept, self.backend.take_rows
        rows = self.kept_rows(ws)
        n = rows.shape[0]
        take(ws.decoder_dout, rows, ws.weights[:, 0], kept.douts[-1][:n])
        take(ws.zin, rows, None, kept.zin[:n])
        for out, dst in zip(ws.dec_outs, kept.hidden):
            take(out, rows, None, dst[:n])
        # The output layer's own output would be read only by an activation's gradient; it has none.
        outs = [h[:n] for h in kept.hidden] + [ws.decoder_out[:n]]
        self.decoder.backward(self.backend, kept.zin[:n], outs, [d[:n] for d in kept.douts], kept.dzin[:n])
        ws.dzin[...] = 0
        ws.dzin[rows] = kept.dzin[:n]

    def kept_rows(self, ws: VAEWorkspace):
        """The ``(n,)`` int64 rows of the draws whose weight (``ws.weights``) is not 0, on a backend whose arrays
        are on the host; on a GPU, every row: counting them there would make the host wait for the GPU."""
        if self.xp is np:
            return np.flatnonzero(ws.weights[:, 0])
        return ws.kept.every

    def latent_grad(self, ws: VAEWorkspace, beta: float):
        """``ws.dheads`` ``(B, 2K)``, the gradient at each example's ``[mu | logvar]``: the decoder's ``ws.dz`` and
        the prior's ``w~ z / B`` through the path derivative, and q's normaliser's ``-w~ / 2B`` at ``logvar``,
        summed over the k draws (the module doc's steps 3 and 4; the backend's ``importance_weights_backward``)."""
        B = ws.batch
        self.backend.importance_weights_backward(ws.dz, ws.weights[:, 0], ws.heads[:B], ws.eps, ws.z, ws.dheads)

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
