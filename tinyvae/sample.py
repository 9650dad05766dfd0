"""Pictures of a trained VAE: ``python -m tinyvae.sample RUN_DIR --what {samples,interpolate,manifold,scatter}``.

* ``samples``: decoded draws z ~ N(0, I), an 8x8 grid; for a conditional VAE one
  row per class, the same eight draws of z in every row.
* ``interpolate``: for ``--pairs`` pairs of test images (a, b), the decoded
  ``(1 - t) mu(a) + t mu(b)`` for ``--steps`` values of t in [0, 1], one row per pair,
  with a and b themselves at the ends.
* ``manifold`` (latent size 2 only): the decoded grid ``z = (Phi^-1(u), Phi^-1(v))``
  for u, v evenly spaced in (0, 1), as in Kingma & Welling (2014), Fig. 4: the
  inverse CDF of the prior maps equal probability mass to each cell.
* ``scatter``: E_q[z] = mu of every test image, coloured by label (matplotlib, the
  optional extra ``pip install tinyvae[plot]``); for K > 2 the first two principal
  components of mu.

Images are the means of p(x|z) (sigmoid(logits), or the Gaussian mean clipped
to [0, 1]), written as PNG with Pillow into ``RUN_DIR/<what>.png`` unless ``--out``.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from . import cli
from .checkpoint import atomic_write_bytes
from .images import save_grid
from .model import VAE

WHAT = ("samples", "interpolate", "manifold", "scatter")


def prior_samples(model: VAE, rng: np.random.Generator, per_row: int = 8) -> tuple[np.ndarray, int, int]:
    """Decoded z ~ N(0, I): ``(images (rows*cols, D), rows, cols)``.

    8 rows of ``per_row`` for a VAE; one row per class (the same ``per_row``
    draws of z in every row) for a conditional VAE.
    """
    C, K = model.config.n_classes, model.config.latent_dim
    if C:
        z = np.tile(rng.standard_normal((per_row, K)), (C, 1))
        return model.decode(z, np.repeat(np.arange(C), per_row)), C, per_row
    return model.decode(rng.standard_normal((8 * per_row, K))), 8, per_row


def interpolate(model: VAE, a: np.ndarray, b: np.ndarray, steps: int = 10, ya=None, yb=None) -> np.ndarray:
    """Decoded straight lines between the codes of image pairs.

    Args:
        a, b: ``(P, D)`` image pairs; ya, yb: their labels for a conditional
            VAE (the label switches from ya to yb half way).
        steps: points on each line, t = 0 ... 1 (>= 2).

    Returns:
        ``(P, steps + 2, D)``: a, the decoded line, b.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    mu_a, _ = model.encode(a, ya)
    mu_b, _ = model.encode(b, yb)
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).reshape(-1, mu_a.shape[1])
    y = None if ya is None else np.where(t.ravel()[None, :] < 0.5, np.asarray(ya)[:, None], np.asarray(yb)[:, None]).ravel()
    line = model.decode(z, y).reshape(len(a), steps, -1)
    return np.concatenate([np.asarray(a)[:, None], line, np.asarray(b)[:, None]], axis=1)


def manifold(model: VAE, n: int = 20, y=None) -> np.ndarray:
    """The decoded ``n x n`` grid of a 2-D latent space, ``(n * n, D)``, row-major, z_2 decreasing down the rows.

    Raises:
        ValueError: if the latent size is not 2.
    """
    if model.config.latent_dim != 2:
        raise ValueError(f"the manifold grid needs a 2-D latent space; this model has {model.config.latent_dim}")
    q = norm.ppf(np.linspace(0, 1, n + 2)[1:-1])  # (0, 1) without its ends: Phi^-1 is finite
    z = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)
    return model.decode(z, None if y is None else np.full(len(z), y))


def scatter(path, mu: np.ndarray, labels: np.ndarray, names=None, title: str = "") -> None:
    """Save a scatter of ``mu`` ``(N, K)`` coloured by ``labels`` ``(N,)``; K > 2 uses the first two principal components.

    Raises:
        ImportError: matplotlib is missing (``pip install tinyvae[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("the scatter needs matplotlib: pip install 'tinyvae[plot]'") from e
    mu = np.asarray(mu, np.float64)
    axes = ("z1", "z2")
    if mu.shape[1] > 2:
        centred = mu - mu.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        mu, axes = centred @ vt[:2].T, ("principal component 1 of mu", "principal component 2 of mu")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(mu[sel, 0], mu[sel, 1] if mu.shape[1] > 1 else np.zeros(sel.sum()), s=2, alpha=0.6,
                   label=names[c] if names is not None else str(c))
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(markerscale=5, fontsize=7, loc="best")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def square_shape(input_dim: int) -> tuple[int, int]:
    """``(side, side)`` for square images of ``input_dim`` pixels; ``ValueError`` otherwise."""
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise ValueError(f"cannot draw images of {input_dim} pixels without their dataset, which gives their shape")
    return side, side


def build_parser():
    p = cli.parser("python -m tinyvae.sample", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run of python -m tinyvae.train (a VAE or a conditional VAE)")
    p.add_argument("--what", choices=WHAT, required=True,
                   help="samples and manifold need only the model; interpolate and scatter read the test set")
    cli.add_data_dir(p)
    p.add_argument("--out", default=None, help="output PNG (default RUN_DIR/<what>.png)")
    p.add_argument("--n", type=int, default=20, help="manifold: grid side (default 20)")
    p.add_argument("--pairs", type=int, default=8, help="interpolate: number of image pairs (default 8)")
    p.add_argument("--steps", type=int, default=10, help="interpolate: points on each line (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws of z and the choice of images (default 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .saving import load
    from .train import Trainer

    def body() -> int:
        out = Path(args.out or Path(args.run_dir) / f"{args.what}.png")
        rng = np.random.default_rng(args.seed)
        if args.what in ("samples", "manifold"):  # the model alone
            model = load(args.run_dir, args.backend)
            trainer = None
        else:
            trainer = Trainer.resume(Path(args.run_dir), args.backend, args.data_dir)
            model = trainer.model
        if not isinstance(model, VAE):
            raise ValueError(f"{args.run_dir} holds a {model.config.model} run; these pictures need a VAE's "
                             "prior and mean code (its reconstructions are written during training)")
        h, w = trainer.data.image_shape if trainer else square_shape(model.config.input_dim)
        if args.what == "samples":
            images, rows, cols = prior_samples(model, rng)
            save_grid(out, images.reshape(-1, h, w), rows, cols)
        elif args.what == "manifold":
            save_grid(out, manifold(model, args.n).reshape(-1, h, w), args.n, args.n)
        elif args.what == "interpolate":
            host = trainer.backend.to_host
            test_x = host(trainer.test_x)
            test_y = host(trainer.test_y) if trainer.test_y is not None else None
            idx = rng.choice(len(test_x), 2 * args.pairs, replace=False)
            a, b = idx[:args.pairs], idx[args.pairs:]
            ya, yb = (test_y[a], test_y[b]) if test_y is not None else (None, None)
            lines = interpolate(model, test_x[a], test_x[b], args.steps, ya, yb)
            save_grid(out, lines.reshape(-1, h, w), args.pairs, args.steps + 2)
        else:
            scatter(out, trainer.test_codes(), trainer.data.test_y, trainer.data.class_names,
                    f"{trainer.data.name} test set in z (epoch {trainer.epoch}, K = {model.config.latent_dim})")
        print(f"wrote {out}")
        return 0

    return cli.run(body, lambda: "no picture was written")


if __name__ == "__main__":
    sys.exit(main())
