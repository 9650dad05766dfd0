"""A model from its settings: :func:`build` (``tinyvae.build``), and the config a run's settings describe."""

from __future__ import annotations

import math

from ..errors import SettingsError
from .autoencoders import Autoencoder
from .config import CONFIGS, MODEL_SETTINGS, NetworkConfig, VAEConfig, VQConfig
from .iwae import IWAE
from .vamp import VampVAE
from .vqvae import VQVAE
from .protocol import Model
from .settings import declared, resolve
from .vae import VAE

# The model settings a user gives (the data's sizes are not among them: they come from the data).
GIVEN = {name: s for name, s in MODEL_SETTINGS.items() if s.spec.flag}


def make_config(settings: dict, data_shape: tuple[int, ...], n_classes: int = 0) -> NetworkConfig:
    """The config of a model for examples of ``data_shape`` (``(C, H, W)`` images or ``(D,)`` table rows) with
    labels of ``n_classes`` classes, from the model settings ``settings`` (:func:`tinyvae.models.settings.resolve`'d:
    every setting of :data:`GIVEN`, and perhaps others, which are left out). The labels of an unconditional
    model are left out.

    Raises:
        SettingsError: settings the model refuses with these sizes.
    """
    cls = CONFIGS[settings["model"]]
    values = {k: v for k, v in settings.items() if k in declared(cls) and k in GIVEN}
    values["input_dim"], values["data_shape"] = math.prod(data_shape), tuple(data_shape)
    if values["model"] == "cvae":
        values["n_classes"] = n_classes
    return cls(**values)


def model_for(config: NetworkConfig, backend="numpy", seed: int = 1) -> Model:
    """The model of ``config`` (a :class:`VAE` or an :class:`Autoencoder`) on ``backend``, its weights drawn
    from ``seed``."""
    if isinstance(config, VAEConfig):
        kind = IWAE if config.model == "iwae" else VampVAE if config.prior == "vamp" else VAE
    else:
        kind = VQVAE if isinstance(config, VQConfig) else Autoencoder
    return kind(config, backend, seed)


def build(*, backend="numpy", seed: int = 1, input_dim: int | None = None, data_shape: tuple[int, ...] | None = None,
          n_classes: int | None = None, **settings) -> Model:
    """A new model from the model settings, named as the command line's flags with underscores.

    ``tinyvae.build(model="cae", latent_dim=16, dtype="float64")`` is the model of ``python -m tinyvae.train
    --model cae --latent-dim 16`` (in float64, as gradient checks need), with PyTorch's initial weights.

    Args:
        backend: a backend name (default numpy, the reference) or a :class:`tinyvae.backends.Backend`.
        seed: seeds the initial weights and the model's noise.
        input_dim: D, the values per example (default: those of ``data_shape``, else 784).
        data_shape: one example's shape, ``(C, H, W)`` for images (channels-last in the rows), ``(D,)`` for a
            table (default: 28x28 grey images without ``input_dim``; with it, a table row for ``arch="mlp"``,
            square grey images for ``arch="conv"``).
        n_classes: ``model="cvae"``: the classes of its labels.
        settings: the model settings (``model``, ``arch``, ``hidden``, ``latent_dim``, ``likelihood``, ...;
            ``python -m tinyvae.train --help`` lists them), each defaulting as there.

    Returns:
        A :class:`tinyvae.models.protocol.Model`: a :class:`VAE` or an :class:`Autoencoder`.

    Raises:
        SettingsError: an unknown setting, a bad value, a setting that does not apply to the model, or sizes
            the model cannot take.
        BackendUnavailable: a backend that cannot run here.
    """
    unknown = sorted(set(settings) - set(GIVEN))
    if unknown:
        raise SettingsError(f"unknown model setting{'s' * (len(unknown) > 1)} {', '.join(unknown)}; the model "
                            f"settings are {', '.join(GIVEN)}")
    values = resolve(settings, GIVEN)
    if data_shape is None:
        if input_dim is None:
            data_shape = (1, 28, 28)
        elif values["arch"] == "conv":
            side = math.isqrt(input_dim) if isinstance(input_dim, int) and input_dim > 0 else 0
            if side * side != input_dim:
                raise SettingsError(f"arch conv needs data_shape (C, H, W) for input_dim {input_dim}, which is "
                                    "not a square")
            data_shape = (1, side, side)
        else:
            data_shape = (input_dim,)
    data_shape = tuple(data_shape)
    if input_dim is not None and input_dim != math.prod(data_shape):
        raise SettingsError(f"input_dim {input_dim} is not the {math.prod(data_shape)} values of data_shape {data_shape}")
    if n_classes is not None and values["model"] != "cvae":
        raise SettingsError(f"n_classes is the conditional VAE's (model cvae), not {values['model']}'s")
    return model_for(make_config(values, data_shape, n_classes or 0), backend, seed)
