"""Fifty epochs of five models on binarised Fashion-MNIST, tinyvae against PyTorch: the table of
docs/likelihoods.md.

    python -m benchmarks.beyond_elbo [--epochs 50] [--k 1000] [--n-images 1000] [--rows vae,iwae-5,...]
                                     [--seed 1] [--work DIR] [--threads 2] [--contenders tinyvae,pytorch]
                                     [--publish]

Rows: the VAE, IWAE with k = 5 and k = 50, the VampPrior with 500 pseudo-inputs, the VQ-VAE; all on the
networks of PyTorch's example (784-400-20; the VQ-VAE 20 codes of 16 values from a codebook of 512), Adam at
1e-3, batches of 128, the pixels binarised afresh each epoch. tinyvae trains with ``python -m tinyvae.train
--backend numba --binarize`` and is judged by :func:`tinyvae.models.bounds.importance_weighted` (what
``python -m tinyvae.evaluate`` reports); PyTorch trains the same networks on the same objectives
(:mod:`benchmarks.torch_reference`, its autograd) and is judged here, by the same estimator, on the same
binarised test images (those of runs of seed 1, :func:`tinyvae.training.data.test_set`, whatever ``--seed``
trains). The figure is the NLL estimated by the IWAE bound with ``--k`` draws on the first ``--n-images``
test images (Burda et al. 2015, eq. 8), with its standard error over the images; for the VQ-VAE, which has no
likelihood bound, the reconstruction's -log p(x|z_q) on the same images.

Each (row, contender) runs in its own process and leaves ``WORK/<row>-<contender>-seed<S>.json``, which records
the settings it was made with: a run that stops is continued by running the command again (finished cells are
kept; tinyvae's unfinished run, ``WORK/<row>-tinyvae-seed<S>``, goes on from its last checkpoint), and a cell
made with another ``--epochs``, ``--k`` or ``--n-images`` is refused, not reused; the table is printed and
saved (``beyond_elbo.json``, ``beyond_elbo_seed<S>.json`` for another seed) once every cell of ``--rows`` is
there. Training seconds are recorded as they came, not in turns: they are not a speed comparison
(``benchmarks.train`` and ``benchmarks.iwae`` are).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_args, out_dir, report

ROWS = {  # tinyvae's training flags of each row
    "vae": [],
    "iwae-5": ["--model", "iwae", "--k", "5"],
    "iwae-50": ["--model", "iwae", "--k", "50"],
    "vamp-500": ["--prior", "vamp", "--pseudo-inputs", "500"],
    "vqvae": ["--model", "vqvae"],
}
CONTENDERS = ("tinyvae", "pytorch")
TEST_SEED = 1  # the test images' binarisation, the same for every training seed
BATCH = 128


def test_images(n: int) -> np.ndarray:
    """The first ``n`` test images as tinyvae's runs of ``--binarize --seed TEST_SEED`` see them, ``(n, 784)``
    float32."""
    from tinyvae.backends import get_backend
    from tinyvae.io.datasets import load_dataset
    from tinyvae.training.data import test_set
    from tinyvae.training.settings import RunSettings

    settings = RunSettings.resolve({"binarize": True, "seed": TEST_SEED}, flags=False)
    x, _ = test_set(load_dataset("fashion-mnist"), settings, get_backend("numpy"), 0)
    return np.asarray(x[:n])


def run_tinyvae(row: str, args) -> dict:
    """Train (or go on training) tinyvae's run of ``row`` in ``WORK/<row>-tinyvae-seed<S>``; its figure on the test
    images."""
    import tinyvae
    from tinyvae.evaluate import standard_error
    from tinyvae.models.bounds import importance_weighted

    run = args.work / f"{row}-tinyvae-seed{args.seed}"
    flags = ["--resume", str(run)] if (run / "checkpoint.safetensors").exists() else ["--out", str(run)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tinyvae.train", *flags, "--backend", "numba", "--binarize",
                    "--seed", str(args.seed), "--batch-size", str(BATCH), "--epochs", str(args.epochs),
                    "--no-pictures", *ROWS[row]], check=True)
    seconds = time.perf_counter() - t0
    model = tinyvae.load(run, "numba")
    x = test_images(args.n_images)
    if row == "vqvae":
        nll = np.concatenate([model.per_sample_loss(x[i:i + 100])[0] for i in range(0, len(x), 100)])
        return {"figure": float(nll.mean()), "se": standard_error(nll), "train_s": seconds}
    bound = np.concatenate([importance_weighted(model, x[i:i + 100], args.k, rows=np.arange(i, min(i + 100, len(x))))[0]
                            for i in range(0, len(x), 100)])  # the draws of z from the run's seed, as evaluate's
    return {"figure": float(-bound.mean()), "se": standard_error(bound), "train_s": seconds}


def run_pytorch(row: str, args) -> dict:
    """Train PyTorch's model of ``row`` for ``--epochs`` epochs; its figure on the test images."""
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_reference import TorchVAE, TorchVQVAE, iwae_loss, loss_of, vamp_loss, vq_loss
    from tinyvae.evaluate import standard_error
    from tinyvae.io.datasets import load_dataset

    torch.set_num_threads(args.threads)
    # Subnormal floats (the products of the bound's tiny weights) cost PyTorch's CPU kernels microcode assists:
    # flushed, its IWAE k = 50 step took 87 ms instead of 352; no figure here moves by a subnormal.
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    grey = torch.from_numpy(load_dataset("fashion-mnist").train.x)
    model = TorchVQVAE() if row == "vqvae" else TorchVAE()
    params = list(model.parameters())
    pseudo = None
    if row.startswith("vamp"):  # started from training images, as tinyvae starts them
        pseudo = torch.nn.Parameter(grey[torch.randperm(len(grey))[:500]].clone())
        params.append(pseudo)
    k = int(row.split("-")[1]) if row.startswith("iwae") else None
    opt = torch.optim.Adam(params, lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for rows in torch.randperm(len(grey)).split(BATCH):
            x = torch.bernoulli(grey[rows])
            loss = (vq_loss(model, x) if row == "vqvae" else vamp_loss(model, pseudo, x) if pseudo is not None
                    else iwae_loss(model, x, k) if k else loss_of(model, x))
            opt.zero_grad()
            (loss / len(rows)).backward()
            opt.step()
    seconds = time.perf_counter() - t0
    x = torch.from_numpy(test_images(args.n_images))
    with torch.no_grad():
        if row == "vqvae":
            nll = F.binary_cross_entropy_with_logits(model(x)[0], x, reduction="none").sum(-1).double().numpy()
            return {"figure": float(nll.mean()), "se": standard_error(nll), "train_s": seconds}
        bound = np.array([iwae_bound(model, xi, args.k, pseudo) for xi in x])
    return {"figure": float(-bound.mean()), "se": standard_error(bound), "train_s": seconds}


def iwae_bound(model, x, k: int, pseudo_inputs=None, eps=None) -> float:
    """log (1/k) sum_j p(x, z_j) / q(z_j | x) of one image ``x`` ``(D,)`` under PyTorch's VAE ``model``, ``k``
    draws of z (Burda et al. 2015, eq. 8; ``eps`` ``(k, K)``, else drawn); the prior N(0, I), or the VampPrior
    of ``pseudo_inputs``."""
    import torch

    from benchmarks.torch_reference import log_weights

    eps = torch.randn(k, model.fc21.out_features) if eps is None else eps
    log_w = log_weights(model, x[None], eps[:, None], pseudo_inputs)[:, 0].detach().double()
    return float(torch.logsumexp(log_w, 0) - np.log(k))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--k", type=int, default=1000, help="draws of z per test image for the IWAE bound")
    p.add_argument("--n-images", type=int, default=1000, help="the first test images the figures are taken on")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--seed", type=int, default=1, help="seeds the training of both contenders (default 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of each cell's process")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="the cells to run (two commands of one contender each, --threads 1, share 2 cores)")
    p.add_argument("--work", type=Path, default=Path("beyond-elbo-runs"),
                   help="the runs and each cell's result (default ./beyond-elbo-runs)")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # ROW:CONTENDER, run in this process
    add_output_args(p)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    settings = {"epochs": args.epochs, "k": args.k, "n_images": args.n_images}

    def cell_file(row, who):
        return args.work / f"{row}-{who}-seed{args.seed}.json"

    def cell(row, who):
        """The result of the cell of ``row`` and contender ``who`` at this seed, None before it is made; exits with
        one line where it was made with other settings."""
        path = cell_file(row, who)
        if not path.exists():
            return None
        made = json.loads(path.read_text())
        if made.get("settings") != settings:
            sys.exit(f"error: {path} was made with {made.get('settings')}, not {settings}; give another --work")
        return made

    if args.cell:
        row, who = args.cell.split(":")
        result = (run_tinyvae if who == "tinyvae" else run_pytorch)(row, args)
        cell_file(row, who).write_text(json.dumps({**result, "settings": settings}))
        return
    rows = args.rows.split(",")
    threads = {name: str(args.threads) for name in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    for row in rows:
        for who in args.contenders.split(","):
            if cell(row, who) is None:  # each cell in its own process: no shared pools
                subprocess.run([sys.executable, "-m", "benchmarks.beyond_elbo", "--cell", f"{row}:{who}",
                                *(argv if argv is not None else sys.argv[1:])], check=True,
                               env={**os.environ, **threads})
    if any(cell(row, who) is None for row in rows for who in CONTENDERS):
        return
    table = []
    for row in rows:
        ours, theirs = (cell(row, who) for who in CONTENDERS)
        table.append({"model": row, "figure": "recon" if row == "vqvae" else "nll",
                      "tinyvae_nats": ours["figure"], "tinyvae_se": ours["se"],
                      "pytorch_nats": theirs["figure"], "pytorch_se": theirs["se"],
                      "difference_in_se": (ours["figure"] - theirs["figure"]) / theirs["se"],
                      "tinyvae_train_s": ours["train_s"], "pytorch_train_s": theirs["train_s"]})
    report("beyond_elbo" + ("" if args.seed == 1 else f"_seed{args.seed}"), table,
           [("model", "<"), ("figure", "<"), ("tinyvae_nats", ".2f"), ("tinyvae_se", ".2f"), ("pytorch_nats", ".2f"),
            ("pytorch_se", ".2f"), ("difference_in_se", "+.2f"), ("tinyvae_train_s", ".0f"),
            ("pytorch_train_s", ".0f")],
           {"epochs": args.epochs, "k": args.k, "n_images": args.n_images, "batch_size": BATCH, "seed": args.seed,
            "threads": args.threads, "data": "Fashion-MNIST, binarised afresh each epoch",
            "units": "nats per test image; se: standard error over the images"}, out_dir(args))


if __name__ == "__main__":
    main()
