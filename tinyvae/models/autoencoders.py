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

  (:data:`tinyvae.models.config.CORRUPTIONS`; the backends' ``corrupt`` op draws them from the
  ``corruption`` stream, :mod:`tinyvae.rng`.)

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
from ..rng import EVALUATE_STEPS
from .base import DecoderOutput, EncoderDecoder, Noise
from .config import AEConfig


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
        seed: seeds the initial weights and keys the model's random streams (:mod:`tinyvae.rng`): the dae
            draws its corruption from the ``corruption`` stream.

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
            enc_outs, enc_douts = self.encoder.buffers(xp, batch, dt), self.encoder.buffers(xp, batch, dt)
            ws = AEWorkspace(
                batch=batch, xin=xp.empty((batch, D), dt) if self.denoises else None,
                enc_outs=enc_outs, enc_douts=enc_douts,
                code=xp.empty((batch, K), dt) if self.sigmoid else enc_outs[-1],
                dcode=xp.empty((batch, K), dt) if self.sigmoid else enc_douts[-1],
                dec_outs=self.decoder.buffers(xp, batch, dt), dec_douts=self.decoder.buffers(xp, batch, dt),
                nll=xp.empty(batch, dt),
            )
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def corrupt_into(self, x, ws: AEWorkspace, noise: Noise):
        """Write the corruption of ``x`` (``dae``) that ``noise`` addresses into ``ws.xin`` (the backend's
        ``corrupt`` op)."""
        cfg = self.config
        self.backend.corrupt(x, noise.key, noise.step, noise.rows, cfg.corruption, cfg.noise, ws.xin)

    def encode_into(self, ws: AEWorkspace, inp):
        """Run the encoder on ``inp`` ``(B, D)``; leaves the code h in ``ws.code``."""
        ws.enc_in = inp
        self.encoder.forward(self.backend, inp, ws.enc_outs)
        if self.sigmoid:
            sigmoid_into(ws.enc_outs[-1], ws.code, self.xp)

    def forward(self, x, corrupted=None, noise: Noise | None = None) -> AEWorkspace:
        """Encoder, code and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype.
            corrupted: ``dae`` only: the encoder's input x~ itself.
            noise: ``dae`` only: corrupt ``x`` with the draws that this
                :class:`~tinyvae.models.base.Noise` addresses. Without either
                the encoder sees the clean ``x`` (evaluation).

        Returns:
            The batch's workspace, holding ``code`` (h) and ``decoder_out`` (the parameters of p(x|z)).
        """
        ws = self.workspace(x.shape[0])
        inp = x
        if ws.xin is not None and (corrupted is not None or noise is not None):
            if corrupted is not None:
                ws.xin[...] = corrupted
            else:
                self.corrupt_into(x, ws, noise)
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

    def train_step(self, x, optimizer, y=None, beta: float = 1.0, step: int | None = None, rows=None):
        """Forward (``dae``: a corruption drawn from the ``corruption`` stream at training step ``step`` for the
        examples ``rows``, as :meth:`tinyvae.models.vae.VAE.train_step` draws eps), backward and one optimiser
        update (no checks). ``y`` and ``beta`` are the VAE's: an autoencoder takes no labels and has no KL
        term to weigh, so they are None and 1.

        Returns:
            The minimised objective summed over the batch (``nll`` plus the
            penalty, per image), in nats, a 0-d backend array.
        """
        noise = self.noise("corruption", x.shape[0], step=step, rows=rows) if self.denoises else None
        ws = self.forward(x, noise=noise)
        self.backward(ws, x)
        optimizer.step(self.grad)
        return ws.nll.sum() + x.shape[0] * ws.penalty

    def loss_rows(self, ws: AEWorkspace):
        """Host float64 terms whose sum is the mean loss of ``ws``'s last pass (for gradient checks)."""
        rows = self.backend.to_host(ws.nll / ws.batch)
        return np.append(np.asarray(rows, np.float64), float(ws.penalty))

    # -- checked public API ---------------------------------------------------
    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None,
                      corrupted=None) -> AETerms:
        """Mean loss of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder).
            y, beta: the VAE's arguments (:meth:`tinyvae.models.vae.VAE.loss_and_grad`), None and 1 here.
            noise_seed: ``dae``: draw the corruption from the ``corruption`` stream of this seed (step 0, the
                rows numbered from 0), so that the loss is a function of the weights alone (gradient checks);
                None: a fresh corruption at every call. Other models draw nothing, and ignore it.
            corrupted: ``dae`` only: instead, the encoder's input ``(B, D)`` itself, finite.

        Returns:
            :class:`AETerms`: the objective, the reconstruction loss and the penalty, nats per image.

        Raises:
            DataError: bad ``x`` (as :func:`tinyvae.models.base.check_batch`), labels, or a ``corrupted`` of the
                wrong shape or non-finite.
            SettingsError: ``beta`` other than 1, ``corrupted`` given to a model other than dae, a bad
                ``noise_seed``, or one given with ``corrupted``.
        """
        x, corrupted, noise = self.checked(x, y, beta, corrupted, noise_seed)
        if self.denoises and corrupted is None and noise is None:
            noise = self.noise("corruption", x.shape[0])
        ws = self.forward(x, corrupted, noise)
        self.backward(ws, x)
        nll = float(ws.nll.sum()) / x.shape[0]
        return AETerms(nll + float(ws.penalty), nll, float(ws.penalty))

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, corrupted=None):
        """:meth:`loss_rows` of a forward pass alone, the terms of :meth:`loss_and_grad`'s loss at these
        weights without its backward pass: the finite differences of :func:`tinyvae.gradcheck.check_model`.
        Raises like :meth:`loss_and_grad`."""
        x, corrupted, noise = self.checked(x, y, beta, corrupted, noise_seed)
        if self.denoises and corrupted is None and noise is None:
            noise = self.noise("corruption", x.shape[0])
        return self.loss_rows(self.forward_loss(x, corrupted, noise))

    def checked(self, x, y, beta: float, corrupted, noise_seed):
        """``(x, corrupted, noise)`` of :meth:`loss_and_grad` checked, as backend arrays (``corrupted`` may be
        None), ``noise`` that of ``noise_seed`` for the dae (else None)."""
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
        noise = self.fixed_noise("corruption", x.shape[0], noise_seed, corrupted=corrupted)
        return x, corrupted, noise if self.denoises else None

    def forward_loss(self, x, corrupted=None, noise: Noise | None = None) -> AEWorkspace:
        """:meth:`forward` on the clean ``x`` (or, ``dae``, on a ``corrupted`` input, given or drawn as ``noise``
        says), then ``ws.nll`` and ``ws.penalty`` (no checks, no gradient)."""
        ws = self.forward(x, corrupted, noise)
        self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
        ws.penalty, _ = self.penalty(ws, grad=False)
        return ws

    def evaluation_sums(self, batches, seed: int | None = None) -> dict:
        """Sums over the examples of ``(x, y, rows)`` batches (``y`` unused; ``rows`` the examples' ``(B,)``
        int64 indices in the test set), in nats: ``recon``, ``penalty`` (each batch's times its size),
        ``activation`` (the mean of h over units, summed over images), ``denoising`` (a dae's, else 0); and
        the count ``n``. A dae's corruption of each test image is drawn from the ``evaluate`` stream of ``seed``
        (default: the model's) at its ``denoising`` step (:data:`tinyvae.rng.EVALUATE_STEPS`): the same every
        call."""
        dae = self.denoises
        sums = dict.fromkeys(("recon", "penalty", "activation", "denoising"), 0.0)
        n = 0
        for x, _, rows in batches:
            ws = self.forward_loss(x)
            B = x.shape[0]
            n += B
            sums["recon"] += float(ws.nll.sum())
            sums["penalty"] += B * float(ws.penalty)
            sums["activation"] += B * float(ws.code.mean())
            if dae:
                ws = self.forward(x, noise=self.noise("evaluate", B, seed, EVALUATE_STEPS["denoising"], rows))
                self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
                sums["denoising"] += float(ws.nll.sum())
        return {**sums, "n": n}

    def metrics(self, sums: dict) -> dict:
        """Test metrics, nats per image: ``test_loss`` = ``test_recon``, the reconstruction loss -log p(x|z = h)
        of the clean x (never corrupted); ``test_penalty``, the model's term (sparse-ae: the mean over
        batches); ``test_mean_activation``, the mean of h over images and units; for ``dae`` also
        ``test_denoising``, -log p(x|z = h(x~)) of a corruption x~ of each image."""
        n = sums["n"]
        metrics = {"test_loss": sums["recon"] / n, "test_recon": sums["recon"] / n,
                   "test_penalty": sums["penalty"] / n, "test_mean_activation": sums["activation"] / n}
        if self.denoises:
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
        x, _, _ = self.checked(x, y, 1.0, None, None)
        ws = self.forward_loss(x)
        return self.backend.to_host(ws.nll).copy(), np.full(x.shape[0], float(ws.penalty))

    def denoise(self, x, seed: int | None = None):
        """``dae``: ``(x~, x_hat)``, a corruption of ``x`` ``(B, D)`` and the mean of p(x|z = h(x~)), its
        reconstruction; two ``(B, D)`` host arrays. Row ``i`` is example ``i`` of the ``pictures`` stream of
        ``seed`` (the same for the same seed), or of the model's own seed at a fresh step when ``seed`` is
        None.

        Raises:
            SettingsError: a model other than dae, or a bad seed. DataError: bad ``x``.
        """
        if not self.denoises:
            raise SettingsError(f"{self.config.model} does not corrupt its input; the dae does")
        x = self.as_batch(x)
        ws = self.forward(x, noise=self.noise("pictures", x.shape[0], seed))
        return self.backend.to_host(ws.xin).copy(), self.output_mean(ws.decoder_out)
