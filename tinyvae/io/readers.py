"""Readers of a user's data, each giving ``(data, shape, y, classes)``: ``data`` ``(N, D)`` uint8 pixels (which
the model sees divided by 255) or float32 values, one example per row; ``shape`` one example's, ``(C, H, W)``
for images, stored channels-last in the row (each pixel's C values together, as PNG stores them), or ``(D,)``
for a table; ``y`` ``(N,)`` int64 labels or None; ``classes`` their names or None. docs/data.md shows each
format with an example.

* :func:`read_image_folder`: PNG, JPEG, BMP and WebP images found recursively (Pillow), sorted by their path
  in the folder; the first-level subfolders are the classes when every image sits in one. Decoded once into
  a cache file keyed by the folder's contents (every image's path, size and modification time).
* :func:`read_array`: a ``.npy`` file, ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``; a ``.npz`` file's ``x``
  (and ``y``).
* :func:`read_csv`: numeric columns, with an optional header line.
* :func:`read_cifar10`: CIFAR-10's binary version (``data_batch_*.bin``, ``test_batch.bin``), without pickle.

Raises (every reader): :class:`~tinyvae.errors.DataError` naming the file (and the line for a CSV) and what is
accepted, for anything it cannot take.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError, SettingsError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # Pillow's modes without colour
COLORS = ("auto", "gray", "rgb")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_RECORD = 1 + 3 * 32 * 32  # a label byte, then the image's 1024 red, 1024 green and 1024 blue bytes
CACHE_VERSION = b"tinyvae-images-1"


def cache_root() -> Path:
    """Where decoded image folders are kept: ``$TINYVAE_CACHE/images`` (default ``~/.cache/tinyvae/images``)."""
    return Path(os.environ.get("TINYVAE_CACHE", Path.home() / ".cache" / "tinyvae")) / "images"


def image_files(folder: Path) -> list[tuple[str, str]]:
    """``(path relative to folder, with /; path)`` of the images in ``folder`` and its subfolders, sorted by the
    first. Strings and ``os.walk``, not ``Path`` objects, whose making costs most of a read from the cache
    (docs/performance.md, "Your data")."""
    found = []
    for root, _, names in os.walk(folder):
        rel = os.path.relpath(root, folder).replace(os.sep, "/")
        found += [(n if rel == "." else f"{rel}/{n}", os.path.join(root, n)) for n in names
                  if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _cache_key(files: list[tuple[str, str]], image_size: tuple, color: str) -> str:
    h = hashlib.sha256(CACHE_VERSION)
    h.update(repr((tuple(image_size), color)).encode())
    for rel, path in files:
        st = os.stat(path)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _opened(path: Path):
    """``path`` opened by Pillow (its header read, its pixels not yet)."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not an image Pillow can read ({e}); a folder of images takes "
                        f"{', '.join(IMAGE_SUFFIXES)} files") from e


def read_image_folder(folder, image_size: tuple = (), color: str = "auto", progress: bool = True):
    """The images of ``folder``, as ``(data, shape, y, classes)`` (see the module doc).

    Args:
        image_size: ``(H, W)`` (or ``(S,)``, square) to resize every image to with Pillow (bilinear); ``()``
            keeps their size, which must then be the same for all.
        color: ``gray`` (C = 1), ``rgb`` (C = 3), or ``auto``: rgb where any image has colour.
        progress: show a progress bar while decoding (tqdm).

    Raises:
        DataError: no images, an image Pillow cannot read, or (without ``image_size``) images of two sizes.
        SettingsError: an ``image_size`` or ``color`` it does not take.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    folder = Path(folder)
    if color not in COLORS:
        raise SettingsError(f"--color must be one of {', '.join(COLORS)}, got {color!r}")
    if len(image_size) not in (0, 1, 2):
        raise SettingsError(f"--image-size takes H,W or one side S, got {','.join(map(str, image_size))}")
    found = image_files(folder)
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subfolders")
    parts = [rel.split("/") for rel, _ in found]
    classes = sorted({p[0] for p in parts}) if all(len(p) == 2 for p in parts) else None
    y = np.searchsorted(classes, [p[0] for p in parts]).astype(np.int64) if classes else None
    cache = cache_root() / f"{_cache_key(found, image_size, color)}.npy"
    if cache.is_file():
        try:
            data = np.load(cache, allow_pickle=False)
        except (ValueError, OSError, EOFError):  # a damaged cache file: decode the images again
            data = None
        if data is not None and data.ndim == 4 and len(data) == len(found):
            return data.reshape(len(found), -1), _shape_of_cache(data), y, classes
    files = [path for _, path in found]
    sizes, colour = {}, False
    for p in files:  # the headers first: the colour and the sizes decide how every image is decoded
        with _opened(p) as im:
            sizes.setdefault(im.size, p)
            colour = colour or im.mode not in GREY_MODES
    if image_size:
        W, H = (image_size[0], image_size[0]) if len(image_size) == 1 else (image_size[1], image_size[0])
    elif len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise DataError(f"{pa} is {a[0]}x{a[1]} pixels but {pb} is {b[0]}x{b[1]}; pass --image-size H,W to "
                        "resize them all to one size")
    else:
        W, H = next(iter(sizes))
    mode = "RGB" if color == "rgb" or (color == "auto" and colour) else "L"
    C = 3 if mode == "RGB" else 1
    data = np.empty((len(files), H, W, C), np.uint8)
    for i, p in enumerate(tqdm(files, desc=f"decoding {folder.name}", unit="image", disable=not progress or None,
                               leave=False)):
        with _opened(p) as im:
            try:
                im = im.convert(mode)
            except OSError as e:  # a truncated or corrupt file fails when its pixels are read
                raise DataError(f"{p}: Pillow could not read its pixels ({e})") from e
            if im.size != (W, H):
                im = im.resize((W, H), Image.Resampling.BILINEAR)
            data[i] = np.asarray(im, np.uint8).reshape(H, W, C)
    _save_cache(cache, data)
    return data.reshape(len(files), -1), (C, H, W), y, classes


def _shape_of_cache(data: np.ndarray) -> tuple[int, int, int]:
    n, H, W, C = data.shape
    return C, H, W


def _save_cache(path: Path, data: np.ndarray) -> None:
    """Write the decoded images to ``path`` atomically; a cache that cannot be written is skipped (the images
    are decoded again next time). Not :func:`tinyvae.io.checkpoint.atomic_write_bytes`: the array is streamed
    to the file rather than held twice in memory as bytes, and a temporary file of its own name (mkstemp)
    leaves alone the one another process may be writing for the same folder, which that function removes."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, data, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


def _checked_values(path, a: np.ndarray) -> np.ndarray:
    """``a`` as uint8 pixels or float32 values; ``DataError`` for another dtype or a non-finite value."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind != "f":
        raise DataError(f"{path}: holds {a.dtype} values; tinyvae takes uint8 pixels (divided by 255) or "
                        "floating-point values (used as they are)")
    a = a if a.dtype == np.float32 else a.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: example {bad[0]} holds NaN or inf ({bad.size} such examples)")
    return a


def as_examples(path, a: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """An array of examples as ``(data (N, D), shape)``: (N, D) a table, (N, H, W) grey images, (N, C, H, W)
    images of 1 or 3 channels, put channels-last."""
    if a.ndim not in (2, 3, 4) or a.shape[0] == 0 or 0 in a.shape:
        raise DataError(f"{path}: an array of shape {a.shape}; tinyvae takes (N, D) rows, (N, H, W) grey images "
                        "or (N, C, H, W) images, N >= 1")
    if a.ndim == 4 and a.shape[1] not in (1, 3):
        raise DataError(f"{path}: (N, C, H, W) images of C = {a.shape[1]} channels; tinyvae takes 1 (grey) or 3 "
                        "(RGB)")
    a = _checked_values(path, a)
    if a.ndim == 2:
        return a, (a.shape[1],)
    if a.ndim == 3:
        return a.reshape(len(a), -1), (1, *a.shape[1:])
    N, C, H, W = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(N, -1), (C, H, W)


def labels(path, y, n: int) -> tuple[np.ndarray, list[str]]:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise DataError(f"{path}: y must be ({n},) integer labels >= 0 (one per example of x), got {y.dtype} "
                        f"{y.shape}")
    return y.astype(np.int64), [str(c) for c in range(int(y.max()) + 1)]


def read_array(path) -> tuple:
    """A ``.npy`` file (read with mmap where it can stay mapped) or a ``.npz`` file's ``x`` and ``y``, as
    ``(data, shape, y, classes)``; the classes of integer labels are 0 to their largest."""
    path = Path(path)
    try:
        loaded = np.load(path, mmap_mode="r" if path.suffix == ".npy" else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # np.load's errors for a file that is not what it claims
        raise DataError(f"{path}: not a readable {path.suffix} file ({e})") from e
    if path.suffix == ".npy":
        data, shape = as_examples(path, loaded)
        return data, shape, None, None
    with loaded:
        if "x" not in loaded.files:
            raise DataError(f"{path}: holds {', '.join(loaded.files) or 'nothing'}; a .npz takes the examples as x "
                            "(and integer labels as y)")
        try:
            x, y = loaded["x"], loaded["y"] if "y" in loaded.files else None
        except ValueError as e:  # an object array, which would need pickle
            raise DataError(f"{path}: {e}") from e
    data, shape = as_examples(path, x)
    if y is None:
        return data, shape, None, None
    return (data, shape, *labels(path, y, len(data)))


def read_csv(path) -> tuple:
    """A CSV file of numeric columns as ``(data, (D,), None, None)``: float32 rows. The first line is a header
    when any of its cells is not a number."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e})") from e
    except csv.Error as e:
        raise DataError(f"{path}: not a CSV file ({e})") from e
    numbered = [(i + 1, cells) for i, cells in enumerate(lines) if any(c.strip() for c in cells)]
    if numbered and not all(_number(c) is not None for c in numbered[0][1]):
        numbered = numbered[1:]  # a header
    if not numbered:
        raise DataError(f"{path}: no rows of numbers")
    width = len(numbered[0][1])
    rows = np.empty((len(numbered), width), np.float32)
    for r, (line, cells) in enumerate(numbered):
        if len(cells) != width:
            raise DataError(f"{path}, line {line}: {len(cells)} columns where the first row has {width}")
        for j, cell in enumerate(cells):
            value = _number(cell)
            if value is None or not math.isfinite(value):
                raise DataError(f"{path}, line {line}, column {j + 1}: {cell.strip()!r} is not a finite number; a "
                                "CSV takes numeric columns, with an optional header line")
            rows[r, j] = value
    return rows, (width,), None, None


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_cifar10(folder, split: str) -> tuple:
    """CIFAR-10's binary version: ``split`` train (``data_batch_*.bin``, in order) or test (``test_batch.bin``),
    as ``(data, (3, 32, 32), y, classes)``."""
    folder = Path(folder)
    files = sorted(folder.glob("data_batch_*.bin")) if split == "train" else [folder / "test_batch.bin"]
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"{folder}: CIFAR-10's {'data_batch_*.bin' if split == 'train' else 'test_batch.bin'} is "
                        "missing")
    records = []
    for f in files:
        raw = np.fromfile(f, np.uint8)
        if raw.size == 0 or raw.size % CIFAR10_RECORD:
            raise DataError(f"{f}: {raw.size} bytes is not a whole number of CIFAR-10 records ({CIFAR10_RECORD} "
                            "bytes each)")
        records.append(raw.reshape(-1, CIFAR10_RECORD))
    raw = np.concatenate(records)
    y = raw[:, 0].astype(np.int64)
    if y.max() >= len(CIFAR10_CLASSES):
        bad = int(np.flatnonzero(y >= len(CIFAR10_CLASSES))[0])
        raise DataError(f"{folder}: record {bad} has label {y[bad]}; CIFAR-10's labels are 0 to 9")
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images).reshape(len(raw), -1), (3, 32, 32), y, list(CIFAR10_CLASSES)
