"""The deterministic autoencoders of the seeds, on the layers, likelihoods and
training loop the VAE uses (:mod:`tinyvae.models.base`).

Every model is ``x -> encoder -> a (B, K) -> code h = act(a) -> decoder ->
(B, D)``, with the encoder's hidden ReLU layers, the code layer ``encoder.code``
and ``act`` sigmoid (default) or linear; the reconstruction loss is -log p(x|z = h)
per image in nats, the same likelihoods as the VAE (BCE from logits, or the
Gaussian NLL, half the squared error plus a constant for log-variance 0).
The loss minimised is the batch mean of that, plus each model's own term:

* ``ae``: nothing (the undercomplete autoencoder; Hinton & Salakhutdinov 2006).
* ``dae``: the encoder sees a corrupted copy x~ of x, drawn afresh every
  training batch, and the loss reconstructs the clean x (Vincent et al. 2008,
  "Extracting and Composing Robust Features with Denoising Autoencoders",
  Sec. 2.3). Corruptions, with ``noise`` = nu:

  - ``mask``: a fixed number round(nu D) of each image's pixels, chosen at
    random, are set to 0 (Vincent et al. 2008, Sec. 2.3);
  - ``gaussian``: x~ = x + nu * N(0, I) (Vincent et al. 2010, "Stacked
    Denoising Autoencoders", Sec. 4.2);
  - ``salt-and-pepper``: round(nu D) pixels, chosen at random, are set to 0 or 1
    by a fair coin (Vincent et al. 2010, Sec. 4.2).

  (:data:`tinyvae.models.config.CORRUPTIONS`.)

  Test-time evaluation never corrupts.
* ``sparse-ae``: sigmoid code, plus ``sparsity_weight * sum_j KL(rho || rho_hat_j)``
  with ``rho_hat_j`` the batch mean of unit j (Ng, "Sparse autoencoder", CS294A
  lecture notes 2011, Sec. 3): :func:`tinyvae.nn.penalties.sparsity_penalty`.
* ``cae``: a single sigmoid encoder layer, plus ``contractive_weight * ||J(x)||_F^2``
  averaged over the batch, J the Jacobian dh/dx (Rifai et al. 2011,
  "Contractive Auto-Encoders", the CAE criterion and its closed form for a
  sigmoid encoder): :func:`tinyvae.nn.penalties.contractive_penalty`.

The penalties act on the whole encoder map x -> h only where that map is one
sigmoid layer: that is why ``cae`` has no hidden layers. With ReLU layers in
front, the code layer's Jacobian could be shrunk at no cost by scaling the
layers before it up and the code weights down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..backends import Backend
from ..errors import DataError, SettingsError
from ..nn import stacks
from ..nn.layers import Sequential
from ..nn.penalties import contractive_penalty, sigmoid_into, sparsity_penalty
from .base import DecoderOutput, EncoderDecoder
from .config import AEConfig

DENOISING_SEED = 2008  # the corruption of the test set for a dae's test_denoising


class AETerms(NamedTuple):
    """Batch means, in nats per image: ``loss = nll + penalty``."""

    loss: float
    nll: float
    penalty: float


@dataclass
class AEWorkspace(DecoderOutput):
    """The buffers of one batch size, made once."""

    batch: int
    xin: Any        # (B, D) the corrupted input (dae), or None
    corrupt: Any    # (B, D) bool host array, True at the pixels to corrupt (mask, salt-and-pepper), or None
    draws: Any      # (B, D) float64 host random numbers for the corruption, or None
    order: Any      # (B, D) float64 host scratch: the draws partitioned along each row, or None
    enc_outs: list  # the last is the pre-activation a (B, K)
    enc_douts: list
    code: Any       # (B, K) h = act(a); for a linear code, enc_outs[-1] itself
    dcode: Any      # (B, K) dL/dh; for a linear code, enc_douts[-1] itself
    dec_outs: list
    dec_douts: list
    nll: Any        # (B,) nats
    enc_in: Any = None  # what the encoder saw in the last pass: x, or xin
    penalty: Any = 0.0  # the last pass's penalty (nats per image; for sparse-ae per batch)


class Autoencoder(EncoderDecoder):
    """One of the four autoencoders of :data:`tinyvae.models.config.AE_MODELS` (see the module doc).

    Args:
        config: :class:`~tinyvae.models.config.AEConfig`.
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the generator of the initial weights and of the corruption.

    Attributes:
        params, grad: flat ``(P,)`` buffers; encoder, decoder: :class:`tinyvae.nn.layers.Sequential`.
        denoises: whether the encoder sees a corrupted input (``dae``; :meth:`denoise`).
    """

    def __init__(self, config: AEConfig = AEConfig(), backend: Backend | str = "numpy", seed: int = 1):
        super().__init__(config, backend, seed)
        p, g = self.params, self.grad
        head = stacks.linear(p, g, "encoder.code", relu=False, image_in=stacks.flat_image(config))
        self.encoder = Sequential([*stacks.encoder_body(config, p, g), head])
        self.sigmoid = config.code_activation == "sigmoid"
        self.denoises = config.model == "dae"
        self.rows_independent = config.model != "sparse-ae"

    def workspace(self, batch: int) -> AEWorkspace:
        """The buffers for batch size ``batch``, made on first use and kept."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            D, K = cfg.input_dim, cfg.latent_dim
            dae = cfg.model == "dae"
            enc_outs, enc_douts = self.encoder.buffers(xp, batch, dt), self.encoder.buffers(xp, batch, dt)
            chosen = dae and cfg.corruption != "gaussian"  # a random choice of pixels per row
            ws = AEWorkspace(
                batch=batch, xin=xp.empty((batch, D), dt) if dae else None,
                corrupt=np.empty((batch, D), bool) if chosen else None,
                draws=np.empty((batch, D)) if chosen else None, order=np.empty((batch, D)) if chosen else None,
                enc_outs=enc_outs, enc_douts=enc_douts,
                code=xp.empty((batch, K), dt) if self.sigmoid else enc_outs[-1],
                dcode=xp.empty((batch, K), dt) if self.sigmoid else enc_douts[-1],
                dec_outs=self.decoder.buffers(xp, batch, dt), dec_douts=self.decoder.buffers(xp, batch, dt),
                nll=xp.empty(batch, dt),
            )
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def corrupt_into(self, x, ws: AEWorkspace, rng: np.random.Generator):
        """Write a fresh corruption of ``x`` (``dae``) drawn from ``rng`` into ``ws.xin``."""
        cfg, xp = self.config, self.xp
        if cfg.corruption == "gaussian":
            self.draw(ws.xin, rng=rng)
            ws.xin *= cfg.noise
            ws.xin += x
            return
        xp.copyto(ws.xin, x)
        m = round(cfg.noise * cfg.input_dim)
        if m == 0:
            return
        # A uniformly random choice of m pixels per row: the m smallest of D uniform draws,
        # those at or below the row's m-th smallest (float64 draws: ties have probability ~D / 2^53).
        self.draw(ws.draws, "random", rng)
        ws.order[...] = ws.draws
        ws.order.partition(m - 1, axis=1)
        np.less_equal(ws.draws, ws.order[:, m - 1:m], out=ws.corrupt)
        corrupt = ws.corrupt if xp is np else xp.asarray(ws.corrupt)
        if cfg.corruption == "mask":
            xp.copyto(ws.xin, 0, where=corrupt)
        else:  # salt-and-pepper: 0 or 1 by a fair coin
            self.draw(ws.draws, "random", rng)
            np.less(ws.draws, 0.5, out=ws.order, casting="unsafe")
            xp.copyto(ws.xin, ws.order if xp is np else xp.asarray(ws.order), where=corrupt)

    def encode_into(self, ws: AEWorkspace, inp):
        """Run the encoder on ``inp`` ``(B, D)``; leaves the code h in ``ws.code``."""
        ws.enc_in = inp
        self.encoder.forward(self.backend, inp, ws.enc_outs)
        if self.sigmoid:
            sigmoid_into(ws.enc_outs[-1], ws.code, self.xp)

    def forward(self, x, corrupted=None, train: bool = False) -> AEWorkspace:
        """Encoder, code and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype.
            corrupted: ``dae`` only: the encoder's input x~, held fixed (gradient checks).
            train: ``dae`` only: corrupt ``x`` afresh when ``corrupted`` is None;
                without it the encoder sees the clean ``x`` (evaluation).

        Returns:
            The batch's workspace, holding ``code`` (h) and ``decoder_out`` (the parameters of p(x|z)).
        """
        ws = self.workspace(x.shape[0])
        inp = x
        if ws.xin is not None and (corrupted is not None or train):
            if corrupted is not None:
                ws.xin[...] = corrupted
            else:
                self.corrupt_into(x, ws, self.rng)
            inp = ws.xin
        self.encode_into(ws, inp)
        self.decoder.forward(self.backend, ws.code, ws.dec_outs)
        return ws

    def penalty(self, ws: AEWorkspace, grad: bool):
        """The model's own term for the batch of ``ws``; with ``grad``, its gradient
        wrt the code's pre-activation a is added to ``ws.enc_douts[-1]``.

        Returns:
            ``(value, row_scale)``: the penalty (0-d, or 0.0 without one) and, for
            cae, the row scales of its direct weight gradient (else None).
        """
        cfg, xp = self.config, self.xp
        if cfg.model == "sparse-ae":
            da = ws.enc_douts[-1] if grad else None
            return sparsity_penalty(ws.enc_outs[-1], cfg.rho, cfg.sparsity_weight, xp, da), None
        if cfg.model == "cae":
            W = self.encoder.layers[-1].W
            return contractive_penalty(ws.code, W, cfg.contractive_weight, xp, ws.enc_douts[-1] if grad else None)
        return 0.0, None

    def backward(self, ws: AEWorkspace, x):
        """Fill :attr:`grad` with d(mean loss)/d(params) for the batch of ``ws``.

        Also writes the per-image ``ws.nll`` and the penalty ``ws.penalty``.
        """
        B, xp = ws.batch, self.xp
        self.nll(ws.decoder_out, x, 1.0 / B, ws.nll, ws.decoder_dout, self.decoder_dlogvar)
        self.decoder.backward(self.backend, ws.code, ws.dec_outs, ws.dec_douts, ws.dcode)
        if self.sigmoid:  # dL/da = dL/dh * h (1 - h)
            da = ws.enc_douts[-1]
            xp.subtract(1, ws.code, out=da)
            da *= ws.code
            da *= ws.dcode
        # The penalty enters through a (and, for cae, through W directly: the row scales).
        ws.penalty, scale = self.penalty(ws, grad=True)
        code = self.encoder.layers[-1]
        self.encoder.backward(self.backend, ws.enc_in, ws.enc_outs, ws.enc_douts)
        if scale is not None:
            code.gW += scale[:, None] * code.W

    def train_step(self, x, optimizer, y=None, beta: float = 1.0):
        """Forward (a fresh corruption for ``dae``), backward and one optimiser update (no checks). ``y`` and
        ``beta`` are the VAE's (:meth:`tinyvae.models.vae.VAE.train_step`): an autoencoder takes no labels
        and has no KL term to weigh, so they are None and 1.

        Returns:
            The minimised objective summed over the batch (``nll`` plus the
            penalty, per image), in nats, a 0-d backend array.
        """
        ws = self.forward(x, train=True)
        self.backward(ws, x)
        optimizer.step(self.grad)
        return ws.nll.sum() + x.shape[0] * ws.penalty

    def loss_rows(self, ws: AEWorkspace):
        """Host float64 terms whose sum is the mean loss of ``ws``'s last pass (for gradient checks)."""
        rows = self.backend.to_host(ws.nll / ws.batch)
        return np.append(np.asarray(rows, np.float64), float(ws.penalty))

    # -- checked public API ---------------------------------------------------
    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, corrupted=None) -> AETerms:
        """Mean loss of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder).
            y, beta: the VAE's arguments (:meth:`tinyvae.models.vae.VAE.loss_and_grad`), None and 1 here.
            corrupted: ``dae`` only: the encoder's input ``(B, D)``, finite; drawn
                afresh from the model's generator when None.

        Returns:
            :class:`AETerms`: the objective, the reconstruction loss and the penalty, nats per image.

        Raises:
            DataError: bad ``x`` (as :func:`tinyvae.models.base.check_batch`), labels, or a ``corrupted`` of the
                wrong shape or non-finite.
            SettingsError: ``beta`` other than 1, or ``corrupted`` given to a model other than dae.
        """
        x, corrupted = self.checked(x, y, beta, corrupted)
        ws = self.forward(x, corrupted, train=True)
        self.backward(ws, x)
        nll = float(ws.nll.sum()) / x.shape[0]
        return AETerms(nll + float(ws.penalty), nll, float(ws.penalty))

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, corrupted=None):
        """:meth:`loss_rows` of a forward pass alone, the terms of :meth:`loss_and_grad`'s loss at these
        weights without its backward pass: the finite differences of :func:`tinyvae.gradcheck.check_model`.
        Raises like :meth:`loss_and_grad`."""
        x, corrupted = self.checked(x, y, beta, corrupted)
        return self.loss_rows(self.forward_loss(x, corrupted))

    def checked(self, x, y, beta: float, corrupted):
        """``(x, corrupted)`` of :meth:`loss_and_grad` checked, as backend arrays (``corrupted`` may be None)."""
        if beta != 1:
            raise SettingsError(f"an autoencoder's loss has no KL term to weigh: beta must be 1, got {beta}")
        x = self.as_batch(x)
        self.as_labels(y, x.shape[0])
        if corrupted is not None:
            if not self.denoises:
                raise SettingsError(f"a corrupted input is for the dae, not {self.config.model}")
            corrupted = self.xp.asarray(corrupted, dtype=self.dtype)
            if corrupted.shape != x.shape or not bool(self.xp.isfinite(corrupted).all()):
                raise DataError(f"corrupted must be finite with shape {x.shape}, got {corrupted.shape}")
        return x, corrupted

    def forward_loss(self, x, corrupted=None) -> AEWorkspace:
        """:meth:`forward` on the clean ``x`` (or, ``dae``, on a given ``corrupted`` input), then ``ws.nll``
        and ``ws.penalty`` (no checks, no gradient)."""
        ws = self.forward(x, corrupted)
        self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
        ws.penalty, _ = self.penalty(ws, grad=False)
        return ws

    def evaluate(self, batches) -> dict:
        """Test metrics over ``(x, y)`` batches (``y`` unused), nats per image.

        Returns:
            ``test_loss`` = ``test_recon``, the reconstruction loss -log p(x|z = h)
            of the clean x (never corrupted); ``test_penalty``, the model's term
            (sparse-ae: the mean over batches); ``test_mean_activation``, the mean of h
            over images and units; for ``dae`` also ``test_denoising``, -log p(x|z = h(x~))
            for a corruption x~ of each test image drawn from a fixed seed (the same every call).
        """
        dae = self.config.model == "dae"
        rng = np.random.default_rng(DENOISING_SEED)
        sums = dict.fromkeys(("recon", "penalty", "activation", "denoising"), 0.0)
        n = 0
        for x, _ in batches:
            ws = self.forward_loss(x)
            B = x.shape[0]
            n += B
            sums["recon"] += float(ws.nll.sum())
            sums["penalty"] += B * float(ws.penalty)
            sums["activation"] += B * float(ws.code.mean())
            if dae:
                self.corrupt_into(x, ws, rng)
                ws = self.forward(x, ws.xin)
                self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
                sums["denoising"] += float(ws.nll.sum())
        metrics = {"test_loss": sums["recon"] / n, "test_recon": sums["recon"] / n,
                   "test_penalty": sums["penalty"] / n, "test_mean_activation": sums["activation"] / n}
        if dae:
            metrics["test_denoising"] = sums["denoising"] / n
        return metrics

    def encode(self, x, y=None):
        """The code h ``(B, K)`` of clean ``x``, a host array. Raises like :meth:`loss_and_grad`."""
        x = self.as_batch(x)
        self.as_labels(y, x.shape[0])
        ws = self.workspace(x.shape[0])
        self.encode_into(ws, x)
        return self.backend.to_host(ws.code).copy()

    code = encode

    def per_sample_loss(self, x, y=None, seed: int | None = None):
        """Per-image ``(nll, penalty)`` of a batch on the clean ``x``, each ``(B,)`` host float arrays in nats:
        the reconstruction loss, and the batch's penalty in every row (the model's term is a mean over the
        batch, or for sparse-ae a function of the whole batch). Nothing is drawn, so ``seed`` (the VAE's)
        changes nothing. Raises like :meth:`loss_and_grad`."""
        x, _ = self.checked(x, y, 1.0, None)
        ws = self.forward_loss(x)
        return self.backend.to_host(ws.nll).copy(), np.full(x.shape[0], float(ws.penalty))

    def denoise(self, x, rng: np.random.Generator | None = None):
        """``dae``: ``(x~, x_hat)``, a corruption of ``x`` ``(B, D)`` drawn from ``rng`` (default: the model's
        generator) and the mean of p(x|z = h(x~)), its reconstruction; two ``(B, D)`` host arrays."""
        if not self.denoises:
            raise SettingsError(f"{self.config.model} does not corrupt its input; the dae does")
        x = self.as_batch(x)
        ws = self.workspace(x.shape[0])
        self.corrupt_into(x, ws, self.rng if rng is None else rng)
        ws = self.forward(x, ws.xin)
        return self.backend.to_host(ws.xin).copy(), self.output_mean(ws.decoder_out)
