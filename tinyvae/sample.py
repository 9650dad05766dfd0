"""Pictures of a trained model: ``python -m tinyvae.sample RUN_DIR --what {samples,interpolate,manifold,scatter}``.

* ``samples``: decoded draws z ~ N(0, I), an 8x8 grid; for a conditional VAE one
  row per class, the same eight draws of z in every row. A table's model writes
  its 64 draws as the rows of a CSV (``RUN_DIR/samples.csv``).
* ``interpolate``: for ``--pairs`` pairs of test images (a, b), the decoded
  ``(1 - t) mu(a) + t mu(b)`` (an autoencoder's codes h in place of mu) for
  ``--steps`` values of t in [0, 1], one row per pair, with a and b themselves at the ends; or for the pairs of
  ``--images A.png B.png ...`` (images of the model's size, taken two by two; no dataset needed).
* ``manifold`` (latent size 2 only): the decoded grid ``z = (Phi^-1(u), Phi^-1(v))``
  for u, v evenly spaced in (0, 1), as in Kingma & Welling (2014), Fig. 4: the
  inverse CDF of the prior maps equal probability mass to each cell.
* ``scatter``: the code of every test example (E_q[z] = mu for a VAE, h for an
  autoencoder), coloured by label (matplotlib, the optional extra ``pip install
  tinyvae[plot]``); for K > 2 the first two principal components.

Images are the means of p(x|z) (sigmoid(logits), or the Gaussian mean clipped
to [0, 1]), at the data's size and colour, written as PNG with Pillow into
``RUN_DIR/<what>.png`` unless ``--out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import cli, rng
from .errors import SettingsError
from .io.images import image_shape, interpolate, manifold, prior_samples, read_image, save_grid, scatter
from .io.modelfile import load
from .training.data import codes, load_run_data, relocated, test_set
from .training.pictures import as_images, write_rows_csv
from .training.state import checkpoint_of, run_settings

WHAT = ("samples", "interpolate", "manifold", "scatter")
PRIOR = ("samples", "manifold")  # the pictures of a model's prior: a VAE's
# What a picture holds at most: beyond these, a PNG no screen shows whole.
LIMITS = {"n": 10_000, "pairs": 1_000, "steps": 1_000, "seed": 2**64 - 1}


def build_parser():
    p = cli.parser("python -m tinyvae.sample", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run of python -m tinyvae.train (or its checkpoint)")
    p.add_argument("--what", choices=WHAT, required=True,
                   help="samples, manifold and interpolate --images need only the model; interpolate and scatter "
                        "otherwise read the test set")
    cli.add_data_dir(p)
    p.add_argument("--out", default=None, help="output PNG (default RUN_DIR/<what>.png)")
    p.add_argument("--n", type=int, default=None,
                   help=f"samples: how many (default 64, 8 a row; a conditional VAE's: per class, default 8); "
                        f"manifold: the grid's side (default 20); at most {LIMITS['n']}")
    p.add_argument("--pairs", type=int, default=8,
                   help=f"interpolate: number of image pairs (default 8, at most {LIMITS['pairs']})")
    p.add_argument("--steps", type=int, default=10,
                   help=f"interpolate: points on each line (default 10, at most {LIMITS['steps']})")
    p.add_argument("--images", nargs="+", default=None, metavar="PNG",
                   help="interpolate: between these images, two by two, instead of test images (default: test images)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws of z and the choice of images (default 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse(argv)
    if args is None:
        return 2

    def body() -> int:
        for name in ("n", "pairs", "steps", "seed"):
            low, value = {"seed": 0, "steps": 2}.get(name, 1), getattr(args, name)
            if value is not None and not low <= value <= LIMITS[name]:
                raise SettingsError(f"--{name} must be an int from {low} to {LIMITS[name]}, got {value}")
        if args.n is not None and args.what not in PRIOR:
            raise SettingsError(f"--n is how many samples, or the manifold's side; --what {args.what} does not take it")
        model = load(args.run_dir, args.backend)
        table = model.config.image_shape is None
        suffix = ".csv" if table and args.what == "samples" else ".png"
        out = Path(args.out or checkpoint_of(args.run_dir).parent / f"{args.what}{suffix}")
        if args.what in PRIOR and not model.has_prior:
            raise SettingsError(f"{args.run_dir} holds a {model.kind} run; {args.what} needs a VAE's prior "
                                "(its reconstructions are written during training; interpolate and scatter draw "
                                "its codes)")
        if args.what == "samples" and table:
            write_rows_csv(out, prior_samples(model, args.seed, args.n)[0])
        elif args.what == "samples":
            images, rows, cols = prior_samples(model, args.seed, args.n)
            save_grid(out, as_images(images, image_shape(model.config)), rows, cols)
        elif args.what == "manifold":
            side = 20 if args.n is None else args.n
            save_grid(out, as_images(manifold(model, side), image_shape(model.config)), side, side)
        elif args.what == "interpolate" and args.images:
            if len(args.images) % 2:
                raise SettingsError(f"--images takes pairs of images, got {len(args.images)}")
            shape = image_shape(model.config)
            x = np.stack([read_image(path, shape) for path in args.images])
            lines = interpolate(model, x[0::2], x[1::2], args.steps)
            save_grid(out, as_images(lines.reshape(-1, x.shape[1]), shape), len(x) // 2, args.steps + 2)
        else:  # pictures of the test set
            settings, epoch = run_settings(args.run_dir)
            t = relocated(settings, cli.moved_data(args)).train
            if args.what == "interpolate":
                image_shape(model.config)  # a table's model has no picture to interpolate
            data = load_run_data(t, splits=("test",))
            test_x, test_y = test_set(data, settings, model.backend, model.config.n_classes)
            if args.what == "interpolate":
                host = model.backend.to_host
                test_x, test_y = host(test_x), None if test_y is None else host(test_y)
                if 2 * args.pairs > len(test_x):
                    raise SettingsError(f"--pairs {args.pairs} needs {2 * args.pairs} test images; the test set "
                                        f"holds {len(test_x)}")
                idx = rng.generator(args.seed, "pictures", 0).choice(len(test_x), 2 * args.pairs, replace=False)
                a, b = idx[:args.pairs], idx[args.pairs:]
                ya, yb = (test_y[a], test_y[b]) if test_y is not None else (None, None)
                lines = interpolate(model, test_x[a], test_x[b], args.steps, ya, yb)
                save_grid(out, as_images(lines.reshape(-1, test_x.shape[1]), data.shape), args.pairs, args.steps + 2)
            else:
                scatter(out, codes(model, test_x, test_y, t.eval_batch_size), data.test.y, data.class_names,
                        f"{data.name} test set in z (epoch {epoch}, K = {model.config.latent_dim})")
        print(f"wrote {out}  (backend {model.backend.name})")
        return 0

    return cli.run(body, lambda: "no picture was written")


if __name__ == "__main__":
    sys.exit(main())
