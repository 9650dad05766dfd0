"""The one error path of tinyvae's command-line programs (train, evaluate, sample).

An expected failure (bad data, a bad checkpoint, a bad flag, a backend that cannot
run here, an operating-system error such as a full or read-only disk) ends in one
``error:`` line on stderr and exit status 2; Ctrl-C in one ``interrupted:`` line
and exit status 130 (128 + SIGINT, as shells report it). A traceback is left for
bugs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__
from .backends import CHOICES, BackendUnavailable
from .checkpoint import CheckpointError
from .data import DataError

EXPECTED = (BackendUnavailable, CheckpointError, DataError, ValueError, ImportError, OSError)


def message(e: BaseException) -> str:
    """``e`` as one line: an ``OSError`` as its file and reason, anything else as its text."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return " ".join(str(e).split())


def run(body: Callable[[], int], interrupted: Callable[[], str] = lambda: "nothing was written",
        where: Callable[[], str] = lambda: "") -> int:
    """``body()``'s exit status, or 2 after an ``error:`` line for an expected failure, or 130 after an
    ``interrupted:`` line (``interrupted()`` says what is intact) for Ctrl-C; ``where()`` prefixes the
    line's text (a data-parallel rank names itself)."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"interrupted: {where()}{interrupted()}", file=sys.stderr)
        return 130
    except EXPECTED as e:
        print(f"error: {where()}{message(e)}", file=sys.stderr)
        return 2


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A command's parser: its description from the module docstring ``doc``, ``--version``, ``--backend``."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"tinyvae {__version__}")
    p.add_argument("--backend", choices=CHOICES, default="auto",
                   help="where the ops run (default auto: cuda where CuPy and a GPU are present, else numba); numpy "
                        "is the reference, cuda-sim runs the CUDA kernels in the CPU simulator (slow)")
    return p


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder of the four IDX files, .gz or raw (default: the run's own folder, else "
                        "$TINYVAE_DATA, else /usr/share/datasets/fashion-mnist)")
