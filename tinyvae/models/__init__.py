"""The models: their configs and settings, the one :class:`Model` protocol, the VAE and its variants, the
autoencoders, and the bounds on a VAE's likelihood."""

from .autoencoders import Autoencoder
from .build import build
from .config import AEConfig, VAEConfig
from .iwae import IWAE
from .protocol import Model
from .vae import VAE

__all__ = ["AEConfig", "Autoencoder", "IWAE", "Model", "VAE", "VAEConfig", "build"]
