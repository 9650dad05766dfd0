"""tinyvae: a framework-free Variational Autoencoder engine, every gradient derived by hand.

    import tinyvae
    model = tinyvae.load("runs/fmnist")          # a run directory, a checkpoint or a model file
    x_hat = model.reconstruct(x)                  # x: (B, 784) floats in [0, 1]
    images = model.sample(16, seed=0)             # (16, 784) host float32, the decoder's mean

See :func:`tinyvae.saving.load`, :class:`tinyvae.model.VAE` and
:class:`tinyvae.autoencoders.Autoencoder`.
"""

from importlib.metadata import PackageNotFoundError, version

from .saving import load

try:
    __version__ = version("tinyvae")
except PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"

__all__ = ["load", "__version__"]
