"""IDX files, the format of MNIST and Fashion-MNIST, read and written.

IDX format (LeCun et al., "The MNIST database", file format section): two zero
bytes, a type code, the number of dimensions n, then n big-endian uint32
sizes and the data in C order, big-endian. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian numpy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
