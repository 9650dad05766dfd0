"""The pictures a run writes after each epoch into its run directory, at the data's own size and colour.

* Images: ``reconstruction_{epoch}.png`` (the first 8 test examples above their reconstructions); a dae's
  ``denoising_{epoch}.png`` (8 test examples corrupted, their reconstructions, the originals); a VAE's
  ``sample_{epoch}.png`` (an 8x8 grid of decoded z ~ p(z); a cvae's, a row per class, the same 8 draws of
  z in every row); a VampPrior's ``pseudo_inputs_{epoch}.png`` (its first 64 pseudo-inputs, clipped to
  [0, 1]).
* Tables, which no picture shows: a VAE's ``samples_{epoch}.csv`` (64 decoded draws of z, a row each, the
  data's columns) and every model's ``latent_{epoch}.png``, the scatter of the test set's codes (where
  matplotlib is installed).

Every draw comes from the ``pictures`` stream of the run's seed (:mod:`tinyvae.rng`), the same every epoch.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import MissingDependency
from ..io.checkpoint import atomic_write_bytes
from ..io.datasets import Dataset
from ..io.images import prior_samples, save_grid, scatter
from .data import codes


def as_images(rows: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``(n, D)`` channels-last rows of ``(C, H, W)`` images as ``save_grid``'s ``(n, H, W)`` (grey) or
    ``(n, H, W, 3)`` (colour)."""
    C, H, W = shape
    images = np.asarray(rows).reshape(len(rows), H, W, C)
    return images[..., 0] if C == 1 else images


def write_pictures(model, data: Dataset, test_x: np.ndarray, test_y, run_dir, epoch: int, seed: int) -> None:
    """The pictures of epoch ``epoch`` (see the module doc) into ``run_dir``; ``test_x`` the test examples as
    the model sees them (host array), ``test_y`` their labels for a conditional model."""
    y8 = None if test_y is None else test_y[:8]
    if data.is_table:
        if model.has_prior:
            write_rows_csv(run_dir / f"samples_{epoch}.csv", prior_samples(model, seed)[0])
        try:
            scatter(run_dir / f"latent_{epoch}.png", codes(model, test_x, test_y, 1000), data.test.y,
                    data.class_names, f"{data.name} test set in the code space (epoch {epoch})")
        except MissingDependency:  # matplotlib is an optional extra
            pass
        return
    x = test_x[:8]  # (fewer where the test set is smaller)
    recon = model.reconstruct(x, y8)
    save_grid(run_dir / f"reconstruction_{epoch}.png", as_images(np.concatenate([x, recon]), data.shape), 2, len(x))
    if model.denoises:
        corrupted, denoised = model.denoise(x, seed)
        save_grid(run_dir / f"denoising_{epoch}.png",
                  as_images(np.concatenate([np.clip(corrupted, 0, 1), denoised, x]), data.shape), 3, len(x))
    if model.has_prior:
        images, rows, cols = prior_samples(model, seed)
        save_grid(run_dir / f"sample_{epoch}.png", as_images(images, data.shape), rows, cols)
    pseudo = getattr(model, "pseudo", None)  # a VampPrior's pseudo-inputs
    if pseudo is not None:
        shown = np.clip(model.backend.to_host(pseudo[:64]), 0, 1)
        save_grid(run_dir / f"pseudo_inputs_{epoch}.png", as_images(shown, data.shape), -(-len(shown) // 8),
                  min(len(shown), 8))


def write_rows_csv(path, rows: np.ndarray) -> None:
    """``rows`` ``(n, D)`` as a CSV with a header ``x1 .. xD``, written atomically."""
    text = io.StringIO()
    text.write(",".join(f"x{j + 1}" for j in range(rows.shape[1])) + "\n")
    np.savetxt(text, np.asarray(rows, np.float64), delimiter=",", fmt="%.9g")
    atomic_write_bytes(path, text.getvalue().encode())
