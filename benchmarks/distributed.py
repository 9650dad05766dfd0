"""Data-parallel training on one machine: one process using every core against P ranks of one core each.

    python -m benchmarks.distributed [--ranks 2] [--rounds 3] [--epochs 2] [--backend numba] [--data-dir DIR]

Both contenders train the default VAE (784-400-20, global batch 128, Adam) on Fashion-MNIST with the
trainer's own epoch (``Trainer.train_epoch``): one process with BLAS on every core, and ``mpirun -np
--ranks`` ranks, whose BLAS threads the trainer sets to the cores per rank (one each on 2 cores). Each
contender runs in a fresh process (``--epochs`` epochs, the first one a warm-up), the two taking turns
for ``--rounds`` rounds; the table gives the median of the later epochs over the rounds. The ranks'
run also times every allreduce of the flat gradient buffer (652,824 float32, 2.6 MB) inside the step,
waiting for the slower rank included, and, after training, the allreduce alone (median of 50 calls,
each after a barrier). Writes ``distributed.json`` into ``--out`` (``benchmarks/results`` with
``--publish``). The machine is shared and noisy: medians, and the spread is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_args, out_dir, report

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """Train ``args.epochs`` epochs (rank 0 writes the figures to ``args.worker``)."""
    from tinyvae.training.distributed import from_environment
    from tinyvae.training.settings import RunSettings
    from tinyvae.training.loop import Trainer

    group = from_environment(args.backend)
    run_dir = Path(tempfile.mkdtemp(prefix="tinyvae-bench-")) if group is None or group.is_root else Path("unused")
    trainer = Trainer.start(RunSettings.resolve(dict(data_dir=args.data_dir), flags=False), args.backend, run_dir,
                            group=group)
    spent = [0.0, 0]
    if group is not None:
        allreduce = group.buffers.allreduce_mean_

        def timed(buf):
            t0 = time.perf_counter()
            allreduce(buf)
            spent[0] += time.perf_counter() - t0
            spent[1] += 1

        group.buffers.allreduce_mean_ = timed
    epochs = []
    for _ in range(args.epochs):
        spent[:] = [0.0, 0]
        seconds = trainer.train_epoch()[1]
        epochs.append({"epoch_s": seconds, "allreduce_s": spent[0], "steps": spent[1]})
    alone = None
    if group is not None:
        grad, times = trainer.model.grad, []
        for _ in range(50):
            group.comm.Barrier()
            t0 = time.perf_counter()
            allreduce(grad)
            times.append(time.perf_counter() - t0)
        alone = statistics.median(times)
    if trainer.writes:
        shutil.rmtree(run_dir, ignore_errors=True)
        Path(args.worker).write_text(json.dumps({"epochs": epochs, "allreduce_alone_s": alone,
                                                 "buffer_bytes": trainer.model.grad.nbytes}))


def contender(ranks: int, args, tmp: Path) -> dict:
    """One fresh process (``ranks`` = 0) or ``mpirun -np ranks``: its worker's figures."""
    out = tmp / f"r{ranks}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--worker", str(out), "--epochs", str(args.epochs),
           "--backend", args.backend] + (["--data-dir", args.data_dir] if args.data_dir else [])
    if ranks:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), *cmd]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks of the data-parallel contender")
    p.add_argument("--rounds", type=int, default=3, help="turns each contender takes")
    p.add_argument("--epochs", type=int, default=2, help="epochs per process, the first a warm-up")
    p.add_argument("--backend", default="numba", choices=("numpy", "numba"))
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: as the trainer)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    add_output_args(p)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    runs: dict[str, list] = {"one process": [], f"{args.ranks} ranks (MPI)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, ranks in zip(runs, (0, args.ranks)):
                runs[name].append(contender(ranks, args, Path(tmp)))
    rows = []
    for name, results in runs.items():
        later = [e for r in results for e in r["epochs"][1:]]
        epoch = statistics.median(e["epoch_s"] for e in later)
        row = {"what": name, "epoch_s": epoch, "epochs_s": [e["epoch_s"] for e in later]}
        if results[0]["allreduce_alone_s"] is not None:
            steps = later[0]["steps"]
            in_step = statistics.median(e["allreduce_s"] for e in later) / steps
            alone = statistics.median(r["allreduce_alone_s"] for r in results)
            row |= {"step_ms": 1e3 * epoch / steps, "allreduce_in_step_ms": 1e3 * in_step,
                    "allreduce_pct": 100 * in_step * steps / epoch, "allreduce_alone_ms": 1e3 * alone,
                    "allreduce_GBps": results[0]["buffer_bytes"] / alone / 1e9}
        rows.append(row)
    base = rows[0]["epoch_s"]
    for row in rows:
        row["vs_one_process"] = row["epoch_s"] / base
    report("distributed", rows, [("what", "<"), ("epoch_s", ".3f"), ("vs_one_process", ".2f"), ("step_ms", ".2f"),
                                 ("allreduce_in_step_ms", ".3f"), ("allreduce_pct", ".1f"),
                                 ("allreduce_alone_ms", ".3f"), ("allreduce_GBps", ".2f")],
           {"backend": args.backend, "ranks": args.ranks, "rounds": args.rounds, "epochs_per_process": args.epochs,
            "batch_size": 128, "note": "median of the epochs after each process's first; contenders in turns"},
           out_dir(args))


if __name__ == "__main__":
    main()
