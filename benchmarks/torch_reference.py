"""The MLP VAE of PyTorch's examples (examples/vae/main.py), as the oracle for tinyvae.

Only benchmarks and tests import this; the tinyvae package never imports torch.
Layer names follow the example (fc1, fc21, fc22, fc3, fc4); :func:`load_from`
copies a tinyvae model's weights in, so both start from the same point.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TorchVAE(nn.Module):
    def __init__(self, input_dim=784, hidden=400, latent_dim=20):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, input_dim)

    def forward(self, x, eps=None):
        h1 = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std) if eps is None else eps
        z = mu + eps * std
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    """The example's loss: BCE summed over pixels and batch, plus the analytic KL."""
    bce = F.binary_cross_entropy(recon_x, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def loss_of(model: TorchVAE, x, eps=None):
    """The example's loss of one batch (summed over the batch)."""
    recon, mu, logvar = model(x, eps)
    return loss_function(recon, x, mu, logvar)


NAMES = {"fc1": "encoder.0", "fc21": "encoder.mu", "fc22": "encoder.logvar", "fc3": "decoder.0", "fc4": "decoder.logits"}


def load_from(tv_model, dtype=torch.float32) -> TorchVAE:
    """A TorchVAE holding the weights of a one-hidden-layer tinyvae VAE."""
    c = tv_model.config
    m = TorchVAE(c.input_dim, c.hidden[0], c.latent_dim).to(dtype)
    with torch.no_grad():
        for tname, name in NAMES.items():
            layer = getattr(m, tname)
            layer.weight.copy_(torch.from_numpy(np.array(tv_model.params.view(name + ".weight"))))
            layer.bias.copy_(torch.from_numpy(np.array(tv_model.params.view(name + ".bias"))))
    return m
