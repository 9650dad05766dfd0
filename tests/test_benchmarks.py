"""The training benchmark's contenders each run their epochs on a small dataset, in turns.

Only that they run: their timings are the benchmark's business, not a test's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from benchmarks.train import gemm_floor_epoch, rounds, tinyvae_epoch


def test_train_benchmark_contenders_run_in_turns():
    data = SimpleNamespace(train_pixels=np.random.default_rng(0).integers(0, 256, (300, 784), dtype=np.uint8))
    contenders = {"numba": tinyvae_epoch("numba", data, 128),
                  "gemm_adam_floor": gemm_floor_epoch(data, 128, adam=True),
                  "gemm_floor": gemm_floor_epoch(data, 128)}
    times = rounds(contenders, 2)
    assert list(times) == list(contenders)
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())
