"""tinyvae: a framework-free Variational Autoencoder engine, every gradient derived by hand.

    import tinyvae
    model = tinyvae.load("runs/fmnist")           # a run directory, a checkpoint or a model file
    x_hat = model.reconstruct(x)                   # x: (B, 784) floats in [0, 1]
    images = model.sample(16, seed=0)              # (16, 784) host float32, the decoder's mean
    model = tinyvae.build(model="cae", latent_dim=16, dtype="float64")   # a new model from its settings
    model = tinyvae.fit(x, epochs=10, arch="conv")  # x: (N, C, H, W), (N, H, W) or (N, D); or a path
    tinyvae.save(model, "cae.safetensors")

The layers, top to bottom (docs/architecture.md): the command lines (``tinyvae.train``,
``tinyvae.evaluate``, ``tinyvae.sample``), :mod:`tinyvae.training`, :mod:`tinyvae.io`,
:mod:`tinyvae.models`, :mod:`tinyvae.nn` and :mod:`tinyvae.backends`; every error tinyvae raises on
purpose is a :class:`TinyVAEError` (:mod:`tinyvae.errors`).
"""

from .cli import __version__
from .errors import (BackendUnavailable, CheckpointError, DataError, Diverged, KernelBuildError, MissingDependency,
                     SettingsError, TinyVAEError)
from .io.modelfile import load, save
from .models import AEConfig, Autoencoder, Model, VAE, VAEConfig, build
from .training.fit import fit

__all__ = ["AEConfig", "Autoencoder", "BackendUnavailable", "CheckpointError", "DataError", "Diverged",
           "KernelBuildError", "MissingDependency", "Model", "SettingsError", "TinyVAEError", "VAE", "VAEConfig",
           "__version__", "build", "fit", "load", "save"]
