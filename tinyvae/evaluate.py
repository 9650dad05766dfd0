"""Judge a trained VAE: ``python -m tinyvae.evaluate RUN_DIR [--k 1000] [--n-images 1000]``.

Reports, in nats per image: the test-set negative ELBO with L draws of z per image, split into its
reconstruction term (``test_nll``, -log p(x|z)) and its KL term; the number of active latent units over
the test set; and on the first ``--n-images`` test images, with ``--k`` draws of z each, the
importance-weighted bound (IWAE), with its standard error over the images, and, from the same draws, the
ELBO (:mod:`tinyvae.models.bounds` has the formulas and their sources). Results are printed as a table and written to ``RUN_DIR/evaluation.json``.
The model is read by :func:`tinyvae.load`, and only the test split of its data.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from . import cli
from .errors import CheckpointError, SettingsError
from .io.checkpoint import atomic_write_bytes
from .io.modelfile import load
from .models.bounds import active_units, importance_weighted
from .training.data import batches, codes, load_run_data, relocated, test_set
from .training.state import checkpoint_of, run_settings


MAX_K = 1_000_000  # draws per image: a bound of --n-images images costs k decoder passes of each


def evaluate_run(run_dir: Path, backend: str = "numpy", k: int = 1000, n_images: int = 1000,
                 seed: int | None = None, log=print, moved: dict | None = None) -> dict:
    """Evaluate the model of the run in ``run_dir`` (a run directory or its checkpoint); print a table; write
    ``evaluation.json`` beside the checkpoint.

    The model comes from :func:`tinyvae.load`; only the test split is read (where the run holds its test set out
    of its data, the data), from where ``moved`` says (``data_dir``, ``data``, ``test_data``), else from where the
    run found its data. The draws of z come from the ``evaluate`` stream of ``seed``
    (default: the run's seed; :mod:`tinyvae.rng`), the test ELBO's at its ``elbo`` step, the IWAE bound's at
    its ``iwae`` step, for each test image by its index: with the run's seed, the test ELBO is the one its
    last epoch recorded.

    Raises:
        SettingsError: k outside [1, MAX_K], n_images < 1, a seed outside [0, 2^64), or a run of an autoencoder.
        CheckpointError, DataError, BackendUnavailable: as :func:`tinyvae.load` and
            :func:`tinyvae.training.data.load_run_data`, or a model whose evaluation is not finite.
    """
    if not isinstance(n_images, int) or n_images < 1:
        raise SettingsError(f"--n-images must be an int >= 1, got {n_images!r}")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SettingsError(f"--k must be an int from 1 to {MAX_K:,} (draws of z per image), got {k!r}")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**64):
        raise SettingsError(f"--seed must be an int in [0, 2^64), got {seed!r}")
    settings, epoch = run_settings(run_dir)
    model = load(run_dir, backend)
    if not model.bounds_likelihood:
        raise SettingsError(f"{run_dir} holds a {model.kind} run; the ELBO and IWAE bounds need a VAE "
                            "(its test metrics are in metrics.jsonl)")
    t = settings.train
    data = load_run_data(relocated(settings, moved or {}).train, splits=("test",))
    test_x, test_y = test_set(data, settings, model.backend, model.config.n_classes)
    log(f"{run_dir}: epoch {epoch}, backend {model.backend.name}")
    metrics = model.evaluate(batches(test_x, test_y, t.eval_batch_size), seed)
    n_active, _ = active_units(codes(model, test_x, test_y, t.eval_batch_size))
    n_test = test_x.shape[0]
    n = min(n_images, n_test)
    iwae, elbo = [], []
    for xb, yb, rows in batches(test_x[:n], None if test_y is None else test_y[:n], 100):
        a, b = importance_weighted(model, xb, k, yb, seed, model.backend.to_host(rows))
        iwae.append(a)
        elbo.append(b)
    iwae = np.concatenate(iwae)
    result = {
        "epoch": epoch,
        "test_loss": metrics["test_loss"], "test_nll": metrics["test_nll"], "test_kl": metrics["test_kl"],
        "active_units": n_active, "latent_dim": model.config.latent_dim,
        "k": k, "n_images": n,
        "elbo_nll": float(-np.concatenate(elbo).mean()),
        "iwae_nll": float(-iwae.mean()),
        "iwae_nll_se": standard_error(iwae),
    }
    bad = [name for name, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise CheckpointError(f"{run_dir}: the evaluation of its model gave non-finite {', '.join(bad)}; "
                              "evaluation.json not written")
    rows = [
        (f"test negative ELBO, {model.config.draws} z per image", f"{result['test_loss']:.2f}", "nats/image", f"all {n_test}"),
        ("  reconstruction -log p(x|z)", f"{result['test_nll']:.2f}", "nats/image", ""),
        ("  KL(q(z|x) || p(z))", f"{result['test_kl']:.2f}", "nats/image", ""),
        ("active units (Var mu > 0.01)", f"{n_active} of {model.config.latent_dim}", "", f"all {n_test}"),
        (f"negative ELBO, k = {k}", f"{result['elbo_nll']:.2f}", "nats/image", f"first {n}"),
        (f"IWAE -log p(x) estimate, k = {k}", f"{result['iwae_nll']:.2f}", "nats/image", f"first {n}"),
        ("  its standard error over the images", "-" if n == 1 else f"{result['iwae_nll_se']:.2f}", "nats/image", ""),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        log("  ".join(cell.ljust(wi) if i == 0 else cell.rjust(wi) for i, (cell, wi) in enumerate(zip(r, w))))
    blob = (json.dumps(result, indent=1, allow_nan=False) + "\n").encode()
    atomic_write_bytes(checkpoint_of(run_dir).parent / "evaluation.json", blob)
    return result


def standard_error(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values`` ``(n,)``: their sample standard deviation (n - 1 degrees of
    freedom) over sqrt(n); None for a single value, NaN where a value is not finite (then reported as such)."""
    n = len(values)
    with np.errstate(invalid="ignore"):
        return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else None


def build_parser():
    p = cli.parser("python -m tinyvae.evaluate", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run of python -m tinyvae.train")
    cli.add_data_dir(p)
    p.add_argument("--k", type=int, default=1000, help="draws of z per image for the IWAE bound (default 1000)")
    p.add_argument("--n-images", type=int, default=1000,
                   help="test images for the IWAE bound, the first ones (default 1000)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the draws of z (default: the run's seed, whose test ELBO its last epoch recorded)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse(argv)
    if args is None:
        return 2

    def body() -> int:
        evaluate_run(Path(args.run_dir), args.backend, args.k, args.n_images, args.seed, moved=cli.moved_data(args))
        return 0

    return cli.run(body, lambda: f"nothing was written; {args.run_dir} is as it was")


if __name__ == "__main__":
    sys.exit(main())
