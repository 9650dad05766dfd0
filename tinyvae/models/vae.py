"""The VAE of Kingma & Welling (2014) and its variants, written once against an array module.

Encoder: ``[x | y] (B, D + C) -> [Linear + ReLU] * n -> Linear -> (mu, logvar)``,
both ``(B, K)``; the two heads are one ``(2K, H)`` GEMM over adjacent storage.
Reparameterization: ``z = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)``,
with L draws of ``eps`` per data point (the SGVB estimator, K&W eq. 10).
Decoder: ``[z | y] (L*B, K + C) -> [Linear + ReLU] * n (hidden sizes reversed)
-> Linear -> (L*B, D)``, the parameters of p(x|z):

* ``bernoulli``: logits, p(x|z) = Bernoulli(sigmoid(logits)) (K&W Appendix C.1);
* ``gaussian``: the mean, p(x|z) = N(mean, exp(decoder_logvar) I) with a fixed
  log-variance (0: the squared-error case of the seeds, as a proper NLL);
* ``gaussian-learned``: the mean, with a learned per-pixel log-variance, the
  parameter ``decoder.logvar`` ``(D,)`` (K&W Appendix C.2, shared over z).

``y`` is the one-hot label of a conditional VAE (Sohn et al. 2015, "Learning
Structured Output Representation using Deep Conditional Generative Models",
Sec. 4: q(z|x, y), p(x|z, y), prior N(0, I)); C = 0 for the plain VAE.

Loss per data point, in nats: ``nll + beta * kl``, ``nll = -log p(x|z)``
averaged over the L draws, ``kl`` the analytic KL(q(z|x) || N(0, I)); for
beta = 1 the negative ELBO (K&W eq. 10), beta-VAE otherwise (Higgins et al.
2017, eq. 4). The hand-derived gradient is that of the batch mean of this loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..backends import Backend, reference
from ..errors import DataError, SettingsError
from ..nn import stacks
from ..nn.layers import Linear, Sequential
from ..rng import EVALUATE_STEPS
from .base import DecoderOutput, EncoderDecoder, Noise, one_hot_into, repeat_rows
from .config import VAEConfig


class ELBOTerms(NamedTuple):
    """Batch means, in nats per data point: ``loss = nll + beta * kl``."""

    loss: float
    nll: float
    kl: float


@dataclass
class VAEWorkspace(DecoderOutput):
    """Every activation and activation gradient of one batch size, made once.

    Rows: the encoder sees B rows; the latent ops, the decoder and the
    likelihood see N = L * B rows, draw l of data point b in row l * B + b.
    """

    batch: int
    rows: object         # arange(B), to scatter one-hot labels without allocating
    onehot: object       # (B, C) the labels one-hot, or None for C = 0
    xin: object          # encoder input: (B, D + C) [x | y] (mlp), (B, D (1 + C)) channels [x, y] (conv); None for C = 0
    enc_outs: list
    enc_douts: list
    heads_rep: object    # (N, 2K) the encoder's [mu | logvar] repeated L times, or None for L = 1
    dheads_rep: object
    zin: object          # (N, K + C) decoder input [z | y]
    dzin: object
    dec_outs: list
    dec_douts: list
    eps: object          # (N, K)
    kl: object           # (N,) nats
    nll: object          # (N,) nats
    heads: object = field(init=False)   # (N, 2K) [mu | logvar], one row per draw
    dheads: object = field(init=False)
    mu: object = field(init=False)
    logvar: object = field(init=False)
    z: object = field(init=False)
    dz: object = field(init=False)
    beta: float = field(init=False, default=1.0)  # the KL weight of the last backward pass
    weights: object = field(init=False, default=None)  # iwae: (N, 1) each row's weight in the gradient
    bound: object = field(init=False, default=None)    # iwae: (B,) -L_k of each example of the last pass
    kept: object = field(init=False, default=None)     # iwae: the decoder's buffers for its draws of weight > 0

    def __post_init__(self):
        K = self.eps.shape[1]
        self.heads = heads = self.enc_outs[-1] if self.heads_rep is None else self.heads_rep
        self.dheads = self.enc_douts[-1] if self.dheads_rep is None else self.dheads_rep
        self.mu, self.logvar = heads[:, :K], heads[:, K:]
        self.z, self.dz = self.zin[:, :K], self.dzin[:, :K]


class VAE(EncoderDecoder):
    """A Gaussian-encoder VAE with hand-derived gradients (see the module doc for its variants).

    Args:
        config: sizes, likelihood and dtype (:class:`VAEConfig`).
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the initial weights and keys the model's random streams (:mod:`tinyvae.rng`): eps is
            drawn from the ``eps`` stream, unless the caller passes ``eps`` or ``noise_seed``.

    Attributes:
        params: :class:`tinyvae.nn.params.FlatParams`; ``params.data`` is the flat ``(P,)`` buffer.
        grad: ``(P,)`` gradient buffer, same layout, filled by :meth:`loss_and_grad`.
        encoder, decoder: the two :class:`tinyvae.nn.layers.Sequential`; the encoder ends in the
            ``(2K, H)`` head layer giving ``[mu | logvar]``.
        seed: the seed of the model's random streams.
    """

    has_prior = True
    bounds_likelihood = True
    # latent_grad leaves one row per draw in ws.dheads (for L > 1), which backward sums over each example's
    # draws; False where latent_grad writes the per-example gradient itself (the IWAE's op).
    latent_grad_per_draw = True

    def __init__(self, config: VAEConfig = VAEConfig(), backend: Backend | str = "numpy", seed: int = 1):
        super().__init__(config, backend, seed)
        p, g = self.params, self.grad
        K2, H = 2 * config.latent_dim, p.shapes["encoder.mu.weight"][1]
        w = ("encoder.mu.weight", "encoder.logvar.weight", (K2, H))
        b = ("encoder.mu.bias", "encoder.logvar.bias", (K2,))
        heads = Linear(p.span(*w), p.span(*b), p.span(*w, buffer=g), p.span(*b, buffer=g), relu=False,
                       image_in=stacks.flat_image(config))
        self.encoder = Sequential([*stacks.encoder_body(config, p, g, config.n_classes), heads])

    def workspace(self, batch: int) -> VAEWorkspace:
        """The buffers for batch size ``batch``, made on first use and kept."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            D, K, C, L = cfg.input_dim, cfg.latent_dim, cfg.n_classes, cfg.draws
            N = L * batch
            ws = VAEWorkspace(
                batch=batch, rows=xp.arange(batch), onehot=xp.empty((batch, C), dt) if C else None,
                xin=xp.empty((batch, D // cfg.image_channels * (cfg.image_channels + C) if cfg.arch == "conv"
                              else D + C), dt) if C else None,
                enc_outs=self.encoder.buffers(xp, batch, dt), enc_douts=self.encoder.buffers(xp, batch, dt),
                heads_rep=xp.empty((N, 2 * K), dt) if L > 1 else None,
                dheads_rep=xp.empty((N, 2 * K), dt) if L > 1 and self.latent_grad_per_draw else None,
                zin=xp.empty((N, K + C), dt), dzin=xp.empty((N, K + C), dt),
                dec_outs=self.decoder.buffers(xp, N, dt), dec_douts=self.decoder.buffers(xp, N, dt),
                eps=xp.empty((N, K), dt), kl=xp.empty(N, dt), nll=xp.empty(N, dt),
            )
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def encode_into(self, ws: VAEWorkspace, x, y=None):
        """Run the encoder on ``x`` (and labels ``y``); leaves ``[mu | logvar]`` in ``ws.enc_outs[-1]``.

        A conditional model's encoder sees the one-hot label as more input columns (mlp), or as that many
        more channels, constant over the image (conv)."""
        D, C = self.config.input_dim, self.config.image_channels
        if ws.xin is not None:
            one_hot_into(ws.onehot, y, ws.rows)
            if self.config.arch == "conv":
                pixels = ws.xin.reshape(x.shape[0], D // C, -1)  # channels-last: the image's C, then the label
                pixels[:, :, :C] = x.reshape(x.shape[0], D // C, C)
                pixels[:, :, C:] = ws.onehot[:, None, :]
            else:
                ws.xin[:, :D] = x
                ws.xin[:, D:] = ws.onehot
            x = ws.xin
        self.encoder.forward(self.backend, x, ws.enc_outs)

    def forward(self, x, eps=None, y=None, noise: Noise | None = None) -> VAEWorkspace:
        """Encoder, reparameterization and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype.
            eps: optional ``(L*B, K)`` noise (or a number for every element); else drawn on the backend, inside
                the reparameterisation op, as ``noise`` says (default: the ``eps`` stream, a fresh step).
            y: ``(B,)`` integer labels of a conditional model, else None.
            noise: the :class:`~tinyvae.models.base.Noise` of the draws of eps.

        Returns:
            The batch's workspace, holding ``mu``, ``logvar``, ``z``, ``decoder_out``
            (the parameters of p(x|z)) and the per-row ``kl`` (``(L*B,)``, nats).
        """
        B, K = x.shape[0], self.config.latent_dim
        ws = self.workspace(B)
        self.encode_into(ws, x, y)
        if ws.heads_rep is not None:
            repeat_rows(ws.heads_rep, ws.enc_outs[-1][:B])
        if ws.onehot is not None:
            repeat_rows(ws.zin[:, K:], ws.onehot)
        if eps is None:
            noise = noise or self.noise("eps", B)
            self.backend.reparameterize_kl_draw(ws.heads, noise.key, noise.step, noise.rows, ws.eps, ws.z, ws.kl)
        else:
            ws.eps[...] = eps
            self.backend.reparameterize_kl(ws.heads, ws.eps, ws.z, ws.kl)
        self.decoder.forward(self.backend, ws.zin, ws.dec_outs)
        return ws

    def backward(self, ws: VAEWorkspace, x, beta: float):
        """Fill :attr:`grad` with d(mean loss)/d(params) for the batch of ``ws``: the decoder's output
        (:meth:`output_grad`), the decoder (:meth:`decoder_grad`), z and ``[mu | logvar]`` (:meth:`latent_grad`),
        the draws' copies added up, the encoder (:meth:`encoder_grad`): the steps a model of another objective
        changes.

        Also writes the per-row ``ws.nll`` (the likelihood op computes loss and
        gradient in one pass) and keeps ``beta`` in ``ws.beta``.
        """
        ws.beta = beta
        self.output_grad(ws, x)
        self.decoder_grad(ws)
        self.latent_grad(ws, beta)
        if ws.dheads_rep is not None:  # the gradient of a repeat is the sum over the copies
            B = ws.batch
            self.xp.sum(ws.dheads_rep.reshape(-1, B, ws.dheads_rep.shape[1]), axis=0, out=ws.enc_douts[-1][:B])
        self.encoder_grad(ws, x)

    def output_grad(self, ws: VAEWorkspace, x):
        """``ws.nll`` and the loss's gradient at the decoder's output (and at a learned log-variance) for the
        batch ``x`` ``(B, D)``, which the likelihood reads for each of the L draws: each row weighs 1 / N."""
        self.nll(ws.decoder_out, x, 1.0 / ws.eps.shape[0], ws.nll, ws.decoder_dout, self.decoder_dlogvar)

    def decoder_grad(self, ws: VAEWorkspace):
        """The decoder's gradients, and ``ws.dzin``, from :attr:`~VAEWorkspace.decoder_dout`."""
        self.decoder.backward(self.backend, ws.zin, ws.dec_outs, ws.dec_douts, ws.dzin)

    def latent_grad(self, ws: VAEWorkspace, beta: float):
        """``ws.dheads`` from the decoder's ``ws.dz`` and the KL in closed form: each data point's KL appears
        in L rows, so each row weighs beta / N."""
        self.backend.reparameterize_kl_backward(ws.dz, ws.heads, ws.eps, beta / ws.eps.shape[0], ws.dheads)

    def encoder_grad(self, ws: VAEWorkspace, x):
        """The encoder's gradients from ``ws.enc_douts[-1]``."""
        self.encoder.backward(self.backend, x if ws.xin is None else ws.xin, ws.enc_outs, ws.enc_douts)

    def train_step(self, x, optimizer, y=None, beta: float = 1.0, step: int | None = None, rows=None):
        """Forward, backward and one optimiser update for a batch (no checks, no host sync).

        eps is drawn from the ``eps`` stream at training step ``step`` for the examples ``rows`` (the batch's
        ``(B,)`` int64 indices in the training set, a backend array); None for either: the model's next
        step, rows numbered from 0.

        Returns:
            The minimised objective ``nll + beta * kl`` summed over the batch, in
            nats, a 0-d backend array (over the L draws: their mean).
        """
        ws = self.forward(x, y=y, noise=self.noise("eps", x.shape[0], step=step, rows=rows))
        self.backward(ws, x, beta)
        optimizer.step(self.grad)
        return self.objective_sum(ws, beta)

    def objective_sum(self, ws: VAEWorkspace, beta: float):
        """The minimised objective of ``ws``'s batch summed over data points, a 0-d backend array:
        ``nll + beta * kl``."""
        nll, kl = self.sums(ws)
        return nll + beta * kl

    def sums(self, ws: VAEWorkspace):
        """``(nll, kl)`` of ``ws``'s batch summed over data points (means over the L draws), 0-d arrays."""
        L = self.config.draws
        return ws.nll.sum() / L, ws.kl.sum() / L

    def loss_rows(self, ws: VAEWorkspace):
        """``(L*B,)`` host float64 terms whose sum is the mean loss of ``ws``'s last pass (its backward
        pass, or :meth:`loss_rows_forward`'s), for gradient checks."""
        N = ws.eps.shape[0]
        return np.asarray(self.backend.to_host((ws.nll + ws.beta * ws.kl) / N), np.float64)

    def metrics(self, sums: dict) -> dict:
        """Test metrics in nats per data point: ``test_loss`` (the negative ELBO, L draws of z per image),
        ``test_nll`` (-log p(x|z)), ``test_kl`` (KL(q(z|x) || p(z))) and ``test_recon`` (-log p(x|z = mu), the
        reconstruction loss of the mean code, as for an autoencoder)."""
        n = sums["n"]
        return {"test_loss": (sums["nll"] + sums["kl"]) / n, "test_nll": sums["nll"] / n,
                "test_kl": sums["kl"] / n, "test_recon": sums["recon"] / n}

    def evaluation_sums(self, batches, seed: int | None = None) -> dict:
        """Sums over the examples of ``(x, y, rows)`` batches (checked arrays; ``rows`` the examples' ``(B,)``
        int64 indices in the test set), in nats: ``nll``, ``kl``, ``objective`` (the minimised objective,
        :meth:`objective_sum`, from the same draws) and ``recon``; and their count ``n``. The draws of z come
        from the ``evaluate`` stream of ``seed`` (default: the model's), at its ``elbo`` step
        (:data:`tinyvae.rng.EVALUATE_STEPS`) for each example: the same at every call."""
        s = dict.fromkeys(("nll", "kl", "objective", "recon"), 0.0)
        n = 0
        for x, y, rows in batches:
            noise = self.noise("evaluate", x.shape[0], seed, EVALUATE_STEPS["elbo"], rows)
            ws = self.forward_loss(x, y, noise=noise)
            a, b = self.sums(ws)
            s["nll"], s["kl"], n = s["nll"] + float(a), s["kl"] + float(b), n + x.shape[0]
            s["objective"] += float(self.objective_sum(ws, 1.0))
            s["recon"] += float(self.sums(self.forward_loss(x, y, eps=0.0))[0])
        return {**s, "n": n}

    # -- checked public API ---------------------------------------------------

    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, eps=None) -> ELBOTerms:
        """Negative ELBO of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder).
            y: ``(B,)`` integer labels in [0, C) for a conditional model.
            beta: weight of the KL term (1 for the ELBO).
            noise_seed: draw eps from the ``eps`` stream of this seed (step 0, the rows numbered from 0), so
                that the loss is a function of the weights alone (gradient checks); None: a fresh draw of
                the model's own stream at every call.
            eps: instead, the ``(L*B, K)`` float noise itself.

        Returns:
            :class:`ELBOTerms` of batch means in nats per data point.

        Raises:
            DataError: wrong shape or dtype, NaN/inf, or (Bernoulli) values outside [0, 1] in ``x``;
                missing, unexpected or out-of-range labels; ``eps`` of the wrong shape or non-finite.
            SettingsError: a non-finite or negative ``beta``; a bad ``noise_seed``, or one given with ``eps``.
        """
        x, y, eps, noise = self.checked(x, y, beta, eps, noise_seed)
        ws = self.forward(x, eps, y, noise)
        self.backward(ws, x, beta)
        nll, kl = (float(v) / x.shape[0] for v in self.sums(ws))
        return ELBOTerms(float(self.objective_sum(ws, beta)) / x.shape[0], nll, kl)

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, eps=None):
        """:meth:`loss_rows` of a forward pass alone, the terms of :meth:`loss_and_grad`'s loss at these
        weights without its backward pass: the finite differences of :func:`tinyvae.gradcheck.check_model`.
        Raises like :meth:`loss_and_grad`."""
        x, y, eps, noise = self.checked(x, y, beta, eps, noise_seed)
        ws = self.forward_loss(x, y, eps, noise)
        ws.beta = beta
        return self.loss_rows(ws)

    def checked(self, x, y, beta: float, eps, noise_seed):
        """``(x, y, eps, noise)`` of :meth:`loss_and_grad` checked, as backend arrays (``eps`` may be None),
        ``noise`` that of ``noise_seed`` (None without one)."""
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise SettingsError(f"beta must be finite and >= 0, got {beta}")
        x = self.as_batch(x)
        y = self.as_labels(y, x.shape[0])
        noise = self.fixed_noise("eps", x.shape[0], noise_seed, eps=eps)
        if eps is not None:
            shape = (self.config.draws * x.shape[0], self.config.latent_dim)
            eps = self.xp.asarray(eps, dtype=self.dtype)
            if eps.shape != shape or not bool(self.xp.isfinite(eps).all()):
                raise DataError(f"eps must be finite with shape {shape}, got {eps.shape}")
        return x, y, eps, noise

    def forward_loss(self, x, y=None, eps=None, noise: Noise | None = None) -> VAEWorkspace:
        """:meth:`forward`, then the per-row ``ws.nll`` (no checks, no gradient)."""
        ws = self.forward(x, eps, y, noise)
        self.nll(ws.decoder_out, x, 0.0, ws.nll, ws.decoder_dout)
        return ws

    def per_sample_loss(self, x, y=None, seed: int | None = None):
        """Per-data-point ``(nll, kl)`` of a batch, each ``(B,)`` host float arrays in nats.

        The nll is averaged over the L draws of z, drawn from the ``evaluate`` stream of ``seed`` (the same
        numbers for the same seed, on every backend, to rounding), or of the model's own seed at a fresh
        step when ``seed`` is None. Raises like :meth:`loss_and_grad`, and ``SettingsError`` for a bad seed.
        """
        x = self.as_batch(x)
        noise = self.noise("evaluate", x.shape[0], seed)
        ws = self.forward_loss(x, self.as_labels(y, x.shape[0]), noise=noise)
        L, B = self.config.draws, x.shape[0]
        host = self.backend.to_host
        return host(ws.nll).reshape(L, B).mean(axis=0), host(ws.kl)[:B].copy()

    def encode(self, x, y=None):
        """``(mu, logvar)`` of q(z|x), each ``(B, K)`` host arrays. Raises like :meth:`loss_and_grad`."""
        x = self.as_batch(x)
        y = self.as_labels(y, x.shape[0])
        ws = self.workspace(x.shape[0])
        self.encode_into(ws, x, y)
        K, host = self.config.latent_dim, self.backend.to_host
        heads = ws.enc_outs[-1][:x.shape[0]]  # (a VampPrior's encoder has its pseudo-inputs' rows after them)
        return host(heads[:, :K]).copy(), host(heads[:, K:]).copy()

    def code(self, x, y=None):
        """The point code of ``x``: E_q[z] = mu, ``(B, K)`` host array. Raises like :meth:`loss_and_grad`."""
        return self.encode(x, y)[0]

    def labels_into(self, zin, y):
        """Write the one-hot labels ``y`` ``(B,)`` into the label columns of decoder input ``zin``
        ``(L*B, K + C)``, repeated L times (outside the training step: allocates)."""
        B, C = y.shape[0], self.config.n_classes
        onehot = self.xp.empty((B, C), self.dtype)
        one_hot_into(onehot, y, self.xp.arange(B))
        repeat_rows(zin[:, self.config.latent_dim:], onehot)

    def decoder_input(self, z, y):
        """``[z | one-hot y]`` for a conditional VAE (labels checked), ``z`` otherwise."""
        y = self.as_labels(y, z.shape[0])
        if y is None:
            return z
        zin = self.xp.empty((z.shape[0], self.config.latent_dim + self.config.n_classes), self.dtype)
        zin[:, :self.config.latent_dim] = z
        self.labels_into(zin, y)
        return zin

    def prior_draws(self, n: int, seed: int | None = None) -> np.ndarray:
        """``(n, K)`` host array of z ~ N(0, I), the model's dtype: draw ``i`` is example ``i`` of the ``pictures``
        stream of ``seed`` (the same for the same seed), or of the model's own seed at a fresh step when
        ``seed`` is None.

        Raises:
            SettingsError: ``n`` < 1, more than this machine's memory holds decoded, or a bad seed.
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise SettingsError(f"n must be an int >= 1, got {n!r}")
        self.config.check_fits(int(n), f"{n} draws decoded at once")  # before anything is allocated
        return self.draw_prior(self.noise("pictures", int(n), seed), int(n))

    def kl_closed_form(self, mu, logvar):
        """``(B,)`` KL(q(z|x) || p(z)) in nats for host float64 ``mu``, ``logvar`` ``(B, K)``, in closed form
        (K&W Appendix B), or None for a prior without one."""
        kl = np.empty(mu.shape[0])
        reference.reparameterize_kl(np.concatenate([mu, logvar], axis=1), np.zeros_like(mu), np.empty_like(mu), kl)
        return kl

    def log_prior(self, z):
        """``log p(z)`` of each row of ``z`` ``(N, K)`` in nats, an array of ``z``'s module and dtype: N(0, I)'s."""
        return -0.5 * (z.shape[1] * math.log(2 * math.pi) + (z * z).sum(axis=1))

    def draw_prior(self, noise: Noise, n: int) -> np.ndarray:
        """``(n, K)`` host array of N(0, I) draws, as ``noise`` addresses them: the prior's."""
        z = self.xp.empty((n, self.config.latent_dim), self.dtype)
        self.backend.draw_normal(noise.key, noise.step, noise.rows, z)
        return self.backend.to_host(z)

    def sample(self, n: int, y=None, seed: int | None = None) -> np.ndarray:
        """``n`` draws from the model: z ~ N(0, I) (:meth:`prior_draws`) decoded to the mean of p(x|z), a
        ``(n, D)`` host float array.

        Args:
            y: ``(n,)`` labels in [0, C) for a conditional VAE (required there, refused otherwise).

        Raises:
            SettingsError: ``n`` < 1, or a bad seed. DataError: bad labels.
        """
        return self.decode(self.prior_draws(n, seed), y)
