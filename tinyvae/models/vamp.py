"""The VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", AISTATS, eq. 9): the prior is the
mixture of the encoder's own posteriors at P learned pseudo-inputs ``u_1 .. u_P``,

    p(z) = (1/P) sum_p q(z | u_p),

which has no KL to q(z|x) in closed form. The loss per data point is the negative ELBO with the KL estimated
from the same draw of z (their eq. 12's single sample):

    nll + beta (log q(z|x) - log p(z)),   log q(z|x) = -0.5 sum_u (log 2 pi + logvar_u + eps_u^2),
    log p(z) = logsumexp_p A_p - log P,   A_p = -0.5 sum_u (log 2 pi + lv_pu + (z_u - m_pu)^2 exp(-lv_pu)),

``(m_p, lv_p)`` the encoder's ``[mu | logvar]`` at ``u_p``. The encoder runs once a step on the batch and the
pseudo-inputs together (``B + P`` rows). The gradient, derived by hand (docs/derivations.md), with
``a_p = softmax_p(A_p)`` and ``e_p = exp(-lv_p)``, each row weighing beta / N:

* ``z``: the decoder's, plus ``sum_p a_p (z - m_p) e_p`` (``-d log p(z) / dz``);
* ``mu``, ``logvar``: the reparameterisation's ``dz`` and ``0.5 sigma eps dz``, and ``-1/2`` at ``logvar``
  from ``log q``;
* ``m_p``: ``-sum_n a_np (z_n - m_p) e_p``; ``lv_p``: ``-sum_n a_np (-1 + (z_n - m_p)^2 e_p) / 2``; then back
  through the encoder to its weights and to the pseudo-inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import rng
from ..backends.arrays import array_module
from ..errors import SettingsError
from .base import Noise
from .config import VAEConfig
from .vae import VAE, VAEWorkspace

LOG_2PI = math.log(2 * math.pi)
ROWS = 4096  # rows of z per block of the (rows, P) log densities of the components: bounds their memory


@dataclass
class VampWorkspace(VAEWorkspace):
    """A VAE's buffers, with the encoder's over ``B + P`` rows: the batch, then the pseudo-inputs."""

    xall: object = None      # (B + P, D) the encoder's input
    dxall: object = None     # (B + P, D) its gradient (the pseudo-inputs' in the last P rows)
    resp: object = field(default=None)  # (N, P) float64, the components' responsibilities a_np of the last pass


class VampVAE(VAE):
    """A VAE whose prior is the VampPrior of ``config.pseudo_inputs`` learned pseudo-inputs (the parameter
    ``prior.pseudo_inputs``, ``(P, D)``; see the module doc). ``start_from_data`` sets them to training examples."""

    def __init__(self, config: VAEConfig = VAEConfig(prior="vamp"), backend="numpy", seed: int = 1):
        if config.n_classes:
            raise SettingsError("the VampPrior is for the unconditional VAE: n_classes must be 0")
        super().__init__(config, backend, seed)
        self.pseudo = self.params.view("prior.pseudo_inputs")
        self.dpseudo = self.params.view("prior.pseudo_inputs", self.grad)

    def start_from_data(self, x, generator: np.random.Generator) -> None:
        """Set the pseudo-inputs to ``P`` examples of ``x`` ``(N, D)`` chosen by ``generator`` (Tomczak & Welling
        start them so); where N < P, some are chosen twice."""
        chosen = generator.choice(len(x), self.config.pseudo_inputs, replace=len(x) < self.config.pseudo_inputs)
        self.pseudo[...] = self.xp.asarray(np.asarray(x)[np.sort(chosen)], dtype=self.dtype)

    def workspace(self, batch: int) -> VampWorkspace:
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            D, K, L, P = cfg.input_dim, cfg.latent_dim, cfg.draws, cfg.pseudo_inputs
            N, rows = L * batch, batch + P
            ws = VampWorkspace(
                batch=batch, rows=xp.arange(batch), onehot=None, xin=None,
                enc_outs=self.encoder.buffers(xp, rows, dt), enc_douts=self.encoder.buffers(xp, rows, dt),
                heads_rep=xp.empty((N, 2 * K), dt), dheads_rep=xp.empty((N, 2 * K), dt),
                zin=xp.empty((N, K), dt), dzin=xp.empty((N, K), dt),
                dec_outs=self.decoder.buffers(xp, N, dt), dec_douts=self.decoder.buffers(xp, N, dt),
                eps=xp.empty((N, K), dt), kl=xp.empty(N, dt), nll=xp.empty(N, dt),
                xall=xp.empty((rows, D), dt), dxall=xp.empty((rows, D), dt))
            self._workspaces[batch] = ws
        return ws

    def encode_into(self, ws: VampWorkspace, x, y=None):
        """The encoder on the batch and the pseudo-inputs together: ``[mu | logvar]`` of the batch in the first
        B rows of ``ws.enc_outs[-1]``, of the pseudo-inputs in the last P."""
        B = x.shape[0]
        ws.xall[:B] = x
        ws.xall[B:] = self.pseudo
        self.encoder.forward(self.backend, ws.xall, ws.enc_outs)

    def forward(self, x, eps=None, y=None, noise=None) -> VampWorkspace:
        """The VAE's pass, then ``ws.kl``: each row's ``log q(z|x) - log p(z)`` from its draw of z."""
        ws = super().forward(x, eps, y, noise)
        K, B = self.config.latent_dim, x.shape[0]
        log_p, ws.resp = self.log_prior(ws.z, ws.enc_outs[-1][B:], responsibilities=True)
        log_q = -0.5 * (K * LOG_2PI + ws.logvar.sum(axis=1) + (ws.eps * ws.eps).sum(axis=1))
        ws.kl[...] = log_q - log_p
        return ws

    def log_prior(self, z, pseudo_heads=None, responsibilities: bool = False):
        """``log p(z)`` of each row of ``z`` ``(N, K)``, an array of ``z``'s module and dtype; with
        ``responsibilities``, also the ``(N, P)`` float64 softmax over the components. ``pseudo_heads`` ``(P, 2K)``: the
        encoder at the pseudo-inputs (default: :meth:`pseudo_heads`).

        The components' ``A_np`` are one GEMM, ``[z^2 | z] [-e / 2 | m e]^T`` plus a term of each component,
        ``(z_n - m_p)^2`` expanded, taken in float64 whatever ``z``'s dtype: a component of ``lv_p = -10`` makes
        the expansion's terms 10^5 times their sum (docs/derivations.md)."""
        xp, K, P, f8 = array_module(z), self.config.latent_dim, self.config.pseudo_inputs, np.float64
        if pseudo_heads is None:
            pseudo_heads = self.pseudo_heads()
            pseudo_heads = xp.asarray(self.backend.to_host(pseudo_heads) if xp is np else pseudo_heads)
        m, lv = pseudo_heads[:, :K].astype(f8), pseudo_heads[:, K:].astype(f8)
        e = xp.exp(-lv)
        by_term = xp.concatenate([-0.5 * e, m * e], axis=1).T                        # (2K, P)
        per_comp = -0.5 * (K * LOG_2PI + lv.sum(axis=1) + (m * m * e).sum(axis=1))  # (P,)
        log_p = xp.empty(z.shape[0], z.dtype)
        resp = xp.empty((z.shape[0], P), f8) if responsibilities else None
        # The backend's GEMM where z is the backend's (NumPy's own threads would fight the numba backend's);
        # NumPy's for host draws of a model on the GPU (the evaluation's).
        matmul = self.backend.matmul if xp is self.xp else (lambda a, b, out: xp.matmul(a, b, out=out))
        for lo in range(0, z.shape[0], ROWS):
            zb = z[lo:lo + ROWS].astype(f8)
            a = xp.empty((zb.shape[0], P), f8)
            matmul(xp.concatenate([zb * zb, zb], axis=1), by_term, a)
            a += per_comp                                                              # (rows, P): A_np
            top = a.max(axis=1, keepdims=True)
            e_a = xp.exp(a - top)
            total = e_a.sum(axis=1)
            log_p[lo:lo + ROWS] = top[:, 0] + xp.log(total) - math.log(P)
            if resp is not None:
                resp[lo:lo + ROWS] = e_a / total[:, None]
        return (log_p, resp) if responsibilities else log_p

    def pseudo_heads(self):
        """``(P, 2K)`` backend array: the encoder's ``[mu | logvar]`` at the pseudo-inputs, the components of the
        prior (a pass of its own, outside a training step's workspace)."""
        P = self.config.pseudo_inputs
        return self.encoder.forward(self.backend, self.pseudo, self.encoder.buffers(self.xp, P, self.dtype))

    def latent_grad(self, ws: VampWorkspace, beta: float):
        """``ws.dheads`` of the batch's rows, and the pseudo-inputs' ``[mu | logvar]`` gradient in the last P
        rows of ``ws.enc_douts[-1]`` (the module doc's formulas).

        The sums over the components (for each row) and over the rows (for each component) are two GEMMs
        with the responsibilities, ``R [e | m e]`` and ``R^T [z | z^2]``, the differences ``z_n - m_p``
        expanded, instead of ``(N, P, K)`` arrays of them. They are taken in float64 whatever the model's
        dtype: expanded, ``sum_n a_np (z_n - m_p)^2`` is a difference of terms up to ``(|z| / |z - m_p|)^2``
        times larger, which a narrow component (``lv_p`` of -10) makes 10^5 (docs/derivations.md)."""
        xp, K, B, f8 = self.xp, self.config.latent_dim, ws.batch, np.float64
        c = beta / ws.eps.shape[0]
        m, lv = ws.enc_outs[-1][B:, :K].astype(f8), ws.enc_outs[-1][B:, K:].astype(f8)
        e = xp.exp(-lv)
        R, z = ws.resp, ws.z.astype(f8)
        by_row = xp.empty((R.shape[0], 2 * K), f8)   # sum_p a_np [e_p | m_p e_p]
        self.backend.matmul(R, xp.concatenate([e, m * e], axis=1), by_row)
        by_comp = xp.empty((R.shape[1], 2 * K), f8)  # sum_n a_np [z_n | z_n^2]
        self.backend.matmul(R.T, xp.concatenate([z, z * z], axis=1), by_comp)
        weight = R.sum(axis=0)[:, None]              # sum_n a_np
        ws.dz[...] += c * (z * by_row[:, :K] - by_row[:, K:])
        self.backend.reparameterize_kl_backward(ws.dz, ws.heads, ws.eps, 0.0, ws.dheads)
        ws.dheads[:, K:] -= 0.5 * c
        pseudo = ws.enc_douts[-1][B:]
        rz, rz2 = by_comp[:, :K], by_comp[:, K:]
        pseudo[:, :K] = -c * e * (rz - m * weight)
        pseudo[:, K:] = -0.5 * c * (e * (rz2 - 2 * m * rz + m * m * weight) - weight)

    def encoder_grad(self, ws: VampWorkspace, x):
        """The encoder's gradients from the batch's and the pseudo-inputs' rows, and the pseudo-inputs'."""
        self.encoder.backward(self.backend, ws.xall, ws.enc_outs, ws.enc_douts, ws.dxall)
        self.dpseudo[...] = ws.dxall[ws.batch:]

    def kl_closed_form(self, mu, logvar):
        """None: the VampPrior has no KL in closed form."""
        return None

    def draw_prior(self, noise: Noise, n: int) -> np.ndarray:
        """``(n, K)`` host array of z ~ p(z): draw ``i`` takes the component of the uniform of element K of its
        example in ``noise``, and ``mu + sigma eps`` there with the VAE's normals of elements 0 to K - 1."""
        eps = super().draw_prior(noise, n)
        K, P = self.config.latent_dim, self.config.pseudo_inputs
        u = rng.uniforms(noise.key, noise.step, self.backend.to_host(noise.rows), 1, start=K)[:, 0]
        comp = np.minimum((u * P).astype(np.int64), P - 1)
        heads = self.backend.to_host(self.pseudo_heads())
        m, lv = heads[comp, :K], heads[comp, K:]
        return (m + np.exp(0.5 * lv) * eps).astype(self.dtype)
