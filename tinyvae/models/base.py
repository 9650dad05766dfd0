"""What the VAE and the autoencoders share: flat parameters, an encoder and a decoder
(:mod:`tinyvae.nn.stacks`), the likelihood p(x|z) of the decoder's output (:mod:`tinyvae.nn.likelihoods`),
the checks on input, and the draws of noise.

The head of the encoder and the terms of the loss are each model's own (:mod:`tinyvae.models.vae` for the
VAE, :mod:`tinyvae.models.autoencoders` for the autoencoders).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import rng
from ..backends import Backend, get_backend
from ..errors import DataError, SettingsError
from ..nn import likelihoods, stacks
from ..nn.layers import Sequential
from ..nn.params import FlatParams
from .config import NetworkConfig


def check_batch(x, input_dim: int, xp, *, binary_targets: bool = True):
    """Validate a batch of data; raise :class:`~tinyvae.errors.DataError` naming what is wrong.

    Checks: a 2-D float array ``(B, input_dim)`` with B >= 1, all values finite, and (for the Bernoulli
    decoder) all values in [0, 1].
    """
    if not hasattr(x, "ndim") or x.ndim != 2 or x.shape[1] != input_dim or x.shape[0] < 1:
        raise DataError(f"expected x of shape (B, {input_dim}) with B >= 1, got {getattr(x, 'shape', type(x))}")
    if x.dtype.kind != "f":
        raise DataError(f"expected floating-point x, got dtype {x.dtype}")
    if not bool(xp.isfinite(x).all()):
        raise DataError("x contains NaN or inf")
    if binary_targets and (bool((x < 0).any()) or bool((x > 1).any())):
        raise DataError(f"the Bernoulli decoder needs x in [0, 1]; got values in [{float(x.min())}, {float(x.max())}]")


def check_labels(y, batch: int, n_classes: int, xp):
    """Validate class labels: integers in [0, n_classes), shape ``(batch,)``; raise
    :class:`~tinyvae.errors.DataError`. Returns them as a backend array, or None for a model without labels."""
    if n_classes == 0:
        if y is not None:
            raise DataError("labels given to an unconditional model (n_classes = 0)")
        return None
    if y is None:
        raise DataError(f"a conditional model needs labels y of shape ({batch},)")
    y = xp.asarray(y)
    if y.shape != (batch,) or y.dtype.kind not in "iu":
        raise DataError(f"expected integer labels of shape ({batch},), got {y.dtype} {y.shape}")
    if bool((y < 0).any()) or bool((y >= n_classes).any()):
        raise DataError(f"labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    return y


def repeat_rows(out, a):
    """``out (L*B, n) = a (B, n)`` repeated L times: row ``l*B + b`` holds row b."""
    out.reshape(out.shape[0] // a.shape[0], a.shape[0], a.shape[1])[...] = a


def one_hot_into(out, y, rows):
    """Write the one-hot rows of integer labels ``y`` ``(B,)`` into ``out`` ``(B, C)``; ``rows`` is ``arange(B)``."""
    out[...] = 0
    out[rows, y] = 1


class Noise(NamedTuple):
    """Where a pass's random draws come from (:mod:`tinyvae.rng`): a stream's ``key`` ``(2,)`` uint32, the
    ``step``, and ``rows``, each row's example (its index in the dataset), a ``(B,)`` int64 backend array."""

    key: np.ndarray
    step: int
    rows: Any


class DecoderOutput:
    """For a model's workspace holding the decoder's buffers ``dec_outs`` and ``dec_douts``."""

    @property
    def decoder_out(self):
        """``(N, D)`` the decoder's output, the parameters of p(x|z): logits (Bernoulli) or the mean (Gaussian)."""
        return self.dec_outs[-1]

    @property
    def decoder_dout(self):
        """``(N, D)`` the loss's gradient with respect to :attr:`decoder_out`."""
        return self.dec_douts[-1]


class EncoderDecoder:
    """The parts every model shares; a model adds its encoder head, workspace and loss terms.

    Args:
        config: a :class:`~tinyvae.models.config.NetworkConfig` (a model's subclass of it).
        backend: a :class:`tinyvae.backends.Backend` or its name.
        seed: seeds the initial weights (a ``numpy.random.Generator``, as PyTorch's initialisation draws on
            the host) and keys the model's random streams (:mod:`tinyvae.rng`).

    Attributes:
        params: :class:`~tinyvae.nn.params.FlatParams`; ``params.data`` is the flat ``(P,)`` buffer.
        grad: ``(P,)`` gradient buffer, same layout.
        decoder: the decoder :class:`~tinyvae.nn.layers.Sequential`.
        seed: the seed of the model's streams.
        has_prior: whether the model has a prior p(z) to :meth:`sample` from (the VAEs, the VQ-VAE).
        bounds_likelihood: whether the model bounds log p(x) (the VAEs: the ELBO and the IWAE bound).
        denoises: whether the model's encoder sees a corrupted input (the dae's ``denoise``).
        rows_independent: whether the loss is a mean over rows (every model but sparse-ae, whose penalty is
            a function of the whole batch's mean activation), as data-parallel training needs.
    """

    has_prior = False
    bounds_likelihood = False
    denoises = False
    rows_independent = True

    def __init__(self, config: NetworkConfig, backend: Backend | str, seed: int):
        self.config = config
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        xp = self.xp = self.backend.xp
        self.dtype = np.dtype(config.dtype)
        self.seed = rng.check_seed(seed)
        self.params = FlatParams(config.layout(), xp, self.dtype)
        self.grad = self.params.zeros_like()
        stacks.init_weights(self.params, np.random.default_rng(seed), xp)
        self.decoder = Sequential(stacks.decoder_layers(config, self.params, self.grad))
        if config.likelihood == "gaussian-learned":
            self.decoder_logvar = self.params.view("decoder.logvar")
            self.decoder_dlogvar = self.params.view("decoder.logvar", self.grad)
        else:
            self.decoder_logvar = xp.full(config.input_dim, config.decoder_logvar, self.dtype)
            self.decoder_dlogvar = None
        self._workspaces: dict = {}
        self._calls = 0  # the step of the next draw that names no seed (see noise())
        self._keys: dict = {}  # (seed, stream) -> its key

    @property
    def code_size(self) -> int:
        """The values of an example's code z: ``latent_dim``."""
        return self.config.latent_dim

    @property
    def kind(self) -> str:
        """The model's name: ``vae``, ``cvae``, ``ae``, ``dae``, ``sparse-ae`` or ``cae``."""
        return self.config.model

    def noise(self, stream: str, batch: int, seed: int | None = None, step: int | None = None, rows=None) -> Noise:
        """The :class:`Noise` of a pass over ``batch`` rows drawing from ``stream`` (:data:`tinyvae.rng.STREAMS`).

        ``seed`` None takes the model's own. ``step`` None takes, for a draw that names no seed, the model's
        count of such draws, so that each call draws afresh; for one that names a seed, 0, so that the same
        seed gives the same numbers. ``rows`` None numbers the rows 0 to ``batch`` - 1.

        Raises:
            SettingsError: a seed that is not an int in [0, 2^64).
        """
        if step is None:
            if seed is None:
                step, self._calls = self._calls, self._calls + 1
            else:
                step = 0
        seed = self.seed if seed is None else rng.check_seed(seed)
        if (seed, stream) not in self._keys:
            self._keys[(seed, stream)] = rng.stream_key(seed, stream)
        return Noise(self._keys[(seed, stream)], step, self.xp.arange(batch, dtype=np.int64) if rows is None else rows)

    def fixed_noise(self, stream: str, batch: int, noise_seed: int | None, **given) -> Noise | None:
        """The :class:`Noise` that ``noise_seed`` fixes for a checked call's draws from ``stream`` (None without
        one); ``given``: the call's arguments that hand the noise over whole (``eps=``, ``corrupted=``).

        Raises:
            SettingsError: a bad ``noise_seed``, or one given together with the noise itself.
        """
        if noise_seed is None:
            return None
        handed = [name for name, value in given.items() if value is not None]
        if handed:
            raise SettingsError(f"noise_seed draws what {handed[0]}= hands over; pass one of them, not both")
        return self.noise(stream, batch, seed=noise_seed)

    def evaluate(self, batches, seed: int | None = None) -> dict:
        """Test metrics over ``(x, y, rows)`` batches: :meth:`metrics` of :meth:`evaluation_sums` (the model's
        own, which say what each metric is)."""
        return self.metrics(self.evaluation_sums(batches, seed))

    def start_from_data(self, x, generator: np.random.Generator) -> None:
        """Where a model's parameters start from training examples (the VampPrior's pseudo-inputs), take them
        from ``x`` ``(N, D)``, chosen by ``generator``; the others start from their seed alone."""

    def nll(self, out, x, scale, nll_out, dout_out, dlogvar_out=None):
        """``nll_out (N,) = -log p(x|z)`` per row in nats and ``dout_out = scale * d nll / d out`` for the
        decoder's output ``out`` ``(N, D)`` and the data ``x``, ``(N, D)`` or for L = N / B draws ``(B, D)``
        (:func:`tinyvae.nn.likelihoods.nll_and_grad`); ``dlogvar_out`` receives the learned log-variance's
        gradient (``gaussian-learned`` only)."""
        likelihoods.nll_and_grad(self.backend, self.config.likelihood, out, x, self.decoder_logvar, scale, nll_out,
                                 dout_out, dlogvar_out)

    def as_batch(self, x):
        """``x`` checked (:func:`check_batch`) and as a backend array of the model's dtype."""
        x = self.xp.asarray(x)
        check_batch(x, self.config.input_dim, self.xp, binary_targets=self.config.likelihood == "bernoulli")
        return x.astype(self.dtype, copy=False)

    def as_labels(self, y, batch: int):
        """``y`` checked (:func:`check_labels`) and as a backend array; None for an unconditional model."""
        return check_labels(y, batch, self.config.n_classes, self.xp)

    def decoder_input(self, z, y):
        """The decoder's input for codes ``z`` ``(B, K)``; a model with labels adds their columns."""
        self.as_labels(y, z.shape[0])
        return z

    def decode(self, z, y=None):
        """The mean of p(x|z): ``sigmoid(logits)`` (Bernoulli) or the Gaussian mean, ``(B, D)`` host array.

        Args:
            z: ``(B, K)`` codes (K: :attr:`code_size`); y: ``(B,)`` labels for a conditional model.

        Raises:
            DataError: if ``z`` is not a finite ``(B, K)`` array, or for bad labels.
        """
        K = self.code_size
        z = self.xp.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != K or not bool(self.xp.isfinite(z).all()):
            raise DataError(f"expected finite z of shape (B, {K}), got {z.shape}")
        zin = self.decoder_input(z, y)
        return self.output_mean(self.decoder.forward(self.backend, zin, self.decoder.buffers(self.xp, z.shape[0], self.dtype)))

    def output_mean(self, out):
        """The mean of p(x|z) for decoder output ``out`` ``(B, D)``, as a new host array."""
        return likelihoods.mean(self.backend, self.config.likelihood, out)

    def reconstruct(self, x, y=None):
        """The mean of p(x|z) at the model's code of ``x`` (:meth:`code`), ``(B, D)`` host array. Raises like
        the model's ``loss_and_grad``."""
        return self.decode(self.code(x, y), y)

    def sample(self, n: int, y=None, seed: int | None = None):
        """Draws from the model's prior, decoded: the VAEs'. An autoencoder has no prior over its code.

        Raises:
            SettingsError: here, for a model without a prior (``has_prior`` False).
        """
        raise SettingsError(f"{self.kind} has no prior over its code to sample from; a VAE has")
