"""Timing, tables and JSON results shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from tinyvae.blas import cpu_flags, numpy_blas

RESULTS = Path(__file__).parent / "results"


def median_time(fn, repeats: int = 20, warmup: int = 3, sync=lambda: None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict:
    """The CPU, NumPy and the kernels its BLAS runs (:func:`tinyvae.blas.numpy_blas`), for a result's metadata."""
    model = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    blas = numpy_blas() or {}
    return {"cpu": model, "cores": os.cpu_count(), "avx512f": "avx512f" in cpu_flags(), "numpy": np.__version__,
            "blas": {k: blas.get(k) for k in ("internal_api", "version", "architecture", "num_threads")},
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "when": time.strftime("%Y-%m-%d %H:%M")}


def report(name: str, rows: list[dict], columns: list[tuple[str, str]], meta: dict | None = None,
           out_dir: Path = RESULTS) -> Path:
    """Print ``rows`` as a table (``columns``: key, format spec) and save JSON to ``out_dir``/<name>.json."""
    widths = [max(len(k), 12) for k, _ in columns]
    print("  ".join(k.rjust(w) for (k, _), w in zip(columns, widths)))
    for r in rows:
        print("  ".join(format(r[k], f).rjust(w) if r.get(k) is not None else "-".rjust(w)
                        for (k, f), w in zip(columns, widths)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / f"{name}.json"
    path.write_text(json.dumps({"meta": {**machine(), **(meta or {})}, "rows": rows}, indent=1))
    print(f"saved {path}")
    return path
