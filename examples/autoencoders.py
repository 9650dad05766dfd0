"""Train the four autoencoders and the VAE at the same sizes, for the same epochs, and
compare their test reconstruction loss:

    python3 examples/autoencoders.py [--epochs 10] [--backend numba] [--out runs/autoencoders]

Two sizes: 784-64-784 with one layer each side (the only size the contractive
autoencoder's closed form allows), and the VAE's default 784-400-20-400-784.
Prints a Markdown table and writes ``examples/autoencoders.json`` and the dae's
last denoising picture, ``examples/dae_denoising.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tinyvae.io.datasets import load_dataset
from tinyvae.training.settings import RunSettings
from tinyvae.training.loop import Trainer

HERE = Path(__file__).parent
SIZES = {"784-64-784": dict(hidden=(), latent_dim=64), "784-400-20-400-784": dict(hidden=(400,), latent_dim=20)}
MODELS = {
    "ae": dict(model="ae"),
    "dae": dict(model="dae", corruption="mask", noise=0.3),
    "sparse-ae": dict(model="sparse-ae", rho=0.05, sparsity_weight=10.0),
    "cae": dict(model="cae", contractive_weight=1.0),
    "vae": dict(model="vae"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--backend", default="numba")
    p.add_argument("--out", default="runs/autoencoders")
    args = p.parse_args(argv)
    data = load_dataset("fashion-mnist")
    rows = []
    for size, shape in SIZES.items():
        for name, kw in MODELS.items():
            if name == "cae" and shape["hidden"]:
                continue  # the contractive penalty's closed form needs a one-layer sigmoid encoder
            run_dir = Path(args.out) / f"{name}_{size}"
            trainer = Trainer.start(RunSettings.resolve({**shape, **kw}, flags=False), args.backend, run_dir, data=data)
            last = trainer.run(args.epochs, log=lambda line: print(f"{name:9s} {size}: {line}"))[-1]
            rows.append({"model": name, "size": size, **{k: v for k, v in kw.items() if k != "model"}, **last})
            if name == "dae" and not shape["hidden"]:
                shutil.copyfile(run_dir / f"denoising_{args.epochs}.png", HERE / "dae_denoising.png")
    (HERE / "autoencoders.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| size | model | test reconstruction, nats/image | denoising | penalty (VAE: KL) "
          "| mean code activation | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cell = lambda r, key, fmt: format(r[key], fmt) if key in r else ""
    for r in rows:
        print(f"| {r['size']} | {r['model']} | {r['test_recon']:.2f} | {cell(r, 'test_denoising', '.2f')} | "
              f"{r.get('test_penalty', r.get('test_kl')):.2f} | {cell(r, 'test_mean_activation', '.3f')} "
              f"| {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
