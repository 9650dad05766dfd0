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

from .backends import Backend
from .layers import Linear, Sequential
from .network import DecoderOutputs, EncoderDecoder, NetworkConfig


@dataclass(frozen=True)
class VAEConfig(NetworkConfig):
    """A :class:`tinyvae.network.NetworkConfig` and the VAE's own settings.

    Attributes:
        mc_samples: L >= 1 draws of z per data point.
        n_classes: C, the size of the one-hot label of a conditional VAE; 0 for a VAE.
    """

    mc_samples: int = 1
    n_classes: int = 0

    def __post_init__(self):
        super().__post_init__()
        ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (self.mc_samples, self.n_classes))
        if not ints or self.mc_samples < 1 or self.n_classes < 0:
            raise ValueError(f"need ints mc_samples >= 1 and n_classes >= 0, got {self}")

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        K, C = self.latent_dim, self.n_classes
        out, H = self.encoder_layout(C)
        # mu and logvar stored back to back so the heads run as one (2K, H) GEMM.
        out += [
            ("encoder.mu.weight", (K, H)),
            ("encoder.logvar.weight", (K, H)),
            ("encoder.mu.bias", (K,)),
            ("encoder.logvar.bias", (K,)),
        ]
        return out + self.decoder_layout(K + C)


class ELBOTerms(NamedTuple):
    """Batch means, in nats per data point: ``loss = nll + beta * kl``."""

    loss: float
    nll: float
    kl: float


@dataclass
class _Workspace(DecoderOutputs):
    """Every activation and activation gradient of one batch size, made once.

    Rows: the encoder sees B rows; the latent ops, the decoder and the
    likelihood see N = L * B rows, draw l of data point b in row l * B + b.
    """

    batch: int
    rows: object         # arange(B), to scatter one-hot labels without allocating
    onehot: object       # (B, C) the labels one-hot, or None for C = 0
    xin: object          # encoder input: (B, D + C) [x | y] (mlp), (B, D (1 + C)) channels [x, y] (conv); None for C = 0
    target: object       # (N, D) x repeated L times, or None for L = 1
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

    def __post_init__(self):
        K = self.eps.shape[1]
        self.heads = heads = self.enc_outs[-1] if self.heads_rep is None else self.heads_rep
        self.dheads = self.enc_douts[-1] if self.dheads_rep is None else self.dheads_rep
        self.mu, self.logvar = heads[:, :K], heads[:, K:]
        self.z, self.dz = self.zin[:, :K], self.dzin[:, :K]


def repeat_rows(out, a):
    """``out (L*B, n) = a (B, n)`` repeated L times: row ``l*B + b`` holds row b."""
    out.reshape(out.shape[0] // a.shape[0], a.shape[0], a.shape[1])[...] = a


def one_hot_into(out, y, rows):
    """Write the one-hot rows of integer labels ``y`` ``(B,)`` into ``out`` ``(B, C)``; ``rows`` is ``arange(B)``."""
    out[...] = 0
    out[rows, y] = 1


def check_labels(y, batch: int, n_classes: int, xp):
    """Validate class labels: integers in [0, n_classes), shape ``(batch,)``; raise ``ValueError``."""
    if n_classes == 0:
        if y is not None:
            raise ValueError("labels given to an unconditional model (n_classes = 0)")
        return None
    if y is None:
        raise ValueError(f"a conditional model needs labels y of shape ({batch},)")
    y = xp.asarray(y)
    if y.shape != (batch,) or y.dtype.kind not in "iu":
        raise ValueError(f"expected integer labels of shape ({batch},), got {y.dtype} {y.shape}")
    if bool((y < 0).any()) or bool((y >= n_classes).any()):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    return y


class VAE(EncoderDecoder):
    """A Gaussian-encoder VAE with hand-derived gradients (see the module doc for its variants).

    Args:
        config: sizes, likelihood and dtype (:class:`VAEConfig`).
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the ``numpy.random.Generator`` used for the initial weights
            and, unless the caller passes ``eps``, for the noise of each step.

    Attributes:
        params: :class:`tinyvae.params.FlatParams`; ``params.data`` is the flat ``(P,)`` buffer.
        grad: ``(P,)`` gradient buffer, same layout, filled by :meth:`loss_and_grad`.
        encoder, decoder: the two :class:`tinyvae.layers.Sequential`; the encoder ends in the
            ``(2K, H)`` head layer giving ``[mu | logvar]``.
        rng: the model's ``numpy.random.Generator``.
    """

    def __init__(self, config: VAEConfig = VAEConfig(), backend: Backend | str = "numpy", seed: int = 1):
        super().__init__(config, backend, seed)
        p, g = self.params, self.grad
        K2, H = 2 * config.latent_dim, p.shapes["encoder.mu.weight"][1]
        w = ("encoder.mu.weight", "encoder.logvar.weight", (K2, H))
        b = ("encoder.mu.bias", "encoder.logvar.bias", (K2,))
        heads = Linear(p.span(*w), p.span(*b), p.span(*w, buffer=g), p.span(*b, buffer=g), relu=False,
                       image_in=config.flat_image())
        self.encoder = Sequential([*self.encoder_body(config.n_classes), heads])

    def workspace(self, batch: int) -> _Workspace:
        """The buffers for batch size ``batch``, made on first use and kept."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            D, K, C, L = cfg.input_dim, cfg.latent_dim, cfg.n_classes, cfg.mc_samples
            N = L * batch
            ws = _Workspace(
                batch=batch, rows=xp.arange(batch), onehot=xp.empty((batch, C), dt) if C else None,
                xin=xp.empty((batch, D * (1 + C) if cfg.arch == "conv" else D + C), dt) if C else None,
                target=xp.empty((N, D), dt) if L > 1 else None,
                enc_outs=self.encoder.buffers(xp, batch, dt), enc_douts=self.encoder.buffers(xp, batch, dt),
                heads_rep=xp.empty((N, 2 * K), dt) if L > 1 else None,
                dheads_rep=xp.empty((N, 2 * K), dt) if L > 1 else None,
                zin=xp.empty((N, K + C), dt), dzin=xp.empty((N, K + C), dt),
                dec_outs=self.decoder.buffers(xp, N, dt), dec_douts=self.decoder.buffers(xp, N, dt),
                eps=xp.empty((N, K), dt), kl=xp.empty(N, dt), nll=xp.empty(N, dt),
            )
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def encode_into(self, ws: _Workspace, x, y=None):
        """Run the encoder on ``x`` (and labels ``y``); leaves ``[mu | logvar]`` in ``ws.enc_outs[-1]``.

        A conditional model's encoder sees the one-hot label as more input columns (mlp), or as that many
        more channels, constant over the image (conv)."""
        D = self.config.input_dim
        if ws.xin is not None:
            one_hot_into(ws.onehot, y, ws.rows)
            if self.config.arch == "conv":
                pixels = ws.xin.reshape(x.shape[0], D, -1)  # channels-last: channel 0 the image, then the label
                pixels[:, :, 0] = x
                pixels[:, :, 1:] = ws.onehot[:, None, :]
            else:
                ws.xin[:, :D] = x
                ws.xin[:, D:] = ws.onehot
            x = ws.xin
        self.encoder.forward(self.backend, x, ws.enc_outs)

    def forward(self, x, eps=None, y=None) -> _Workspace:
        """Encoder, reparameterization and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype.
            eps: optional ``(L*B, K)`` noise; drawn from :attr:`rng` when None.
            y: ``(B,)`` integer labels of a conditional model, else None.

        Returns:
            The batch's workspace, holding ``mu``, ``logvar``, ``z``, ``logits``
            (the decoder output) and the per-row ``kl`` (``(L*B,)``, nats).
        """
        B, K, L = x.shape[0], self.config.latent_dim, self.config.mc_samples
        ws = self.workspace(B)
        if eps is None:
            self.draw(ws.eps)
        else:
            ws.eps[...] = eps
        self.encode_into(ws, x, y)
        if L > 1:
            repeat_rows(ws.heads_rep, ws.enc_outs[-1])
            repeat_rows(ws.target, x)
        if ws.onehot is not None:
            repeat_rows(ws.zin[:, K:], ws.onehot)
        self.backend.reparameterize_kl(ws.heads, ws.eps, ws.z, ws.kl)
        self.decoder.forward(self.backend, ws.zin, ws.dec_outs)
        return ws

    def backward(self, ws: _Workspace, x, beta: float):
        """Fill :attr:`grad` with d(mean loss)/d(params) for the batch of ``ws``.

        Also writes the per-row ``ws.nll`` (the likelihood op computes loss and
        gradient in one pass) and keeps ``beta`` in ``ws.beta``.
        """
        N, ws.beta = ws.eps.shape[0], beta
        target = x if ws.target is None else ws.target
        self.likelihood(ws.logits, target, 1.0 / N, ws.nll, ws.dlogits, self.decoder_dlogvar)
        self.decoder.backward(self.backend, ws.zin, ws.dec_outs, ws.dec_douts, ws.dzin)
        # Each data point's KL appears in L rows, so each row weighs beta / N.
        self.backend.reparameterize_kl_backward(ws.dz, ws.heads, ws.eps, beta / N, ws.dheads)
        if ws.dheads_rep is not None:  # the gradient of a repeat is the sum over the copies
            L, B = self.config.mc_samples, ws.batch
            self.xp.sum(ws.dheads_rep.reshape(L, B, -1), axis=0, out=ws.enc_douts[-1])
        self.encoder.backward(self.backend, x if ws.xin is None else ws.xin, ws.enc_outs, ws.enc_douts)

    def train_step(self, x, optimizer, beta: float = 1.0, y=None):
        """Forward, backward and one optimiser update for a batch (no checks, no host sync).

        Returns:
            The minimised objective ``nll + beta * kl`` summed over the batch, in
            nats, a 0-d backend array (over the L draws: their mean).
        """
        ws = self.forward(x, y=y)
        self.backward(ws, x, beta)
        optimizer.step(self.grad)
        nll, kl = self.sums(ws)
        return nll + beta * kl

    def sums(self, ws: _Workspace):
        """``(nll, kl)`` of ``ws``'s batch summed over data points (means over the L draws), 0-d arrays."""
        L = self.config.mc_samples
        return ws.nll.sum() / L, ws.kl.sum() / L

    def loss_rows(self, ws: _Workspace):
        """``(L*B,)`` host float64 terms whose sum is the mean loss of ``ws``'s last pass (its backward
        pass, or :meth:`loss_rows_forward`'s), for gradient checks."""
        N = ws.eps.shape[0]
        return np.asarray(self.backend.to_host((ws.nll + ws.beta * ws.kl) / N), np.float64)

    def evaluate(self, batches) -> dict:
        """Test metrics over ``(x, y)`` batches (checked arrays), in nats per data point.

        Returns:
            ``test_loss`` (the negative ELBO, one draw of z per image), ``test_nll``
            (-log p(x|z)), ``test_kl`` (KL(q(z|x) || N(0, I))) and ``test_recon``
            (-log p(x|z = mu), the reconstruction loss of the mean code, as for an autoencoder).
        """
        nll = kl = recon = 0.0
        n = 0
        for x, y in batches:
            a, b = self.sums(self.forward_loss(x, y))
            nll, kl, n = nll + float(a), kl + float(b), n + x.shape[0]
            recon += float(self.sums(self.forward_loss(x, y, eps=0.0))[0])
        return {"test_loss": (nll + kl) / n, "test_nll": nll / n, "test_kl": kl / n, "test_recon": recon / n}

    # -- checked public API ---------------------------------------------------

    def as_labels(self, y, batch: int):
        """``y`` checked (:func:`check_labels`) and as a backend array; None for an unconditional model."""
        return check_labels(y, batch, self.config.n_classes, self.xp)

    def loss_and_grad(self, x, eps=None, beta: float = 1.0, y=None) -> ELBOTerms:
        """Negative ELBO of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder).
            eps: optional ``(L*B, K)`` float noise for the reparameterization.
            beta: weight of the KL term (1 for the ELBO).
            y: ``(B,)`` integer labels in [0, C) for a conditional model.

        Returns:
            :class:`ELBOTerms` of batch means in nats per data point.

        Raises:
            ValueError: wrong shape or dtype, NaN/inf, or (Bernoulli) values
                outside [0, 1] in ``x``; wrong shape or non-finite ``eps``;
                a non-finite or negative ``beta``; missing, unexpected or
                out-of-range labels.
        """
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {beta}")
        x = self.as_batch(x)
        y = self.as_labels(y, x.shape[0])
        if eps is not None:
            shape = (self.config.mc_samples * x.shape[0], self.config.latent_dim)
            eps = self.xp.asarray(eps, dtype=self.dtype)
            if eps.shape != shape or not bool(self.xp.isfinite(eps).all()):
                raise ValueError(f"eps must be finite with shape {shape}, got {eps.shape}")
        ws = self.forward(x, eps, y)
        self.backward(ws, x, beta)
        nll, kl = (float(v) / x.shape[0] for v in self.sums(ws))
        return ELBOTerms(nll + beta * kl, nll, kl)

    def loss_rows_forward(self, x, eps=None, beta: float = 1.0, y=None):
        """:meth:`loss_rows` of a forward pass alone, the terms of :meth:`loss_and_grad`'s loss at these
        weights without its backward pass: the finite differences of :func:`tinyvae.gradcheck.check_model`.
        Raises like :meth:`loss_and_grad` for bad ``x`` or labels."""
        x = self.as_batch(x)
        ws = self.forward_loss(x, self.as_labels(y, x.shape[0]), None if eps is None else self.xp.asarray(eps, self.dtype))
        ws.beta = beta
        return self.loss_rows(ws)

    def forward_loss(self, x, y=None, eps=None) -> _Workspace:
        """:meth:`forward`, then the per-row ``ws.nll`` (no checks, no gradient)."""
        ws = self.forward(x, eps, y)
        target = x if ws.target is None else ws.target
        self.likelihood(ws.logits, target, 0.0, ws.nll, ws.dlogits)
        return ws

    def per_sample_loss(self, x, y=None, seed: int | None = None):
        """Per-data-point ``(nll, kl)`` of a batch, each ``(B,)`` host float arrays in nats.

        The nll is averaged over the L draws of z, taken from ``numpy.random.default_rng(seed)`` (the same
        numbers for the same seed), or from the model's own generator when ``seed`` is None.
        Raises like :meth:`loss_and_grad`.
        """
        x = self.as_batch(x)
        eps = None
        if seed is not None:
            eps = self.xp.empty((self.config.mc_samples * x.shape[0], self.config.latent_dim), self.dtype)
            self.draw(eps, rng=np.random.default_rng(seed))
        ws = self.forward_loss(x, self.as_labels(y, x.shape[0]), eps)
        L, B = self.config.mc_samples, x.shape[0]
        host = self.backend.to_host
        return host(ws.nll).reshape(L, B).mean(axis=0), host(ws.kl)[:B].copy()

    def encode(self, x, y=None):
        """``(mu, logvar)`` of q(z|x), each ``(B, K)`` host arrays. Raises like :meth:`loss_and_grad`."""
        x = self.as_batch(x)
        y = self.as_labels(y, x.shape[0])
        ws = self.workspace(x.shape[0])
        self.encode_into(ws, x, y)
        K, host = self.config.latent_dim, self.backend.to_host
        heads = ws.enc_outs[-1]
        return host(heads[:, :K]).copy(), host(heads[:, K:]).copy()

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

    def reconstruct(self, x, y=None):
        """The mean of p(x|z = mu(x)), ``(B, D)`` host array. Raises like :meth:`loss_and_grad`."""
        return self.decode(self.encode(x, y)[0], y)

    def sample(self, n: int, y=None, seed: int | None = None) -> np.ndarray:
        """``n`` draws from the model: z ~ N(0, I) (from ``numpy.random.default_rng(seed)``, or the model's
        generator when ``seed`` is None) decoded to the mean of p(x|z), a ``(n, D)`` host float array.

        Args:
            y: ``(n,)`` labels in [0, C) for a conditional VAE (required there, refused otherwise).

        Raises:
            ValueError: ``n`` < 1, or bad labels.
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        rng = self.rng if seed is None else np.random.default_rng(seed)
        return self.decode(rng.standard_normal((n, self.config.latent_dim)), y)
