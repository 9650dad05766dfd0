"""Fashion-MNIST as a folder of PNGs: reading it cold and from the cache, and training on it against the IDX files.

    python -m benchmarks.image_folder [--folder /tmp/fashion-mnist-png] [--epochs 2] [--publish]

Writes the IDX files' 70,000 images as ``FOLDER/train/00000.png ...`` and ``FOLDER/test/...`` (once), then:

* times ``python -c`` processes that read the training folder with ``tinyvae.io.datasets.open_data``: the first
  with an empty cache (decoding every PNG), then three with the cache (each a whole process: the
  interpreter, tinyvae's imports, listing the folder, loading the cached pixels); and three starts of
  ``python -m tinyvae.train`` on the cached folders, each until it prints its run directory (its data read,
  its model made, about to train);
* trains ``--epochs`` epochs of the default VAE on the PNG folders (``--data``, ``--test-data``) and on the IDX
  files, numba backend, the same seed, and compares every epoch's losses.

Writes ``image_folder.json`` into ``--out`` (``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import add_output_args, out_dir, report
from tinyvae.io.datasets import load_dataset

READ = "from tinyvae.io.datasets import open_data; d = open_data({folder!r}); print(len(d.train) + len(d.test))"


def write_pngs(folder: Path) -> None:
    """The Fashion-MNIST IDX files as one grey PNG per image, unless ``folder`` has them already."""
    data = load_dataset("fashion-mnist")
    for split in ("train", "test"):
        images = getattr(data, split).data.reshape(-1, 28, 28)
        out = folder / split
        if out.is_dir() and len(list(out.glob("*.png"))) == len(images):
            continue
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(out / f"{i:05d}.png")


def timed_read(folder: Path, cache: Path) -> float:
    """Seconds of a whole process reading ``folder`` with the image cache in ``cache``."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", READ.format(folder=str(folder))], check=True, capture_output=True,
                   env={**os.environ, "TINYVAE_CACHE": str(cache)})
    return time.perf_counter() - t0


def timed_start(args: list[str], out: Path, cache: Path) -> float:
    """Seconds from starting ``python -m tinyvae.train ARGS`` to its first line (the run directory), after which
    the process is stopped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tinyvae.train", "--backend", "numba", "--no-pictures", "--out",
                             str(out), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TINYVAE_CACHE": str(cache)})
    line = proc.stdout.readline()
    seconds = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    if not line.startswith("run directory:"):
        raise RuntimeError(f"the training command did not start: {line!r}")
    return seconds


def train(args: list[str], out: Path, cache: Path) -> list[dict]:
    subprocess.run([sys.executable, "-m", "tinyvae.train", "--backend", "numba", "--no-pictures", "--out", str(out),
                    *args], check=True, capture_output=True, env={**os.environ, "TINYVAE_CACHE": str(cache)})
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fashion-mnist-png")
    p.add_argument("--epochs", type=int, default=2)
    add_output_args(p)
    args = p.parse_args(argv)
    write_pngs(args.folder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        rows.append({"what": "read 60,000 PNGs, empty cache", "seconds": timed_read(args.folder / "train", cache)})
        warm = [timed_read(args.folder / "train", cache) for _ in range(3)]
        rows.append({"what": "read them again, from the cache (median of 3)", "seconds": float(np.median(warm))})
        epochs = ["--epochs", str(args.epochs)]
        folders = ["--data", str(args.folder / "train"), "--test-data", str(args.folder / "test")]
        png = train([*epochs, *folders], Path(tmp) / "png", cache)
        starts = [timed_start([*epochs, *folders], Path(tmp) / f"start{i}", cache) for i in range(3)]
        rows.append({"what": "start python -m tinyvae.train on them, cached (median of 3)",
                     "seconds": float(np.median(starts))})
        idx = train(epochs, Path(tmp) / "idx", cache)
    for a, b in zip(png, idx):
        rel = max(abs(a[k] / b[k] - 1) for k in ("train_loss", "test_loss"))
        rows.append({"what": f"epoch {a['epoch']}: PNG against IDX", "png_test_loss": a["test_loss"],
                     "idx_test_loss": b["test_loss"], "max_rel_difference": rel})
    report("image_folder", rows, [("what", "<"), ("seconds", ".2f"), ("png_test_loss", ".6f"),
                                  ("idx_test_loss", ".6f"), ("max_rel_difference", ".2e")],
           {"folder": str(args.folder), "epochs": args.epochs, "backend": "numba"}, out_dir(args))


if __name__ == "__main__":
    main()
