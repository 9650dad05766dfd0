"""Judge a trained VAE: ``python -m tinyvae.evaluate RUN_DIR [--k 1000] [--n-images 1000]``.

Reports, in nats per image:

* the test-set negative ELBO with one z per image, split into its
  reconstruction term (``test_nll``, -log p(x|z)) and its KL term;
* the number of active latent units, ``Cov_x(E_q[z_u]) > 0.01`` over the test
  set (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted Autoencoders",
  Sec. 5.2); E_q[z] is mu;
* on the first ``--n-images`` test images, with ``--k`` draws of z each: the
  importance-weighted bound (IWAE; Burda et al. eq. 8)

      log p(x) >= L_k = log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z|x)

  and, from the same draws, the ELBO (the mean of the same log weights with
  the KL in closed form, K&W eq. 10). L_k >= ELBO, so ``iwae_nll <= elbo_nll``.

The log weights are ``log w = log p(x|z) + log p(z) - log q(z|x)``; with
``z = mu + sigma * eps`` the log(2 pi) terms of p(z) and q(z|x) cancel, leaving
``log p(x|z) - 0.5 |z|^2 + 0.5 |eps|^2 + 0.5 sum(logvar)``. Their mean over k
is taken as a running log-sum-exp (max shift), ``chunk`` draws at a time, so
k = 5000 needs no more memory than k = chunk. Results are printed as a table
and written to ``RUN_DIR/evaluation.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from . import cli
from .backends import reference
from .checkpoint import atomic_write_bytes
from .model import VAE, repeat_rows

ACTIVE_THRESHOLD = 0.01
MAX_ROWS = 1 << 15  # decoder rows per chunk: bounds memory whatever k is


def importance_weighted(model: VAE, x, k: int, y=None, rng: np.random.Generator | None = None,
                        chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IWAE bound and ELBO of each image, from the same ``k`` draws of z.

    Args:
        model: a trained :class:`VAE`.
        x: ``(B, D)`` images (host or backend array), checked like training data.
        k: draws of z per image, >= 1.
        y: ``(B,)`` labels for a conditional model (the bounds are then of log p(x|y)).
        rng: source of eps (default: a fresh generator seeded 0).
        chunk: draws per decoder pass (default: as many as fit ``MAX_ROWS`` rows).

    Returns:
        ``(iwae, elbo)``: two ``(B,)`` float64 host arrays of log-likelihood
        bounds in nats (negate for an NLL); ``iwae >= elbo`` element-wise.

    Raises:
        ValueError: for k < 1 or bad ``x`` / ``y`` (as :meth:`VAE.loss_and_grad`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = rng if rng is not None else np.random.default_rng(0)
    xp, dt, cfg = model.xp, model.dtype, model.config
    B, K, C = np.shape(x)[0], cfg.latent_dim, cfg.n_classes
    mu, logvar = model.encode(x, y)  # checks x and y
    x = xp.asarray(x, dtype=dt)
    c = max(1, min(k, chunk or MAX_ROWS // B))
    rows = c * B
    zin = xp.zeros((rows, K + C), dt)
    if C:
        model.labels_into(zin, model.as_labels(y, B))
    outs = model.decoder.buffers(xp, rows, dt)
    nll, dout, target = xp.empty(rows, dt), xp.empty((rows, cfg.input_dim), dt), xp.empty((rows, cfg.input_dim), dt)
    repeat_rows(target, x)
    mu64, logvar64 = mu.astype(np.float64), logvar.astype(np.float64)
    std = np.exp(0.5 * logvar64)
    shift = np.full(B, -np.inf)     # running max of the log weights
    total = np.zeros(B)             # sum of exp(log w - shift)
    mean_log_px = np.zeros(B)       # running sum of log p(x|z) for the ELBO
    done = 0
    while done < k:
        n = min(c, k - done)
        eps = rng.standard_normal((n, B, K))
        z = mu64 + std * eps
        zin[:n * B, :K] = xp.asarray(z.reshape(n * B, K).astype(dt))
        out = model.decoder.forward(model.backend, zin, outs)
        model.likelihood(out[:n * B], target[:n * B], 0.0, nll[:n * B], dout[:n * B])
        log_px = -model.backend.to_host(nll[:n * B]).astype(np.float64).reshape(n, B)
        log_w = log_px - 0.5 * (z * z).sum(-1) + 0.5 * (eps * eps).sum(-1) + 0.5 * logvar64.sum(-1)
        new_shift = np.maximum(shift, log_w.max(axis=0))
        total = total * np.exp(shift - new_shift) + np.exp(log_w - new_shift).sum(axis=0)
        shift = new_shift
        mean_log_px += log_px.sum(axis=0)
        done += n
    iwae = shift + np.log(total) - math.log(k)
    kl = np.empty(B)
    reference.reparameterize_kl(np.concatenate([mu64, logvar64], axis=1), np.zeros_like(mu64), np.empty_like(mu64), kl)
    return iwae, mean_log_px / k - kl


def active_units(mu: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, np.ndarray]:
    """Active latent units: ``(count, per-unit variance)`` of ``mu`` ``(N, K)`` over the N images.

    A unit u is active when ``Cov_x(E_q[z_u]) = Var_x(mu_u) > threshold`` (Burda et al. 2015, Sec. 5.2).
    """
    var = np.asarray(mu, np.float64).var(axis=0)
    return int((var > threshold).sum()), var


def evaluate_run(run_dir: Path, backend: str = "numpy", k: int = 1000, n_images: int = 1000,
                 seed: int = 0, log=print, data_dir=None) -> dict:
    """Evaluate the checkpoint in ``run_dir``; print a table; write ``run_dir/evaluation.json``.

    The test set is read from ``data_dir`` where given, else from where the run found its data.

    Raises:
        CheckpointError, DataError, FileNotFoundError, BackendUnavailable, ValueError:
            as :meth:`tinyvae.trainer.Trainer.resume`, for k < 1 / n_images < 1, or a run of an autoencoder.
    """
    from .trainer import Trainer

    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    trainer = Trainer.resume(Path(run_dir), backend, data_dir)
    if not trainer.settings.is_vae:
        raise ValueError(f"{run_dir} holds a {trainer.settings.model} run; the ELBO and IWAE bounds need a VAE "
                         "(its test reconstruction loss is in metrics.jsonl)")
    model = trainer.model
    log(f"{run_dir}: epoch {trainer.epoch}, backend {trainer.backend.name}")
    metrics = trainer.evaluate()
    n_active, _ = active_units(trainer.test_codes())
    n_test = trainer.test_x.shape[0]
    n = min(n_images, n_test)
    rng = np.random.default_rng(seed)
    iwae, elbo = [], []
    step = 100
    for i in range(0, n, step):
        j = min(n, i + step)
        a, b = importance_weighted(model, trainer.test_x[i:j], k, trainer.test_labels(i, j), rng)
        iwae.append(a)
        elbo.append(b)
    result = {
        "epoch": trainer.epoch,
        "test_loss": metrics["test_loss"], "test_nll": metrics["test_nll"], "test_kl": metrics["test_kl"],
        "active_units": n_active, "latent_dim": model.config.latent_dim,
        "k": k, "n_images": n,
        "elbo_nll": float(-np.concatenate(elbo).mean()),
        "iwae_nll": float(-np.concatenate(iwae).mean()),
    }
    bad = [name for name, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"{run_dir}: the evaluation gave non-finite {', '.join(bad)}; evaluation.json not written")
    rows = [
        ("test negative ELBO, 1 z per image", f"{result['test_loss']:.2f}", "nats/image", f"all {n_test}"),
        ("  reconstruction -log p(x|z)", f"{result['test_nll']:.2f}", "nats/image", ""),
        ("  KL(q(z|x) || p(z))", f"{result['test_kl']:.2f}", "nats/image", ""),
        ("active units (Var mu > 0.01)", f"{n_active} of {model.config.latent_dim}", "", f"all {n_test}"),
        (f"negative ELBO, k = {k}", f"{result['elbo_nll']:.2f}", "nats/image", f"first {n}"),
        (f"IWAE -log p(x) estimate, k = {k}", f"{result['iwae_nll']:.2f}", "nats/image", f"first {n}"),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        log("  ".join(cell.ljust(wi) if i == 0 else cell.rjust(wi) for i, (cell, wi) in enumerate(zip(r, w))))
    atomic_write_bytes(Path(run_dir) / "evaluation.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


def build_parser():
    p = cli.parser("python -m tinyvae.evaluate", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run of python -m tinyvae.train")
    cli.add_data_dir(p)
    p.add_argument("--k", type=int, default=1000, help="draws of z per image for the IWAE bound (default 1000)")
    p.add_argument("--n-images", type=int, default=1000,
                   help="test images for the IWAE bound, the first ones (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws of z (default 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        evaluate_run(Path(args.run_dir), args.backend, args.k, args.n_images, args.seed, data_dir=args.data_dir)
        return 0

    return cli.run(body, lambda: f"nothing was written; {args.run_dir} is as it was")


if __name__ == "__main__":
    sys.exit(main())
