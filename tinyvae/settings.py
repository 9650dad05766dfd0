"""The settings of a training run: everything that determines its numbers, stored in its checkpoint.

:class:`TrainSettings` checks its fields' types and ranges (they also come from a checkpoint's
JSON), builds the model they describe, bounds its memory before anything is allocated, and gives
the KL weight of each step.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields

from .autoencoders import AE_MODELS, AEConfig, Autoencoder
from .model import VAE, VAEConfig
from .network import ARCHS

VAE_MODELS = ("vae", "cvae")
MODELS = (*VAE_MODELS, *AE_MODELS)


@dataclass
class TrainSettings:
    """Everything that determines a run's numbers (stored in its checkpoint)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    arch: str = "mlp"
    channels: tuple[int, ...] = (32, 64)
    beta: float = 1.0
    warmup_epochs: float = 0.0
    model: str = "vae"
    likelihood: str = "bernoulli"
    decoder_logvar: float = 0.0
    mc_samples: int = 1
    code_activation: str = AEConfig.code_activation
    corruption: str = AEConfig.corruption
    noise: float = AEConfig.noise
    rho: float = AEConfig.rho
    sparsity_weight: float = AEConfig.sparsity_weight
    contractive_weight: float = AEConfig.contractive_weight
    seed: int = 1
    binarize: bool = False
    eval_batch_size: int = 1000
    history: list = field(default_factory=list)

    def __post_init__(self):
        for f in fields(self):  # the types of the defaults (settings also come from checkpoints' JSON)
            value, default = getattr(self, f.name), f.default if f.default is not MISSING else f.default_factory()
            kind = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (list, tuple),
                    list: (list,), type(None): (str, type(None))}[type(default)]
            if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind):
                raise ValueError(f"{f.name} must be a {' or '.join(k.__name__ for k in kind)}, got {value!r}")
        for name in ("hidden", "channels"):
            if not all(isinstance(h, int) and not isinstance(h, bool) for h in getattr(self, name)):
                raise ValueError(f"{name} must be a list of ints, got {getattr(self, name)!r}")
        if not all(isinstance(r, dict) for r in self.history):
            raise ValueError("history must be a list of one JSON object per epoch")
        self.hidden, self.channels = tuple(self.hidden), tuple(self.channels)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.arch == "conv" and self.hidden:
            raise ValueError(f"hidden layers ({list(self.hidden)}) are for arch mlp; arch conv has its channels "
                             f"(--hidden does not apply to --arch conv)")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        finite = all(math.isfinite(v) for v in (self.lr, self.beta, self.warmup_epochs))
        if not finite or not self.lr > 0 or self.beta < 0 or self.warmup_epochs < 0:
            raise ValueError(f"need a finite lr > 0, beta >= 0 and warmup_epochs >= 0, got lr={self.lr}, "
                             f"beta={self.beta}, warmup_epochs={self.warmup_epochs}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (NumPy's generators take no negative seed), got {self.seed}")

    @property
    def is_vae(self) -> bool:
        return self.model in VAE_MODELS

    def build_model(self, image_shape: tuple[int, int], n_classes: int, backend) -> VAE | Autoencoder:
        """The model these settings describe for images of ``image_shape`` (``n_classes`` is used by
        ``cvae`` only).

        Raises:
            ValueError: for sizes or settings the model refuses.
        """
        return (VAE if self.is_vae else Autoencoder)(self.model_config(image_shape, n_classes), backend, self.seed)

    def model_config(self, image_shape: tuple[int, int], n_classes: int) -> VAEConfig | AEConfig:
        """The model's config (``ValueError`` for sizes or settings the model refuses)."""
        common = dict(input_dim=math.prod(image_shape), hidden=self.hidden, latent_dim=self.latent_dim,
                      likelihood=self.likelihood, decoder_logvar=self.decoder_logvar, arch=self.arch)
        if self.arch == "conv":
            common |= dict(channels=self.channels, image_shape=tuple(image_shape))
        if self.is_vae:
            return VAEConfig(**common, mc_samples=self.mc_samples, n_classes=n_classes if self.model == "cvae" else 0)
        return AEConfig(**common, model=self.model, code_activation=self.code_activation,
                        corruption=self.corruption, noise=self.noise, rho=self.rho,
                        sparsity_weight=self.sparsity_weight, contractive_weight=self.contractive_weight)

    def check_fits(self, image_shape: tuple[int, int], n_classes: int) -> None:
        """``ValueError`` when the model and its batches would not fit in this machine's memory (or the
        model refuses its settings).

        The estimate: weights, gradients and the optimiser's two moments (4 bytes each, 4 buffers) and
        each layer's output and gradient for a training and an evaluation batch (for a convolution also
        its patches, kh kw times its input); a bound for settings read from a checkpoint or typed by hand,
        so an absurd size is refused before anything is allocated.
        """
        extra = n_classes if self.model == "cvae" else 0
        input_dim = math.prod(image_shape)
        if self.arch == "conv":
            config = self.model_config(image_shape, n_classes)
            params = sum(math.prod(shape) for _, shape in config.layout())
            images = [(h * w, c) for (h, w), c in zip(config.conv_sizes(), (1 + extra, *self.channels))]
            widths = [2 * self.latent_dim, self.latent_dim + extra, input_dim,
                      *(2 * n * c + n * c * 16 for n, c in images)]  # encoder and decoder images, and patches
        else:
            widths = [input_dim + extra, *self.hidden, 2 * self.latent_dim, self.latent_dim + extra,
                      *reversed(self.hidden), input_dim]
            params = sum((a + 1) * b for a, b in zip(widths, widths[1:]))
        rows = max(self.batch_size * self.mc_samples, self.eval_batch_size)
        need = 4 * (4 * params + 2 * rows * sum(widths))
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if need > have:
            raise ValueError(f"these sizes need about {need / 2**30:.1f} GiB (hidden {list(self.hidden)}, "
                             f"{'channels ' + str(list(self.channels)) + ', ' if self.arch == 'conv' else ''}"
                             f"latent_dim {self.latent_dim}, batch_size {self.batch_size}), more than this "
                             f"machine's {have / 2**30:.1f} GiB")

    def beta_at(self, step: int, steps_per_epoch: int) -> float:
        """The KL weight of training step ``step`` (0-based): beta * min(1, (step + 1) / warm-up steps).

        The linear warm-up of Bowman et al. 2016 ("Generating Sentences from a
        Continuous Space", Sec. 3.1) and Sønderby et al. 2016 (Sec. 2.4).
        """
        if self.warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / (self.warmup_epochs * steps_per_epoch))
