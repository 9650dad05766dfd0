"""What the VAE and the autoencoders share: flat parameters, an encoder and a
decoder MLP, the likelihood p(x|z) of the decoder's output, and the checks on input.

A model is ``encoder: x -> [Linear + ReLU] * n -> its own head`` and
``decoder: z -> [Linear + ReLU] * n (hidden sizes reversed) -> Linear -> (B, D)``.
The head and the terms of the loss are each model's own (:mod:`tinyvae.model`
for the VAE, :mod:`tinyvae.autoencoders` for the autoencoders). The decoder's
output parametrises p(x|z):

* ``bernoulli``: logits, p(x|z) = Bernoulli(sigmoid(logits)) (Kingma & Welling
  2014, Appendix C.1); -log p(x|z) is the BCE summed over pixels;
* ``gaussian``: the mean, p(x|z) = N(mean, exp(decoder_logvar) I) with a fixed
  log-variance (0: half the squared error plus (D/2) log 2 pi nats);
* ``gaussian-learned``: the mean, with a learned per-pixel log-variance, the
  parameter ``decoder.logvar`` ``(D,)`` (K&W Appendix C.2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .backends import Backend, get_backend
from .layers import MLP, Linear
from .params import FlatParams

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes, likelihood and precision shared by every model.

    Attributes:
        input_dim: D, pixels per image (784 for 28x28).
        hidden: encoder hidden sizes, input side first; the decoder mirrors them.
        latent_dim: K, the size of the code z.
        dtype: ``"float32"`` (training) or ``"float64"`` (gradient checks).
        likelihood: one of :data:`LIKELIHOODS`.
        decoder_logvar: the fixed log sigma^2 of the ``gaussian`` likelihood.
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    dtype: str = "float32"
    likelihood: str = "bernoulli"
    decoder_logvar: float = 0.0

    def __post_init__(self):
        sizes = (self.input_dim, self.latent_dim, *self.hidden)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(f"input_dim, latent_dim and hidden must be ints >= 1, got {self}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if not math.isfinite(self.decoder_logvar):
            raise ValueError(f"decoder_logvar must be finite, got {self.decoder_logvar}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def encoder_layout(self, inputs: int) -> tuple[list, int]:
        """The encoder's hidden layers for ``inputs`` input columns: ``(layout, width of the last)``."""
        sizes = (inputs, *self.hidden)
        out = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            out += [(f"encoder.{i}.weight", (b, a)), (f"encoder.{i}.bias", (b,))]
        return out, sizes[-1]

    def decoder_layout(self, inputs: int) -> list:
        """The decoder (and the learned log-variance) for ``inputs`` input columns."""
        sizes = (inputs, *reversed(self.hidden))
        out = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            out += [(f"decoder.{i}.weight", (b, a)), (f"decoder.{i}.bias", (b,))]
        out += [("decoder.logits.weight", (self.input_dim, sizes[-1])), ("decoder.logits.bias", (self.input_dim,))]
        if self.likelihood == "gaussian-learned":
            out.append(("decoder.logvar", (self.input_dim,)))
        return out


class DecoderOutputs:
    """For a model's workspace holding the decoder's buffers ``dec_outs`` and ``dec_douts``."""

    @property
    def logits(self):
        """``(N, D)`` decoder output: logits (Bernoulli) or mean (Gaussian)."""
        return self.dec_outs[-1]

    @property
    def dlogits(self):
        """``(N, D)`` the loss's gradient with respect to :attr:`logits`."""
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


class EncoderDecoder:
    """The parts every model shares; a model adds its encoder head, workspace and loss terms.

    Args:
        config: a :class:`NetworkConfig` (or a model's subclass of it).
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the ``numpy.random.Generator`` used for the initial weights
            and for the noise of each training step.

    Attributes:
        params: :class:`FlatParams`; ``params.data`` is the flat ``(P,)`` buffer.
        grad: ``(P,)`` gradient buffer, same layout.
        decoder: the decoder :class:`MLP`.
        rng: the model's ``numpy.random.Generator``.
    """

    def __init__(self, config: NetworkConfig, backend: Backend | str, seed: int):
        self.config = config
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        xp = self.xp = self.backend.xp
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(seed)
        self.params = FlatParams(config.layout(), xp, self.dtype)
        self.grad = self.params.zeros_like()
        self.init_weights(self.rng)
        self.decoder = MLP([*self.hidden_layers("decoder"), self.layer("decoder.logits", relu=False)])
        if config.likelihood == "gaussian-learned":
            self.decoder_logvar = self.params.view("decoder.logvar")
            self.decoder_dlogvar = self.params.view("decoder.logvar", self.grad)
        else:
            self.decoder_logvar = xp.full(config.input_dim, config.decoder_logvar, self.dtype)
            self.decoder_dlogvar = None
        self._workspaces: dict = {}
        self.row_slice: tuple[int, int, int] | None = None  # data parallel: see draw()

    def save(self, path, names: str | None = None):
        """Write the weights and the config to ``path`` (safetensors, no optimiser state), for
        :func:`tinyvae.load`; ``names="pytorch-example"`` writes a one-hidden-layer VAE under the names of
        PyTorch's example VAE (see :mod:`tinyvae.saving`). Returns the path.

        Raises:
            ValueError: for other ``names``, or a model the example cannot hold; OSError: unwritable path.
        """
        from .saving import save_model

        return save_model(self, path, names)

    def init_weights(self, rng: np.random.Generator):
        """PyTorch's ``nn.Linear`` default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        (Kaiming-uniform with a = sqrt(5), He et al. 2015, reduces to this bound.)
        A learned decoder log-variance starts at 0 (sigma = 1). Drawn on the host
        in float64 and cast, so every backend starts equal.
        """
        host = np.zeros(self.params.size, dtype=np.float64)
        for name in self.params.names:
            weight = name.rsplit(".", 1)[0] + ".weight"
            if weight not in self.params.shapes:
                continue
            lo, hi = self.params.offsets[name]
            bound = 1.0 / math.sqrt(self.params.shapes[weight][1])
            host[lo:hi] = rng.uniform(-bound, bound, size=hi - lo)
        self.params.data[...] = self.xp.asarray(host.astype(self.dtype))

    def layer(self, prefix: str, relu: bool) -> Linear:
        """The :class:`Linear` of parameters ``{prefix}.weight`` and ``{prefix}.bias``."""
        p, g = self.params, self.grad
        w, b = f"{prefix}.weight", f"{prefix}.bias"
        return Linear(p.view(w), p.view(b), p.view(w, g), p.view(b, g), relu=relu)

    def hidden_layers(self, side: str) -> list[Linear]:
        """The ReLU layers ``{side}.0 ...`` of the encoder or decoder."""
        return [self.layer(f"{side}.{i}", relu=True) for i in range(len(self.config.hidden))]

    def draw(self, out, kind: str = "standard_normal", rng: np.random.Generator | None = None):
        """Fill ``out`` with ``rng.standard_normal`` (N(0, 1)) or ``rng.random`` (U[0, 1)) draws of its dtype,
        drawn on the host from ``rng`` (default: the model's generator).

        ``out`` is ``(L*b, ...)``, draw l of row j in row ``l*b + j`` (L = 1 for most draws). Under
        data-parallel training (:mod:`tinyvae.distributed`) :attr:`row_slice` is ``(lo, hi, n)``: this
        rank holds rows lo:hi of a batch of n. The draw is then the whole batch's, ``(L*n, ...)``, and
        ``out`` receives rows lo:hi of each of its L blocks, so every rank makes the draws of a
        one-process run, and keeps its own.
        """
        rng = self.rng if rng is None else rng
        fill = getattr(rng, kind)
        if self.row_slice is not None:
            lo, hi, n = self.row_slice
            whole = fill((out.shape[0] // (hi - lo), n, *out.shape[1:]), dtype=out.dtype)
            mine = whole[:, lo:hi].reshape(out.shape)
            out[...] = mine if isinstance(out, np.ndarray) else self.xp.asarray(mine)
        elif isinstance(out, np.ndarray):
            fill(dtype=out.dtype, out=out)
        else:
            out[...] = self.xp.asarray(fill(out.shape, dtype=out.dtype))

    def likelihood(self, out, x, scale, nll_out, dout_out, dlogvar_out=None):
        """``nll_out (N,) = -log p(x|z)`` per row in nats and ``dout_out = scale * d nll / d out``.

        ``out`` is the decoder output ``(N, D)``; ``dlogvar_out`` receives the
        learned log-variance's gradient (``gaussian-learned`` only).
        """
        if self.config.likelihood == "bernoulli":
            self.backend.bce_with_logits(out, x, scale, nll_out, dout_out)
        else:
            self.backend.gaussian_nll(out, x, self.decoder_logvar, scale, nll_out, dout_out, dlogvar_out)

    def as_batch(self, x):
        """``x`` checked (:func:`check_batch`) and as a backend array of the model's dtype."""
        x = self.xp.asarray(x)
        check_batch(x, self.config.input_dim, self.xp, binary_targets=self.config.likelihood == "bernoulli")
        return x.astype(self.dtype, copy=False)

    def decoder_input(self, z, y):
        """The decoder's input for codes ``z`` ``(B, K)``; a model with labels adds their columns."""
        if y is not None:
            raise ValueError("labels given to an unconditional model")
        return z

    def decode(self, z, y=None):
        """The mean of p(x|z): ``sigmoid(logits)`` (Bernoulli) or the Gaussian mean, ``(B, D)`` host array.

        Args:
            z: ``(B, K)`` codes; y: ``(B,)`` labels for a conditional model.

        Raises:
            ValueError: if ``z`` is not a finite ``(B, K)`` array, or for bad labels.
        """
        K = self.config.latent_dim
        z = self.xp.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != K or not bool(self.xp.isfinite(z).all()):
            raise ValueError(f"expected finite z of shape (B, {K}), got {z.shape}")
        zin = self.decoder_input(z, y)
        return self.output_mean(self.decoder.forward(self.backend, zin, self.decoder.buffers(self.xp, z.shape[0], self.dtype)))

    def output_mean(self, out):
        """The mean of p(x|z) for decoder output ``out`` ``(B, D)``, as a new host array."""
        if self.config.likelihood != "bernoulli":
            return self.backend.to_host(out).copy()
        # sigmoid(l) = (1 + tanh(l/2)) / 2: no overflow for any finite l.
        return self.backend.to_host(0.5 * (1.0 + self.xp.tanh(0.5 * out)))
