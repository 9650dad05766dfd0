"""Where a training step spends its time, sampled by py-spy.

    py-spy record --native -r 400 -f raw -o step.raw -- python -m benchmarks.profile_step --backend numba
    python -m benchmarks.profile_step --summarise step.raw

The first command runs ``--epochs`` Fashion-MNIST epochs of ``VAE.train_step``
(plus the batch gather) under py-spy, after one step outside the loop that
compiles the kernels; the second attributes every sample taken inside the loop
to the innermost Python line of tinyvae (or of the loop) on its stack, as a
line profiler would, prints the shares and writes ``profile_step.json`` into
``--out`` (``benchmarks/results`` with ``--publish``). The native frames under a line
(OpenBLAS's ``sgemm_*``, Numba's compiled kernels) count for that line.
"""

from __future__ import annotations

import argparse
import collections
import linecache
import os
import re
import sys

import numpy as np

from benchmarks.common import add_output_args, out_dir, report

def run(backend: str, epochs: int, batch_size: int = 128):
    from tinyvae.io.datasets import PIXEL_SCALE, load_dataset, pixels_to_unit
    from tinyvae.models import VAE
    from tinyvae.nn.optim import Adam

    X = load_dataset("fashion-mnist").train.data
    model = VAE(backend=backend, seed=1)
    opt = Adam(model.params, model.backend)
    model.train_step(pixels_to_unit(X[:batch_size]), opt)  # compile and make buffers outside the loop that counts
    model.backend.gather_pixels(X, np.arange(batch_size), PIXEL_SCALE, np.empty((batch_size, X.shape[1]), np.float32))
    steps(model, opt, X, epochs, batch_size)


def steps(model, opt, X, epochs, batch_size):
    """The trainer's loop: gather and scale a batch of uint8 rows (prefetching the next), step."""
    from tinyvae.io.datasets import PIXEL_SCALE

    x = np.empty((batch_size, X.shape[1]), np.float32)
    for epoch in range(epochs):
        perm = np.random.default_rng(epoch).permutation(len(X))
        for i in range(0, len(X) - batch_size + 1, batch_size):
            model.backend.gather_pixels(X, perm[i:i + batch_size], PIXEL_SCALE, x,
                                        perm[i + batch_size:i + 2 * batch_size])
            model.train_step(x, opt)


def label(frames: list[str]) -> str | None:
    """``file:line  source`` of the innermost Python line of tinyvae (or of the loop) in a sample."""
    if not any(f.startswith("steps (") for f in frames):
        return None
    where = None
    for f in frames:
        m = re.search(r"\((\S*(?:tinyvae/|benchmarks/profile_step)\S*\.py):(\d+)\)$", f)
        if m:
            where = m.group(1), int(m.group(2))
    path, line = where
    full = next((p for p in sys.path if os.path.exists(os.path.join(p, path))), "")
    return f"{path}:{line}  {linecache.getline(os.path.join(full, path), line).strip()}"


def summarise(path: str, out):
    counts, total = collections.Counter(), 0
    with open(path) as fh:
        for line in fh:
            stack, n = line.rstrip("\n").rsplit(" ", 1)
            name = label(stack.split(";"))
            if name is not None:
                counts[name] += int(n)
                total += int(n)
    rows = [{"where": k, "samples": v, "share_pct": 100.0 * v / total} for k, v in counts.most_common()]
    report("profile_step", rows, [("where", "<"), ("samples", "d"), ("share_pct", ".1f")], {"raw": path}, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numba")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--summarise", metavar="RAW", help="summarise a py-spy raw file instead of running")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.summarise:
        summarise(args.summarise, out_dir(args))
    else:
        run(args.backend, args.epochs)


if __name__ == "__main__":
    main()
