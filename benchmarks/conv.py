"""The conv VAE (``--arch conv``): an epoch on the numba backend against the same model in PyTorch CPU,
and where tinyvae's step spends its time.

    python -m benchmarks.conv [--repeats 3] [--threads 2] [--channels 32,64] [--batch-size 128]
                              [--shape C,H,W [--samples 12800]]

Same model (4x4 stride-2 convolutions of ``--channels``, the latent heads, the mirrored transposed
convolutions), batch, data and thread count for both: Fashion-MNIST's training set, or with ``--shape``
``--samples`` images of that shape (C channels, channels-first for PyTorch) of random pixels. PyTorch (as
:class:`benchmarks.torch_reference.TorchConvVAE`, oneDNN's convolutions) runs with Adam. Each
contender runs in its own child process (:func:`benchmarks.train.in_child`). The contenders take
turns, one epoch each, for ``--repeats`` rounds; the median and the best epoch of each are reported
(:func:`benchmarks.train.rounds` says why both). Then 50 steps of tinyvae's with every layer timed:
each layer kind's share of the step, its GEMMs and its unfold/fold included; and 50 more with every
op and GEMM timed, each under its first operand's shape (which names the layer). Writes
``conv_<vendor>-<kernels>[-<C>x<H>x<W>].json`` into ``--out`` (``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections import defaultdict

from benchmarks.common import add_output_args, cpu_vendor, out_dir, report
from benchmarks.train import fashion_mnist, in_child, random_images, rounds, tinyvae_epoch, torch_epoch
from tinyvae.backends import OPS, Backend, get_backend
from tinyvae.backends.blas import numpy_blas
from tinyvae.io.datasets import load_dataset, pixels_to_unit
from tinyvae.models import VAE, VAEConfig
from tinyvae.nn.optim import Adam


def timed_backend(backend: Backend, spent: dict) -> Backend:
    """``backend`` with every op timed into ``spent``, under the op's name and its first argument's shape
    (which names the layer); a GEMM (``matmul``) under both operands' shapes, two (``matmul_pair``) under
    the four."""
    def timed(name, f):
        def run(*args):
            t0 = time.perf_counter()
            f(*args)
            shapes = [str(getattr(a, "shape", "")) for a in args]
            key = (f"{name} {shapes[0]} @ {shapes[1]}" if name == "matmul" else
                   f"{name} {shapes[0]} @ {shapes[1]}, {shapes[3]} @ {shapes[4]}" if name == "matmul_pair" else
                   f"{name} {' '.join(shapes[:1])}")
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        return run
    return dataclasses.replace(backend, **{name: timed(name, getattr(backend, name)) for name in OPS})


def _seconds_per_step(model, x, steps: int, spent: dict) -> float:
    """Seconds per ``model.train_step`` with Adam over ``steps`` steps after 3 unmeasured ones; ``spent``,
    emptied after those, is divided by ``steps``."""
    opt = Adam(model.params, model.backend)
    for _ in range(3):
        model.train_step(x, opt)
    spent.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, opt)
    seconds = (time.perf_counter() - t0) / steps
    for k in spent:
        spent[k] /= steps
    return seconds


def step_parts(config: VAEConfig, data, batch_size: int, steps: int = 50) -> tuple[float, dict, dict]:
    """Seconds per training step on numba, and the seconds per step inside each layer kind's forward and
    backward (``Conv2d``, ``ConvTranspose2d``, ``Linear``); then, over as many steps again, those of each
    op and GEMM by its first operand's shape (:func:`timed_backend`; ops of one shape in two layers add up)."""
    x = pixels_to_unit(data.train.data[:batch_size])
    layers: dict[str, float] = defaultdict(float)
    model = VAE(config, "numba", seed=1)
    for layer in (*model.encoder.layers, *model.decoder.layers):
        for method in ("forward", "backward"):
            def timed(*args, f=getattr(layer, method), kind=type(layer).__name__):
                t0 = time.perf_counter()
                f(*args)
                layers[kind] += time.perf_counter() - t0
            setattr(layer, method, timed)
    step = _seconds_per_step(model, x, steps, layers)
    ops: dict[str, float] = {}
    _seconds_per_step(VAE(config, timed_backend(get_backend("numba"), ops), seed=1), x, steps, ops)
    return step, dict(layers), dict(ops)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3, help="rounds; each contender runs one epoch per round")
    p.add_argument("--channels", default="32,64", help="the convolutions' channels")
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--shape", default=None, help="C,H,W: images of this shape, random pixels (default: Fashion-MNIST)")
    p.add_argument("--samples", type=int, default=12800, help="with --shape: the images of an epoch")
    add_output_args(p)
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else None
    source = (random_images, shape, args.samples) if shape else (fashion_mnist,)
    data = random_images(shape, args.samples, lambda d: d) if shape else load_dataset("fashion-mnist")
    channels = tuple(int(c) for c in args.channels.split(","))
    config = VAEConfig(input_dim=data.train.data.shape[1], hidden=(), latent_dim=args.latent_dim, arch="conv",
                       channels=channels, data_shape=tuple(data.shape))
    n = (len(data.train.data) // args.batch_size) * args.batch_size
    contenders = {"pytorch": torch_epoch(args.batch_size, args.threads, conv=(channels, args.latent_dim), data=source),
                  "numba": in_child(*source, tinyvae_epoch, "numba", args.batch_size, config=config)}
    runs = rounds({k: f for k, f in contenders.items() if f is not None}, args.repeats)
    median = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    base = median.get("pytorch")
    rows = [{"what": k, "epoch_s": median[k], "samples_per_s": n / median[k],
             "vs_pytorch": median[k] / base if base else None, "best_epoch_s": best[k],
             "best_vs_pytorch": best[k] / best["pytorch"] if base else None, "epochs_s": runs[k]} for k in runs]
    step, spent, ops = step_parts(config, data, args.batch_size)
    rest = step - sum(spent.values())
    shares = [{"what": f"tinyvae numba step: {k}", "ms": 1e3 * v, "share_pct": 100 * v / step}
              for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]
    shares += [{"what": "tinyvae numba step: the rest (latent, likelihood, Adam)", "ms": 1e3 * rest,
                "share_pct": 100 * rest / step}, {"what": "tinyvae numba step: all", "ms": 1e3 * step,
                                                   "share_pct": 100.0}]
    kernels = (numpy_blas() or {}).get("architecture")
    name = f"conv_{cpu_vendor()}" + (f"-{kernels.lower()}" if kernels else "")
    name += "-" + "x".join(map(str, shape)) if shape else ""
    op_ms = [{"what": k, "ms": 1e3 * v} for k, v in sorted(ops.items(), key=lambda kv: -kv[1])]
    meta = {"data": "x".join(map(str, data.shape)) + (" random pixels" if shape else " Fashion-MNIST"),
            "batch_size": args.batch_size, "threads": args.threads, "samples": n, "repeats": args.repeats,
            "channels": list(channels), "latent_dim": args.latent_dim, "step_shares": shares, "step_ops": op_ms}
    report(name, rows, [("what", "<"), ("epoch_s", ".2f"), ("samples_per_s", ",.0f"), ("vs_pytorch", ".2f"),
                        ("best_epoch_s", ".2f"), ("best_vs_pytorch", ".2f")], meta, out_dir(args))
    print()
    for row in shares:
        print(f"{row['what']:58s} {row['ms']:7.2f} ms  {row['share_pct']:5.1f} %")
    print("\neach op and GEMM of the step, by its first operand's shape:")
    for row in op_ms:
        print(f"  {row['what']:56s} {row['ms']:7.3f} ms")


if __name__ == "__main__":
    main()
