"""IDX files (the MNIST format) and the image datasets tinyvae trains on.

IDX format (LeCun et al., "The MNIST database", file format section): two zero
bytes, a type code, the number of dimensions n, then n big-endian uint32
sizes and the data in C order, big-endian. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .backends.reference import array_module

# IDX type code -> big-endian numpy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = ("fashion-mnist", "mnist")
N_CLASSES = {"fashion-mnist": 10, "mnist": 10}  # labels 0 to 9: digits, or Fashion-MNIST's ten garments
PIXEL_SCALE = np.float32(1 / 255)


class DataError(ValueError):
    """A data file is missing, corrupt, truncated or inconsistent."""


def _parse_header(head: bytes, path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header length) from the first bytes of an IDX file."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {head[:4].hex() or 'empty'})")
    ndim = head[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(head)} of {header_len} bytes)")
    shape = struct.unpack(f">{ndim}I", head[4:header_len])
    return np.dtype(IDX_TYPES[head[2]]), tuple(shape), header_len


GZIP_MAX_RATIO = 1032  # deflate expands at most about 1032:1 (zlib's technical details)
CHUNK = 1 << 20


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes).

    The data are read in chunks, so no more memory is taken than the file
    really holds: a raw file must be exactly as long as its header declares;
    a gzip file is read to its end, so gzip's CRC-32 and length of each member
    are checked (RFC 1952; a file of several members is read whole), and its
    header may not declare more than deflate can expand the file to.

    Returns:
        The array with the header's shape, in native byte order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataError: bad magic number, type code or dimension count; a header
            whose sizes the file cannot hold; data truncated, corrupt (a CRC or
            length that gzip refuses) or longer than the header declares.
    """
    path = Path(path)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    size = path.stat().st_size
    buf = bytearray()
    try:
        with (gzip.open if is_gzip else open)(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            dtype, shape, header_len = _parse_header(head, path)
            n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            limit = size * GZIP_MAX_RATIO if is_gzip else size - header_len
            if n_bytes > limit or (not is_gzip and n_bytes != limit):
                holds = f"at most {limit} bytes uncompressed" if is_gzip else f"{limit} bytes after its header"
                raise DataError(f"{path}: header says {shape} of {dtype.name} ({n_bytes} bytes) "
                                f"but the file holds {holds}")
            while len(buf) < n_bytes:
                chunk = f.read(min(CHUNK, n_bytes - len(buf)))
                if not chunk:
                    raise DataError(f"{path}: truncated: {len(buf)} of the {n_bytes} data bytes its header declares")
                buf += chunk
            if f.read(1):  # for gzip, reading to the end is what checks each member's CRC and length
                raise DataError(f"{path}: more data than its header's {shape} of {dtype.name} declares")
    except EOFError as e:
        raise DataError(f"{path}: truncated: the compressed data end after {len(buf)} of the data bytes "
                        f"its header declares ({e})") from e
    except (zlib.error, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataError(f"{path}: corrupt file ({e})") from e
    return np.frombuffer(buf, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip when ``compress`` or the name ends in .gz).

    Raises:
        DataError: for a dtype IDX cannot store or an array of 0 dimensions.
    """
    path = Path(path)
    code = next((k for k, v in IDX_TYPES.items() if np.dtype(v).newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None or array.ndim == 0:
        raise DataError(f"IDX cannot store a {array.ndim}-d array of {array.dtype}")
    blob = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        blob = gzip.compress(blob)
    path.write_bytes(blob)


CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


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
class Dataset:
    """Images flattened to ``(N, D)``, kept as their uint8 pixels, and ``(N,)`` int64 labels.

    ``train_x``/``test_x`` are the pixels as float32 in [0, 1] (:func:`pixels_to_unit`),
    made on first use. The trainer gathers its batches from ``train_pixels``
    and converts each batch (the backends' ``gather_pixels`` op): a quarter of
    the memory traffic of gathering float32 rows (in a numba training step:
    0.022 against 0.033 s per Fashion-MNIST epoch), and a quarter of the
    memory (47 against 188 MB).
    """

    name: str
    train_pixels: np.ndarray
    train_y: np.ndarray
    test_pixels: np.ndarray
    test_y: np.ndarray
    image_shape: tuple[int, int]
    source: Path

    @cached_property
    def train_x(self) -> np.ndarray:
        return pixels_to_unit(self.train_pixels)

    @cached_property
    def test_x(self) -> np.ndarray:
        return pixels_to_unit(self.test_pixels)

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
        return []
    env = os.environ.get("TINYVAE_DATA")
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


def load_dataset(name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset of four standard IDX files (``train-images-idx3-ubyte[.gz]`` etc.).

    ``fashion-mnist`` is looked for in ``data_dir``, else ``$TINYVAE_DATA``, else
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    ``mnist`` cannot be downloaded here: it is read from ``data_dir``.

    Returns:
        A :class:`Dataset` of uint8 pixels (``train_x``/``test_x``: scaled to
        [0, 1] float32, uint8 / 255).

    Raises:
        ValueError: for an unknown dataset name, or ``mnist`` without ``data_dir``.
        FileNotFoundError: no directory holds all four files; the message lists
            the paths searched and how to install the data.
        DataError: a file is corrupt, truncated or inconsistent with the others,
            a split holds no images, or a label is not one of the dataset's classes.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    dirs = _search_dirs(name, data_dir)
    if not dirs:
        raise ValueError("mnist is read from the IDX files in a directory you name: pass --data-dir DIR")
    for d in dirs:
        paths = {k: _find(d, stem) for k, stem in FILES.items()}
        if all(paths.values()):
            break
    else:
        hint = ("install it with `apt-get install -y dataset-fashion-mnist`, or point --data-dir "
                "or $TINYVAE_DATA at a directory holding them") if name == "fashion-mnist" else \
               "put the four MNIST IDX files there"
        raise FileNotFoundError(
            f"{name}: no directory holds all of {', '.join(s + '[.gz]' for s in FILES.values())}; "
            f"searched {', '.join(map(str, dirs))}; {hint}"
        )
    train, test = _images(paths["train_images"]), _images(paths["test_images"])
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"train images are {train.shape[1:]} but test images are {test.shape[1:]}")
    return Dataset(
        name=name,
        train_pixels=train.reshape(len(train), -1),
        train_y=_labels(paths["train_labels"], len(train), N_CLASSES[name]),
        test_pixels=test.reshape(len(test), -1),
        test_y=_labels(paths["test_labels"], len(test), N_CLASSES[name]),
        image_shape=train.shape[1:],
        source=d,
    )
