"""Pictures of a model, as PNG files written atomically: image grids (Pillow), and plots
(matplotlib, the optional extra ``pip install 'tinyvae[plot]'``).

The grids: prior samples, reconstructions, interpolations between codes and the
2-D latent manifold, each image scaled up to at least ``MIN_SIDE`` pixels a side
so a 28-pixel image can be seen on a screen. The plots: the latent scatter of a
test set and the loss curves of a run.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import DataError, MissingDependency, SettingsError
from .checkpoint import atomic_write_bytes

if TYPE_CHECKING:
    from ..models.protocol import Model
    from ..models.vae import VAE

MIN_SIDE = 56  # pixels on screen of the smaller side of one image in a grid


def save_grid(path, images, rows: int, cols: int, pad: int = 2) -> None:
    """Tile up to ``rows * cols`` grey or colour images into one PNG (the tiles after the last image stay
    black), each scaled up (nearest pixel) by the smallest whole factor that makes its smaller side at least
    :data:`MIN_SIDE` pixels.

    Args:
        path: output file, replaced atomically (a reader sees the old picture or the new one).
        images: ``(n, H, W)`` grey or ``(n, H, W, 3)`` RGB floats in [0, 1] (clipped), row-major order.
        pad: pixels of black border between tiles.

    Raises:
        ValueError: if there are more than ``rows * cols`` images, or they are neither grey nor RGB.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim not in (3, 4) or images.shape[0] > rows * cols or images.ndim == 4 and images.shape[3] != 3:
        raise ValueError(f"expected at most {rows * cols} images of shape (H, W) or (H, W, 3), got {images.shape}")
    factor = max(1, math.ceil(MIN_SIDE / min(images.shape[1:3])))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    n, h, w = images.shape[:3]
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]), dtype=np.uint8)
    tiles = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tiles[k]
    png = io.BytesIO()
    Image.fromarray(canvas, mode="L" if canvas.ndim == 2 else "RGB").save(png, format="PNG")
    atomic_write_bytes(path, png.getvalue())


def image_shape(config) -> tuple[int, int, int]:
    """``(C, H, W)`` of a model's examples (its config's ``data_shape``); ``SettingsError`` for a table's model,
    whose examples no picture shows."""
    if config.image_shape is None:
        raise SettingsError(f"the model takes rows of {config.input_dim} values, a table, not images: no picture "
                            "shows them (sample --what samples writes them as a CSV)")
    return tuple(config.data_shape)


def read_image(path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file (any Pillow reads) as intensities in [0, 1], channels-last and flattened, in ``shape``'s
    C channels (1 grey, 3 RGB); ``DataError`` unless Pillow reads it and it is ``shape``'s height and width."""
    from PIL import UnidentifiedImageError

    C, H, W = shape
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L" if C == 1 else "RGB"), np.float32) / 255
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not an image Pillow can read ({e})") from e
    if pixels.shape[:2] != (H, W):
        raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels; the model draws {W}x{H}")
    return pixels.ravel()


def prior_samples(model: VAE, seed: int | None = None, n: int | None = None) -> tuple[np.ndarray, int, int]:
    """Decoded z ~ N(0, I), drawn by ``model.prior_draws(n, seed)``: ``(images (n', D), rows, cols)`` for a grid
    of ``rows x cols`` tiles (the last row's may stay empty).

    ``n`` (default 64) draws, 8 a row, for a VAE; for a conditional VAE ``n`` (default 8) draws, the same in
    every class's row.

    Raises:
        SettingsError: ``n`` < 1, or more than this machine's memory holds decoded.
    """
    C = model.config.n_classes
    if C:
        n = 8 if n is None else n
        z = np.tile(model.prior_draws(n, seed), (C, 1))
        return model.decode(z, np.repeat(np.arange(C), n)), C, n
    n = 64 if n is None else n
    return model.decode(model.prior_draws(n, seed)), -(-n // 8), min(n, 8)


def interpolate(model: Model, a: np.ndarray, b: np.ndarray, steps: int = 10, ya=None, yb=None) -> np.ndarray:
    """Decoded straight lines between the codes of image pairs (``model.code``: mu for a VAE, h for an
    autoencoder).

    Args:
        a, b: ``(P, D)`` image pairs; ya, yb: their labels for a conditional
            VAE (the label switches from ya to yb half way).
        steps: points on each line, t = 0 ... 1 (>= 2).

    Returns:
        ``(P, steps + 2, D)``: a, the decoded line, b.
    """
    if steps < 2:
        raise SettingsError(f"steps must be >= 2, got {steps}")
    mu_a, mu_b = model.code(a, ya), model.code(b, yb)
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).reshape(-1, mu_a.shape[1])
    y = None if ya is None else np.where(t.ravel()[None, :] < 0.5, np.asarray(ya)[:, None], np.asarray(yb)[:, None]).ravel()
    line = model.decode(z, y).reshape(len(a), steps, -1)
    return np.concatenate([np.asarray(a)[:, None], line, np.asarray(b)[:, None]], axis=1)


def manifold(model: VAE, n: int = 20, y=None) -> np.ndarray:
    """The decoded ``n x n`` grid of a 2-D latent space, ``(n * n, D)``, row-major, z_2 decreasing down the rows.

    Raises:
        SettingsError: if the latent size is not 2, or ``n`` < 1.
    """
    if model.config.latent_dim != 2:
        raise SettingsError(f"the manifold grid needs a 2-D latent space; this model has {model.config.latent_dim}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SettingsError(f"the manifold grid's side n must be an int >= 1, got {n!r}")
    from scipy.stats import norm  # here: importing scipy.stats costs every command's start (docs/performance.md)

    q = norm.ppf(np.linspace(0, 1, n + 2)[1:-1])  # (0, 1) without its ends: Phi^-1 is finite
    z = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)
    return model.decode(z, None if y is None else np.full(len(z), y))


def scatter(path, mu: np.ndarray, labels: np.ndarray | None, names=None, title: str = "") -> None:
    """Save a scatter of ``mu`` ``(N, K)`` coloured by ``labels`` ``(N,)`` (None: one colour), each class named by
    ``names`` (None or empty: by its number); K > 2 uses the first two principal components.

    Raises:
        MissingDependency: matplotlib is missing (``pip install tinyvae[plot]``).
    """
    plt = pyplot("the scatter")
    mu = np.asarray(mu, np.float64)
    axes = ("z1", "z2")
    if mu.shape[1] > 2:
        centred = mu - mu.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        mu, axes = centred @ vt[:2].T, ("principal component 1 of mu", "principal component 2 of mu")
    labels = np.zeros(len(mu), np.int64) if labels is None else labels
    names = names or None
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(mu[sel, 0], mu[sel, 1] if mu.shape[1] > 1 else np.zeros(sel.sum()), s=2, alpha=0.6,
                   label=names[c] if names is not None else str(c))
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(markerscale=5, fontsize=7, loc="best")
    save_figure(plt, fig, path)


def pyplot(what: str):
    """matplotlib's pyplot on the Agg backend; :class:`~tinyvae.errors.MissingDependency` naming ``what``
    needs it where it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependency(f"{what} needs matplotlib: pip install 'tinyvae[plot]'") from e
    return plt


def save_figure(plt, fig, path) -> None:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def loss_curves(path, history: list[dict]) -> None:
    """Plot a run's train and test loss per epoch (nats per sample) from its ``metrics.jsonl`` records.

    Raises:
        MissingDependency: matplotlib is missing.
    """
    plt = pyplot("the loss plot")
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train (minimised objective)")
    ax.plot(epochs, [r["test_loss"] for r in history], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per sample)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(plt, fig, path)
