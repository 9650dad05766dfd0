"""How long this machine keeps a step's buffers in cache: the fused Adam update after an idle gap.

    python -m benchmarks.idle_cache [--backend numba] [--gaps-ms 0,0.5,1,2,4,8] [--repeats 200]

The 784-400-20 VAE's Adam update (652,824 parameters; p, g, m and v take
10.4 MB, which fits the 32 MB L3) runs after an idle gap of each length: the
caller spins on the clock in between and touches no memory of its own, so a
slower update means other programs on the machine evicted its buffers from the
shared L3 meanwhile, and they came back from memory. The gap 0 row is Adam
right after itself. In a training step Adam's moments m and v are touched
once per step, about 2 ms apart (469 steps per 1 s epoch). Writes
``idle_cache.json`` into ``--out`` (``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import add_output_args, out_dir, report
from tinyvae.backends import get_backend

P = 652824


def adam_after_gap(backend, gap_s: float, repeats: int, rng) -> float:
    """Median seconds of one Adam update run ``gap_s`` seconds after the previous one."""
    p, g, m = (rng.standard_normal(P).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(P)).astype(np.float32)
    times = []
    for step in range(1, repeats + 2):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < gap_s:
            pass
        t0 = time.perf_counter()
        backend.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first call compiles (numba) or finds cold buffers


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numba")
    p.add_argument("--gaps-ms", default="0,0.5,1,2,4,8")
    p.add_argument("--repeats", type=int, default=200)
    add_output_args(p)
    args = p.parse_args(argv)
    backend, rng = get_backend(args.backend), np.random.default_rng(0)
    gaps = [float(g) for g in args.gaps_ms.split(",")]
    took = {gap: adam_after_gap(backend, gap / 1e3, args.repeats, rng) for gap in gaps}
    base = took[min(gaps)]
    rows = [{"gap_ms": gap, "adam_us": 1e6 * t, "vs_shortest_gap": t / base, "GBps": 7 * 4 * P / t / 1e9}
            for gap, t in took.items()]
    report("idle_cache", rows, [("gap_ms", ".1f"), ("adam_us", ".0f"), ("vs_shortest_gap", ".2f"), ("GBps", ".0f")],
           {"backend": args.backend, "parameters": P, "repeats": args.repeats}, out_dir(args))


if __name__ == "__main__":
    main()
