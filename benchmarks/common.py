"""Timing, tables and JSON results shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from tinyvae.backends.blas import cpu_flags, numpy_blas

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


def cpu_vendor() -> str:
    """``intel``, ``amd``, or the ``vendor_id`` of ``/proc/cpuinfo`` in lower case (``unknown`` without it)."""
    vendor = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            vendor = next((l.split(":", 1)[1].strip() for l in f if l.startswith("vendor_id")), vendor)
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor, vendor.lower())


def machine() -> dict:
    """The CPU, NumPy and the kernels its BLAS runs (:func:`tinyvae.backends.blas.numpy_blas`), for a result's metadata."""
    model = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    blas = numpy_blas() or {}
    return {"cpu": model, "cores": os.cpu_count(), "avx512f": "avx512f" in cpu_flags(), "numpy": np.__version__,
            "blas": {k: blas.get(k) for k in ("internal_api", "version", "architecture", "num_threads")},
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "when": time.strftime("%Y-%m-%d %H:%M")}


def add_output_args(p) -> None:
    """``--out`` and ``--publish`` for a benchmark's parser (see :func:`out_dir`)."""
    p.add_argument("--out", type=Path, default=Path("benchmark-results"),
                   help="folder the JSON result is written to (default ./benchmark-results)")
    p.add_argument("--publish", action="store_true",
                   help=f"write into {RESULTS} instead: the published record the docs cite (default off)")


def out_dir(args) -> Path:
    """Where a run writes: ``benchmarks/results`` when asked with ``--publish``, else ``--out``."""
    return RESULTS if args.publish else args.out


UNITS = {"_us": " (us)", "_ms": " (ms)", "_seconds": " (s)", "_s": " (s)", "_pct": " (%)", "_GBps": " (GB/s)"}


def label(key: str) -> str:
    """A column's header: the key with its unit suffix spelled out (``epoch_s`` -> ``epoch (s)``)."""
    if key in ("samples_per_s", "GBps"):
        return {"samples_per_s": "samples/s", "GBps": "GB/s"}[key]
    for suffix, unit in UNITS.items():
        if key.endswith(suffix):
            return key[: -len(suffix)] + unit
    return key


def report(name: str, rows: list[dict], columns: list[tuple[str, str]], meta: dict | None, out_dir: Path) -> Path:
    """Print ``rows`` as an aligned table and save them, with the machine and ``meta``, to ``out_dir``/<name>.json.

    ``columns``: (key, format spec) pairs; ``"<"`` marks a text column (left-aligned), numbers are
    right-aligned, and each header spells out the unit of its key's suffix (:func:`label`).
    """
    cells = [["-" if r.get(k) is None else format(r[k], "" if f == "<" else f) for k, f in columns] for r in rows]
    heads = [label(k) for k, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    left = [f == "<" for _, f in columns]
    fit = lambda text, i: text.ljust(widths[i]) if left[i] else text.rjust(widths[i])
    for line in [heads, *cells]:
        print("  ".join(fit(text, i) for i, text in enumerate(line)).rstrip())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"meta": {**machine(), **(meta or {})}, "rows": rows}, indent=1))
    print(f"saved {path}")
    return path
