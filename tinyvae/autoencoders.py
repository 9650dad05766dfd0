"""The deterministic autoencoders of the seeds, on the layers, likelihoods and
training loop the VAE uses (:mod:`tinyvae.network`).

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
  Sec. 2.3). Corruptions (:data:`CORRUPTIONS`), with ``noise`` = nu:

  - ``mask``: a fixed number round(nu D) of each image's pixels, chosen at
    random, are set to 0 (Vincent et al. 2008, Sec. 2.3);
  - ``gaussian``: x~ = x + nu * N(0, I) (Vincent et al. 2010, "Stacked
    Denoising Autoencoders", Sec. 4.2);
  - ``salt-and-pepper``: round(nu D) pixels, chosen at random, are set to 0 or 1
    by a fair coin (Vincent et al. 2010, Sec. 4.2).

  Test-time evaluation never corrupts.
* ``sparse-ae``: sigmoid code, plus ``sparsity_weight * sum_j KL(rho || rho_hat_j)``
  with ``rho_hat_j`` the batch mean of unit j (Ng, "Sparse autoencoder", CS294A
  lecture notes 2011, Sec. 3): :func:`sparsity_penalty`.
* ``cae``: a single sigmoid encoder layer, plus ``contractive_weight * ||J(x)||_F^2``
  averaged over the batch, J the Jacobian dh/dx (Rifai et al. 2011,
  "Contractive Auto-Encoders", the CAE criterion and its closed form for a
  sigmoid encoder): :func:`contractive_penalty`.

The penalties act on the whole encoder map x -> h only where that map is one
sigmoid layer: that is why ``cae`` refuses hidden layers. With ReLU layers in
front, the code layer's Jacobian could be shrunk at no cost by scaling the
layers before it up and the code weights down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend
from .layers import Sequential
from .network import DecoderOutputs, EncoderDecoder, NetworkConfig

AE_MODELS = ("ae", "dae", "sparse-ae", "cae")
CORRUPTIONS = ("mask", "gaussian", "salt-and-pepper")
CODE_ACTIVATIONS = ("sigmoid", "linear")
DENOISING_SEED = 2008  # the corruption of the test set for a dae's test_denoising


@dataclass(frozen=True)
class AEConfig(NetworkConfig):
    """A :class:`tinyvae.network.NetworkConfig` and the autoencoders' own settings.

    Attributes:
        model: one of :data:`AE_MODELS`.
        code_activation: ``sigmoid`` or ``linear`` (``sparse-ae`` and ``cae`` need sigmoid).
        corruption: ``dae`` only, one of :data:`CORRUPTIONS`.
        noise: ``dae`` only: the corrupted fraction (mask, salt-and-pepper, in
            [0, 1]) or the standard deviation (gaussian, >= 0).
        rho: ``sparse-ae`` only: the target mean activation, in (0, 1).
        sparsity_weight: ``sparse-ae`` only: the weight of the sparsity penalty (>= 0).
        contractive_weight: ``cae`` only: lambda, the weight of ||J||_F^2 (>= 0).

    Raises:
        ValueError: for a setting out of range, or a model that cannot be built
            as asked (``cae`` with hidden layers; a linear code for ``sparse-ae`` or ``cae``).
    """

    model: str = "ae"
    code_activation: str = "sigmoid"
    corruption: str = "mask"
    noise: float = 0.3
    rho: float = 0.05
    sparsity_weight: float = 10.0
    contractive_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.model not in AE_MODELS:
            raise ValueError(f"model must be one of {', '.join(AE_MODELS)}, got {self.model!r}")
        if self.code_activation not in CODE_ACTIVATIONS:
            raise ValueError(f"code_activation must be one of {', '.join(CODE_ACTIVATIONS)}, "
                             f"got {self.code_activation!r}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {self.corruption!r}")
        if not (0 <= self.noise <= (np.inf if self.corruption == "gaussian" else 1)) or not np.isfinite(self.noise):
            raise ValueError(f"noise must be a finite std >= 0 (gaussian) or a fraction in [0, 1], got {self.noise}")
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must lie in (0, 1), got {self.rho}")
        if not (self.sparsity_weight >= 0 and self.contractive_weight >= 0):
            raise ValueError("sparsity_weight and contractive_weight must be >= 0")
        if self.model in ("sparse-ae", "cae") and self.code_activation != "sigmoid":
            raise ValueError(f"{self.model} needs a sigmoid code (its penalty is defined for units in (0, 1))")
        if self.model == "cae" and self.arch != "mlp":
            raise ValueError("cae: the contractive penalty is in closed form for an encoder that is one sigmoid "
                             f"layer (Rifai et al. 2011); arch {self.arch} puts convolutions in front. Use arch mlp")
        if self.model == "cae" and self.hidden:
            raise ValueError(
                "cae: the contractive penalty is in closed form for an encoder that is one sigmoid layer "
                f"(Rifai et al. 2011); got hidden layers {self.hidden}. Use hidden=() (--hidden '')"
            )

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        out, H = self.encoder_layout()
        K = self.latent_dim
        out += [("encoder.code.weight", (K, H)), ("encoder.code.bias", (K,))]
        return out + self.decoder_layout(K)


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


@dataclass
class _Workspace(DecoderOutputs):
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
    """One of the four autoencoders of :data:`AE_MODELS` (see the module doc).

    Args:
        config: :class:`AEConfig`.
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the generator of the initial weights and of the corruption.

    Attributes:
        params, grad: flat ``(P,)`` buffers; encoder, decoder: :class:`tinyvae.layers.Sequential`.
    """

    def __init__(self, config: AEConfig = AEConfig(), backend: Backend | str = "numpy", seed: int = 1):
        super().__init__(config, backend, seed)
        self.encoder = Sequential([*self.encoder_body(), self.layer("encoder.code", relu=False, image_in=config.flat_image())])
        self.sigmoid = config.code_activation == "sigmoid"

    def workspace(self, batch: int) -> _Workspace:
        """The buffers for batch size ``batch``, made on first use and kept."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, cfg = self.xp, self.dtype, self.config
            D, K = cfg.input_dim, cfg.latent_dim
            dae = cfg.model == "dae"
            enc_outs, enc_douts = self.encoder.buffers(xp, batch, dt), self.encoder.buffers(xp, batch, dt)
            chosen = dae and cfg.corruption != "gaussian"  # a random choice of pixels per row
            ws = _Workspace(
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
    def corrupt_into(self, x, ws: _Workspace, rng: np.random.Generator):
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

    def encode_into(self, ws: _Workspace, inp):
        """Run the encoder on ``inp`` ``(B, D)``; leaves the code h in ``ws.code``."""
        ws.enc_in = inp
        self.encoder.forward(self.backend, inp, ws.enc_outs)
        if self.sigmoid:
            sigmoid_into(ws.enc_outs[-1], ws.code, self.xp)

    def forward(self, x, corrupted=None, train: bool = False) -> _Workspace:
        """Encoder, code and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype.
            corrupted: ``dae`` only: the encoder's input x~, held fixed (gradient checks).
            train: ``dae`` only: corrupt ``x`` afresh when ``corrupted`` is None;
                without it the encoder sees the clean ``x`` (evaluation).

        Returns:
            The batch's workspace, holding ``code`` (h) and ``logits`` (the decoder output).
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

    def penalty(self, ws: _Workspace, grad: bool):
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

    def backward(self, ws: _Workspace, x):
        """Fill :attr:`grad` with d(mean loss)/d(params) for the batch of ``ws``.

        Also writes the per-image ``ws.nll`` and the penalty ``ws.penalty``.
        """
        B, xp = ws.batch, self.xp
        self.likelihood(ws.logits, x, 1.0 / B, ws.nll, ws.dlogits, self.decoder_dlogvar)
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

    def train_step(self, x, optimizer):
        """Forward (a fresh corruption for ``dae``), backward and one optimiser update (no checks).

        Returns:
            The minimised objective summed over the batch (``nll`` plus the
            penalty, per image), in nats, a 0-d backend array.
        """
        ws = self.forward(x, train=True)
        self.backward(ws, x)
        optimizer.step(self.grad)
        return ws.nll.sum() + x.shape[0] * ws.penalty

    def loss_rows(self, ws: _Workspace):
        """Host float64 terms whose sum is the mean loss of ``ws``'s last pass (for gradient checks)."""
        rows = self.backend.to_host(ws.nll / ws.batch)
        return np.append(np.asarray(rows, np.float64), float(ws.penalty))

    # -- checked public API ---------------------------------------------------
    def loss_and_grad(self, x, corrupted=None) -> tuple[float, float]:
        """Mean loss of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder).
            corrupted: ``dae`` only: the encoder's input ``(B, D)``, finite; drawn
                afresh from the model's generator when None.

        Returns:
            ``(loss, nll)``: the objective and the reconstruction loss, nats per image.

        Raises:
            ValueError: bad ``x`` (as :func:`tinyvae.network.check_batch`), or a
                ``corrupted`` of the wrong shape, non-finite, or given to a model other than dae.
        """
        x = self.as_batch(x)
        if corrupted is not None:
            if self.config.model != "dae":
                raise ValueError(f"a corrupted input is for the dae, not {self.config.model}")
            corrupted = self.xp.asarray(corrupted, dtype=self.dtype)
            if corrupted.shape != x.shape or not bool(self.xp.isfinite(corrupted).all()):
                raise ValueError(f"corrupted must be finite with shape {x.shape}, got {corrupted.shape}")
        ws = self.forward(x, corrupted, train=True)
        self.backward(ws, x)
        nll = float(ws.nll.sum()) / x.shape[0]
        return nll + float(ws.penalty), nll

    def loss_rows_forward(self, x, corrupted=None):
        """:meth:`loss_rows` of a forward pass alone, the terms of :meth:`loss_and_grad`'s loss at these
        weights without its backward pass: the finite differences of :func:`tinyvae.gradcheck.check_model`.
        Raises like :meth:`loss_and_grad` for bad ``x``."""
        x = self.as_batch(x)
        return self.loss_rows(self.forward_loss(x, None if corrupted is None else self.xp.asarray(corrupted, self.dtype)))

    def forward_loss(self, x, corrupted=None) -> _Workspace:
        """:meth:`forward` on the clean ``x`` (or, ``dae``, on a given ``corrupted`` input), then ``ws.nll``
        and ``ws.penalty`` (no checks, no gradient)."""
        ws = self.forward(x, corrupted)
        self.likelihood(ws.logits, x, 0.0, ws.nll, ws.dlogits)
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
                self.likelihood(ws.logits, x, 0.0, ws.nll, ws.dlogits)
                sums["denoising"] += float(ws.nll.sum())
        metrics = {"test_loss": sums["recon"] / n, "test_recon": sums["recon"] / n,
                   "test_penalty": sums["penalty"] / n, "test_mean_activation": sums["activation"] / n}
        if dae:
            metrics["test_denoising"] = sums["denoising"] / n
        return metrics

    def encode(self, x):
        """The code h ``(B, K)`` of clean ``x``, a host array. Raises like :meth:`loss_and_grad`."""
        x = self.as_batch(x)
        ws = self.workspace(x.shape[0])
        self.encode_into(ws, x)
        return self.backend.to_host(ws.code).copy()

    def reconstruct(self, x, y=None):
        """The mean of p(x|z = h(x)), ``(B, D)`` host array. Raises like :meth:`loss_and_grad`."""
        return self.decode(self.encode(x), y)
