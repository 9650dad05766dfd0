"""The VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning"): a
discrete code, learned with the straight-through gradient.

The encoder (the stacks of :mod:`tinyvae.nn.stacks`, then the layer ``encoder.code``) gives ``z_e``, ``M =
latent_dim`` vectors of ``D = code_dim`` values an example; each is replaced by the nearest of the codebook's
``K = codebook_size`` vectors ``e_k`` (the backends' ``nearest_code`` op: distances and argmin in one pass),
and the decoder reconstructs x from those, ``z_q``. The loss of an example, in nats (their eq. 3, the
squared errors summed over the example's M D values):

    -log p(x | z_q)  +  |sg(z_e) - z_q|^2  +  beta |z_e - sg(z_q)|^2

(``sg``: no gradient through it; ``beta = commitment``). Its gradient, per example (the batch mean's is
``1/B`` of each):

* the decoder, from the reconstruction term, down to ``dz_q``;
* ``z_e`` gets ``dz_q`` itself (the straight-through estimator, their Sec. 3.2: the decoder's input gradient
  copied to the encoder's output) and ``2 beta (z_e - z_q)`` from the commitment term;
* the codebook vector ``e_k`` gets ``2 (e_k - z_e)`` summed over the vectors quantised to it (the codebook
  term), computed as a GEMM of the one-hot assignments.

The straight-through and ``sg`` parts make this the derivative of a surrogate, not of the loss (``z_q`` is
piecewise constant in ``z_e``): of the loss with ``z_q`` replaced by ``z_e + sg(z_q - z_e)``, every ``sg``
held at the weights of the pass. :meth:`VQVAE.loss_rows_forward` gives that surrogate around the weights of
the last :meth:`VQVAE.loss_and_grad`, so that finite differences check the whole gradient
(:func:`tinyvae.gradcheck.check_model`); PyTorch's autograd, with ``detach`` for ``sg``, checks it too
(tests/models/test_vqvae.py). Samples draw each of the M codes
uniformly from the codebook (the prior of the paper's first stage, before a PixelCNN is fitted to the codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import rng
from ..backends import Backend
from ..errors import SettingsError
from ..nn import stacks
from ..nn.layers import Sequential
from .base import DecoderOutput, EncoderDecoder, Noise
from .config import VQConfig


class VQTerms(NamedTuple):
    """Batch means, in nats per data point: ``loss = nll + codebook + commitment``."""

    loss: float
    nll: float
    codebook: float
    commitment: float


@dataclass
class VQWorkspace(DecoderOutput):
    """The buffers of one batch size, made once: the encoder's, the codes', the decoder's."""

    batch: int
    enc_outs: list   # the last is z_e (B, M D)
    enc_douts: list
    zq: Any          # (B, M D) the quantised code
    dzq: Any         # (B, M D) its gradient from the decoder
    idx: Any         # (B M,) int64: each code vector's codebook row
    dist: Any        # (B M,) its squared distance to it
    dec_outs: list
    dec_douts: list
    nll: Any         # (B,) nats
    vq: Any = 0.0    # the last pass's |z_e - z_q|^2 summed over each example's values, (B,)
    assign: Any = None     # (B M, K) the one-hot assignments of the code vectors, made by the first backward pass
    code_rows: Any = None  # (B M,) int64 0 .. B M - 1, the rows of assign


class VQVAE(EncoderDecoder):
    """A VQ-VAE of :class:`~tinyvae.models.config.VQConfig` (see the module doc).

    Attributes:
        codebook: ``(K, D)`` view of the parameter ``codebook``; started U(-1/K, 1/K), as the paper's
            implementations start theirs.
    """

    has_prior = True  # a uniform one over the codes

    @property
    def code_size(self) -> int:
        """The values of an example's code: M D."""
        return self.config.latent_dim * self.config.code_dim

    def __init__(self, config: VQConfig = VQConfig(), backend: Backend | str = "numpy", seed: int = 1):
        super().__init__(config, backend, seed)
        p, g = self.params, self.grad
        head = stacks.linear(p, g, "encoder.code", relu=False, image_in=stacks.flat_image(config))
        self.encoder = Sequential([*stacks.encoder_body(config, p, g), head])
        self.codebook, self.dcodebook = p.view("codebook"), p.view("codebook", g)
        self._anchor = None  # (x, z_e, codes, z_q) of the last loss_and_grad: the surrogate's sg values
        K = config.codebook_size
        start = np.random.default_rng([seed, 2]).uniform(-1 / K, 1 / K, self.codebook.shape)
        self.codebook[...] = self.xp.asarray(start.astype(self.dtype))

    def workspace(self, batch: int) -> VQWorkspace:
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            MD = cfg.latent_dim * cfg.code_dim
            ws = VQWorkspace(
                batch=batch, enc_outs=self.encoder.buffers(xp, batch, dt),
                enc_douts=self.encoder.buffers(xp, batch, dt), zq=xp.empty((batch, MD), dt),
                dzq=xp.empty((batch, MD), dt), idx=xp.empty(batch * cfg.latent_dim, np.int64),
                dist=xp.empty(batch * cfg.latent_dim, dt),
                dec_outs=self.decoder.buffers(xp, batch, dt),
                dec_douts=self.decoder.buffers(xp, batch, dt), nll=xp.empty(batch, dt))
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def forward(self, x) -> VQWorkspace:
        """Encoder, quantisation and decoder for one batch (no checks); ``ws.vq`` the examples' squared
        quantisation errors."""
        B, D = x.shape[0], self.config.code_dim
        ws = self.workspace(B)
        self.encoder.forward(self.backend, x, ws.enc_outs)
        self.backend.nearest_code(ws.enc_outs[-1].reshape(-1, D), self.codebook, ws.idx, ws.dist)
        ws.zq.reshape(-1, D)[...] = self.codebook[ws.idx]
        ws.vq = ws.dist.reshape(B, -1).sum(axis=1)
        self.decoder.forward(self.backend, ws.zq, ws.dec_outs)
        return ws

    def backward(self, ws: VQWorkspace, x):
        """Fill :attr:`grad` with the gradient of the batch mean of the loss (the module doc's formulas)."""
        cfg, B, D = self.config, ws.batch, self.config.code_dim
        self.nll(ws.decoder_out, x, 1.0 / B, ws.nll, ws.decoder_dout, self.decoder_dlogvar)
        self.decoder.backward(self.backend, ws.zq, ws.dec_outs, ws.dec_douts, ws.dzq)
        ze = ws.enc_outs[-1]
        diff = ze - ws.zq                                       # (B, M D): z_e - z_q
        ws.enc_douts[-1][...] = ws.dzq + (2 * cfg.commitment / B) * diff
        if ws.assign is None:  # a training batch size's, not an evaluation's
            ws.assign = self.xp.empty((ws.idx.shape[0], cfg.codebook_size), self.dtype)
            ws.code_rows = self.xp.arange(ws.idx.shape[0], dtype=np.int64)
        ws.assign[...] = 0
        ws.assign[ws.code_rows, ws.idx] = 1
        self.backend.matmul(ws.assign.T, (-2.0 / B) * diff.reshape(-1, D), self.dcodebook)
        self.encoder.backward(self.backend, x, ws.enc_outs, ws.enc_douts)

    def terms(self, ws: VQWorkspace) -> tuple:
        """``(nll, codebook, commitment)`` of the last pass, each summed over its batch (0-d arrays)."""
        vq = ws.vq.sum()
        return ws.nll.sum(), vq, self.config.commitment * vq

    def train_step(self, x, optimizer, y=None, beta: float = 1.0, step: int | None = None, rows=None):
        """Forward, backward and one optimiser update (no checks); nothing is drawn, so ``step`` and ``rows``
        change nothing. Returns the loss summed over the batch, a 0-d backend array."""
        ws = self.forward(x)
        self.backward(ws, x)
        optimizer.step(self.grad)
        return sum(self.terms(ws))

    def loss_rows(self, ws: VQWorkspace):
        """``(B,)`` host float64 terms whose sum is the batch mean of the loss (gradient checks)."""
        rows = (ws.nll + (1 + self.config.commitment) * ws.vq) / ws.batch
        return np.asarray(self.backend.to_host(rows), np.float64)

    # -- checked public API ---------------------------------------------------
    def checked(self, x, y, beta: float):
        if beta != 1:
            raise SettingsError(f"the VQ-VAE's loss has no KL term to weigh: beta must be 1, got {beta}")
        x = self.as_batch(x)
        self.as_labels(y, x.shape[0])
        return x

    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None) -> VQTerms:
        """The batch mean of the loss and its terms (nats per data point), and its gradient into :attr:`grad`.
        The loss draws nothing: ``noise_seed`` (checked) changes nothing.

        Raises:
            DataError: bad ``x`` (as :func:`tinyvae.models.base.check_batch`), or labels.
            SettingsError: ``beta`` other than 1, or a bad ``noise_seed``.
        """
        self.fixed_noise("eps", 1, noise_seed)
        x = self.checked(x, y, beta)
        ws = self.forward(x)
        self.backward(ws, x)
        self._anchor = (x.copy(), ws.enc_outs[-1].copy(), ws.idx.copy(), ws.zq.copy())
        nll, codebook, commitment = (float(t) / x.shape[0] for t in self.terms(ws))
        return VQTerms(nll + codebook + commitment, nll, codebook, commitment)

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None):
        """``(B,)`` host float64 terms whose sum is the loss whose derivative :meth:`loss_and_grad`'s gradient
        is (gradient checks): for the ``x`` of the last :meth:`loss_and_grad`, its straight-through surrogate
        (the module doc), every ``sg`` at that call's weights, equal to the loss there; else the loss.
        Raises like :meth:`loss_and_grad`."""
        self.fixed_noise("eps", 1, noise_seed)
        x = self.checked(x, y, beta)
        anchor = self._anchor
        if anchor is None or anchor[0].shape != x.shape or not bool((anchor[0] == x).all()):
            ws = self.forward(x)
            self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
            return self.loss_rows(ws)
        _, ze0, idx0, zq0 = anchor
        B, D = x.shape[0], self.config.code_dim
        ws = self.workspace(B)
        ze = self.encoder.forward(self.backend, x, ws.enc_outs)
        ws.zq[...] = ze + (zq0 - ze0)                        # z_e + sg(z_q - z_e)
        self.decoder.forward(self.backend, ws.zq, ws.dec_outs)
        self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
        codebook = ((ze0.reshape(-1, D) - self.codebook[idx0]) ** 2).reshape(B, -1).sum(axis=1)
        commitment = ((ze - zq0) ** 2).sum(axis=1)
        rows = (ws.nll + codebook + self.config.commitment * commitment) / B
        return np.asarray(self.backend.to_host(rows), np.float64)

    def evaluation_sums(self, batches, seed: int | None = None) -> dict:
        """Sums over the examples of ``(x, y, rows)`` batches (nothing is drawn: ``seed`` changes nothing), in
        nats: ``recon`` (-log p(x | z_q)) and ``vq`` (the squared quantisation error); ``counts``, ``(K,)``
        float64, how often each code was chosen; and the count of examples ``n``."""
        recon = vq = 0.0
        n = 0
        counts = np.zeros(self.config.codebook_size)
        for x, _, _ in batches:
            ws = self.forward(x)
            self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
            recon, vq, n = recon + float(ws.nll.sum()), vq + float(ws.vq.sum()), n + x.shape[0]
            counts += np.bincount(self.backend.to_host(ws.idx), minlength=len(counts))
        return {"recon": recon, "vq": vq, "counts": counts, "n": n}

    def metrics(self, sums: dict) -> dict:
        """Test metrics, nats per data point: ``test_loss`` (the loss), ``test_recon`` (-log p(x | z_q)),
        ``test_vq`` (the squared quantisation error), and ``test_perplexity``, ``exp`` of the entropy of the
        codes' use (K for a codebook used evenly, 1 for one code; van den Oord et al. report it)."""
        n, p = sums["n"], sums["counts"] / sums["counts"].sum()
        entropy = -float((p[p > 0] * np.log(p[p > 0])).sum())
        return {"test_loss": (sums["recon"] + (1 + self.config.commitment) * sums["vq"]) / n,
                "test_recon": sums["recon"] / n, "test_vq": sums["vq"] / n, "test_perplexity": math.exp(entropy)}

    def encode(self, x, y=None):
        """``z_e``, the encoder's output, ``(B, M D)`` host array. Raises like :meth:`loss_and_grad`."""
        x = self.checked(x, y, 1.0)
        ws = self.workspace(x.shape[0])
        return self.backend.to_host(self.encoder.forward(self.backend, x, ws.enc_outs)).copy()

    def codes(self, x, y=None) -> np.ndarray:
        """``(B, M)`` int64 host array: the codebook row of each code vector of each example."""
        x = self.checked(x, y, 1.0)
        return self.backend.to_host(self.forward(x).idx).reshape(x.shape[0], -1).copy()

    def code(self, x, y=None):
        """The point code of ``x``: ``z_q``, ``(B, M D)`` host array."""
        x = self.checked(x, y, 1.0)
        return self.backend.to_host(self.forward(x).zq).copy()

    def per_sample_loss(self, x, y=None, seed: int | None = None):
        """Per-example ``(nll, vq)``: the reconstruction's -log p(x | z_q) and ``(1 + beta)`` times the squared
        quantisation error, each ``(B,)`` host float arrays in nats. Nothing is drawn: ``seed`` changes nothing."""
        x = self.checked(x, y, 1.0)
        ws = self.forward(x)
        self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
        host = self.backend.to_host
        return host(ws.nll).copy(), (1 + self.config.commitment) * host(ws.vq).copy()

    def prior_draws(self, n: int, seed: int | None = None) -> np.ndarray:
        """``(n, M D)`` host array: each of the M codes of draw ``i`` the codebook row ``floor(K u)``, ``u`` the
        uniform of element m of example i of the ``pictures`` stream of ``seed`` (the model's own, at a fresh
        step, when None).

        Raises:
            SettingsError: ``n`` < 1, more than this machine's memory holds decoded, or a bad seed.
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise SettingsError(f"n must be an int >= 1, got {n!r}")
        self.config.check_fits(int(n), f"{n} draws decoded at once")
        noise: Noise = self.noise("pictures", int(n), seed)
        M, K = self.config.latent_dim, self.config.codebook_size
        u = rng.uniforms(noise.key, noise.step, np.arange(n), M)
        codes = np.minimum((u * K).astype(np.int64), K - 1)
        return self.backend.to_host(self.codebook)[codes].reshape(n, -1)

    def sample(self, n: int, y=None, seed: int | None = None) -> np.ndarray:
        """``n`` draws of uniformly random codes (:meth:`prior_draws`), decoded to the mean of p(x|z), ``(n, D)``
        host array. Raises like :meth:`prior_draws`; DataError for labels."""
        return self.decode(self.prior_draws(n, seed), y)
