"""What a training checkpoint saves and restores: the run's settings, the model, the optimiser's state,
the epochs done and their metrics (docs/formats.md). No generator state: every draw of a run is addressed by
(seed, stream, step, example) (:mod:`tinyvae.rng`), and the seed is among the settings.

Every field is checked on restore, before any work is done, and a field that does not fit raises a
:class:`tinyvae.errors.CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, DataError, SettingsError
from ..io.checkpoint import (CHECKPOINT, atomic_write_bytes, check_tensors, load_checkpoint, read_metadata,
                             save_checkpoint)
from ..io.modelfile import load_weights, stored_config
from ..models.build import model_for
from ..models.protocol import Model
from ..nn import optim
from .settings import RunSettings

MAX_STEPS = 2**53  # an optimiser's step count beyond which float64 cannot count (a corrupt file)


@dataclass
class TrainingState:
    """One run's state between two epochs.

    Attributes:
        settings: the run's :class:`~tinyvae.training.settings.RunSettings`.
        model: the :class:`~tinyvae.models.protocol.Model` being trained; its ``seed`` is the run's.
        optimizer: the optimiser over ``model.params`` (:mod:`tinyvae.nn.optim`).
        epoch: the epochs done.
        history: one record per epoch done, the lines of ``metrics.jsonl``.
        data: what the run trains on (:func:`data_record`), so that a resumed run can tell its data from
            other data; None until the run has seen its data.
    """

    settings: RunSettings
    model: Model
    optimizer: object
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    data: dict | None = None

    def check_data(self, data) -> None:
        """Note the run's data (a :class:`~tinyvae.io.datasets.Dataset`); a run that has seen its data takes
        only the same (by :func:`data_record`, wherever they are now; the values' CRC-32 where the run's record
        has one). Raises ``DataError`` naming both."""
        seen = data_record(data)
        if self.data is not None:
            ignored = {"source"} | ({"crc32"} if "crc32" not in self.data else set())
            kept = lambda r: {k: v for k, v in r.items() if k not in ignored}
            if kept(self.data) != kept(seen):
                raise DataError(f"{data.source}: holds {_describe(seen)}, but the run trained on "
                                f"{_describe(self.data)}; resume it on the same data")
        self.data = seen

    @classmethod
    def new(cls, settings: RunSettings, config, backend) -> "TrainingState":
        """A run's state before its first step: the model of ``config`` on ``backend`` with its initial
        weights drawn from the run's seed, and a fresh optimiser."""
        model = model_for(config, backend, settings.train.seed)
        t = settings.train
        return cls(settings, model, optim.make(t.optimizer, model.params, model.backend, t.lr, t.momentum, t.nesterov))

    def save(self, run_dir: Path) -> None:
        """Write ``run_dir/checkpoint.safetensors`` and ``run_dir/metrics.jsonl``, each atomically (the caller
        holds Ctrl-C over the two: :func:`~tinyvae.io.checkpoint.signals_held`)."""
        opt_arrays, opt_scalars = self.optimizer.state()
        host = self.model.backend.to_host
        tensors = {k: host(v) for k, v in self.model.params.state_dict().items()}
        tensors |= {f"optimizer.{k}": host(v) for k, v in opt_arrays.items()}
        save_checkpoint(run_dir / CHECKPOINT, tensors, {
            "model_config": self.model.config.to_dict(),
            "settings": self.settings.record(),
            "history": self.history,
            "optimizer": {"name": self.optimizer.name, **opt_scalars},
            "epoch": self.epoch,
            "data": self.data,
        })
        lines = "".join(json.dumps(m, allow_nan=False) + "\n" for m in self.history)
        atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())

    @classmethod
    def restore(cls, run_dir: Path, backend) -> "TrainingState":
        """The state in ``run_dir/checkpoint.safetensors`` (or in ``run_dir``, a checkpoint file), on ``backend``.
        A checkpoint does not depend on the number of ranks that wrote it.

        Raises:
            CheckpointError: a missing or unreadable checkpoint, or a field or tensor that does not fit,
                naming the file and the field.
            BackendUnavailable: a backend that cannot run here.
        """
        path = checkpoint_of(run_dir)
        tensors, meta = load_checkpoint(path)
        # A checkpoint of an older tinyvae also holds 'rng_state', the state of the one generator its run drew
        # from; nothing draws from it now, so it is not read.
        for key, kind in (("settings", dict), ("model_config", dict), ("optimizer", dict), ("epoch", int)):
            value = meta.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                found = "missing" if key not in meta else f"a {type(value).__name__}"
                raise CheckpointError(f"{path}: metadata field {key!r} is {found}, not a {kind.__name__}")
        try:
            settings = RunSettings.from_record(meta["settings"])
        except SettingsError as e:
            raise CheckpointError(f"{path}: metadata field 'settings': {e}") from e
        history = meta["history"] if "history" in meta else meta["settings"].get("history")
        check_history(path, history, meta["epoch"])
        config = stored_config(path, {**meta, "model": settings.kind})
        try:
            expected = settings.model_config(config.data_shape, config.n_classes)
        except SettingsError as e:
            raise CheckpointError(f"{path}: metadata field 'settings': {e}") from e
        if expected != config:
            raise CheckpointError(f"{path}: metadata field 'model_config' ({meta['model_config']}) does not match "
                                  f"the run's settings")
        state = cls.new(settings, config, backend)
        model, opt = state.model, state.optimizer
        load_weights(model, tensors, path)
        opt_arrays, _ = opt.state()
        check_tensors(path, tensors, {f"optimizer.{k}": ((model.params.size,), model.dtype.name) for k in opt_arrays})
        if "v" in opt_arrays and not (tensors["optimizer.v"] >= 0).all():
            raise CheckpointError(f"{path}: tensor 'optimizer.v' holds negative second moments, which Adam cannot have")
        t = meta["optimizer"].get("t", 0)
        if meta["optimizer"].get("name") != opt.name or (opt.name == "adam" and not (
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_STEPS)):
            raise CheckpointError(f"{path}: metadata field 'optimizer' is {meta['optimizer']}, not the state of "
                                  f"{opt.name} (its step count t an int in [0, 2^53))")
        opt.load_state({k: model.xp.asarray(tensors[f"optimizer.{k}"]) for k in opt_arrays}, meta["optimizer"])
        state.epoch, state.history = meta["epoch"], history
        state.data = meta.get("data")  # None in checkpoints that predate it
        if state.data is not None and not _is_data_record(state.data):
            raise CheckpointError(f"{path}: metadata field 'data' is not a record of a run's data (source, shape, "
                                  f"n_train, n_test, classes, held_out, crc32): {state.data!r}"[:400])
        return state


def checkpoint_of(run: Path) -> Path:
    """The checkpoint of ``run``: a run directory's ``checkpoint.safetensors``, or the checkpoint file itself."""
    run = Path(run)
    return run if run.is_file() else run / CHECKPOINT


def run_settings(run: Path) -> tuple[RunSettings, int]:
    """``(settings, epochs done)`` of the run in ``run`` (a run directory or its checkpoint), read from the
    checkpoint's metadata alone (its tensors are not read).

    Raises:
        CheckpointError: as :func:`tinyvae.io.checkpoint.read_metadata`, or settings that do not fit.
    """
    path = checkpoint_of(run)
    meta = read_metadata(path)
    try:
        settings = RunSettings.from_record(meta.get("settings"))
    except SettingsError as e:
        raise CheckpointError(f"{path}: metadata field 'settings': {e}") from e
    epoch = meta.get("epoch")
    history = meta["history"] if "history" in meta else (meta.get("settings") or {}).get("history")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise CheckpointError(f"{path}: metadata field 'epoch' is {epoch!r}, not an int")
    check_history(path, history, epoch)
    return settings, epoch


def check_history(path, history, epoch: int) -> None:
    """``CheckpointError`` unless ``history`` is one record per epoch done (``epoch`` of them), each an object
    with its ``epoch``, a finite ``train_loss`` and ``test_loss``, and finite numbers or strings elsewhere."""
    if not isinstance(history, list) or not 0 <= epoch == len(history):
        held = f"{len(history)} records" if isinstance(history, list) else f"a {type(history).__name__}"
        raise CheckpointError(f"{path}: metadata field 'epoch' is {epoch} but the run's history holds {held}")
    for i, record in enumerate(history):
        finite = isinstance(record, dict) and all(
            isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
            for v in record.values())
        if not finite or record.get("epoch") != i + 1 or not all(k in record for k in ("train_loss", "test_loss")):
            raise CheckpointError(f"{path}: metadata field 'history', record {i + 1}, is not an epoch's metrics "
                                  "(an object with epoch, train_loss and test_loss, each value a finite number "
                                  f"or a string): {record!r}"[:400])


def data_record(data) -> dict:
    """What identifies a run's data (a :class:`~tinyvae.io.datasets.Dataset`), for its checkpoint: one example's
    shape, the sizes of the two splits, the class names, how the test set was held out (or None), and the
    CRC-32 of the values and labels of both splits (:func:`values_crc32`), which tells the same data from other
    data of the same sizes. Where they were read from (``source``) is noted, not compared."""
    splits = [data.train, data.test] if data.train is not None else [data.test]
    return {"source": data.source, "shape": list(data.shape),
            "n_train": len(data.train) if data.train is not None else None, "n_test": len(data.test),
            "classes": data.classes, "held_out": data.held_out,
            "crc32": values_crc32([a for split in splits for a in (split.data, split.y) if a is not None])}


def values_crc32(arrays) -> int:
    """The CRC-32 (zlib's) of the arrays' dtypes and values, in C order, one after another: about 2 GB/s, 30 ms
    for Fashion-MNIST."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a), zlib.crc32(a.dtype.str.encode(), crc))
    return crc


_DATA_FIELDS = {"source", "shape", "n_train", "n_test", "classes", "held_out"}


def _is_data_record(r) -> bool:
    sizes = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
    return (isinstance(r, dict) and set(r) in (_DATA_FIELDS, _DATA_FIELDS | {"crc32"})
            and ("crc32" not in r or sizes(r["crc32"]) and r["crc32"] < 2**32)
            and isinstance(r["source"], str)
            and isinstance(r["shape"], list) and all(sizes(v) for v in r["shape"]) and sizes(r["n_test"])
            and (r["n_train"] is None or sizes(r["n_train"]))
            and (r["classes"] is None or isinstance(r["classes"], list) and all(isinstance(c, str) for c in r["classes"]))
            and (r["held_out"] is None or isinstance(r["held_out"], dict)))


def _describe(r: dict) -> str:
    classes = f", classes {', '.join(r['classes'])}" if r["classes"] else ""
    crc = f", values of CRC-32 {r['crc32']:08x}" if "crc32" in r else ""
    return f"{r['n_train']} training and {r['n_test']} test examples of shape {tuple(r['shape'])}{classes}{crc}"
