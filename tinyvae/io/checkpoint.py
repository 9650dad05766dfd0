"""safetensors files written atomically, never pickled: the training checkpoint and the model file.

A file holds named host arrays and JSON metadata (docs/formats.md): a run's checkpoint the model's tensors
under their layer names (``encoder.0.weight``, ...), the optimiser's flat state buffers under
``optimizer.<name>``, and the training state (:mod:`tinyvae.training.state`); a model file the weights and
the config (:mod:`tinyvae.io.modelfile`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from ..errors import CheckpointError

FORMAT = "tinyvae-checkpoint-1"  # a training checkpoint: weights, optimiser state, settings, generator
MODEL_FORMAT = "tinyvae-model-1"  # weights and model config only (tinyvae.io.modelfile)
CHECKPOINT = "checkpoint.safetensors"  # a run directory's checkpoint


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> None:
    """Write ``blob`` to ``path`` so a reader sees the old file or the new one, never a part.

    Writes a temporary file in the same directory, fsyncs it, then renames it
    over ``path`` (``os.replace`` is atomic on POSIX and Windows). Temporary
    files that a killed writer left for ``path`` are removed first.

    Raises:
        OSError: naming ``path`` (not the temporary file) and the reason: a full disk, a file too large,
            a folder that cannot be written; ``path`` is then as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def signals_held(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C (SIGINT) and SIGTERM (mpirun passes Ctrl-C on as it) while the block runs, then take them as
    they would have been taken: files written together in the block are all new, or all old, when the run
    stops. Python runs its signal handlers in the main thread, so blocking the signals there at the OS level
    would not hold them (another thread takes the signal and Python still raises in the main thread): the
    handlers are swapped for ones that note the signal, and a noted signal is raised again once the old
    handlers are back. Elsewhere than in the main thread, where handlers cannot be swapped, nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def save_checkpoint(path, tensors: dict[str, np.ndarray], metadata: dict, fmt: str = FORMAT) -> None:
    """Save host arrays and ``metadata`` (one strict-JSON value per key) atomically, marked ``fmt``."""
    meta = {k: json.dumps(v, allow_nan=False) for k, v in metadata.items() if k != "format"} | {"format": fmt}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta))


class _NonFinite(Exception):
    """NaN or an infinity in a file's JSON, which strict JSON does not have."""


def _refuse(constant: str):
    raise _NonFinite(f"{constant} in its JSON metadata")


def read_metadata(path, formats: tuple[str, ...] = (FORMAT,)) -> dict:
    """The decoded metadata of a file written by :func:`save_checkpoint`, read from its header alone.

    Raises:
        CheckpointError: a missing or unreadable file, not a safetensors file, JSON that is not strict (NaN),
            or not a tinyvae file of one of ``formats``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= path.stat().st_size - 8:
                raise CheckpointError(f"{path}: unreadable checkpoint: not a safetensors file (a header of {n} bytes "
                                      f"in a file of {path.stat().st_size})")
            header = json.loads(f.read(n), parse_constant=_refuse)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError, _NonFinite) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        found = meta.get("format") if isinstance(meta, dict) else None
        if found == MODEL_FORMAT:
            raise CheckpointError(f"{path}: a model file (weights and config), not a run's checkpoint: it holds no "
                                  "settings, data or optimiser state; name the run directory it came from")
        raise CheckpointError(f"{path}: not a tinyvae file of format {' or '.join(formats)} (format {found!r})")
    decoded = {}
    for key, value in meta.items():
        if key == "format":
            continue
        try:
            decoded[key] = json.loads(value, parse_constant=_refuse)
        except (TypeError, json.JSONDecodeError, RecursionError, _NonFinite) as e:
            raise CheckpointError(f"{path}: metadata field {key!r} is not strict JSON ({type(e).__name__}: "
                                  f"{e})"[:400]) from e
    return decoded


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
        CheckpointError: as :func:`read_metadata`, or tensors that safetensors cannot read, or a required
            tensor missing, of the wrong shape or non-finite (:func:`check_tensors`).
    """
    metadata = read_metadata(path, formats)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, MemoryError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    check_tensors(path, tensors, required or {})
    return tensors, metadata


def check_tensors(path, tensors: dict[str, np.ndarray], required: dict[str, tuple[tuple[int, ...], str]],
                  described_by: str | None = None) -> None:
    """``CheckpointError`` naming ``path`` and the tensor unless every tensor in ``required``
    (``{name: (shape, dtype name)}``) is present, of that shape and dtype, and finite. ``described_by``: the
    metadata field the shapes come from, blamed for a tensor of another shape (the tensors are checked for
    their shapes first, then for being there)."""
    if described_by is not None:
        for name, (shape, dtype) in required.items():
            t = tensors.get(name)
            if t is not None and (t.shape != tuple(shape) or t.dtype != np.dtype(dtype)):
                raise CheckpointError(f"{path}: metadata field {described_by!r} describes a model whose {name} is "
                                      f"{tuple(shape)} {dtype}; the file's is {t.shape} {t.dtype}")
    for name, (shape, dtype) in required.items():
        t = tensors.get(name)
        if t is None or t.shape != tuple(shape) or t.dtype != np.dtype(dtype):
            got = None if t is None else (t.shape, t.dtype.name)
            raise CheckpointError(f"{path}: tensor {name!r} should be {tuple(shape)} {dtype}, found {got}")
        if not np.isfinite(t).all():
            raise CheckpointError(f"{path}: non-finite values in {name}; "
                                  "a run that diverged cannot be resumed, evaluated, sampled or loaded")
