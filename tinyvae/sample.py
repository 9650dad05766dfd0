"""Pictures of a trained VAE: ``python -m tinyvae.sample RUN_DIR --what {samples,interpolate,manifold,scatter}``.

* ``samples``: decoded draws z ~ N(0, I), an 8x8 grid; for a conditional VAE one
  row per class, the same eight draws of z in every row.
* ``interpolate``: for ``--pairs`` pairs of test images (a, b), the decoded
  ``(1 - t) mu(a) + t mu(b)`` for ``--steps`` values of t in [0, 1], one row per pair,
  with a and b themselves at the ends; or for the pairs of ``--images A.png B.png
  ...`` (grey PNGs of the model's image size, taken two by two; no dataset needed).
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

import math
import sys
from pathlib import Path

import numpy as np

from . import cli
from .images import interpolate, manifold, prior_samples, save_grid, scatter
from .model import VAE

WHAT = ("samples", "interpolate", "manifold", "scatter")


def square_shape(input_dim: int) -> tuple[int, int]:
    """``(side, side)`` for square images of ``input_dim`` pixels; ``ValueError`` otherwise."""
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise ValueError(f"cannot draw images of {input_dim} pixels without their dataset, which gives their shape")
    return side, side


def read_grey(path, shape: tuple[int, int]) -> np.ndarray:
    """A PNG (or any image Pillow reads) as grey intensities in [0, 1], flattened; ``ValueError`` unless it
    is ``shape`` (height, width)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), np.float32) / 255
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not an image Pillow can read") from e
    if grey.shape != shape:
        raise ValueError(f"{path}: {grey.shape[1]}x{grey.shape[0]} pixels; the model draws {shape[1]}x{shape[0]}")
    return grey.ravel()


def build_parser():
    p = cli.parser("python -m tinyvae.sample", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run of python -m tinyvae.train (a VAE or a conditional VAE)")
    p.add_argument("--what", choices=WHAT, required=True,
                   help="samples, manifold and interpolate --images need only the model; interpolate and scatter "
                        "otherwise read the test set")
    cli.add_data_dir(p)
    p.add_argument("--out", default=None, help="output PNG (default RUN_DIR/<what>.png)")
    p.add_argument("--n", type=int, default=20, help="manifold: grid side (default 20)")
    p.add_argument("--pairs", type=int, default=8, help="interpolate: number of image pairs (default 8)")
    p.add_argument("--steps", type=int, default=10, help="interpolate: points on each line (default 10)")
    p.add_argument("--images", nargs="+", default=None, metavar="PNG",
                   help="interpolate: between these images, two by two, instead of test images (default: test images)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws of z and the choice of images (default 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .saving import load
    from .trainer import Trainer

    def body() -> int:
        out = Path(args.out or Path(args.run_dir) / f"{args.what}.png")
        rng = np.random.default_rng(args.seed)
        if args.what in ("samples", "manifold") or (args.what == "interpolate" and args.images):  # the model alone
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
        elif args.what == "interpolate" and args.images:
            if len(args.images) % 2:
                raise ValueError(f"--images takes pairs of images, got {len(args.images)}")
            x = np.stack([read_grey(path, (h, w)) for path in args.images])
            lines = interpolate(model, x[0::2], x[1::2], args.steps)
            save_grid(out, lines.reshape(-1, h, w), len(x) // 2, args.steps + 2)
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
        print(f"wrote {out}  (backend {model.backend.name})")
        return 0

    return cli.run(body, lambda: "no picture was written")


if __name__ == "__main__":
    sys.exit(main())
