"""A run's data, from its settings: Fashion-MNIST or MNIST (``--dataset``, ``--data-dir``), or the user's own
(``--data``, ``--test-data``; :func:`tinyvae.io.datasets.open_data`); the settings that depend on it; the
test set as the model sees it, and batches of it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import rng
from ..backends.arrays import array_module
from ..errors import DataError
from ..io.datasets import PIXEL_SCALE, SPLITS, Dataset, check_examples, load_dataset, open_data
from .settings import TRAIN_SETTINGS, RunSettings, TrainSettings


def load_run_data(t: TrainSettings, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """The data of a run with training settings ``t``: ``splits`` of it (the test split always).

    Raises:
        DataError, SettingsError: as :func:`tinyvae.io.datasets.load_dataset` and
            :func:`tinyvae.io.datasets.open_data`.
    """
    if t.data is None:
        return load_dataset(t.dataset, t.data_dir, splits)
    return open_data(t.data, t.test_data, splits, image_size=t.image_size, color=t.color,
                     val_fraction=t.val_fraction, seed=t.seed)


def settings_for_data(given: dict, data: Dataset, flags: bool = True) -> RunSettings:
    """The settings of a new run from those ``given`` (:meth:`RunSettings.resolve`), where a table's decoder
    defaults to the Gaussian: the Bernoulli decoder is for values in [0, 1], and a table's columns are
    rarely that.

    Raises:
        SettingsError: as :meth:`RunSettings.resolve`. DataError: a conditional model for data without labels.
    """
    if data.is_table and "likelihood" not in given:
        given = {**given, "likelihood": "gaussian"}
    settings = RunSettings.resolve(given, flags=flags)
    if settings.kind == "cvae" and not data.n_classes:
        raise DataError(f"--model cvae is conditional on a label, and {data.source} has none: give labels (class "
                        "subfolders of images, y in a .npz, IDX or CIFAR-10 labels)")
    return settings


def train_settings(given: dict, flags: bool = True) -> TrainSettings:
    """The training settings alone of those ``given`` (where the data are; the model's wait for the data)."""
    return RunSettings.resolve({k: v for k, v in given.items() if k in TRAIN_SETTINGS}, flags=flags).train


def relocated(settings: RunSettings, moved: dict) -> RunSettings:
    """``settings`` with the data's location replaced by ``moved`` (``data_dir``, ``data``, ``test_data``: where
    a resumed run's data are now)."""
    return replace(settings, train=replace(settings.train, **moved))


def test_set(data: Dataset, settings: RunSettings, backend, n_classes: int) -> tuple:
    """``(x, y)``: a run's test examples as the model sees them, ``(N, D)`` float32 arrays of ``backend`` (pixels
    in [0, 1]; with ``--binarize``, one binarisation, drawn from the ``evaluate`` stream of the run's seed at its
    ``binarize`` step: the same at every call), and their labels for a conditional model (``n_classes`` > 0),
    else None."""
    xp = backend.xp
    y = xp.asarray(data.test.y) if n_classes else None
    if data.test.data.dtype != np.uint8:
        return xp.asarray(data.test.x), y
    pixels = xp.asarray(data.test.data)
    x = xp.empty(pixels.shape, np.float32)
    binarize = None
    if settings.train.binarize:
        binarize = (rng.stream_key(settings.train.seed, "evaluate"), rng.EVALUATE_STEPS["binarize"])
    backend.gather_pixels(pixels, xp.arange(pixels.shape[0], dtype=np.int64), PIXEL_SCALE, x, binarize=binarize)
    return x, y


def check_fits(config, data: Dataset, settings: RunSettings) -> None:
    """``DataError`` unless ``data`` is what the run's model takes: its examples' shape and classes, labels for a
    conditional model, values in [0, 1] for the Bernoulli decoder, pixels to binarise for ``--binarize``."""
    if tuple(config.data_shape) != tuple(data.shape) or (config.n_classes and config.n_classes != data.n_classes):
        raise DataError(f"the run's model takes examples of shape {tuple(config.data_shape)}"
                        f"{f' of {config.n_classes} classes' if config.n_classes else ''}; {data.source} holds "
                        f"{tuple(data.shape)}{f' of {data.n_classes} classes' if data.n_classes else ''}")
    if settings.train.binarize and data.test.data.dtype != np.uint8:
        raise DataError(f"--binarize draws each pixel of uint8 images (PNG, IDX, CIFAR-10, a uint8 .npy); "
                        f"{data.source} holds float values")
    check_examples(data, config.likelihood == "bernoulli")


def batches(x, y, size: int):
    """``(x, y, rows)`` in batches of ``size`` rows: ``y`` None for a model without labels, ``rows`` the
    ``(b,)`` int64 indices of the batch's examples (an array of ``x``'s module)."""
    xp = array_module(x)
    for i in range(0, x.shape[0], size):
        n = min(size, x.shape[0] - i)
        yield x[i:i + n], None if y is None else y[i:i + n], xp.arange(i, i + n, dtype=np.int64)


def codes(model, x, y, size: int) -> np.ndarray:
    """``model.code`` of every row of ``x``, ``(N, K)`` host array, ``size`` rows at a time."""
    return np.concatenate([model.code(xb, yb) for xb, yb, _ in batches(x, y, size)])
