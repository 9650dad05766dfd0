"""Each fused op of a backend against the naive NumPy expression it replaces.

    python -m benchmarks.kernels [--backend numba] [--batches 128,1024,8192]

Shapes: D = 784 (BCE; the batch gather of B random rows of N = 60,000 uint8 rows), K = 20
(latent ops), H = 400 (bias/ReLU ops), and the 784-400-20 VAE's 652,824
parameters (optimiser steps). Each op runs again and again on the same inputs,
so the gathered rows are in cache after the first run. Reports the median time
of each, the speed-up, and the effective bandwidth (bytes each op must read and
write once, over its time). Writes ``kernels_<backend>.json`` into ``--out``
(``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import add_output_args, median_time, out_dir, report
from tinyvae.backends import get_backend

D, K, H, P, N = 784, 20, 400, 652824, 60000


def cases(B: int, rng, dtype=np.float32):
    """(op name, size label, args builder, bytes moved) for batch size B."""
    f = lambda *s: rng.standard_normal(s).astype(dtype)
    u = lambda *s: rng.random(s).astype(dtype)
    e = np.dtype(dtype).itemsize
    heads = f(B, 2 * K)
    pixels = rng.integers(0, 256, (N, D), dtype=np.uint8)
    return [
        ("gather_pixels", f"{B}x{D}", lambda: (pixels, rng.integers(0, N, B), 1 / 255, np.empty((B, D), dtype)),
         B * D * (1 + e) + 8 * B),
        ("bce_with_logits", f"{B}x{D}", lambda: (f(B, D), u(B, D), 1.0 / B, np.empty(B, dtype), np.empty((B, D), dtype)), 3 * B * D * e),
        ("reparameterize_kl", f"{B}x{K}", lambda: (heads, f(B, K), np.empty((B, K), dtype), np.empty(B, dtype)), 4 * B * K * e),
        ("reparameterize_kl_backward", f"{B}x{K}", lambda: (f(B, K), heads, f(B, K), 1.0 / B, np.empty((B, 2 * K), dtype)), 6 * B * K * e),
        ("bias_act", f"{B}x{H}", lambda: (f(B, H), f(H), True), 2 * B * H * e),
        ("bias_act_backward", f"{B}x{H}", lambda: (f(B, H), np.maximum(f(B, H), 0), True, np.empty(H, dtype)), 3 * B * H * e),
    ]


def optimizer_cases(rng, dtype=np.float32):
    f = lambda: rng.standard_normal(P).astype(dtype)
    e = np.dtype(dtype).itemsize
    return [
        ("adam_step", f"{P}", lambda: (f(), f(), f(), np.abs(f()), 1e-3, 0.9, 0.999, 1e-8, 10), 7 * P * e),
        ("sgd_step", f"{P}", lambda: (f(), f(), f(), 1e-2, 0.9, False), 5 * P * e),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numba")
    p.add_argument("--batches", default="128,1024,8192")
    p.add_argument("--repeats", type=int, default=30)
    add_output_args(p)
    args = p.parse_args(argv)
    ref, fused = get_backend("numpy"), get_backend(args.backend)
    rng = np.random.default_rng(0)
    todo = [c for B in map(int, args.batches.split(",")) for c in cases(B, rng)] + optimizer_cases(rng)
    rows = []
    for op, size, make, nbytes in todo:
        t = {}
        for be in (ref, fused):
            a = make()  # fresh inputs for each, as in-place ops change theirs
            t[be.name] = median_time(lambda: getattr(be, op)(*a), args.repeats)
        rows.append({"op": op, "size": size, "numpy_us": 1e6 * t["numpy"], f"{fused.name}_us": 1e6 * t[fused.name],
                     "speedup": t["numpy"] / t[fused.name], "GBps": nbytes / t[fused.name] / 1e9})
    report(f"kernels_{fused.name}", rows, [("op", "<"), ("size", "<"), ("numpy_us", ".1f"),
                                          (f"{fused.name}_us", ".1f"), ("speedup", ".1f"), ("GBps", ".1f")], None, out_dir(args))


if __name__ == "__main__":
    main()
