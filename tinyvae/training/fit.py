"""``tinyvae.fit``: a run of the training command from Python, on an array or on data at a path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from ..io.datasets import from_arrays
from ..models.protocol import Model
from .data import load_run_data, settings_for_data, train_settings
from .loop import Trainer
from .rundir import claim, new_run_dir, release, remove_if_empty
from .state import checkpoint_of
from .settings import SETTINGS, TRAIN_SETTINGS, check_epochs

NOT_SETTINGS = ("data", "test_data", "dataset", "data_dir")  # fit's own arguments say where the data are


def _arrays(data):
    """``(x, y)`` of an array ``x`` or an ``(x, y)`` pair; None for a path."""
    if isinstance(data, (str, os.PathLike)):
        return None
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), None if data[1] is None else np.asarray(data[1])
    return np.asarray(data), None


def fit(data, *, test_data=None, epochs: int = 10, out=None, backend: str = "auto", seed: int = 1,
        resume: bool = False, **settings) -> Model:
    """Train a model as ``python -m tinyvae.train`` does, and return it.

    Args:
        data: the training data: an array (``(N, D)`` rows, ``(N, H, W)`` grey images or ``(N, C, H, W)``
            images; uint8 pixels, divided by 255, or floats, used as they are), an ``(x, y)`` pair with integer
            labels, or a path in any form ``--data`` takes (docs/data.md).
        test_data: the test set, in the same forms; None: the data's own test split, else ``val_fraction`` of
            ``data`` held out (drawn from ``seed``).
        epochs: the total epochs (with ``resume``, counting those done).
        out: a new or empty run directory to write as the command line does (metrics, checkpoints, pictures);
            None writes nothing.
        backend: ``auto`` (cuda where it runs, else numba), ``numpy``, ``numba``, ``cuda`` or ``cuda-sim``.
        seed: seeds the initial weights and every random draw of the run.
        resume: continue the run in ``out`` from its checkpoint, on the same data (its own settings).
        settings: the command line's settings, named with underscores (``model="cvae"``, ``arch="conv"``,
            ``latent_dim=2``, ``lr=3e-4``, ...; ``python -m tinyvae.train --help`` lists them).

    Returns:
        The trained :class:`~tinyvae.models.protocol.Model`; ``model.history`` holds one dict per epoch, the
        records of ``metrics.jsonl`` (losses in nats per example).

    Raises:
        SettingsError: an unknown or bad setting; a setting fit takes as its own argument; ``resume`` without
            ``out``.
        DataError: data the readers or the model refuse (docs/data.md).
        Diverged: the loss became non-finite; with ``out``, its last good checkpoint is intact.
        OSError: ``out`` cannot be written, or holds something already (a run is never trained over).
    """
    check_epochs(epochs)
    own = sorted(set(settings) & set(NOT_SETTINGS))
    if own:
        raise SettingsError(f"fit takes where the data are as data= and test_data=, not {', '.join(own)}")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SettingsError(f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(unknown)}; the settings are "
                            f"{', '.join(k for k in SETTINGS if k not in NOT_SETTINGS)}")
    arrays, test_arrays = _arrays(data), None if test_data is None else _arrays(test_data)
    if test_data is not None and (arrays is None) != (test_arrays is None):
        raise SettingsError("data and test_data take arrays both, or paths both")
    given = {**settings, "seed": seed}
    dataset = None
    if arrays is not None:  # held out of the arrays here: val_fraction is not a setting of --data then
        fraction = TRAIN_SETTINGS["val_fraction"].check(given.pop("val_fraction", 0.1))
        dataset = from_arrays(*arrays, *(test_arrays or (None, None)), val_fraction=fraction,
                              seed=TRAIN_SETTINGS["seed"].check(seed))
    else:
        given["data"] = str(Path(data).resolve())
        if test_data is not None:
            given["test_data"] = str(Path(test_data).resolve())
    if resume and out is None:
        raise SettingsError("resume=True continues the run in out=; name it")
    if not resume and dataset is None:
        dataset = load_run_data(train_settings(given, flags=False))
    run_settings = None if resume else settings_for_data(given, dataset, flags=False)
    if resume:
        run_dir, created = checkpoint_of(Path(out)).parent, False
        claim(run_dir)
    else:
        run_dir, created = (None, False) if out is None else new_run_dir(str(out))
    trainer = None
    try:
        if resume:
            trainer = Trainer.resume(Path(out), backend, data=dataset)
        else:
            trainer = Trainer.start(run_settings, backend, run_dir, data=dataset, pictures=out is not None)
        trainer.run(epochs)
    except BaseException:
        if run_dir is not None and (trainer is None or trainer.saved_epoch == 0) and not resume:
            remove_if_empty(run_dir, created)  # a start that failed leaves the folder as it was
        raise
    finally:
        if run_dir is not None:
            release(run_dir)
    model = trainer.model
    model.history = trainer.state.history
    return model
