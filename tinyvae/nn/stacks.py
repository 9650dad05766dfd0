"""The encoder and decoder stacks of both architectures: their parameter layouts, their layers, and
their initial weights.

Two architectures (``arch``), each a sequence of layers with shapes:

* ``mlp``: ``encoder: x -> [Linear + ReLU] * n -> a model's own head`` and
  ``decoder: z -> [Linear + ReLU] * n (hidden sizes reversed) -> Linear -> (B, D)``;
* ``conv``: for images ``(C, H, W)`` and ``channels`` c_1..c_n, ``encoder: x ->
  [Conv2d(4x4, stride 2, padding 1) + ReLU] * n -> a model's own head`` (28x28 ->
  14x14 -> 7x7 for two), the convolutions' output flattened channels-first as
  PyTorch's ``Flatten``; ``decoder: z -> Linear + ReLU to c_n x H_n x W_n ->
  [ConvTranspose2d + ReLU] * (n - 1) -> ConvTranspose2d to C channels -> (B, D)``, mirroring
  it (each ``output_padding`` restores the size its convolution halved,
  so any image size works). The layers of DCGAN (Radford et al. 2016) as
  pythae and most VAE courses use them.

The functions take a model config (:class:`tinyvae.models.config.NetworkConfig`): its ``arch``,
``input_dim``, ``hidden``, ``channels``, ``data_shape`` and ``likelihood``. Images are channels-last, as the
layers take them. The decoder's last layer,
``decoder.logits``, gives the parameters of p(x|z) (:mod:`tinyvae.nn.likelihoods`): logits, or a mean.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.reference import ConvGeometry
from .layers import Conv2d, ConvTranspose2d, Linear
from .params import FlatParams

ARCHS = ("mlp", "conv")
KERNEL, STRIDE, PADDING = 4, 2, 1  # every convolution of the conv architecture


def conv_sizes(image_shape: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """The image size ``(H, W)`` before each of ``n`` convolutions and after the last."""
    sizes = [tuple(image_shape)]
    for _ in range(n):
        sizes.append(tuple((s + 2 * PADDING - KERNEL) // STRIDE + 1 for s in sizes[-1]))
    return sizes


def conv_geometry(config, i: int, in_channels: int) -> ConvGeometry:
    """``conv``: the geometry of the encoder's convolution i (and of the decoder's layer mirroring it)."""
    H, W = conv_sizes(config.image_shape, len(config.channels))[i]
    return ConvGeometry(H, W, in_channels, KERNEL, KERNEL, STRIDE, PADDING)


def flat_image(config) -> tuple[int, int] | None:
    """``conv``: ``(pixels, channels)`` of the last convolution's output, the image that the encoder's head
    reads and the decoder's first layer writes (:attr:`tinyvae.nn.layers.Linear.image_in`); None for mlp."""
    if config.arch != "conv":
        return None
    return math.prod(conv_sizes(config.image_shape, len(config.channels))[-1]), config.channels[-1]


def encoder_layout(config, n_classes: int = 0) -> tuple[list, int]:
    """The encoder's layers before its head: ``(layout, width of their output)``. The input is the image
    and, for a conditional model, its one-hot label of ``n_classes``: more columns (mlp), or as many
    constant channels (conv)."""
    out = []
    if config.arch == "conv":
        chans = (config.image_channels + n_classes, *config.channels)
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            out += [(f"encoder.{i}.weight", (b, a, KERNEL, KERNEL)), (f"encoder.{i}.bias", (b,))]
        pixels, channels = flat_image(config)
        return out, pixels * channels
    sizes = (config.input_dim + n_classes, *config.hidden)
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        out += [(f"encoder.{i}.weight", (b, a)), (f"encoder.{i}.bias", (b,))]
    return out, sizes[-1]


def decoder_layout(config, inputs: int) -> list:
    """The decoder (and the learned log-variance) for ``inputs`` input columns."""
    out = []
    if config.arch == "conv":  # Linear to the last convolution's output, then transposed convolutions
        c, flat = config.channels, encoder_layout(config)[1]
        out += [("decoder.0.weight", (flat, inputs)), ("decoder.0.bias", (flat,))]
        for i in range(1, len(c)):
            out += [(f"decoder.{i}.weight", (c[-i], c[-i - 1], KERNEL, KERNEL)), (f"decoder.{i}.bias", (c[-i - 1],))]
        C = config.image_channels
        out += [("decoder.logits.weight", (c[0], C, KERNEL, KERNEL)), ("decoder.logits.bias", (C,))]
    else:
        sizes = (inputs, *reversed(config.hidden))
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            out += [(f"decoder.{i}.weight", (b, a)), (f"decoder.{i}.bias", (b,))]
        out += [("decoder.logits.weight", (config.input_dim, sizes[-1])), ("decoder.logits.bias", (config.input_dim,))]
    if config.likelihood == "gaussian-learned":
        out.append(("decoder.logvar", (config.input_dim,)))
    return out


def linear(params: FlatParams, grad, prefix: str, relu: bool, **image) -> Linear:
    """The :class:`Linear` of parameters ``{prefix}.weight`` and ``{prefix}.bias`` (views of ``params.data``
    and of ``grad``); ``image`` its ``image_in`` or ``image_out``."""
    w, b = f"{prefix}.weight", f"{prefix}.bias"
    return Linear(params.view(w), params.view(b), params.view(w, grad), params.view(b, grad), relu=relu, **image)


def conv(params: FlatParams, grad, prefix: str, g: ConvGeometry, relu: bool, transposed: bool = False):
    """The :class:`Conv2d` (or :class:`ConvTranspose2d`) of parameters ``{prefix}.weight`` and ``.bias``."""
    w, b = f"{prefix}.weight", f"{prefix}.bias"
    kind = ConvTranspose2d if transposed else Conv2d
    return kind(params.view(w), params.view(b), params.view(w, grad), params.view(b, grad), g, relu=relu)


def encoder_body(config, params: FlatParams, grad, n_classes: int = 0) -> list:
    """The encoder's layers before its head, for inputs with ``n_classes`` label columns (mlp) or channels
    (conv)."""
    if config.arch == "mlp":
        return [linear(params, grad, f"encoder.{i}", relu=True) for i in range(len(config.hidden))]
    chans = (config.image_channels + n_classes, *config.channels)
    return [conv(params, grad, f"encoder.{i}", conv_geometry(config, i, chans[i]), relu=True)
            for i in range(len(config.channels))]


def decoder_layers(config, params: FlatParams, grad) -> list:
    """The decoder's layers, its output ``(B, D)`` last."""
    if config.arch == "mlp":
        hidden = [linear(params, grad, f"decoder.{i}", relu=True) for i in range(len(config.hidden))]
        return [*hidden, linear(params, grad, "decoder.logits", relu=False)]
    c, n = config.channels, len(config.channels)
    layers = [linear(params, grad, "decoder.0", relu=True, image_out=flat_image(config))]
    for i in range(1, n + 1):  # mirrors encoder convolution n - i, to its input size and channels
        name, out_channels = (f"decoder.{i}", c[n - i - 1]) if i < n else ("decoder.logits", config.image_channels)
        layers.append(conv(params, grad, name, conv_geometry(config, n - i, out_channels), relu=i < n,
                           transposed=True))
    return layers


def init_weights(params: FlatParams, rng: np.random.Generator, xp) -> None:
    """PyTorch's default for ``nn.Linear``, ``nn.Conv2d`` and ``nn.ConvTranspose2d``: W and b ~
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the product of the weight's shape after its first axis
    (``in``; ``C_in kh kw``; for the transposed convolution, as PyTorch counts it, ``C_out kh kw``).

    (Kaiming-uniform with a = sqrt(5), He et al. 2015, reduces to this bound.) A tensor that is no layer's
    weight or bias (the learned decoder log-variance) starts at 0. Drawn on the host in float64 from ``rng``,
    tensor by tensor in storage order, and cast, so every backend starts equal.
    """
    host = np.zeros(params.size, dtype=np.float64)
    for name in params.names:
        weight = name.rsplit(".", 1)[0] + ".weight"
        if weight not in params.shapes:
            continue
        lo, hi = params.offsets[name]
        bound = 1.0 / math.sqrt(math.prod(params.shapes[weight][1:]))
        host[lo:hi] = rng.uniform(-bound, bound, size=hi - lo)
    params.data[...] = xp.asarray(host.astype(params.dtype))
