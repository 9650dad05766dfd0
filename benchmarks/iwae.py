"""An epoch of the importance-weighted autoencoder: numba against PyTorch CPU, the same model.

    python -m benchmarks.iwae [--k 5] [--binarize] [--batch-size 128] [--repeats 3] [--threads 2] [--publish]

The networks of PyTorch's example VAE (784-400-20), trained on the bound of ``--k`` draws
(:mod:`tinyvae.models.iwae`; PyTorch: :func:`benchmarks.torch_reference.iwae_loss`, its autograd) with Adam,
on Fashion-MNIST's training set (grey, or with ``--binarize`` its pixels drawn once to 0 or 1, the same for
every contender: :func:`benchmarks.train.binarized_fashion_mnist`); PyTorch twice, as it comes and with subnormal floats flushed to zero
(``torch.set_flush_denormal(True)``: the bound's tiny weights make subnormal products, which its kernels
otherwise take through slow microcode; ``vs_flushed`` is the ratio to that run), each contender in its own
process (:func:`benchmarks.train.in_child`), in turns for ``--repeats`` rounds. Writes ``iwae_<vendor>-<kernels>[-binarized].json`` into ``--out`` (``benchmarks/results``
with ``--publish``).
"""

from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.common import add_output_args, cpu_vendor, out_dir, report
from benchmarks.train import binarized_fashion_mnist, fashion_mnist, in_child, rounds, tinyvae_epoch, torch_epoch
from tinyvae.backends.blas import numpy_blas
from tinyvae.models import VAEConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--binarize", action="store_true", help="train on binarised pixels (default grey)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    add_output_args(p)
    args = p.parse_args(argv)
    config = VAEConfig(model="iwae", k=args.k)
    data = binarized_fashion_mnist if args.binarize else fashion_mnist
    contenders = {"pytorch": torch_epoch(args.batch_size, args.threads, data=(data,), iwae_k=args.k),
                  "pytorch flush-denormal": torch_epoch(args.batch_size, args.threads, data=(data,), iwae_k=args.k,
                                                        flush_denormal=True),
                  "numba": in_child(data, tinyvae_epoch, "numba", args.batch_size, config=config)}
    runs = rounds({k: f for k, f in contenders.items() if f is not None}, args.repeats)
    median = {k: statistics.median(v) for k, v in runs.items()}
    base = median.get("pytorch")
    flushed = median.get("pytorch flush-denormal")
    rows = [{"what": f"{k} iwae k={args.k}", "epoch_s": median[k], "vs_pytorch": median[k] / base if base else None,
             "vs_flushed": median[k] / flushed if flushed else None, "best_epoch_s": min(runs[k]),
             "epochs_s": runs[k]} for k in runs]
    kernels = (numpy_blas() or {}).get("architecture") or "unknown"
    report(f"iwae_{cpu_vendor()}-{str(kernels).lower()}{'-binarized' if args.binarize else ''}", rows,
           [("what", "<"), ("epoch_s", ".2f"), ("vs_pytorch", ".2f"), ("vs_flushed", ".2f"), ("best_epoch_s", ".2f")],
           {"k": args.k, "binarized": args.binarize, "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats},
           out_dir(args))


if __name__ == "__main__":
    main()
