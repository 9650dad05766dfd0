"""The models' configs: every model setting, declared once (:func:`tinyvae.models.settings.setting`).

:class:`NetworkConfig` holds what every model shares (sizes, architecture, likelihood, precision);
:class:`VAEConfig` and :class:`AEConfig` add the VAEs' and the autoencoders' own settings. A config is
frozen and checked when made: each field by its declaration, and the rules that tie fields together
here (a conv model's image size, the contractive autoencoder's single layer).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from ..errors import SettingsError
from ..nn import stacks
from ..nn.likelihoods import LIKELIHOODS
from .settings import check_fields, declared, setting

VAE_MODELS = ("vae", "cvae", "iwae")
ELBO_MODELS = ("vae", "cvae")  # trained on the ELBO (iwae: on the importance-weighted bound)
PRIORS = ("standard", "vamp")
AE_MODELS = ("ae", "dae", "sparse-ae", "cae")
VQ_MODELS = ("vqvae",)
MODELS = (*VAE_MODELS, *AE_MODELS, *VQ_MODELS)
CORRUPTIONS = ("mask", "gaussian", "salt-and-pepper")
CODE_ACTIVATIONS = ("sigmoid", "linear")
ARCHS = stacks.ARCHS

positive = dict(check=lambda v: v >= 1, accepts="an int >= 1")
non_negative = dict(check=lambda v: v >= 0, accepts="a finite number >= 0")


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes, architecture, likelihood and precision shared by every model (see each field's help).

    ``input_dim``, ``data_shape`` and ``n_classes`` describe the data (a training run reads them from its
    dataset); the others are the command line's settings. An example is ``input_dim`` values: an image of
    ``data_shape`` ``(C, H, W)`` stored channels-last (pixel by pixel, each pixel's C values together, as
    PNG stores it), or a row of a table, ``data_shape`` ``(D,)``.

    Raises:
        SettingsError: a field of the wrong type or out of range, a setting given to a model it does not
            apply to, a ``data_shape`` that is not ``input_dim``'s, or (conv) images that the convolutions
            halve below 1 pixel.
    """

    input_dim: int = setting(784, "D, the values of one example (784 for 28x28 images)", flag=False, **positive)
    hidden: tuple[int, ...] = setting(
        (400,), "mlp: the hidden layers' sizes, comma separated, input side first; the decoder mirrors them",
        only={"arch": ("mlp",), "model": ("vae", "cvae", "iwae", "ae", "dae", "sparse-ae", "vqvae")}, off=())
    latent_dim: int = setting(20, "K, the size of the code z (vqvae: the code vectors of an example)", **positive)
    dtype: str = setting("float32", "the precision of weights and activations: float32 (training) or float64 "
                                    "(gradient checks)", choices=("float32", "float64"))
    likelihood: str = setting("bernoulli", "the decoder's p(x|z): bernoulli (BCE from logits), gaussian (fixed "
                                           "variance) or gaussian-learned (a learned variance per value)",
                              choices=LIKELIHOODS)
    decoder_logvar: float = setting(0.0, "gaussian: the fixed log-variance of p(x|z) (0: sigma = 1)",
                                    only={"likelihood": ("gaussian",)})
    arch: str = setting("mlp", "mlp: fully connected layers; conv: 4x4 stride-2 convolutions (see --channels)",
                        choices=ARCHS)
    channels: tuple[int, ...] = setting(
        (32, 64), "conv: the convolutions' channels, comma separated, input side first (28x28 -> 14x14 -> 7x7 "
                  "for two)", only={"arch": ("conv",)}, off=())
    data_shape: tuple[int, ...] = setting((), "the shape of one example: (C, H, W) for images, (D,) for a table "
                                              "(() : (input_dim,))", flag=False)
    model: str = setting("vae", "vae, cvae (conditional on the label), or an autoencoder: ae, dae (denoising), "
                                "sparse-ae, cae (contractive)", choices=MODELS)
    n_classes: int = setting(0, "C, the classes of a conditional model's labels (0: none)", flag=False,
                             check=lambda v: v >= 0, accepts="an int >= 0")

    def __post_init__(self):
        for name, value in check_fields(self, declared(type(self))).items():
            object.__setattr__(self, name, value)
        if not self.data_shape:
            object.__setattr__(self, "data_shape", (self.input_dim,))
        if math.prod(self.data_shape) != self.input_dim or len(self.data_shape) not in (1, 3):
            raise SettingsError(f"data_shape must be (C, H, W) or (D,) with input_dim {self.input_dim} values; "
                                f"got {self.data_shape}")
        if self.arch == "conv":
            if self.image_shape is None:
                raise SettingsError(f"the conv architecture takes images, data_shape (C, H, W); got "
                                    f"{self.data_shape}, a table")
            if not self.channels:
                raise SettingsError("the conv architecture takes channels, e.g. (32, 64)")
            smallest = self.conv_sizes()[-1]
            if min(smallest) < 1:
                n = len(self.channels)
                raise SettingsError(f"{n} stride-2 convolutions halve {self.image_shape[0]}x{self.image_shape[1]} "
                                    f"images to {smallest[0]}x{smallest[1]}; they take images of at least "
                                    f"{2 ** n} pixels a side (any size from there): use fewer channels, "
                                    "or larger images")
        if self.model == "cvae" and self.n_classes < 1:
            raise SettingsError("cvae is conditional on a label: it needs n_classes >= 1 (the data's classes)")

    def to_dict(self) -> dict:
        """The config as JSON values (the ``model_config`` of checkpoints and model files)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images, or None for a table."""
        return tuple(self.data_shape[1:]) if len(self.data_shape) == 3 else None

    @property
    def image_channels(self) -> int:
        """C, the values of one pixel (1 grey, 3 colour); 1 for a table."""
        return self.data_shape[0] if len(self.data_shape) == 3 else 1

    @property
    def draws(self) -> int:
        """Draws of z per example in a training step: 1 (a VAE's config says its own)."""
        return 1

    def conv_sizes(self) -> list[tuple[int, int]]:
        """``conv``: the image size ``(H, W)`` before each convolution and after the last."""
        return stacks.conv_sizes(self.image_shape, len(self.channels))

    def estimated_bytes(self, rows: int) -> int:
        """About the memory a model of this config takes to train on batches of ``rows`` rows: weights,
        gradients and an optimiser's two moments (4 buffers), and each layer's output and gradient (for a
        convolution also its patches, 16 times its input). Computed from the sizes alone, so that an absurd
        size is refused before anything is allocated."""
        itemsize = 4 if self.dtype == "float32" else 8
        extra = self.n_classes
        params = sum(math.prod(shape) for _, shape in self.layout())
        K, D = self.latent_dim, self.input_dim
        if self.arch == "conv":
            images = [(h * w, c) for (h, w), c in zip(self.conv_sizes(), (self.image_channels + extra, *self.channels))]
            widths = [2 * K, K + extra, D, *(2 * n * c + n * c * 16 for n, c in images)]
        else:
            widths = [D + extra, *self.hidden, 2 * K, K + extra, *reversed(self.hidden), D]
        return itemsize * (4 * params + 2 * rows * sum(widths))

    def check_fits(self, rows: int, what: str) -> None:
        """``SettingsError`` when :meth:`estimated_bytes` for ``rows`` rows exceeds this machine's memory;
        ``what`` names the sizes in the message (e.g. the settings that set them)."""
        need = self.estimated_bytes(rows)
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if need > have:
            raise SettingsError(f"these sizes need about {need / 2**30:.1f} GiB ({what}), more than this machine's "
                                f"{have / 2**30:.1f} GiB")


@dataclass(frozen=True)
class VAEConfig(NetworkConfig):
    """A :class:`NetworkConfig` and the VAEs' own settings. A VAE with ``n_classes`` > 0 is the conditional
    one, ``model`` ``cvae``."""

    model: str = setting("vae", "vae, cvae (conditional on the label), or iwae (trained on the importance-weighted "
                                "bound, Burda et al. 2015)", choices=VAE_MODELS)
    mc_samples: int = setting(1, "L, draws of z per example (the SGVB estimator's L)", **positive,
                              only={"model": ELBO_MODELS})
    k: int = setting(5, "iwae: K, the importance-weighted draws of z per example", **positive,
                     only={"model": ("iwae",)})
    prior: str = setting("standard", "vae: the prior p(z), standard (N(0, I)) or vamp (the mixture of the encoder's "
                                     "posteriors at learned pseudo-inputs; Tomczak & Welling 2018)",
                         choices=PRIORS, only={"model": ("vae",)})
    pseudo_inputs: int = setting(500, "vamp: K, the pseudo-inputs of the prior", **positive,
                                 only={"prior": ("vamp",)})

    def __post_init__(self):
        if self.n_classes and self.model == "vae":
            object.__setattr__(self, "model", "cvae")
        super().__post_init__()
        if self.model == "iwae" and self.n_classes:
            raise SettingsError(f"iwae takes no labels: n_classes must be 0, got {self.n_classes}")

    @property
    def draws(self) -> int:
        """Draws of z per example in a training step: ``mc_samples`` (L), or iwae's ``k``."""
        return self.k if self.model == "iwae" else self.mc_samples

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        K, C = self.latent_dim, self.n_classes
        out, H = stacks.encoder_layout(self, C)
        # mu and logvar stored back to back so the heads run as one (2K, H) GEMM.
        out += [
            ("encoder.mu.weight", (K, H)),
            ("encoder.logvar.weight", (K, H)),
            ("encoder.mu.bias", (K,)),
            ("encoder.logvar.bias", (K,)),
        ]
        out += stacks.decoder_layout(self, K + C)
        if self.prior == "vamp":  # examples the encoder takes, learned
            out.append(("prior.pseudo_inputs", (self.pseudo_inputs, self.input_dim)))
        return out


@dataclass(frozen=True)
class AEConfig(NetworkConfig):
    """A :class:`NetworkConfig` and the autoencoders' own settings (``model`` one of :data:`AE_MODELS`).

    Raises:
        SettingsError: as :class:`NetworkConfig`; and a model that cannot be built as asked (``cae`` with
            convolutions; a linear code for ``sparse-ae`` or ``cae``; a corrupted fraction
            outside [0, 1]).
    """

    model: str = setting("ae", "ae, dae (denoising), sparse-ae or cae (contractive)", choices=AE_MODELS)
    code_activation: str = setting("sigmoid", "the code h = act(a): sigmoid or linear (sparse-ae and cae need "
                                              "sigmoid)", choices=CODE_ACTIVATIONS, only={"model": AE_MODELS})
    corruption: str = setting("mask", "dae: the corruption of the encoder's input", choices=CORRUPTIONS,
                              only={"model": ("dae",)})
    noise: float = setting(0.3, "dae: the corrupted fraction (mask, salt-and-pepper) or the std (gaussian)",
                           **non_negative, only={"model": ("dae",)})
    rho: float = setting(0.05, "sparse-ae: the target mean activation rho", check=lambda v: 0 < v < 1,
                         accepts="in (0, 1)", only={"model": ("sparse-ae",)})
    sparsity_weight: float = setting(10.0, "sparse-ae: the weight of sum_j KL(rho || rho_hat_j)", **non_negative,
                                     only={"model": ("sparse-ae",)})
    contractive_weight: float = setting(1.0, "cae: the weight of ||dh/dx||_F^2", **non_negative,
                                        only={"model": ("cae",)})

    def __post_init__(self):
        super().__post_init__()
        if self.corruption != "gaussian" and self.noise > 1:
            raise SettingsError(f"noise is the corrupted fraction of {self.corruption}, in [0, 1]; got {self.noise}")
        if self.model in ("sparse-ae", "cae") and self.code_activation != "sigmoid":
            raise SettingsError(f"{self.model} needs a sigmoid code (its penalty is defined for units in (0, 1))")
        if self.model == "cae" and self.arch != "mlp":
            raise SettingsError("cae: the contractive penalty is in closed form for an encoder that is one sigmoid "
                                f"layer (Rifai et al. 2011); arch {self.arch} puts convolutions in front. Use arch mlp")
        if self.n_classes:
            raise SettingsError(f"{self.model} takes no labels: n_classes must be 0, got {self.n_classes}")

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        out, H = stacks.encoder_layout(self)
        K = self.latent_dim
        out += [("encoder.code.weight", (K, H)), ("encoder.code.bias", (K,))]
        return out + stacks.decoder_layout(self, K)


@dataclass(frozen=True)
class VQConfig(NetworkConfig):
    """A :class:`NetworkConfig` and the VQ-VAE's own settings: ``latent_dim`` code vectors of ``code_dim`` values
    an example, each the nearest of ``codebook_size`` learned vectors (van den Oord et al. 2017)."""

    model: str = setting("vqvae", "vqvae", choices=VQ_MODELS)
    codebook_size: int = setting(512, "vqvae: K, the vectors of the codebook", **positive, only={"model": VQ_MODELS})
    code_dim: int = setting(16, "vqvae: D, the values of a code vector", **positive, only={"model": VQ_MODELS})
    commitment: float = setting(0.25, "vqvae: beta, the weight of the commitment loss", **non_negative,
                                only={"model": VQ_MODELS})

    def __post_init__(self):
        super().__post_init__()
        if self.n_classes:
            raise SettingsError(f"vqvae takes no labels: n_classes must be 0, got {self.n_classes}")

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter tensor, in storage order."""
        out, H = stacks.encoder_layout(self)
        M = self.latent_dim * self.code_dim
        out += [("encoder.code.weight", (M, H)), ("encoder.code.bias", (M,))]
        return out + stacks.decoder_layout(self, M) + [("codebook", (self.codebook_size, self.code_dim))]


CONFIGS = {**dict.fromkeys(VAE_MODELS, VAEConfig), **dict.fromkeys(AE_MODELS, AEConfig),
           **dict.fromkeys(VQ_MODELS, VQConfig)}
# Every model setting, by name; where the models' declarations share a name, the VAE's default (model "vae")
# is the command line's.
MODEL_SETTINGS = {**declared(VQConfig), **declared(AEConfig), **declared(VAEConfig)}
MODEL_SETTINGS["model"] = declared(NetworkConfig)["model"]
