"""What tests/test_distributed.py runs under ``mpirun -np P`` (and alone, as P = 1).

    python tests/mpi_worker.py float64 OUT DATA    # one epoch of 5 steps of each model, float64; rank 0 saves
                                                   # the weights to OUT/<model>.npy, and rank r the draws it
                                                   # made to OUT/<model>_draws_<r>.npy
    python tests/mpi_worker.py fail KIND STEP -- TRAIN_ARGS...
                                                   # tinyvae.train's main with TRAIN_ARGS, rank 1 raising
                                                   # (KIND: data, an expected failure; bug, a RuntimeError)
                                                   # at its training step STEP (1-based, counted over epochs);
                                                   # KIND start: rank 1 failing to read its data
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from tinyvae import train
from tinyvae.training.loop import Trainer
from tinyvae.errors import DataError
from tinyvae.training.distributed import from_environment
from tinyvae.training.settings import RunSettings

# Every draw the models make: eps with L = 2 and binarisation, labels, a dae's mask and Gaussian corruption,
# the contractive penalty; the convolutions; the bounds and priors beyond the ELBO, and a VQ-VAE's code counts
# (its perplexity is the whole test set's).
MODELS = {
    "vae": dict(mc_samples=2, binarize=True),
    "cvae": dict(model="cvae"),
    "gaussian-learned": dict(likelihood="gaussian-learned"),
    "dae-mask": dict(model="dae", corruption="mask"),
    "dae-gaussian": dict(model="dae", corruption="gaussian"),
    "cae": dict(model="cae", hidden=()),
    "conv-cvae": dict(model="cvae", arch="conv", hidden=(), channels=(2, 3)),
    "iwae": dict(model="iwae", k=3),
    "vamp": dict(prior="vamp", pseudo_inputs=5),
    "vqvae": dict(model="vqvae", codebook_size=8, code_dim=2),
}


def counting(backend, seen: list):
    """``backend`` with its drawing ops noting each draw, ``(op, key, step, example)``, into ``seen``."""
    def noted(op, where):
        def call(*args, **kwargs):
            key, step, rows = where(*args, **kwargs)
            if key is not None:
                seen.extend((op, int(key[0]), int(key[1]), int(step), int(r)) for r in backend.to_host(rows))
            return getattr(backend, op)(*args, **kwargs)
        return call

    binarize = lambda pixels, rows, scale, out, next_rows=None, binarize=None: (*(binarize or (None, None)), rows)
    return replace(backend, reparameterize_kl_draw=noted("reparameterize_kl_draw", lambda h, k, s, r, *a: (k, s, r)),
                   corrupt=noted("corrupt", lambda x, k, s, r, *a: (k, s, r)),
                   gather_pixels=noted("gather_pixels", binarize))


def float64(out: Path, data: Path):
    group = from_environment("numpy")
    rank = 0 if group is None else group.rank
    for name, extra in MODELS.items():
        settings = RunSettings.resolve({**dict(data_dir=str(data), batch_size=64, hidden=(16,), latent_dim=3,
                                               eval_batch_size=40, dtype="float64"), **extra}, flags=False)
        trainer = Trainer.start(settings, "numpy", out / name, group=group)
        seen: list = []
        trainer.backend = trainer.model.backend = counting(trainer.backend, seen)
        if group is not None:
            trainer.take_root_state()
        trainer.train_epoch()
        metrics = trainer.evaluate()
        np.save(out / f"{name}_draws_{rank}.npy", np.array(seen, dtype=object))
        if trainer.writes:
            np.save(out / f"{name}.npy", trainer.model.params.data)
            np.save(out / f"{name}_metrics.npy", np.array([metrics[k] for k in sorted(metrics)]))


def fail(kind: str, step: int, argv: list[str]) -> int:
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    calls = [0]
    original = Trainer.train_epoch

    def train_epoch(self):
        step_fn = self.model.train_step

        def planted(*args, **kwargs):
            calls[0] += 1
            if rank == 1 and calls[0] == step:
                if kind == "data":
                    raise DataError(f"planted: rank 1 cannot read batch {step}")
                raise RuntimeError(f"planted bug at step {step}")
            return step_fn(*args, **kwargs)

        self.model.train_step = planted
        try:
            return original(self)
        finally:
            del self.model.train_step

    Trainer.train_epoch = train_epoch
    if kind == "start" and rank == 1:
        def unreadable(*args, **kwargs):
            raise DataError("planted: rank 1 cannot read its data")

        train.load_run_data = unreadable
    return train.main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "float64":
        float64(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(fail(sys.argv[2], int(sys.argv[3]), sys.argv[5:]))
