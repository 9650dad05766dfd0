"""The one interface every model implements (:class:`tinyvae.models.vae.VAE` and
:class:`tinyvae.models.autoencoders.Autoencoder`), so that training, evaluation, pictures and gradient
checks call a model without asking which kind it is.

A capability that only some models have is an attribute, not a type test: ``has_prior`` (a VAE can
:meth:`Model.sample`), ``denoises`` (a dae corrupts its input: ``denoise``), ``rows_independent``
(a loss that is a mean over rows, as data-parallel training needs).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Model(Protocol):
    """A model with hand-derived gradients over one flat parameter buffer.

    Arrays: ``x`` is ``(B, D)`` float data (in [0, 1] for the Bernoulli decoder), ``y`` ``(B,)`` integer labels
    for a conditional model (None otherwise), codes ``(B, K)``; losses are in nats per example. Every checked
    method raises :class:`tinyvae.errors.DataError` for bad arrays and :class:`tinyvae.errors.SettingsError` for
    a bad argument.

    Attributes:
        config: the model's config (:class:`tinyvae.models.config.NetworkConfig`).
        backend, xp, dtype: the backend, its array module, and the model's float dtype.
        params: the :class:`tinyvae.nn.params.FlatParams` of every weight; ``grad``: the ``(P,)`` gradient.
        encoder, decoder: the :class:`tinyvae.nn.layers.Sequential` stacks.
        seed: the seed of the model's random streams (:mod:`tinyvae.rng`), whose draws are addressed by
            (seed, stream, step, example): a model holds no generator state.
        has_prior, denoises, rows_independent: the capabilities above.
    """

    config: Any
    backend: Any
    xp: Any
    dtype: np.dtype
    params: Any
    grad: Any
    encoder: Any
    decoder: Any
    seed: int
    has_prior: bool
    bounds_likelihood: bool
    code_size: int
    denoises: bool
    rows_independent: bool

    @property
    def kind(self) -> str:
        """``vae``, ``cvae``, ``ae``, ``dae``, ``sparse-ae`` or ``cae``."""

    def loss_and_grad(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None, **fixed) -> NamedTuple:
        """The batch's mean loss and its terms (``loss``, ``nll``, and the model's own: ``kl`` or
        ``penalty``), and its gradient into ``grad``; ``noise_seed`` fixes every random draw of the loss by a
        seed (``fixed``: the noise itself, ``eps=`` for a VAE, ``corrupted=`` for a dae)."""

    def loss_rows_forward(self, x, y=None, *, beta: float = 1.0, noise_seed: int | None = None,
                          **fixed) -> np.ndarray:
        """Host float64 terms whose sum is :meth:`loss_and_grad`'s loss, from a forward pass alone."""

    def train_step(self, x, optimizer, y=None, beta: float = 1.0, step: int | None = None, rows=None):
        """Forward, backward and ``optimizer.step(grad)`` on a batch already checked, its draws those of
        training step ``step`` for the examples ``rows`` (their ``(B,)`` int64 indices in the training set);
        returns the minimised objective summed over the batch, a 0-d backend array (no host sync)."""

    def evaluate(self, batches, seed: int | None = None) -> dict:
        """Test metrics (``test_loss`` first) over ``(x, y, rows)`` batches, nats per example, their draws
        from the ``evaluate`` stream of ``seed`` (default: the model's) for the examples ``rows``:
        :meth:`metrics` of :meth:`evaluation_sums`."""

    def evaluation_sums(self, batches, seed: int | None = None) -> dict:
        """What :meth:`evaluate` needs of ``batches``, as sums over their examples (floats, or float arrays
        such as a VQ-VAE's code counts) with their count ``n``: the sums of disjoint sets of examples (the
        ranks' shares of a test set) add up to the sums of their union."""

    def metrics(self, sums: dict) -> dict:
        """The test metrics of :meth:`evaluation_sums`'s ``sums`` (or of several sets' sums added up)."""

    def workspace(self, batch: int):
        """The buffers of the last pass at this batch size (``enc_outs``, ``dec_outs``, ...)."""

    def encode(self, x, y=None):
        """The encoder's output: ``(mu, logvar)`` of q(z|x) for a VAE, the code h for an autoencoder."""

    def code(self, x, y=None) -> np.ndarray:
        """The point code of ``x``, ``(B, K)``: mu for a VAE, h for an autoencoder."""

    def decode(self, z, y=None) -> np.ndarray:
        """The mean of p(x|z), ``(B, D)``."""

    def reconstruct(self, x, y=None) -> np.ndarray:
        """The mean of p(x|z) at :meth:`code` of ``x``, ``(B, D)``."""

    def per_sample_loss(self, x, y=None, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(nll, kl)`` (a VAE) or ``(nll, penalty)`` (an autoencoder) per example, each ``(B,)``."""

    def sample(self, n: int, y=None, seed: int | None = None) -> np.ndarray:
        """``n`` draws of the model, decoded, ``(n, D)``: where ``has_prior``."""
