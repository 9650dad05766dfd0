"""What tinyvae's command lines (train, evaluate, sample) share: the parser's conventions and the one
error path.

An expected failure, a :class:`tinyvae.errors.TinyVAEError` (bad data, a bad checkpoint, a bad flag, a
backend that cannot run here) or an operating-system error such as a full or read-only disk, ends in one
``error:`` line on stderr and exit status 2; so does a flag the parser refuses. Ctrl-C ends in one
``interrupted:`` line and exit status 130 (128 + SIGINT, as shells report it). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

from .backends import CHOICES
from .errors import TinyVAEError

try:
    __version__ = version("tinyvae")
except PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"


def message(e: BaseException) -> str:
    """``e`` as one line: an ``OSError`` as its file and reason, anything else as its text."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return " ".join(str(e).split())


class Reported(Exception):
    """A data-parallel rank's end for a failure that another rank reports (:func:`tinyvae.train.agreed`)."""


def run(body: Callable[[], int], interrupted: Callable[[], str] = lambda: "nothing was written",
        where: Callable[[], str] = lambda: "") -> int:
    """``body()``'s exit status, or 2 after an ``error:`` line for an expected failure, or 130 after an
    ``interrupted:`` line for Ctrl-C; ``interrupted()`` says what is intact, after Ctrl-C and after an
    operating-system error (a full disk, a file too large); ``where()`` prefixes the line's text (a
    data-parallel rank names itself)."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"interrupted: {where()}{interrupted()}", file=sys.stderr)
        return 130
    except Reported:
        return 2
    except OSError as e:
        print(f"error: {where()}{message(e)}; {interrupted()}", file=sys.stderr)
        return 2
    except TinyVAEError as e:
        print(f"error: {where()}{message(e)}", file=sys.stderr)
        return 2


class _Refused(Exception):
    """A command line that the parser refuses."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusal of a flag is one ``error:`` line and exit status 2, as every other
    expected failure of the command lines (:meth:`parse`)."""

    def error(self, message: str):
        raise _Refused(f"{message} (see {self.prog} --help)")

    def parse(self, argv) -> argparse.Namespace | None:
        """The parsed ``argv``, or None after the ``error:`` line of a command line it refuses."""
        try:
            return self.parse_args(argv)
        except _Refused as e:
            print(f"error: {e}", file=sys.stderr)
            return None


def parser(prog: str, doc: str) -> Parser:
    """A command's parser: its description from the module docstring ``doc``, ``--version``, ``--backend``."""
    p = Parser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"tinyvae {__version__}")
    p.add_argument("--backend", choices=CHOICES, default="auto",
                   help="where the ops run (default auto: cuda where CuPy and a GPU are present, else numba); numpy "
                        "is the reference, cuda-sim runs the CUDA kernels in the CPU simulator (slow)")
    return p


LOCATIONS = ("data_dir", "data", "test_data")  # the settings that say where a run's data are


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """The flags that say where a run's data are now (``--data-dir``, ``--data``, ``--test-data``)."""
    p.add_argument("--data-dir", default=None,
                   help="folder of the IDX files, .gz or raw (default: where the run found its data, else "
                        "$TINYVAE_DATA, else /usr/share/datasets/fashion-mnist)")
    p.add_argument("--data", default=None,
                   help="where the run's --data are now (default: where the run found them)")
    p.add_argument("--test-data", default=None,
                   help="where the run's --test-data are now (default: where the run found them)")


def moved_data(args) -> dict:
    """The data locations given by :func:`add_data_dir`'s flags, absolute, by setting name."""
    return {k: str(Path(v).resolve()) for k in LOCATIONS if (v := getattr(args, k, None)) is not None}
