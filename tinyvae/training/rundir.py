"""Run directories: a new run gets a folder of its own, never one that holds files, and a run is trained by
one process at a time.

``--out DIR`` must be missing or empty; without it ``runs/<timestamp>`` is made exclusively, with a suffix
where that exists. The process that trains a run holds the lock of its folder (``flock`` on
``.tinyvae-lock``, released when the process ends, however it ends), so that two runs started together on
one new folder, or two resumes of one run, cannot both train: the second is refused. Claiming the folder
checks that it can be written, before the first epoch. A start that fails before its first checkpoint
leaves the folder as it found it: the files it wrote are removed, and the folder too where it made it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import SettingsError
from ..io.checkpoint import CHECKPOINT

LOCK = ".tinyvae-lock"  # in a run directory: held by the process that trains the run
_held: dict[str, int] = {}  # run directory -> the lock's file descriptor, in this process


class RunDirError(SettingsError):
    """The run directory asked for cannot take a new run (it holds one, another process trains it, or it
    cannot be written)."""


def _ours(name: str) -> bool:
    """A file tinyvae leaves in a run directory that holds nothing of a run: its lock, or a temporary file a
    killed writer left (``.<name>.tmp-<pid>``, :func:`tinyvae.io.checkpoint.atomic_write_bytes`)."""
    return name == LOCK or (name.startswith(".") and ".tmp-" in name)


def claim(path: Path) -> None:
    """Hold the lock of run directory ``path`` for this process (until :func:`release`, or its end).

    Raises:
        RunDirError: another process holds it, or the folder cannot be written.
    """
    key = str(Path(path).resolve())
    if key in _held:
        return
    try:
        fd = os.open(Path(path) / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise RunDirError(f"cannot write in the run directory {path}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise RunDirError(f"another process is training the run in {path} (it holds {Path(path) / LOCK}); wait "
                          "for it to end, or name a new folder with --out") from e
    _held[key] = fd


def release(path: Path) -> None:
    """Let go of the lock of run directory ``path``, if this process holds it."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def new_run_dir(out: str | None) -> tuple[Path, bool]:
    """The folder for a new run, made, claimed (:func:`claim`) and so checked to be writable: ``out`` when it
    is missing or empty (of all but tinyvae's lock and temporary files, which are removed), else (no
    ``out``) ``runs/<timestamp>``, made exclusively, with ``-2``, ``-3``, ... where that exists.

    Returns:
        ``(path, created)``: ``created`` is False for an empty folder that was there before.

    Raises:
        RunDirError: ``out`` is a file or a folder with files in it (it may hold a run: the message names
            ``--resume``), another process claimed it, or the folder cannot be made or written.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path} is a file; name a new folder with --out")
        try:
            path.mkdir(parents=True)  # made here, or there already: decided by the file system, not a look first
            created = True
        except FileExistsError:
            created = False
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
    _refuse_unless_empty(path)  # before claiming: a refused folder is left as it was, without a lock file
    try:
        claim(path)
    except RunDirError:
        if created:
            try:
                os.rmdir(path)
            except OSError:  # another process has put its lock in it
                pass
        raise
    try:
        _refuse_unless_empty(path)  # again, under the lock: a run started beside this one has written by now
    except RunDirError:
        release(path)
        raise
    for e in os.scandir(path):
        if e.name != LOCK:
            os.unlink(e.path)  # a killed run's temporary file
    return path, created


def _refuse_unless_empty(path: Path) -> None:
    if any(not _ours(e.name) for e in os.scandir(path)):
        holds = " holds a run" if (path / CHECKPOINT).exists() else " is not an empty folder"
        raise RunDirError(f"{path}{holds}; continue a run with --resume {path}, or name a new folder with --out")


def remove_if_empty(path: Path, created: bool) -> None:
    """Leave ``path`` as a failed start found it (before its first checkpoint): release it, remove the files
    this run wrote in it (it was empty of anything else when claimed) and, if this run made it, the folder.
    Nothing is touched unless this process claimed the folder."""
    if str(Path(path).resolve()) not in _held:
        return
    release(path)
    if (Path(path) / CHECKPOINT).exists():
        return
    try:
        for e in os.scandir(path):
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
        if created:
            os.rmdir(path)
    except OSError:  # already gone, or not ours to clear
        pass
