"""The image datasets tinyvae trains on: four IDX files (:mod:`tinyvae.io.idx`) in a folder.

A dataset is read split by split, so that a command that needs only the test set (evaluation, pictures
of test images) reads only the two ``t10k`` files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..backends.reference import array_module
from ..errors import DataError, SettingsError
from .idx import read_idx

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLITS = ("train", "test")
DATASETS = ("fashion-mnist", "mnist")
N_CLASSES = {"fashion-mnist": 10, "mnist": 10}  # labels 0 to 9: digits, or Fashion-MNIST's ten garments
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
PIXEL_SCALE = np.float32(1 / 255)


def pixels_to_unit(pixels, out=None):
    """uint8 pixels as intensities in [0, 1]: ``pixels * float32(1 / 255)``.

    NumPy picks the float32 loop from the inputs whatever ``out``'s float dtype,
    so every caller gets the same values (a float64 ``out`` receives the float32
    results, widened; tested).

    Args:
        pixels: uint8 NumPy or CuPy array, any shape.
        out: optional float array of the same shape and module to write into.

    Returns:
        ``out``, or a new float32 array.
    """
    return array_module(pixels).multiply(pixels, PIXEL_SCALE, out=out)


@dataclass
class Split:
    """One split of a dataset: its images flattened to ``(N, D)`` uint8 ``pixels``, and ``(N,)`` int64 labels.

    ``x`` is the pixels as float32 in [0, 1] (:func:`pixels_to_unit`), made on first use. The training loop
    gathers its batches from ``pixels`` and converts each batch (the backends' ``gather_pixels`` op): a
    quarter of the memory, and of the memory traffic, of gathering float32 rows.
    """

    pixels: np.ndarray
    y: np.ndarray

    @cached_property
    def x(self) -> np.ndarray:
        return pixels_to_unit(self.pixels)

    def __len__(self) -> int:
        return self.pixels.shape[0]


@dataclass
class Dataset:
    """A dataset's splits (``train`` is None where only the test split was read), the images' ``(H, W)``,
    and the folder it was read from."""

    name: str
    image_shape: tuple[int, int]
    source: Path
    test: Split
    train: Split | None = None

    @property
    def n_classes(self) -> int:
        """The number of classes; every label is one of ``0 .. n_classes - 1`` (checked on loading)."""
        return N_CLASSES[self.name]

    @property
    def class_names(self) -> list[str]:
        """A name per class (Fashion-MNIST's ten garments; digits otherwise)."""
        return CLASS_NAMES.get(self.name, [str(c) for c in range(self.n_classes)])


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _search_dirs(name: str, data_dir) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    if name == "mnist":
        raise SettingsError("mnist is read from the IDX files in a directory you name: pass --data-dir DIR")
    env = os.environ.get("TINYVAE_DATA")
    if env and not Path(env).is_dir():
        raise DataError(f"$TINYVAE_DATA names {env}, which is not a folder; point it at the folder of the four "
                        "IDX files, or unset it")
    return ([Path(env)] if env else []) + [DEBIAN_FASHION_MNIST]


def _images(path: Path) -> np.ndarray:
    a = read_idx(path)
    if a.ndim != 3 or a.dtype != np.uint8:
        raise DataError(f"{path}: expected a 3-d uint8 image array, got {a.ndim}-d {a.dtype}")
    if 0 in a.shape:
        raise DataError(f"{path}: holds no images (shape {a.shape})")
    return a


def _labels(path: Path, n: int, n_classes: int) -> np.ndarray:
    """The ``(n,)`` labels of ``path``, each a class in ``[0, n_classes)``."""
    a = read_idx(path)
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{path}: expected {n} labels to match the images, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got {a.dtype}")
    bad = np.flatnonzero((a < 0) | (a >= n_classes))
    if bad.size:
        raise DataError(f"{path}: label {a[bad[0]]} at index {bad[0]} is not one of the dataset's "
                        f"{n_classes} classes 0 to {n_classes - 1} ({bad.size} such labels)")
    return a.astype(np.int64)


def load_dataset(name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None,
                 splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load a dataset of standard IDX files (``train-images-idx3-ubyte[.gz]`` etc.): the ``splits`` asked for,
    each its images and labels; the test split always.

    ``fashion-mnist`` is looked for in ``data_dir``, else ``$TINYVAE_DATA``, else
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    ``mnist`` cannot be downloaded here: it is read from ``data_dir``.

    Returns:
        A :class:`Dataset` of uint8 pixels (each split's ``x``: scaled to [0, 1] float32, uint8 / 255).

    Raises:
        SettingsError: an unknown dataset name, or ``mnist`` without ``data_dir``.
        DataError: no folder holds the files (the message lists the folders searched and how to install the
            data), ``$TINYVAE_DATA`` names no folder, or a file is corrupt, truncated or inconsistent with the
            others, a split holds no images, or a label is not one of the dataset's classes.
    """
    if name not in DATASETS:
        raise SettingsError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    splits = tuple(s for s in SPLITS if s in splits or s == "test")
    wanted = {k: stem for k, stem in FILES.items() if k.split("_")[0] in splits}
    dirs = _search_dirs(name, data_dir)
    for d in dirs:
        paths = {k: _find(d, stem) for k, stem in wanted.items()}
        if all(paths.values()):
            break
    else:
        hint = ("install it with `apt-get install -y dataset-fashion-mnist`, or point --data-dir "
                "or $TINYVAE_DATA at a directory holding them") if name == "fashion-mnist" else \
               "put the MNIST IDX files there"
        raise DataError(f"{name}: no directory holds all of {', '.join(s + '[.gz]' for s in wanted.values())}; "
                        f"searched {', '.join(map(str, dirs))}; {hint}")
    read = {}
    for split in splits:
        images = _images(paths[f"{split}_images"])
        read[split] = Split(images.reshape(len(images), -1),
                            _labels(paths[f"{split}_labels"], len(images), N_CLASSES[name]))
        shape = images.shape[1:]
        if split == "test" and "train" in read and shape != image_shape:
            raise DataError(f"train images are {image_shape} but test images are {shape}")
        image_shape = shape
    return Dataset(name=name, image_shape=tuple(image_shape), source=d, **read)
