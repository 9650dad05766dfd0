"""One training run, as :mod:`tinyvae.train`'s command drives it: data, model, optimiser and generator,
the epoch loop with its divergence checks, evaluation, pictures and checkpoints; alone or as one
rank of a data-parallel group (:mod:`tinyvae.distributed`)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends import get_backend
from .checkpoint import CheckpointError, atomic_write_bytes, check_tensors, load_checkpoint, save_checkpoint
from .data import PIXEL_SCALE, DataError, Dataset, load_dataset
from .distributed import DataParallel, DataParallelError, DataParallelOptimizer
from .images import loss_curves, prior_samples, save_grid
from .optim import Adam
from .saving import CHECKPOINT, load_weights
from .settings import TrainSettings


class Diverged(RuntimeError):
    """Training met a non-finite number; the run stopped there and saved nothing of the epoch."""


class Trainer:
    """Owns the data, model, optimiser and generator of one run.

    Args:
        settings: :class:`TrainSettings`.
        backend: backend name.
        run_dir: output directory (created).
        data: a loaded :class:`Dataset`; loaded from ``settings`` when None.
        group: the :class:`tinyvae.distributed.DataParallel` ranks this one trains with, or None (alone).
            Rank 0 alone creates and writes ``run_dir``.

    Raises:
        ValueError: settings that do not fit the data, or (data parallel) a batch that does not split
            over the ranks, or a model whose loss is not a mean over rows (sparse-ae).
    """

    def __init__(self, settings: TrainSettings, backend: str, run_dir: Path, data: Dataset | None = None,
                 group: DataParallel | None = None):
        self.settings, self.run_dir, self.group = settings, Path(run_dir), group
        self.writes = group is None or group.is_root
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.backend = get_backend(backend)
        self.data = data if data is not None else load_dataset(settings.dataset, settings.data_dir)
        settings.check_fits(self.data.image_shape, self.data.n_classes)
        if group is not None:
            if settings.model == "sparse-ae":
                raise DataParallelError("sparse-ae cannot train data-parallel: its penalty is a function of the "
                                        "whole batch's mean activation, not a mean over rows; run it in one process")
            group.check_batches(self.data.train_pixels.shape[0], settings.batch_size, self.data.test_x.shape[0],
                                settings.eval_batch_size)
        self.model = settings.build_model(self.data.image_shape, self.data.n_classes, self.backend)
        self.optimizer = Adam(self.model.params, self.backend, lr=settings.lr)
        # The optimiser the training step calls: with ranks, it first averages the gradient over them.
        self.stepper = self.optimizer if group is None else DataParallelOptimizer(self.optimizer, group)
        self.rng = self.model.rng
        xp = self.backend.xp
        self.train_pixels = xp.asarray(self.data.train_pixels)  # uint8; each batch is scaled on its own
        test_x = self.data.test_x
        if settings.binarize:  # one fixed binarisation of the test set, from its own generator
            test_x = (np.random.default_rng([settings.seed, 1]).random(test_x.shape) < test_x).astype(np.float32)
        self.test_x = xp.asarray(test_x)
        conditional = settings.model == "cvae"
        self.train_y = xp.asarray(self.data.train_y) if conditional else None
        self.test_y = xp.asarray(self.data.test_y) if conditional else None
        self.epoch = 0
        self.saved_epoch = 0  # the epoch of the checkpoint in run_dir (0: none yet)
        # The epoch's running loss stays non-finite once a batch loss is. It is read, and checked, every step
        # on the host; on a GPU every 50 steps (a read is a sync), the window's batch losses kept on the device.
        self.check_every = 1 if xp is np else 50
        self.broadcast_state()

    def broadcast_state(self):
        """Data parallel: every rank takes rank 0's weights and optimiser state (at the start, and on resume)."""
        if self.group is not None:
            for buf in (self.model.params.data, *self.optimizer.state()[0].values()):
                self.group.buffers.broadcast_(buf)

    def check_ranks_agree(self):
        """Data parallel: :class:`DataParallelError` unless every rank holds the same weights, bit for bit
        (a CRC-32 of them, compared after every epoch)."""
        sums = self.group.checksums(self.backend.to_host(self.model.params.data))
        if len(set(sums)) > 1:
            raise DataParallelError(f"after epoch {self.epoch}, the ranks' weights differ (CRC-32 per rank: "
                                    f"{', '.join(f'{c:08x}' for c in sums)}); the run stopped; the checkpoint of "
                                    f"epoch {self.saved_epoch} in {self.run_dir} is intact")

    # -- persistence -----------------------------------------------------------
    def save(self):
        opt_arrays, opt_scalars = self.optimizer.state()
        host = self.backend.to_host
        tensors = {k: host(v) for k, v in self.model.params.state_dict().items()}
        tensors |= {f"optimizer.{k}": host(v) for k, v in opt_arrays.items()}
        save_checkpoint(self.run_dir / CHECKPOINT, tensors, {
            "model_config": self.model.config.to_dict(),
            "settings": asdict(self.settings),
            "optimizer": {"name": self.optimizer.name, **opt_scalars},
            "epoch": self.epoch,
            "rng_state": self.rng.bit_generator.state,
        })
        self.saved_epoch = self.epoch
        lines = "".join(json.dumps(m, allow_nan=False) + "\n" for m in self.settings.history)
        atomic_write_bytes(self.run_dir / "metrics.jsonl", lines.encode())

    @classmethod
    def resume(cls, run_dir: Path, backend: str, data_dir: str | os.PathLike | None = None,
               group: DataParallel | None = None) -> "Trainer":
        """Rebuild a run from ``run_dir/checkpoint.safetensors``, its data from ``data_dir`` where given
        (the run's data have moved; stored, as an absolute path, at the next save), else from where the
        run found them. A checkpoint does not depend on the number of ranks that wrote it: ``group``
        may have any size (every rank reads the checkpoint).

        Raises:
            CheckpointError: missing, unreadable or inconsistent checkpoint.
        """
        path = Path(run_dir) / CHECKPOINT
        tensors, meta = load_checkpoint(path)
        for key, kind in (("settings", dict), ("model_config", dict), ("optimizer", dict), ("epoch", int),
                          ("rng_state", dict)):
            value = meta.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                found = "missing" if key not in meta else f"a {type(value).__name__}"
                raise CheckpointError(f"{path}: metadata field {key!r} is {found}, not a {kind.__name__}")
        try:
            settings = TrainSettings(**meta["settings"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: metadata field 'settings': {e}") from e
        if data_dir is not None:
            settings.data_dir = str(Path(data_dir).resolve())
        if not 0 <= meta["epoch"] == len(settings.history):
            raise CheckpointError(f"{path}: metadata field 'epoch' is {meta['epoch']} but the run's history holds "
                                  f"{len(settings.history)} epochs")
        try:
            trainer = cls(settings, backend, run_dir, group=group)
        except ValueError as e:
            if isinstance(e, (DataError, DataParallelError)):
                raise
            raise CheckpointError(f"{path}: metadata field 'settings': {e}") from e
        model, opt = trainer.model, trainer.optimizer
        opt_arrays, _ = opt.state()
        check_tensors(path, tensors, {f"optimizer.{k}": ((model.params.size,), model.dtype.name) for k in opt_arrays})
        config = model.config.to_dict()  # a checkpoint from before a field existed holds its default
        if not isinstance(meta["model_config"], dict) or {**config, **meta["model_config"]} != config:
            raise CheckpointError(f"{path}: model config {meta.get('model_config')} does not match its settings")
        load_weights(model, tensors, path)
        t = meta["optimizer"].get("t", 0)
        if meta["optimizer"].get("name") != opt.name or not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise CheckpointError(f"{path}: metadata field 'optimizer' is {meta['optimizer']}, not the state of "
                                  f"{opt.name} (its step count t an int >= 0)")
        opt.load_state({k: model.xp.asarray(tensors[f"optimizer.{k}"]) for k in opt_arrays}, meta["optimizer"])
        try:
            trainer.rng.bit_generator.state = meta["rng_state"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: metadata field 'rng_state' is not a {type(trainer.rng.bit_generator).__name__} "
                                  f"state ({type(e).__name__}: {e})") from e
        trainer.epoch = trainer.saved_epoch = meta["epoch"]
        trainer.broadcast_state()
        return trainer

    # -- one epoch -------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float]:
        """One pass over the shuffled training set. Returns (mean loss in nats per sample, seconds).

        Data parallel: this rank takes its rows of each global batch, and the loss is summed over the ranks.
        """
        xp, s, group = self.backend.xp, self.settings, self.group
        N, D = self.train_pixels.shape
        perm = xp.asarray(self.rng.permutation(N))
        n_batches = -(-N // s.batch_size)

        def rows(i):  # this rank's rows of batch i: indices into perm, and the model's row slice (for its draws)
            start, n = i * s.batch_size, min(s.batch_size, N - i * s.batch_size)
            if group is None:
                return perm[start:start + n], None
            lo, hi = group.rows(n)
            return perm[start + lo:start + hi], (lo, hi, n)

        batches: dict[int, tuple] = {}  # batch size -> its x buffer and its binarisation draws
        total = xp.zeros((), dtype=self.model.dtype)
        check_every = self.check_every
        # Between two reads (on a GPU) the batch losses stay on the device, so the first bad step can be named.
        window = None if check_every == 1 else xp.empty(check_every, dtype=self.model.dtype)
        running, y = 0.0, None
        start = time.perf_counter()
        quiet = None if self.writes else True
        idx, self.model.row_slice = rows(0)
        try:
            with tqdm(total=n_batches, desc=f"epoch {self.epoch + 1}", unit="batch", leave=False, disable=quiet) as bar:
                for i in range(n_batches):
                    if idx.shape[0] not in batches:
                        batches[idx.shape[0]] = (xp.empty((idx.shape[0], D), self.model.dtype),
                                                 xp.empty((idx.shape[0], D), np.float32) if s.binarize else None)
                    x, u = batches[idx.shape[0]]
                    next_idx, next_slice = rows(i + 1) if i + 1 < n_batches else (perm[:0], None)
                    self.backend.gather_pixels(self.train_pixels, idx, PIXEL_SCALE, x, next_idx)
                    if s.binarize:  # dynamic binarisation: a fresh Bernoulli draw each time
                        self.model.draw(u, "random")
                        x[...] = u < x
                    if self.train_y is not None:
                        y = self.train_y[idx]
                    if s.is_vae:
                        beta = s.beta_at(self.epoch * n_batches + i, n_batches)
                        loss = self.model.train_step(x, self.stepper, beta, y)
                    else:
                        loss = self.model.train_step(x, self.stepper)
                    idx, self.model.row_slice = next_idx, next_slice
                    total += loss
                    if window is not None:
                        window[i % check_every] = loss
                    if i % check_every == check_every - 1 or i == n_batches - 1:
                        running = float(total) if group is None else float(group.sum(float(total))[0])
                        if not math.isfinite(running):
                            step = i
                            if window is not None:
                                bad = np.flatnonzero(~np.isfinite(self.backend.to_host(window[:i % check_every + 1])))
                                step = i - i % check_every + int(bad[0]) if bad.size else i
                            raise Diverged(self.stopped(f"the training loss became {running} at epoch {self.epoch + 1}, "
                                                        f"step {step + 1} of {n_batches}"))
                    if i % 50 == 49 or i == n_batches - 1:
                        bar.set_postfix(loss=f"{running / min(N, (i + 1) * s.batch_size):.2f}")
                    bar.update()
        finally:
            self.model.row_slice = None
        return running / N, time.perf_counter() - start

    def check_finite(self, metrics: dict) -> None:
        """``Diverged`` unless the epoch's test metrics, the weights and the optimiser's state are all finite,
        so that nothing non-finite is drawn or saved."""
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        xp = self.backend.xp
        arrays = {"the weights": self.model.params.data,
                  **{f"the optimiser's {k}": v for k, v in self.optimizer.state()[0].items()}}
        bad += [name for name, a in arrays.items() if not bool(xp.isfinite(a).all())]
        if bad:
            raise Diverged(self.stopped(f"after epoch {self.epoch + 1}, {', '.join(bad)} hold non-finite values"))

    def stopped(self, what: str) -> str:
        """The message of a run stopped by a non-finite number: what, what is intact, the likely causes."""
        s = self.settings
        kept = (f"the checkpoint of epoch {self.saved_epoch} in {self.run_dir} is intact" if self.saved_epoch
                else "no epoch had finished, so nothing was saved")
        causes = [f"a learning rate too high (--lr {s.lr:g}; lower it)"]
        if s.likelihood == "gaussian" and s.decoder_logvar < -10:
            causes.append(f"--decoder-logvar {s.decoder_logvar:g}: exp(-logvar) overflows; try a value near 0")
        if s.beta > 10:
            causes.append(f"--beta {s.beta:g}")
        return f"{what}; the run stopped there and {kept}. Likely cause: {'; or '.join(causes)}"

    def test_labels(self, lo: int, hi: int):
        """Labels of test images ``lo:hi`` for a conditional model, else None."""
        return None if self.test_y is None else self.test_y[lo:hi]

    def test_codes(self) -> np.ndarray:
        """E_q[z] = mu of every test image, ``(N_test, K)`` host array (VAEs)."""
        B = self.settings.eval_batch_size
        return np.concatenate([self.model.encode(self.test_x[i:i + B], self.test_labels(i, i + B))[0]
                               for i in range(0, self.test_x.shape[0], B)])

    def evaluate(self) -> dict:
        """The model's test metrics (see ``VAE.evaluate``, ``Autoencoder.evaluate``), nats per sample.

        Data parallel: each rank evaluates its rows of every test batch (with the noise a one-process run
        draws for them), and the metrics, each a mean over images, are combined weighted by the ranks' counts.
        """
        B, n, group = self.settings.eval_batch_size, self.test_x.shape[0], self.group
        if group is None:
            return self.model.evaluate((self.test_x[i:i + B], self.test_labels(i, i + B)) for i in range(0, n, B))
        counted = [0]

        def my_rows():
            for i in range(0, n, B):
                lo, hi = group.rows(min(B, n - i))
                self.model.row_slice = (lo, hi, min(B, n - i))  # for the draws of the batch about to be evaluated
                counted[0] += hi - lo
                yield self.test_x[i + lo:i + hi], self.test_labels(i + lo, i + hi)

        try:
            local = self.model.evaluate(my_rows())
        finally:
            self.model.row_slice = None
        names = list(local)
        sums = group.sum([counted[0]] + [local[k] * counted[0] for k in names])
        return {k: float(v / sums[0]) for k, v in zip(names, sums[1:])}

    def write_images(self):
        """The epoch's pictures. Data parallel: every rank makes them (so that every generator draws the
        same numbers), rank 0 alone saves them."""
        h, w = self.data.image_shape
        save = save_grid if self.writes else lambda *args: None
        x = self.backend.to_host(self.test_x[:8])
        y = self.test_labels(0, 8)
        recon = self.model.reconstruct(x, y)
        save(self.run_dir / f"reconstruction_{self.epoch}.png", np.concatenate([x, recon]).reshape(16, h, w), 2, 8)
        if self.settings.model == "dae":
            ws = self.model.forward(self.model.as_batch(x), train=True)
            corrupted = np.clip(self.backend.to_host(ws.xin), 0, 1)
            denoised = self.model.output_mean(ws.logits)
            save(self.run_dir / f"denoising_{self.epoch}.png",
                      np.concatenate([corrupted, denoised, x]).reshape(24, h, w), 3, 8)
        if self.settings.is_vae:
            images, rows, cols = prior_samples(self.model, self.rng)
            save(self.run_dir / f"sample_{self.epoch}.png", images.reshape(rows * cols, h, w), rows, cols)

    def run(self, epochs: int, log=print) -> list[dict]:
        """Train until ``epochs`` epochs are done in total; checkpoint after each. Returns the history."""
        while self.epoch < epochs:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # check_finite says it once
                train_loss, seconds = self.train_epoch()
                t0 = time.perf_counter()
                metrics = self.evaluate()
            self.check_finite(metrics)
            self.epoch += 1
            if self.group is not None:
                self.check_ranks_agree()
            self.write_images()
            record = {"epoch": self.epoch, "train_loss": train_loss, **metrics,
                      "samples_per_s": self.train_pixels.shape[0] / seconds, "seconds": seconds,
                      "eval_seconds": time.perf_counter() - t0, "backend": self.backend.name}
            self.settings.history.append(record)
            if not self.writes:  # rank 0 saves the epoch
                self.saved_epoch = self.epoch
                continue
            try:
                loss_curves(self.run_dir / "loss.png", self.settings.history)
            except ImportError:  # matplotlib is an optional extra
                pass
            self.save()
            log(f"epoch {self.epoch:3d}  train {train_loss:9.4f}  test {metrics['test_loss']:9.4f} nats/sample"
                f"  ({record['samples_per_s']:,.0f} samples/s, {seconds:.1f} s)")
        return self.settings.history
