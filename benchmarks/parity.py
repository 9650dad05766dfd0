"""Test loss per epoch, tinyvae (numpy) vs PyTorch's example VAE, on Fashion-MNIST.

    python -m benchmarks.parity [--epochs 10]

Both start from the same weights and see the same batches in the same order;
each draws its own eps. Prints a table and writes ``parity.json`` into ``--out``
(``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import add_output_args, out_dir, report
from benchmarks.torch_reference import load_from, loss_of
from tinyvae.io.datasets import load_dataset
from tinyvae.models import VAE
from tinyvae.nn.optim import Adam

def run_parity(data, epochs=10, batch_size=128, seed=1, n_train=None, threads=2) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_x = data.train.x[:n_train]
    ours = VAE(seed=seed)
    theirs = load_from(ours)
    opt, opt_t = Adam(ours.params, ours.backend), torch.optim.Adam(theirs.parameters(), lr=1e-3)
    order = np.random.default_rng(seed + 1)
    test_t = torch.from_numpy(data.test.x)
    rows = []
    for epoch in range(1, epochs + 1):
        perm = order.permutation(len(train_x))
        secs = {"tinyvae": 0.0, "torch": 0.0}
        for i in range(0, len(train_x), batch_size):
            x = train_x[perm[i:i + batch_size]]
            t0 = time.perf_counter()
            ours.train_step(x, opt)
            t1 = time.perf_counter()
            xt = torch.from_numpy(x)
            opt_t.zero_grad()
            loss = loss_of(theirs, xt)
            loss.backward()
            opt_t.step()
            secs["tinyvae"] += t1 - t0
            secs["torch"] += time.perf_counter() - t1
        bce, kl = zip(*(ours.per_sample_loss(data.test.x[i:i + 1000]) for i in range(0, len(data.test.x), 1000)))
        ours_test = float(np.concatenate(bce).sum() + np.concatenate(kl).sum()) / len(data.test.x)
        with torch.no_grad():
            their_test = sum(loss_of(theirs, test_t[i:i + 1000]).item()
                             for i in range(0, len(test_t), 1000)) / len(test_t)
        rows.append({"epoch": epoch, "tinyvae_test_loss": ours_test, "torch_test_loss": their_test,
                     "ratio": ours_test / their_test, "tinyvae_seconds": secs["tinyvae"], "torch_seconds": secs["torch"]})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    add_output_args(p)
    args = p.parse_args(argv)
    rows = run_parity(load_dataset("fashion-mnist"), args.epochs)
    report("parity", rows, [("epoch", "d"), ("tinyvae_test_loss", ".3f"), ("torch_test_loss", ".3f"), ("ratio", ".4f"),
                            ("tinyvae_seconds", ".2f"), ("torch_seconds", ".2f")],
           {"torch": torch.__version__, "threads": 2, "losses": "nats per test image"}, out_dir(args))


if __name__ == "__main__":
    main()
