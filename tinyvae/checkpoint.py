"""Checkpoints: safetensors files written atomically, never pickled.

A checkpoint holds the model's tensors under their layer names
(``encoder.0.weight``, ...), the optimiser's flat state buffers under
``optimizer.<name>``, and JSON metadata (model config, optimiser settings,
training state including the random generator's state).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

FORMAT = "tinyvae-checkpoint-1"  # a training checkpoint: weights, optimiser state, settings, generator
MODEL_FORMAT = "tinyvae-model-1"  # weights and model config only (tinyvae.saving)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupt or does not fit the model."""


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> None:
    """Write ``blob`` to ``path`` so a reader sees the old file or the new one, never a part.

    Writes a temporary file in the same directory, fsyncs it, then renames it
    over ``path`` (``os.replace`` is atomic on POSIX and Windows). Temporary
    files that a killed writer left for ``path`` are removed first.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path, tensors: dict[str, np.ndarray], metadata: dict, fmt: str = FORMAT) -> None:
    """Save host arrays and ``metadata`` (one strict-JSON value per key) atomically, marked ``fmt``."""
    meta = {k: json.dumps(v, allow_nan=False) for k, v in metadata.items() if k != "format"} | {"format": fmt}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta))


def load_checkpoint(path, required: dict[str, tuple[tuple[int, ...], str]] | None = None,
                    formats: tuple[str, ...] = (FORMAT,)):
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``.safetensors`` file.
        required: optional ``{name: (shape, dtype name)}`` that must be present.
        formats: the formats accepted.

    Returns:
        ``(tensors, metadata)``: host arrays by name, and the decoded metadata.

    Raises:
        CheckpointError: missing or unreadable file, not a safetensors file,
            not a tinyvae checkpoint, or a required tensor missing, of the wrong
            shape or non-finite (:func:`check_tensors`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        tensors = load_file(path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        if meta.get("format") not in formats:
            raise CheckpointError(f"{path}: not a tinyvae file of format {' or '.join(formats)} "
                                  f"(format {meta.get('format')!r})")
        metadata = {k: json.loads(v) for k, v in meta.items() if k != "format"}
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError, MemoryError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    check_tensors(path, tensors, required or {})
    return tensors, metadata


def check_tensors(path, tensors: dict[str, np.ndarray], required: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """``CheckpointError`` naming ``path`` and the tensor unless every tensor in ``required``
    (``{name: (shape, dtype name)}``) is present, of that shape and dtype, and finite."""
    for name, (shape, dtype) in required.items():
        t = tensors.get(name)
        if t is None or t.shape != tuple(shape) or t.dtype != np.dtype(dtype):
            got = None if t is None else (t.shape, t.dtype.name)
            raise CheckpointError(f"{path}: tensor {name!r} should be {tuple(shape)} {dtype}, found {got}")
        if not np.isfinite(t).all():
            raise CheckpointError(f"{path}: non-finite values in {name}; "
                                  "a run that diverged cannot be resumed, evaluated, sampled or loaded")
