"""What the VAE and the autoencoders share: flat parameters, an encoder and a
decoder (:class:`tinyvae.layers.Sequential`), the likelihood p(x|z) of the
decoder's output, and the checks on input.

Two architectures (``arch``), each a sequence of layers with shapes:

* ``mlp``: ``encoder: x -> [Linear + ReLU] * n -> its own head`` and
  ``decoder: z -> [Linear + ReLU] * n (hidden sizes reversed) -> Linear -> (B, D)``;
* ``conv``: for images ``(H, W)`` and ``channels`` c_1..c_n, ``encoder: x ->
  [Conv2d(4x4, stride 2, padding 1) + ReLU] * n -> its own head`` (28x28 ->
  14x14 -> 7x7 for two), the convolutions' output flattened channels-first as
  PyTorch's ``Flatten``; ``decoder: z -> Linear + ReLU to c_n x H_n x W_n ->
  [ConvTranspose2d + ReLU] * (n - 1) -> ConvTranspose2d -> (B, D)``, mirroring
  it (each ``output_padding`` restores the size its convolution halved,
  so any image size works). The layers of DCGAN (Radford et al. 2016) as
  pythae and most VAE courses use them.

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
from .backends.reference import ConvGeometry
from .layers import Conv2d, ConvTranspose2d, Linear, Sequential
from .params import FlatParams

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")
ARCHS = ("mlp", "conv")
KERNEL, STRIDE, PADDING = 4, 2, 1  # every convolution of the conv architecture


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
        arch: one of :data:`ARCHS` (see the module doc).
        channels: ``conv``: the convolutions' output channels, input side first.
        image_shape: ``conv``: ``(H, W)`` of the images, ``H * W = input_dim``.

    Raises:
        ValueError: a size that is not an int >= 1, an unknown name, or (conv) images that the
            convolutions halve below 1 pixel, ``hidden`` layers or no ``channels``.
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    dtype: str = "float32"
    likelihood: str = "bernoulli"
    decoder_logvar: float = 0.0
    arch: str = "mlp"
    channels: tuple[int, ...] = ()
    image_shape: tuple[int, ...] = ()

    def __post_init__(self):
        sizes = (self.input_dim, self.latent_dim, *self.hidden, *self.channels, *self.image_shape)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(f"input_dim, latent_dim, hidden, channels and image_shape must be ints >= 1, got {self}")
        for name in ("hidden", "channels", "image_shape"):
            object.__setattr__(self, name, tuple(int(h) for h in getattr(self, name)))
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.arch == "conv":
            if self.hidden or not self.channels:
                raise ValueError(f"the conv architecture takes channels (e.g. (32, 64)) and no hidden layers; got "
                                 f"channels {self.channels}, hidden {self.hidden}")
            if len(self.image_shape) != 2 or math.prod(self.image_shape) != self.input_dim:
                raise ValueError(f"the conv architecture needs image_shape (H, W) with H * W = input_dim "
                                 f"{self.input_dim}; got {self.image_shape}")
            if min(self.conv_sizes()[-1]) < 1:
                raise ValueError(f"{len(self.channels)} stride-2 convolutions halve {self.image_shape} images to "
                                 f"{self.conv_sizes()[-1]}; use fewer channels")
        elif self.channels or self.image_shape:
            raise ValueError("channels and image_shape are for arch conv")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if not math.isfinite(self.decoder_logvar):
            raise ValueError(f"decoder_logvar must be finite, got {self.decoder_logvar}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("hidden", "channels", "image_shape"):
            d[name] = list(d[name])
        return d

    def conv_sizes(self) -> list[tuple[int, int]]:
        """``conv``: the image size ``(H, W)`` before each convolution and after the last."""
        sizes = [tuple(self.image_shape)]
        for _ in self.channels:
            sizes.append(tuple((n + 2 * PADDING - KERNEL) // STRIDE + 1 for n in sizes[-1]))
        return sizes

    def conv_geometry(self, i: int, in_channels: int) -> ConvGeometry:
        """``conv``: the geometry of the encoder's convolution i (and of the decoder's layer mirroring it)."""
        H, W = self.conv_sizes()[i]
        return ConvGeometry(H, W, in_channels, KERNEL, KERNEL, STRIDE, PADDING)

    def flat_image(self) -> tuple[int, int] | None:
        """``conv``: ``(pixels, channels)`` of the last convolution's output, the image that the
        encoder's head reads and the decoder's first layer writes (:attr:`tinyvae.layers.Linear.image_in`);
        None for ``mlp``."""
        if self.arch != "conv":
            return None
        return math.prod(self.conv_sizes()[-1]), self.channels[-1]

    def encoder_layout(self, n_classes: int = 0) -> tuple[list, int]:
        """The encoder's layers before its head: ``(layout, width of their output)``. The input is the
        image and, for a conditional model, its one-hot label of ``n_classes``: more columns (mlp), or as
        many constant channels (conv)."""
        if self.arch == "conv":
            chans = (1 + n_classes, *self.channels)
            out = []
            for i, (a, b) in enumerate(zip(chans, chans[1:])):
                out += [(f"encoder.{i}.weight", (b, a, KERNEL, KERNEL)), (f"encoder.{i}.bias", (b,))]
            return out, self.channels[-1] * math.prod(self.conv_sizes()[-1])
        sizes = (self.input_dim + n_classes, *self.hidden)
        out = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            out += [(f"encoder.{i}.weight", (b, a)), (f"encoder.{i}.bias", (b,))]
        return out, sizes[-1]

    def decoder_layout(self, inputs: int) -> list:
        """The decoder (and the learned log-variance) for ``inputs`` input columns."""
        out = []
        if self.arch == "conv":  # Linear to the last convolution's output, then transposed convolutions
            c, flat = self.channels, self.encoder_layout()[1]
            out += [("decoder.0.weight", (flat, inputs)), ("decoder.0.bias", (flat,))]
            for i in range(1, len(c)):
                out += [(f"decoder.{i}.weight", (c[-i], c[-i - 1], KERNEL, KERNEL)), (f"decoder.{i}.bias", (c[-i - 1],))]
            out += [("decoder.logits.weight", (c[0], 1, KERNEL, KERNEL)), ("decoder.logits.bias", (1,))]
        else:
            sizes = (inputs, *reversed(self.hidden))
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
        decoder: the decoder :class:`tinyvae.layers.Sequential`.
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
        self.decoder = Sequential(self.decoder_layers())
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
        """PyTorch's default for ``nn.Linear``, ``nn.Conv2d`` and ``nn.ConvTranspose2d``: W and b ~
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the product of the weight's shape after its first axis
        (``in``; ``C_in kh kw``; for the transposed convolution, as PyTorch counts it, ``C_out kh kw``).

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
            bound = 1.0 / math.sqrt(math.prod(self.params.shapes[weight][1:]))
            host[lo:hi] = rng.uniform(-bound, bound, size=hi - lo)
        self.params.data[...] = self.xp.asarray(host.astype(self.dtype))

    def layer(self, prefix: str, relu: bool, **image) -> Linear:
        """The :class:`Linear` of parameters ``{prefix}.weight`` and ``{prefix}.bias``; ``image`` its
        ``image_in`` or ``image_out``."""
        p, g = self.params, self.grad
        w, b = f"{prefix}.weight", f"{prefix}.bias"
        return Linear(p.view(w), p.view(b), p.view(w, g), p.view(b, g), relu=relu, **image)

    def conv(self, prefix: str, g: ConvGeometry, relu: bool, transposed: bool = False):
        """The :class:`Conv2d` (or :class:`ConvTranspose2d`) of parameters ``{prefix}.weight`` and ``.bias``."""
        p, gr = self.params, self.grad
        w, b = f"{prefix}.weight", f"{prefix}.bias"
        kind = ConvTranspose2d if transposed else Conv2d
        return kind(p.view(w), p.view(b), p.view(w, gr), p.view(b, gr), g, relu=relu)

    def encoder_body(self, n_classes: int = 0) -> list:
        """The encoder's layers before its head (see the module doc), for inputs with ``n_classes`` label
        columns (mlp) or channels (conv)."""
        cfg = self.config
        if cfg.arch == "mlp":
            return [self.layer(f"encoder.{i}", relu=True) for i in range(len(cfg.hidden))]
        chans = (1 + n_classes, *cfg.channels)
        return [self.conv(f"encoder.{i}", cfg.conv_geometry(i, chans[i]), relu=True) for i in range(len(cfg.channels))]

    def decoder_layers(self) -> list:
        """The decoder's layers, its output ``(B, D)`` last (see the module doc)."""
        cfg = self.config
        if cfg.arch == "mlp":
            hidden = [self.layer(f"decoder.{i}", relu=True) for i in range(len(cfg.hidden))]
            return [*hidden, self.layer("decoder.logits", relu=False)]
        c, n = cfg.channels, len(cfg.channels)
        layers = [self.layer("decoder.0", relu=True, image_out=cfg.flat_image())]
        for i in range(1, n + 1):  # mirrors encoder convolution n - i, to its input size and channels
            name, out_channels = (f"decoder.{i}", c[n - i - 1]) if i < n else ("decoder.logits", 1)
            layers.append(self.conv(name, cfg.conv_geometry(n - i, out_channels), relu=i < n, transposed=True))
        return layers

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
