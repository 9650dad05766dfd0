"""The MLP VAE of PyTorch's examples (examples/vae/main.py), as the oracle for tinyvae, and tinyvae's conv VAE in PyTorch.

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


def loss_of_logits(model, x, eps=None):
    """The same loss for a model whose decoder gives logits (:class:`TorchConvVAE`): BCE from logits."""
    logits, mu, logvar = model(x, eps)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def log_weights(model: TorchVAE, x, eps, pseudo_inputs=None):
    """``(k, B)`` log w = log p(x|z) + log p(z) - log q(z|x) of PyTorch's example VAE at ``z = mu + sigma eps``,
    ``eps`` ``(k, B, K)`` (Burda et al. 2015, eq. 8's weights): the likelihood from the decoder's logits, the prior
    N(0, I), or the VampPrior of ``pseudo_inputs`` ``(P, D)``."""
    h1 = F.relu(model.fc1(x))
    mu, logvar = model.fc21(h1), model.fc22(h1)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = model.fc4(F.relu(model.fc3(z)))
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_q = -0.5 * (np.log(2 * np.pi) + logvar + eps * eps).sum(-1)
    if pseudo_inputs is None:
        return log_px - 0.5 * (np.log(2 * np.pi) + z * z).sum(-1) - log_q
    hp = F.relu(model.fc1(pseudo_inputs))
    return log_px + vamp_log_prior(z.flatten(0, 1), model.fc21(hp), model.fc22(hp)).view(z.shape[:2]) - log_q


def iwae_loss(model: TorchVAE, x, k: int, eps=None):
    """The negative importance-weighted bound of PyTorch's example VAE with ``k`` draws (Burda et al. 2015,
    eq. 8), summed over the batch: :func:`log_weights`, their log-sum-exp by PyTorch; ``eps`` ``(k, B, K)``,
    else drawn."""
    eps = torch.randn((k, x.shape[0], model.fc21.out_features), dtype=x.dtype) if eps is None else eps
    return -(torch.logsumexp(log_weights(model, x, eps), dim=0) - np.log(k)).sum()


NAMES = {"fc1": "encoder.0", "fc21": "encoder.mu", "fc22": "encoder.logvar", "fc3": "decoder.0", "fc4": "decoder.logits"}
VQ_NAMES = {"fc1": "encoder.0", "code": "encoder.code", "fc3": "decoder.0", "fc4": "decoder.logits"}


def load_from(tv_model, dtype=torch.float32) -> nn.Module:
    """A :class:`TorchVAE` holding the weights of a one-hidden-layer tinyvae VAE (or IWAE, or VAE with a
    VampPrior: its pseudo-inputs are not a module's), or a :class:`TorchVQVAE` those of a VQ-VAE."""
    c = tv_model.config
    vq = tv_model.kind == "vqvae"
    m = (TorchVQVAE(c.input_dim, c.hidden[0], c.latent_dim, c.code_dim, c.codebook_size) if vq
         else TorchVAE(c.input_dim, c.hidden[0], c.latent_dim)).to(dtype)
    view = lambda name: torch.from_numpy(np.array(tv_model.params.view(name)))
    with torch.no_grad():
        for tname, name in (VQ_NAMES if vq else NAMES).items():
            layer = getattr(m, tname)
            layer.weight.copy_(view(name + ".weight"))
            layer.bias.copy_(view(name + ".bias"))
        if vq:
            m.codebook.copy_(view("codebook"))
    return m


class TorchConvVAE(nn.Module):
    """tinyvae's conv VAE (``--arch conv``) as PyTorch modules under tinyvae's parameter names, so a tinyvae
    model's weights load with ``load_state_dict(strict=True)``: 4x4 convolutions of stride 2 and padding 1
    with ReLU, the latent heads on the channels-first flattening, a Linear + ReLU back to the last
    convolution's output, and transposed convolutions (``output_padding`` restoring each size) to logits.
    Its examples are PyTorch's: ``(C, H, W)`` images flattened channels-first (tinyvae's rows are channels-last,
    :func:`channels_first` turns them)."""

    def __init__(self, data_shape=(1, 28, 28), channels=(32, 64), latent_dim=20):
        super().__init__()
        C, H, W = data_shape
        sizes = [(H, W)]
        for _ in channels:
            sizes.append(tuple((n + 2 - 4) // 2 + 1 for n in sizes[-1]))
        chans = (C, *channels)
        self.last = (channels[-1], *sizes[-1])
        flat = channels[-1] * sizes[-1][0] * sizes[-1][1]
        enc = {str(i): nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1) for i in range(len(channels))}
        self.encoder = nn.ModuleDict({**enc, "mu": nn.Linear(flat, latent_dim), "logvar": nn.Linear(flat, latent_dim)})
        dec = {"0": nn.Linear(latent_dim, flat)}
        n = len(channels)
        for i in range(1, n + 1):  # mirrors convolution n - i
            (h, w), (hi, wi) = sizes[n - i], sizes[n - i + 1]
            pad = (h - ((hi - 1) * 2 - 2 + 4), w - ((wi - 1) * 2 - 2 + 4))
            dec["logits" if i == n else str(i)] = nn.ConvTranspose2d(chans[n - i + 1], chans[n - i], 4, 2, 1,
                                                                     output_padding=pad)
        self.decoder = nn.ModuleDict(dec)
        self.n, self.data_shape = n, tuple(data_shape)

    def encode(self, x):
        """``(mu, logvar)`` of flat ``(B, C H W)`` images."""
        h = x.view(x.shape[0], *self.data_shape)
        for i in range(self.n):
            h = F.relu(self.encoder[str(i)](h))
        h = h.flatten(1)
        return self.encoder["mu"](h), self.encoder["logvar"](h)

    def decode(self, z):
        """The logits, flat ``(B, C H W)``."""
        h = F.relu(self.decoder["0"](z)).view(z.shape[0], *self.last)
        for i in range(1, self.n):
            h = F.relu(self.decoder[str(i)](h))
        return self.decoder["logits"](h).flatten(1)

    def forward(self, x, eps=None):
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        return self.decode(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


def channels_first(rows, data_shape):
    """tinyvae's ``(B, H W C)`` channels-last rows of ``(C, H, W)`` images as PyTorch's channels-first
    ``(B, C H W)`` (a NumPy array)."""
    C, H, W = data_shape
    return rows.reshape(len(rows), H, W, C).transpose(0, 3, 1, 2).reshape(len(rows), -1)


def vamp_loss(model: TorchVAE, pseudo_inputs, x, eps=None):
    """The negative ELBO of PyTorch's example VAE under a VampPrior (Tomczak & Welling 2018, eq. 9) with the
    single-draw KL estimate log q(z|x) - log p(z) (their eq. 12), summed over the batch: the encoder on the
    batch and the pseudo-inputs ``(P, D)`` together, as :mod:`tinyvae.models.vamp` runs it; ``eps`` ``(B, K)``,
    else drawn."""
    h = F.relu(model.fc1(torch.cat([x, pseudo_inputs])))
    mu, logvar = model.fc21(h), model.fc22(h)
    B = x.shape[0]
    eps = torch.randn_like(mu[:B]) if eps is None else eps
    z = mu[:B] + eps * torch.exp(0.5 * logvar[:B])
    nll = F.binary_cross_entropy_with_logits(model.fc4(F.relu(model.fc3(z))), x, reduction="none").sum(-1)
    log_q = -0.5 * (np.log(2 * np.pi) + logvar[:B] + eps * eps).sum(-1)
    return (nll + log_q - vamp_log_prior(z, mu[B:], logvar[B:])).sum()


def vamp_log_prior(z, m, lv):
    """log p(z) ``(N,)`` of the VampPrior whose components are N(m_p, diag(exp(lv_p))) ``(P, K)`` at ``z``
    ``(N, K)``: the log-sum-exp over the components, less log P."""
    comps = -0.5 * (np.log(2 * np.pi) + lv[None] + (z[:, None] - m[None]) ** 2 * torch.exp(-lv[None])).sum(-1)
    return torch.logsumexp(comps, dim=1) - np.log(m.shape[0])


class TorchVQVAE(nn.Module):
    """tinyvae's MLP VQ-VAE (``--model vqvae``) in PyTorch: fc1 + ReLU, a linear code layer to ``M`` vectors of
    ``D`` values, each replaced by its nearest codebook row (the straight-through estimator), fc3 + ReLU, fc4
    to logits; the codebook started U(-1/K, 1/K) as tinyvae starts it."""

    def __init__(self, input_dim=784, hidden=400, latent_dim=20, code_dim=16, codebook_size=512):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.code = nn.Linear(hidden, latent_dim * code_dim)
        self.fc3 = nn.Linear(latent_dim * code_dim, hidden)
        self.fc4 = nn.Linear(hidden, input_dim)
        self.codebook = nn.Parameter(torch.empty(codebook_size, code_dim).uniform_(-1 / codebook_size,
                                                                                    1 / codebook_size))

    def forward(self, x):
        """``(logits, z_e, z_q)``: z_e and z_q ``(B, M, D)``, z_q without a gradient to z_e."""
        ze = self.code(F.relu(self.fc1(x))).view(x.shape[0], -1, self.codebook.shape[1])
        flat = ze.detach().reshape(-1, self.codebook.shape[1])
        e = self.codebook
        dist = (flat * flat).sum(1, keepdim=True) - 2 * flat @ e.detach().T + (e.detach() ** 2).sum(1)[None]
        zq = e[dist.argmin(1)].view_as(ze)
        st = ze + (zq - ze).detach()  # the straight-through estimator
        return self.fc4(F.relu(self.fc3(st.flatten(1)))), ze, zq


def vq_loss(model: TorchVQVAE, x, commitment=0.25):
    """The VQ-VAE's loss (van den Oord et al. 2017, eq. 3) summed over the batch, ``detach`` for sg."""
    logits, ze, zq = model(x)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return nll + ((ze.detach() - zq) ** 2).sum() + commitment * ((ze - zq.detach()) ** 2).sum()
