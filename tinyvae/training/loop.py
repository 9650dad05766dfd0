"""The training loop of one run: data, the :class:`~tinyvae.training.state.TrainingState` it advances,
the epochs with their divergence checks, evaluation, pictures and checkpoints; alone or as one rank of a
data-parallel group (:mod:`tinyvae.training.distributed`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import rng
from ..errors import DataError, Diverged, MissingDependency
from ..io.checkpoint import signals_held
from ..io.datasets import ARRAY_SOURCE, PIXEL_SCALE, Dataset
from ..io.images import loss_curves
from .data import batches, check_fits, load_run_data, relocated, test_set
from .distributed import DataParallel, DataParallelError, DataParallelOptimizer
from .pictures import write_pictures
from .settings import RunSettings
from .state import TrainingState, checkpoint_of


class Trainer:
    """Trains one run's state on its data, epoch by epoch, and saves it after each.

    Args:
        state: the run's :class:`TrainingState` (new, or restored from its checkpoint).
        data: its :class:`~tinyvae.io.datasets.Dataset`, both splits.
        run_dir: the run directory, or None to write nothing (``tinyvae.fit`` without ``out``).
        group: the :class:`~tinyvae.training.distributed.DataParallel` ranks this one trains with, or None
            (alone). Rank 0 alone writes ``run_dir``.
        pictures: whether each epoch writes its PNG pictures (they draw from their own stream, so on or off
            they change no number of the run).

    Raises:
        DataError: data the model does not take (:func:`check_fits`).
        DataParallelError: (data parallel) a batch that does not split over the ranks, or a model whose loss
            is not a mean over rows (sparse-ae).
    """

    def __init__(self, state: TrainingState, data: Dataset, run_dir: Path | None, group: DataParallel | None = None,
                 pictures: bool = True):
        self.state, self.data, self.group = state, data, group
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.model, self.settings = state.model, state.settings
        self.backend = self.model.backend
        self.writes = (group is None or group.is_root) and self.run_dir is not None
        self.pictures = pictures and self.writes
        config, s = self.model.config, self.settings.train
        check_fits(config, data, self.settings)
        state.check_data(data)
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if group is not None:
            if not self.model.rows_independent:
                raise DataParallelError(f"{self.model.kind} cannot train data-parallel: its penalty is a function of "
                                        "the whole batch's mean activation, not a mean over rows; run it in one process")
            group.check_batches(len(data.train), s.batch_size, len(data.test), s.eval_batch_size)
        optimizer = self.optimizer = state.optimizer
        # The optimiser the training step calls: with ranks, it first averages the gradient over them.
        self.stepper = optimizer if group is None else DataParallelOptimizer(optimizer, group)
        xp = self.backend.xp
        # uint8 pixels, each batch scaled on its own; or values, in the model's dtype, each batch taken as it is
        pixels = data.train.data.dtype == np.uint8
        self.train_data = xp.asarray(data.train.data, dtype=None if pixels else self.model.dtype)
        self.train_y = xp.asarray(data.train.y) if config.n_classes else None
        self.test_x, self.test_y = test_set(data, self.settings, self.backend, config.n_classes)
        self.saved_epoch = state.epoch  # the epoch of the checkpoint in run_dir (0: none yet)
        # The epoch's running loss stays non-finite once a batch loss is. It is read, and checked, every step
        # on the host; on a GPU every 50 steps (a read is a sync), the window's batch losses kept on the device.
        self.check_every = 1 if xp is np else 50

    def take_root_state(self):
        """Data parallel: every rank takes rank 0's weights and optimiser state (the first collective of a run,
        after every rank has made its Trainer)."""
        for buf in (self.model.params.data, *self.optimizer.state()[0].values()):
            self.group.buffers.broadcast_(buf)

    @classmethod
    def start(cls, settings: RunSettings, backend, run_dir: Path, group: DataParallel | None = None,
              data: Dataset | None = None, pictures: bool = True) -> "Trainer":
        """A new run of ``settings`` on ``backend``, on ``data`` (default: read from where the settings say);
        ``group`` and ``pictures`` as :class:`Trainer`'s.

        Raises:
            SettingsError, DataError: settings or data the model refuses; as :class:`Trainer`.
        """
        data = data or load_run_data(settings.train)
        config = settings.model_config(data.shape, data.n_classes)
        state = TrainingState.new(settings, config, backend)
        # Parameters that start from training examples (a VampPrior's pseudo-inputs) take those the split
        # stream picks, the same on every rank.
        state.model.start_from_data(data.train.x, rng.generator(settings.train.seed, "split", 1))
        return cls(state, data, run_dir, group, pictures)

    @classmethod
    def resume(cls, run_dir: Path, backend, moved: dict | None = None, group: DataParallel | None = None,
               pictures: bool = True, data: Dataset | None = None) -> "Trainer":
        """The run in ``run_dir`` (or of its checkpoint file) continued from its checkpoint, on ``data``, else on
        its data read from where ``moved`` says (``data_dir``, ``data``, ``test_data``: the run's data have moved;
        stored at the next save), else from where the run found them. ``group`` may have any size (every rank
        reads the checkpoint).

        Raises:
            CheckpointError: a missing, unreadable or inconsistent checkpoint. DataError: as :class:`Trainer`, or
                data other than the run's (other shapes, sizes or classes).
        """
        state = TrainingState.restore(run_dir, backend)
        if moved:
            state.settings = relocated(state.settings, moved)
        if data is None and state.data is not None and state.data["source"].startswith(ARRAY_SOURCE):
            raise DataError(f"{checkpoint_of(run_dir)}: the run trained on {state.data['source']} given to "
                            "tinyvae.fit; continue it there: tinyvae.fit(x, out=RUN, resume=True)")
        data = data or load_run_data(state.settings.train)
        return cls(state, data, checkpoint_of(run_dir).parent, group, pictures)

    @property
    def epoch(self) -> int:
        return self.state.epoch

    def check_ranks_agree(self):
        """Data parallel: :class:`DataParallelError` unless every rank holds the same weights, bit for bit
        (a CRC-32 of them, compared after every epoch)."""
        sums = self.group.checksums(self.backend.to_host(self.model.params.data))
        if len(set(sums)) > 1:
            raise DataParallelError(f"after epoch {self.epoch}, the ranks' weights differ (CRC-32 per rank: "
                                    f"{', '.join(f'{c:08x}' for c in sums)}); the run stopped; the checkpoint of "
                                    f"epoch {self.saved_epoch} in {self.run_dir} is intact")

    # -- one epoch -------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float]:
        """One pass over the shuffled training set. Returns (mean loss in nats per sample, seconds).

        Every draw is addressed by the run's seed (:mod:`tinyvae.rng`): the epoch's permutation by the
        ``shuffle`` stream at the epoch; eps, the dae's corruption and the binarisation by their streams at
        the global step for each example's index in the training set. Data parallel: this rank takes its
        rows of each global batch, draws for those rows alone what one process draws for them, and the loss
        is summed over the ranks.
        """
        xp, s, group, model = self.backend.xp, self.settings.train, self.group, self.model
        N, D = self.train_data.shape
        perm = xp.asarray(rng.generator(s.seed, "shuffle", self.epoch).permutation(N))
        n_batches = -(-N // s.batch_size)
        binarize_key = rng.stream_key(s.seed, "binarize") if s.binarize else None

        def rows(i):  # this rank's rows of batch i: their indices in the training set
            start, n = i * s.batch_size, min(s.batch_size, N - i * s.batch_size)
            lo, hi = (0, n) if group is None else group.rows(n)
            return perm[start + lo:start + hi]

        batches: dict[int, object] = {}  # batch size -> its x buffer
        total = xp.zeros((), dtype=model.dtype)
        check_every = self.check_every
        # Between two reads (on a GPU) the batch losses stay on the device, so the first bad step can be named.
        window = None if check_every == 1 else xp.empty(check_every, dtype=model.dtype)
        running, y = 0.0, None
        start = time.perf_counter()
        idx = rows(0)
        with tqdm(total=n_batches, desc=f"epoch {self.epoch + 1}", unit="batch", leave=False,
                  disable=None if self.writes else True) as bar:
            for i in range(n_batches):
                step = self.epoch * n_batches + i
                if idx.shape[0] not in batches:
                    batches[idx.shape[0]] = xp.empty((idx.shape[0], D), model.dtype)
                x = batches[idx.shape[0]]
                next_idx = rows(i + 1) if i + 1 < n_batches else perm[:0]
                if self.train_data.dtype == np.uint8:
                    # With --binarize, dynamic binarisation: each step a fresh Bernoulli draw of every pixel.
                    self.backend.gather_pixels(self.train_data, idx, PIXEL_SCALE, x, next_idx,
                                               binarize=None if binarize_key is None else (binarize_key, step))
                else:  # the rows straight into the batch's buffer, not through a new array
                    xp.take(self.train_data, idx, axis=0, out=x)
                if self.train_y is not None:
                    y = self.train_y[idx]
                loss = model.train_step(x, self.stepper, y, self.settings.beta_at(step, n_batches), step, idx)
                idx = next_idx
                total += loss
                if window is not None:
                    window[i % check_every] = loss
                if i % check_every == check_every - 1 or i == n_batches - 1:
                    running = float(total) if group is None else float(group.sum(float(total))[0])
                    if not math.isfinite(running):
                        bad_step = i
                        if window is not None:
                            bad = np.flatnonzero(~np.isfinite(self.backend.to_host(window[:i % check_every + 1])))
                            bad_step = i - i % check_every + int(bad[0]) if bad.size else i
                        raise Diverged(self.stopped(f"the training loss became {running} at epoch {self.epoch + 1}, "
                                                    f"step {bad_step + 1} of {n_batches}"))
                if i % 50 == 49 or i == n_batches - 1:
                    bar.set_postfix(loss=f"{running / min(N, (i + 1) * s.batch_size):.2f}")
                bar.update()
        return running / N, time.perf_counter() - start

    def check_finite(self, metrics: dict) -> None:
        """``Diverged`` unless the epoch's test metrics, the weights and the optimiser's state are all finite,
        so that nothing non-finite is drawn or saved."""
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        xp = self.backend.xp
        arrays = {"the weights": self.model.params.data,
                  **{f"the optimiser's {k}": v for k, v in self.state.optimizer.state()[0].items()}}
        bad += [name for name, a in arrays.items() if not bool(xp.isfinite(a).all())]
        if bad:
            raise Diverged(self.stopped(f"after epoch {self.epoch + 1}, {', '.join(bad)} hold non-finite values"))

    def stopped(self, what: str) -> str:
        """The message of a run stopped by a non-finite number: what, what is intact, the likely causes."""
        t, m = self.settings.train, self.settings.model
        if self.run_dir is None:
            kept = "nothing was saved (no run directory)"
        else:
            kept = (f"the checkpoint of epoch {self.saved_epoch} in {self.run_dir} is intact" if self.saved_epoch
                    else "no epoch had finished, so nothing was saved")
        causes = [f"a learning rate too high (--lr {t.lr:g}; lower it)"]
        if m["likelihood"] == "gaussian" and m["decoder_logvar"] < -10:
            causes.append(f"--decoder-logvar {m['decoder_logvar']:g}: exp(-logvar) overflows; try a value near 0")
        if t.beta > 10:
            causes.append(f"--beta {t.beta:g}")
        return f"{what}; the run stopped there and {kept}. Likely cause: {'; or '.join(causes)}"

    def test_labels(self, lo: int, hi: int):
        """Labels of test images ``lo:hi`` for a conditional model, else None."""
        return None if self.test_y is None else self.test_y[lo:hi]

    def evaluate(self) -> dict:
        """The model's test metrics (see ``VAE.evaluate``, ``Autoencoder.evaluate``), nats per sample; their
        draws come from the ``evaluate`` stream of the run's seed, the same every epoch.

        Data parallel: each rank takes the model's sums (``evaluation_sums``) over its rows of every test batch
        (drawing for them what a one-process run draws); the ranks' sums are added up, and the metrics are
        those of the whole test set.
        """
        B, n, group = self.settings.train.eval_batch_size, self.test_x.shape[0], self.group
        if group is None:
            return self.model.evaluate(batches(self.test_x, self.test_y, B))
        xp = self.backend.xp

        def my_rows():
            for i in range(0, n, B):
                lo, hi = group.rows(min(B, n - i))
                yield (self.test_x[i + lo:i + hi], self.test_labels(i + lo, i + hi),
                       xp.arange(i + lo, i + hi, dtype=np.int64))

        local = self.model.evaluation_sums(my_rows())
        parts = [np.ravel(np.asarray(v, np.float64)) for v in local.values()]
        total = np.split(group.sum(np.concatenate(parts)), np.cumsum([len(p) for p in parts])[:-1])
        return self.model.metrics({k: v if np.ndim(local[k]) else float(v[0]) for k, v in zip(local, total)})

    def write_images(self):
        """The epoch's pictures (rank 0, unless pictures are off): :func:`tinyvae.training.pictures.write_pictures`,
        their draws from the ``pictures`` stream of the run's seed, so that a run's numbers do not depend on
        whether it draws them."""
        if self.pictures:
            write_pictures(self.model, self.data, self.backend.to_host(self.test_x), self.test_y, self.run_dir,
                           self.epoch, self.settings.train.seed)

    def run(self, epochs: int, log=print) -> list[dict]:
        """Train until ``epochs`` epochs are done in total; checkpoint after each. Returns the history."""
        state = self.state
        if self.group is not None:
            self.take_root_state()
        while state.epoch < epochs:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # check_finite says it once
                train_loss, seconds = self.train_epoch()
                t0 = time.perf_counter()
                metrics = self.evaluate()
            self.check_finite(metrics)
            state.epoch += 1
            if self.group is not None:
                self.check_ranks_agree()
            self.write_images()
            record = {"epoch": state.epoch, "train_loss": train_loss, **metrics,
                      "samples_per_s": self.train_data.shape[0] / seconds, "seconds": seconds,
                      "eval_seconds": time.perf_counter() - t0, "backend": self.backend.name}
            state.history.append(record)
            if not self.writes:  # rank 0 saves the epoch (and, without a run directory, nobody)
                self.saved_epoch = state.epoch
                if self.group is None:
                    log(self.line(record))
                continue
            if self.pictures:
                try:
                    loss_curves(self.run_dir / "loss.png", state.history)
                except MissingDependency:  # matplotlib is an optional extra
                    pass
            with signals_held():  # a Ctrl-C now is taken once both files and their epoch are recorded
                state.save(self.run_dir)
                self.saved_epoch = state.epoch
            log(self.line(record))
        return state.history

    @staticmethod
    def line(record: dict) -> str:
        """An epoch's line on the terminal."""
        return (f"epoch {record['epoch']:3d}  train {record['train_loss']:9.4f}  test {record['test_loss']:9.4f} "
                f"nats/sample  ({record['samples_per_s']:,.0f} samples/s, {record['seconds']:.1f} s)")
