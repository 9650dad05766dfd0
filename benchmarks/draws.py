"""What drawing inside the kernels costs a numba training step: each random op against the same step with its
draws handed over.

    python -m benchmarks.draws [--batch-size 128] [--repeats 7] [--publish]

Every training step draws from the counter-based streams (tinyvae.rng) inside its kernels: eps inside the
reparameterisation (``reparameterize_kl_draw``), a dae's corruption (``corrupt``), the binarisation inside the
batch gather (``gather_pixels`` with ``binarize``). For each case, on the 784-400-20 models of the training
command with Fashion-MNIST's pixels, two pairs of contenders take turns for ``--repeats`` rounds:

* the ops: the drawing op against its draw-free counterpart on the same buffers (``reparameterize_kl`` with
  eps given; a copy of a corruption made before; the plain gather), 200 calls a round;
* the steps: the training step as the trainer runs it, against the same step with eps or the corruption
  handed over and the plain gather, 50 steps a round.

The ops' difference is the draws' cost, precise to microseconds; the steps' difference is the same cost
seen through a step's noise. Both are reported against the step, as a share. Writes
``draws_<vendor>-<kernels>.json`` into ``--out`` (``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import add_output_args, cpu_vendor, out_dir, report
from tinyvae import rng
from tinyvae.backends.blas import numpy_blas
from tinyvae.io.datasets import PIXEL_SCALE, load_dataset
from tinyvae.models import AEConfig, Autoencoder, VAE, VAEConfig
from tinyvae.nn.optim import Adam

CASES = {
    "vae: eps": (VAEConfig(), False),
    "vae --binarize: eps, binarisation": (VAEConfig(), True),
    "dae mask": (AEConfig(model="dae", corruption="mask"), False),
    "dae gaussian": (AEConfig(model="dae", corruption="gaussian"), False),
    "dae salt-and-pepper": (AEConfig(model="dae", corruption="salt-and-pepper"), False),
}


def contenders(pixels: np.ndarray, config, binarize: bool, batch_size: int, seed: int = 1) -> dict:
    """The four timed functions of one case: ``draw_ops``/``handed_ops`` (200 calls of the random ops, or
    of their draw-free counterparts) and ``draw_step``/``handed_step`` (50 training steps)."""
    model = (VAE if isinstance(config, VAEConfig) else Autoencoder)(config, "numba", seed)
    be, opt = model.backend, Adam(model.params, model.backend)
    perm = rng.generator(seed, "shuffle", 0).permutation(len(pixels))
    batches = [perm[i:i + batch_size] for i in range(0, 50 * batch_size, batch_size)]
    x = np.empty((batch_size, pixels.shape[1]), np.float32)
    bin_key = rng.stream_key(seed, "binarize") if binarize else None
    stream = "eps" if model.has_prior else "corruption"
    key = rng.stream_key(seed, stream)
    ws = model.workspace(batch_size)
    be.gather_pixels(pixels, batches[0], PIXEL_SCALE, x)
    handed = model.forward(x, noise=model.noise(stream, batch_size, step=0, rows=batches[0]))
    handed = (handed.eps if model.has_prior else handed.xin).copy()  # the draws, made once

    def gather(rows, t, draw):
        be.gather_pixels(pixels, rows, PIXEL_SCALE, x, binarize=(bin_key, t) if draw and binarize else None)

    def draw_ops():
        for t in range(200):
            rows = batches[t % 50]
            gather(rows, t, True)
            if model.has_prior:
                be.reparameterize_kl_draw(ws.heads, key, t, rows, ws.eps, ws.z, ws.kl)
            else:
                be.corrupt(x, key, t, rows, config.corruption, config.noise, ws.xin)

    def handed_ops():
        for t in range(200):
            gather(batches[t % 50], t, False)
            if model.has_prior:
                be.reparameterize_kl(ws.heads, handed, ws.z, ws.kl)
            else:
                np.copyto(ws.xin, handed)

    def draw_step():
        for t, rows in enumerate(batches):
            gather(rows, t, True)
            model.train_step(x, opt, step=t, rows=rows)

    def handed_step():
        for t, rows in enumerate(batches):
            gather(rows, t, False)
            if model.has_prior:
                w = model.forward(x, eps=handed)
                model.backward(w, x, 1.0)
            else:
                model.backward(model.forward(x, corrupted=handed), x)
            opt.step(model.grad)

    fns = dict(draw_ops=draw_ops, handed_ops=handed_ops, draw_step=draw_step, handed_step=handed_step)
    for fn in fns.values():  # compile, and make every buffer, outside the clock
        fn()
    return fns


def measure(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call (ops: per 200 calls / 200; steps: per 50 steps / 50), the contenders in turns."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / (200 if name.endswith("ops") else 50))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    add_output_args(p)
    args = p.parse_args(argv)
    pixels = load_dataset("fashion-mnist").train.data
    rows = []
    for case, (config, binarize) in CASES.items():
        t = measure(contenders(pixels, config, binarize, args.batch_size), args.repeats)
        extra_op, extra_step = t["draw_ops"] - t["handed_ops"], t["draw_step"] - t["handed_step"]
        rows.append({"case": case, "step_us": 1e6 * t["draw_step"], "handed_step_us": 1e6 * t["handed_step"],
                     "draws_us": 1e6 * extra_op, "draws_of_step_pct": 100 * extra_op / t["draw_step"],
                     "step_difference_pct": 100 * extra_step / t["handed_step"]})
    kernels = (numpy_blas() or {}).get("architecture") or "unknown"
    report(f"draws_{cpu_vendor()}-{str(kernels).lower()}", rows,
           [("case", "<"), ("step_us", ".0f"), ("handed_step_us", ".0f"), ("draws_us", ".1f"),
            ("draws_of_step_pct", ".2f"), ("step_difference_pct", ".2f")],
           {"batch_size": args.batch_size, "repeats": args.repeats, "backend": "numba"}, out_dir(args))


if __name__ == "__main__":
    main()
