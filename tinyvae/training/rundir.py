"""Run directories: a new run gets a folder of its own, never one that holds files.

``--out DIR`` must be missing or empty; without it ``runs/<timestamp>`` is made exclusively, with
a suffix where that exists. The folder is checked to be writable before the first epoch, and a
start that fails removes the folder it made.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..errors import SettingsError
from ..io.checkpoint import CHECKPOINT


class RunDirError(SettingsError):
    """The run directory asked for cannot take a new run (it holds one, or cannot be written)."""


def new_run_dir(out: str | None) -> tuple[Path, bool]:
    """The folder for a new run, made and checked to be writable: ``out`` when it is missing or empty,
    else (no ``out``) ``runs/<timestamp>``, made exclusively, with ``-2``, ``-3``, ... where that exists.

    Returns:
        ``(path, created)``: ``created`` is False for an empty folder that was there before.

    Raises:
        RunDirError: ``out`` is a file or a folder with files in it (it may hold a run: the message names
            ``--resume``), or the folder cannot be made or written.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            holds = " holds a run" if (path / CHECKPOINT).exists() else " is not an empty folder"
            raise RunDirError(f"{path}{holds}; continue a run with --resume {path}, or name a new folder with --out")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot make the run directory {path}: {e.strerror or e}") from e
    else:
        base, created = Path("runs") / time.strftime("%Y%m%d-%H%M%S"), True
        for n in range(1, 1000):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise RunDirError(f"cannot make the run directory {path}: {e.strerror or e}") from e
    try:
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        remove_if_empty(path, created)
        raise RunDirError(f"cannot write in the run directory {path}: {e.strerror or e}") from e
    return path, created


def remove_if_empty(path: Path, created: bool) -> None:
    """Remove ``path`` if this run made it and nothing was written in it (a start that failed)."""
    if created:
        try:
            path.rmdir()
        except OSError:  # not empty, or already gone
            pass
