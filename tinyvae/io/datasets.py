"""The datasets tinyvae trains on: Fashion-MNIST's or MNIST's four IDX files (:mod:`tinyvae.io.idx`) in a
folder (:func:`load_dataset`), or a user's data (:func:`open_data`): a folder of images, an array file, a
CSV table, CIFAR-10's binary folder (:mod:`tinyvae.io.readers`), or an array in memory.

A dataset is read split by split where its files are, so that a command that needs only the test set
(evaluation, pictures of test images) reads only the test files. Data without a test split of its own
and without a test set named beside it hold one out: a fraction of the examples, drawn from the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import rng
from ..backends.arrays import array_module
from ..errors import DataError, SettingsError
from . import readers
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
ARRAY_SOURCE = "an array"  # how a dataset of arrays in memory names its source


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
    """One split of a dataset: ``data`` ``(N, D)``, one example per row, uint8 pixels (which the model sees
    divided by 255) or float32 values (seen as they are); and ``y``, ``(N,)`` int64 labels, or None.

    ``x`` is the examples as the model sees them, float32, made on first use. The training loop gathers its
    batches from ``data`` and converts each batch (the backends' ``gather_pixels`` op, for pixels): a
    quarter of the memory, and of the memory traffic, of gathering float32 rows.
    """

    data: np.ndarray
    y: np.ndarray | None = None

    @cached_property
    def x(self) -> np.ndarray:
        return pixels_to_unit(self.data) if self.data.dtype == np.uint8 else np.asarray(self.data, np.float32)

    def __len__(self) -> int:
        return self.data.shape[0]

    def take(self, index: np.ndarray) -> "Split":
        """The split of examples ``index`` (in that order)."""
        return Split(np.asarray(self.data[index]), None if self.y is None else self.y[index])


@dataclass
class Dataset:
    """A dataset's splits (``train`` is None where only the test split was read), the shape of one example
    (``(C, H, W)`` images, channels-last in each row; ``(D,)`` a table), the class names of its labels (None
    without labels), where it was read from, and, for a test split held out of the data, how
    (``{"fraction": f, "seed": s, "of": N}``)."""

    name: str
    shape: tuple[int, ...]
    source: str
    test: Split
    train: Split | None = None
    classes: list[str] | None = None
    held_out: dict | None = None

    @property
    def n_classes(self) -> int:
        """The number of classes (0 without labels); every label is one of ``0 .. n_classes - 1``."""
        return len(self.classes) if self.classes else 0

    @property
    def class_names(self) -> list[str]:
        """A name per class (Fashion-MNIST's ten garments; the subfolders' names; digits otherwise)."""
        return list(self.classes or [])

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images, or None for a table."""
        return tuple(self.shape[1:]) if len(self.shape) == 3 else None

    @property
    def is_table(self) -> bool:
        return len(self.shape) == 1


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
    return _idx_splits(name, d, paths, splits)


def _idx_splits(name: str, folder: Path, paths: dict, splits: tuple[str, ...]) -> Dataset:
    read, image_shape = {}, None
    for split in splits:
        images = _images(paths[f"{split}_images"])
        read[split] = Split(images.reshape(len(images), -1),
                            _labels(paths[f"{split}_labels"], len(images), N_CLASSES.get(name, 10)))
        shape = images.shape[1:]
        if split == "test" and "train" in read and shape != image_shape:
            raise DataError(f"train images are {image_shape} but test images are {shape}")
        image_shape = shape
    classes = CLASS_NAMES.get(name, [str(c) for c in range(N_CLASSES.get(name, 10))])
    return Dataset(name=name, shape=(1, *image_shape), source=str(folder), classes=classes, **read)


def data_kind(path: Path) -> str:
    """What ``path`` holds: ``npy``, ``npz``, ``csv``, ``cifar10`` (a folder of CIFAR-10's binary files),
    ``idx`` (a folder of IDX files) or ``images`` (a folder of images).

    Raises:
        DataError: nothing at ``path``, or a file of another kind.
    """
    if path.is_file():
        kind = path.suffix.lower().lstrip(".")
        if kind not in ("npy", "npz", "csv"):
            raise DataError(f"{path}: a {path.suffix or 'suffix-less'} file; --data takes a .npy, .npz or .csv file, "
                            "or a folder (of images, IDX files, or CIFAR-10's binary files)")
        return kind
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "test_batch.bin").is_file() or any(path.glob("data_batch_*.bin")):
        return "cifar10"
    if any(_find(path, stem) for stem in FILES.values()):
        return "idx"
    return "images"


def _own_split(path: Path, kind: str, split: str) -> tuple:
    """``split`` of a folder that holds both (IDX, CIFAR-10), as ``(data, shape, y, classes)``."""
    if kind == "cifar10":
        return readers.read_cifar10(path, split)
    paths = {k: _find(path, stem) for k, stem in FILES.items() if k.startswith(split)}
    missing = [FILES[k] for k, v in paths.items() if v is None]
    if missing:
        raise DataError(f"{path}: holds IDX files but not {', '.join(m + '[.gz]' for m in missing)}")
    d = _idx_splits(path.name, path, paths, (split,))
    return d.test.data, d.shape, d.test.y, d.classes


def _whole(path: Path, kind: str, image_size: tuple, color: str) -> tuple:
    """Every example of a file or folder without splits of its own, as ``(data, shape, y, classes)``."""
    if kind in ("npy", "npz"):
        return readers.read_array(path)
    if kind == "csv":
        return readers.read_csv(path)
    return readers.read_image_folder(path, image_size, color)


def _read(path: Path, split: str, image_size: tuple, color: str) -> tuple:
    kind = data_kind(path)
    if kind != "images" and (image_size or color != "auto"):
        raise SettingsError(f"--image-size and --color apply to a folder of images; {path} holds {kind} data")
    if kind in ("cifar10", "idx"):
        return _own_split(path, kind, split)
    return _whole(path, kind, image_size, color)


def open_data(path, test_path=None, splits: tuple[str, ...] = SPLITS, *, image_size: tuple = (),
              color: str = "auto", val_fraction: float = 0.1, seed: int = 1) -> Dataset:
    """A user's data (:mod:`tinyvae.io.readers` reads each kind), ``splits`` of it (the test split always).

    Args:
        path: the training data: a folder of images, a ``.npy``, ``.npz`` or ``.csv`` file, CIFAR-10's binary
            folder, or a folder of IDX files. The last two hold a test split of their own.
        test_path: the test set, in any of those forms (a folder with splits gives its test split); None:
            ``path``'s own test split, or ``val_fraction`` of its examples held out, drawn from ``seed``.
        image_size, color: for a folder of images (:func:`tinyvae.io.readers.read_image_folder`); the test
            images take the training images' colour.

    Raises:
        DataError: data a reader refuses; a test set of another shape or other classes than the training
            data; too few examples to hold a test set out.
        SettingsError: ``image_size`` or ``color`` for data that is not a folder of images.
    """
    path = Path(path)
    kind = data_kind(path)
    own = kind in ("cifar10", "idx")
    read = {}
    if "train" in splits or (test_path is None and not own):
        data, shape, y, classes = _read(path, "train", tuple(image_size), color)
        read["train"] = Split(data, y)
    if test_path is not None or own:
        source = Path(test_path) if test_path is not None else path
        if "train" in read and len(shape) == 3 and data_kind(source) == "images":
            color = "rgb" if shape[0] == 3 else "gray"
        t_data, t_shape, t_y, t_classes = _read(source, "test", tuple(image_size), color)
        merged = _merged_classes(classes, t_classes) if "train" in read else t_classes
        if "train" in read and (t_shape != shape or merged is None and (classes or t_classes)):
            raise DataError(f"{source}: its examples are {t_shape}"
                            f"{f' of classes {t_classes}' if t_classes else ' without labels'}, but {path}'s are "
                            f"{shape}{f' of classes {classes}' if classes else ' without labels'}")
        shape, classes = t_shape, merged
        test, held_out = Split(t_data, t_y), None
    else:
        test, train, held_out = _held_out(path, read["train"], val_fraction, seed)
        read["train"] = train
    if "train" not in splits:
        read.pop("train", None)
    return Dataset(name=path.stem if path.is_file() else path.name, shape=tuple(shape), source=str(path),
                   classes=classes, held_out=held_out, test=test, **read)


def _merged_classes(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    """The classes of a training set's labels ``a`` and a test set's ``b``: the same names; or, for labels that
    are numbers (a .npz's), the classes up to the larger's largest. None where they do not fit together."""
    if a == b:
        return a
    numbered = lambda names: names is not None and names == [str(c) for c in range(len(names))]
    if numbered(a) and numbered(b):
        return a if len(a) >= len(b) else b
    return None


def _held_out(path: Path, whole: Split, fraction: float, seed: int) -> tuple[Split, Split, dict]:
    """``(test, train, record)``: ``fraction`` of the examples of ``whole`` (at least one) held out as the test
    set, the rest the training set, each in its order in the data; which ones, a permutation drawn from the
    ``split`` stream of ``seed``."""
    N = len(whole)
    n_test = max(1, round(fraction * N))
    if not 0 < fraction < 1 or n_test >= N:
        raise DataError(f"{path}: {N} examples cannot give a test set of --val-fraction {fraction} and keep one to "
                        "train on; give a test set with --test-data")
    perm = rng.generator(seed, "split", 0).permutation(N)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return whole.take(test), whole.take(train), {"fraction": fraction, "seed": seed, "of": N}


def check_examples(dataset: Dataset, bernoulli: bool) -> None:
    """``DataError`` unless every value of ``dataset`` fits the decoder: in [0, 1] for the Bernoulli decoder
    (pixels always do), naming the split, the example and its value."""
    if not bernoulli:
        return
    for name, split in (("training", dataset.train), ("test", dataset.test)):
        if split is None or split.data.dtype == np.uint8:
            continue
        bad = np.flatnonzero(((split.data < 0) | (split.data > 1)).any(axis=1))
        if bad.size:
            row = np.asarray(split.data[bad[0]])
            value = row[(row < 0) | (row > 1)][0]
            raise DataError(f"{dataset.source}: {name} example {bad[0]} holds {value:g}; the Bernoulli decoder takes "
                            "values in [0, 1] (use --likelihood gaussian or gaussian-learned for real values)")


def from_arrays(x, y=None, test_x=None, test_y=None, *, val_fraction: float = 0.1, seed: int = 1) -> Dataset:
    """A dataset of arrays in memory (``tinyvae.fit``): ``x`` as a ``.npy`` file holds it (``(N, D)``,
    ``(N, H, W)`` or ``(N, C, H, W)``; uint8 pixels or floats), ``y`` optional integer labels; the test set
    ``test_x`` (and ``test_y``), or ``val_fraction`` of ``x`` held out, drawn from ``seed``.

    Raises:
        DataError: arrays :func:`tinyvae.io.readers.read_array` would refuse; a test set of another shape.
    """
    def examples(what, a, labels):
        data, shape = readers.as_examples(what, np.asarray(a))
        if labels is None:
            return data, shape, None, None
        return (data, shape, *readers.labels(what, labels, len(data)))

    data, shape, y, classes = examples("the array x", x, y)
    train = Split(data, y)
    if test_x is None:
        test, train, held_out = _held_out(Path("the array x"), train, val_fraction, seed)
    else:
        t_data, t_shape, t_y, t_classes = examples("the array test_x", test_x, test_y)
        if t_shape != shape:
            raise DataError(f"the array test_x holds examples of shape {t_shape}, but x's are {shape}")
        if bool(classes) != bool(t_classes):
            raise DataError("labels for one of x and test_x only: give y and test_y both, or neither")
        classes = _merged_classes(classes, t_classes)
        test, held_out = Split(t_data, t_y), None
    return Dataset(name="array", shape=shape, source=f"{ARRAY_SOURCE} of shape {(len(data), *shape)}",
                   classes=classes, held_out=held_out, test=test, train=train)
