"""The VAE of Kingma & Welling (2014), written once against an array module.

Encoder: ``x (B, D) -> [Linear + ReLU] * n -> Linear -> (mu, logvar)``, both ``(B, K)``;
the two heads are one ``(2K, H)`` GEMM over adjacent storage.
Reparameterization: ``z = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)``.
Decoder: ``z (B, K) -> [Linear + ReLU] * n (hidden sizes reversed) -> Linear -> logits (B, D)``,
a Bernoulli decoder p(x|z) = Bernoulli(sigmoid(logits)).

Loss per sample, in nats: ``bce + beta * kl`` = the negative ELBO for beta = 1
(K&W eq. 10 with L = 1; Higgins et al. 2017 for beta). The hand-derived
gradient is that of the batch mean of this loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from .backends import Backend, get_backend
from .layers import MLP, Linear
from .params import FlatParams


@dataclass(frozen=True)
class VAEConfig:
    """Sizes and precision of a :class:`VAE`.

    Attributes:
        input_dim: D, pixels per image (784 for 28x28).
        hidden: encoder hidden sizes, input side first; the decoder mirrors them.
        latent_dim: K, the size of z.
        dtype: ``"float32"`` (training) or ``"float64"`` (gradient checks).
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        sizes = (self.input_dim, self.latent_dim, *self.hidden)
        if any(s < 1 for s in sizes):
            raise ValueError(f"all sizes must be >= 1, got {self}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        D, K, hid = self.input_dim, self.latent_dim, self.hidden
        out = []
        for i, (a, b) in enumerate(zip((D, *hid), hid)):
            out += [(f"encoder.{i}.weight", (b, a)), (f"encoder.{i}.bias", (b,))]
        H = hid[-1] if hid else D
        # mu and logvar stored back to back so the heads run as one (2K, H) GEMM.
        out += [
            ("encoder.mu.weight", (K, H)),
            ("encoder.logvar.weight", (K, H)),
            ("encoder.mu.bias", (K,)),
            ("encoder.logvar.bias", (K,)),
        ]
        dec = tuple(reversed(hid))
        for i, (a, b) in enumerate(zip((K, *dec), dec)):
            out += [(f"decoder.{i}.weight", (b, a)), (f"decoder.{i}.bias", (b,))]
        out += [("decoder.logits.weight", (D, dec[-1] if dec else K)), ("decoder.logits.bias", (D,))]
        return out


class ELBOTerms(NamedTuple):
    """Batch means, in nats per sample: ``loss = bce + beta * kl``."""

    loss: float
    bce: float
    kl: float


@dataclass
class _Workspace:
    """Every activation and activation gradient of one batch size, made once."""

    enc_outs: list
    enc_douts: list
    dec_outs: list
    dec_douts: list
    eps: object
    z: object
    dz: object
    kl: object
    bce: object
    mu: object = field(init=False)
    logvar: object = field(init=False)
    dmu: object = field(init=False)
    dlogvar: object = field(init=False)

    def __post_init__(self):
        K = self.z.shape[1]
        heads, dheads = self.enc_outs[-1], self.enc_douts[-1]
        self.mu, self.logvar = heads[:, :K], heads[:, K:]
        self.dmu, self.dlogvar = dheads[:, :K], dheads[:, K:]

    @property
    def logits(self):
        return self.dec_outs[-1]

    @property
    def dlogits(self):
        return self.dec_douts[-1]


def check_batch(x, input_dim: int, xp, *, binary_targets: bool = True):
    """Validate a batch of data; raise ``ValueError`` naming what is wrong.

    Checks: a 2-D float array ``(B, input_dim)`` with B >= 1, all values finite,
    and (for the Bernoulli decoder) all values in [0, 1].
    """
    if not hasattr(x, "ndim") or x.ndim != 2 or x.shape[1] != input_dim or x.shape[0] < 1:
        raise ValueError(f"expected x of shape (B, {input_dim}) with B >= 1, got {getattr(x, 'shape', type(x))}")
    if x.dtype.kind != "f":
        raise ValueError(f"expected floating-point x, got dtype {x.dtype}")
    if not bool(xp.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    if binary_targets and (bool((x < 0).any()) or bool((x > 1).any())):
        raise ValueError(
            f"the Bernoulli decoder needs x in [0, 1]; got values in [{float(x.min())}, {float(x.max())}]"
        )


class VAE:
    """A Gaussian-encoder, Bernoulli-decoder VAE with hand-derived gradients.

    Args:
        config: sizes and dtype (:class:`VAEConfig`).
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the ``numpy.random.Generator`` used for the initial weights
            and, unless the caller passes ``eps``, for the noise of each step.

    Attributes:
        params: :class:`FlatParams`; ``params.data`` is the flat ``(P,)`` buffer.
        grad: ``(P,)`` gradient buffer, same layout, filled by :meth:`loss_and_grad`.
        rng: the model's ``numpy.random.Generator``.
    """

    def __init__(self, config: VAEConfig = VAEConfig(), backend: Backend | str = "numpy", seed: int = 1):
        self.config = config
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        xp = self.xp = self.backend.xp
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(seed)
        self.params = FlatParams(config.layout(), xp, self.dtype)
        self.grad = self.params.zeros_like()
        self.init_weights(self.rng)
        self.encoder = self._mlp("encoder", len(config.hidden), heads=True)
        self.decoder = self._mlp("decoder", len(config.hidden), heads=False)
        self._workspaces: dict[int, _Workspace] = {}

    # -- construction ---------------------------------------------------------
    def init_weights(self, rng: np.random.Generator):
        """PyTorch's ``nn.Linear`` default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        (Kaiming-uniform with a = sqrt(5), He et al. 2015, reduces to this bound.)
        Drawn on the host in float64 and cast, so every backend starts equal.
        """
        host = np.empty(self.params.size, dtype=np.float64)
        for name, shape in self.params.shapes.items():
            lo, hi = self.params.offsets[name]
            fan_in = self.params.shapes[name.rsplit(".", 1)[0] + ".weight"][1]
            bound = 1.0 / math.sqrt(fan_in)
            host[lo:hi] = rng.uniform(-bound, bound, size=hi - lo)
        self.params.data[...] = self.xp.asarray(host.astype(self.dtype))

    def _mlp(self, side: str, n_hidden: int, heads: bool) -> MLP:
        p, g = self.params, self.grad
        layers = [
            Linear(p.view(f"{side}.{i}.weight"), p.view(f"{side}.{i}.bias"),
                   p.view(f"{side}.{i}.weight", g), p.view(f"{side}.{i}.bias", g), relu=True)
            for i in range(n_hidden)
        ]
        if heads:
            K2, H = 2 * self.config.latent_dim, p.shapes["encoder.mu.weight"][1]
            w = ("encoder.mu.weight", "encoder.logvar.weight", (K2, H))
            b = ("encoder.mu.bias", "encoder.logvar.bias", (K2,))
            layers.append(Linear(p.span(*w), p.span(*b), p.span(*w, buffer=g), p.span(*b, buffer=g), relu=False))
        else:
            n = "decoder.logits"
            layers.append(Linear(p.view(f"{n}.weight"), p.view(f"{n}.bias"),
                                 p.view(f"{n}.weight", g), p.view(f"{n}.bias", g), relu=False))
        return MLP(layers)

    def workspace(self, batch: int) -> _Workspace:
        """The buffers for batch size ``batch``, made on first use and kept."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, K = self.xp, self.dtype, self.config.latent_dim
            ws = _Workspace(
                enc_outs=self.encoder.buffers(xp, batch, dt), enc_douts=self.encoder.buffers(xp, batch, dt),
                dec_outs=self.decoder.buffers(xp, batch, dt), dec_douts=self.decoder.buffers(xp, batch, dt),
                eps=xp.empty((batch, K), dt), z=xp.empty((batch, K), dt), dz=xp.empty((batch, K), dt),
                kl=xp.empty(batch, dt), bce=xp.empty(batch, dt),
            )
            self._workspaces[batch] = ws
        return ws

    # -- the pass -------------------------------------------------------------
    def draw_eps(self, out):
        """Fill ``out`` with N(0, I) noise from the model's generator."""
        if self.xp is np:
            self.rng.standard_normal(dtype=self.dtype, out=out)
        else:
            out[...] = self.xp.asarray(self.rng.standard_normal(out.shape, dtype=self.dtype))

    def forward(self, x, eps=None) -> _Workspace:
        """Encoder, reparameterization and decoder for one batch (no checks).

        Args:
            x: ``(B, D)`` array of the backend, the model's dtype, values in [0, 1].
            eps: optional ``(B, K)`` noise; drawn from :attr:`rng` when None.

        Returns:
            The batch's workspace, holding ``mu``, ``logvar``, ``z``, ``logits``,
            the per-sample ``kl`` and ``bce`` (``(B,)``, nats) and ``eps``.
        """
        ws = self.workspace(x.shape[0])
        if eps is None:
            self.draw_eps(ws.eps)
        else:
            ws.eps[...] = eps
        self.encoder.forward(self.backend, x, ws.enc_outs)
        self.backend.reparameterize_kl(ws.mu, ws.logvar, ws.eps, ws.z, ws.kl)
        self.decoder.forward(self.backend, ws.z, ws.dec_outs)
        return ws

    def backward(self, ws: _Workspace, x, beta: float):
        """Fill :attr:`grad` with d(mean loss)/d(params) for the batch of ``ws``.

        Also writes the per-sample ``ws.bce`` (the BCE op computes loss and
        gradient in one pass).
        """
        B = x.shape[0]
        self.backend.bce_with_logits(ws.logits, x, 1.0 / B, ws.bce, ws.dlogits)
        self.decoder.backward(self.backend, ws.z, ws.dec_outs, ws.dec_douts, ws.dz)
        self.backend.reparameterize_kl_backward(ws.dz, ws.mu, ws.logvar, ws.eps, beta / B, ws.dmu, ws.dlogvar)
        self.encoder.backward(self.backend, x, ws.enc_outs, ws.enc_douts)

    def train_step(self, x, optimizer, beta: float = 1.0):
        """Forward, backward and one optimiser update for a batch (no checks, no host sync).

        Returns:
            ``(bce_sum, kl_sum)``: 0-d backend arrays, nats summed over the batch.
        """
        ws = self.forward(x)
        self.backward(ws, x, beta)
        optimizer.step(self.grad)
        return ws.bce.sum(), ws.kl.sum()

    # -- checked public API ---------------------------------------------------
    def _as_batch(self, x):
        x = self.xp.asarray(x)
        check_batch(x, self.config.input_dim, self.xp)
        return x.astype(self.dtype, copy=False)

    def loss_and_grad(self, x, eps=None, beta: float = 1.0) -> ELBOTerms:
        """Negative ELBO of a batch and its gradient (into :attr:`grad`).

        Args:
            x: ``(B, D)`` float data in [0, 1].
            eps: optional ``(B, K)`` float noise for the reparameterization.
            beta: weight of the KL term (1 for the ELBO).

        Returns:
            :class:`ELBOTerms` of batch means in nats per sample.

        Raises:
            ValueError: wrong shape or dtype, NaN/inf, or values outside [0, 1]
                in ``x``; wrong shape or non-finite ``eps``.
        """
        x = self._as_batch(x)
        if eps is not None:
            eps = self.xp.asarray(eps, dtype=self.dtype)
            if eps.shape != (x.shape[0], self.config.latent_dim) or not bool(self.xp.isfinite(eps).all()):
                raise ValueError(f"eps must be finite with shape {(x.shape[0], self.config.latent_dim)}, got {eps.shape}")
        ws = self.forward(x, eps)
        self.backward(ws, x, beta)
        bce, kl = float(ws.bce.mean()), float(ws.kl.mean())
        return ELBOTerms(bce + beta * kl, bce, kl)

    def forward_loss(self, x) -> _Workspace:
        """:meth:`forward`, then the per-sample ``ws.bce`` (no checks, no gradient).

        One draw of z per sample, as in the training loss; used for evaluation.
        """
        ws = self.forward(x)
        self.backend.bce_with_logits(ws.logits, x, 0.0, ws.bce, ws.dlogits)
        return ws

    def per_sample_loss(self, x):
        """Per-sample ``(bce, kl)`` of a batch, each ``(B,)`` host float arrays in nats.

        Raises like :meth:`loss_and_grad`.
        """
        ws = self.forward_loss(self._as_batch(x))
        return self.backend.to_host(ws.bce).copy(), self.backend.to_host(ws.kl).copy()

    def encode(self, x):
        """``(mu, logvar)`` of q(z|x), each ``(B, K)`` host arrays. Raises like :meth:`loss_and_grad`."""
        x = self._as_batch(x)
        ws = self.workspace(x.shape[0])
        self.encoder.forward(self.backend, x, ws.enc_outs)
        return self.backend.to_host(ws.mu).copy(), self.backend.to_host(ws.logvar).copy()

    def decode(self, z):
        """Bernoulli means ``sigmoid(logits)`` of p(x|z), ``(B, D)`` host array, for ``z`` ``(B, K)``.

        Raises:
            ValueError: if ``z`` is not a finite ``(B, K)`` array.
        """
        z = self.xp.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim or not bool(self.xp.isfinite(z).all()):
            raise ValueError(f"expected finite z of shape (B, {self.config.latent_dim}), got {z.shape}")
        ws = self.workspace(z.shape[0])
        logits = self.decoder.forward(self.backend, z, ws.dec_outs)
        # sigmoid(l) = (1 + tanh(l/2)) / 2: no overflow for any finite l.
        return self.backend.to_host(0.5 * (1.0 + self.xp.tanh(0.5 * logits)))
