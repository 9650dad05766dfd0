"""``python -m tinyvae``: the commands, and ``python -m tinyvae COMMAND ...`` to run one."""

from __future__ import annotations

import importlib
import sys

from .cli import __version__

COMMANDS = {
    "train": "train a VAE, a conditional VAE or an autoencoder into a run directory",
    "evaluate": "a run's test ELBO terms, active units and IWAE bound",
    "sample": "a VAE's prior samples, interpolations, 2-D manifold or latent scatter",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:
        print(f"tinyvae {__version__}")
        return 0
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(f"tinyvae.{argv[0]}").main(argv[1:])
    lines = [f"tinyvae {__version__}: a framework-free Variational Autoencoder engine", "",
             "usage: python -m tinyvae COMMAND [--help] ...  (or python -m tinyvae.COMMAND ...)", "", "commands:"]
    lines += [f"  {name:9s} {what}" for name, what in COMMANDS.items()]
    print("\n".join(lines), file=sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr)
    if argv and argv[0] not in ("-h", "--help"):
        print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
