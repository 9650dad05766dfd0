"""Faults planted in a copy of ``kernels/``: the ``cudasim`` tests must fail on each.

    python3 tests/planted_faults.py [--fault NAME ...] [-- PYTEST ARGS]

For each fault: copy ``kernels/`` to a temporary folder, make the one edit,
run ``python3 -m pytest -m cudasim`` (or the given pytest arguments) with
``TINYVAE_KERNELS`` naming the copy, and print the tests that failed. Exits 1
if the tests passed on any fault. Hypothesis runs with the ``planted`` profile of
``tests/conftest.py``: the ``ci`` profile's examples, without shrinking a failure.
``tests/backends/test_cudasim.py`` runs each fault against the tests that should catch it, on
every CI run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"

# name -> (file in kernels/, the text as it is, the text with the fault)
FAULTS = {
    "block_sum without __syncthreads()": (
        "common.cuh",
        "        partial[warp] = v;\n    }\n    __syncthreads();\n",
        "        partial[warp] = v;\n    }\n"),
    "BCE rows addressed by their length, not their stride": (
        "likelihood.cu",
        "const T* l = logits + row * ld_l;",
        "const T* l = logits + row * D;"),
    "BCE loop bound one short": (
        "likelihood.cu",
        "for (int j = threadIdx.x; j < D; j += blockDim.x) {\n        const T v = l[j], target = t[j];",
        "for (int j = threadIdx.x; j < D - 1; j += blockDim.x) {\n        const T v = l[j], target = t[j];"),
    "exp(lv) for exp(0.5 lv) in the reparameterization backward": (
        "latent.cu",
        "T(0.5) * g * eps[b * ld_eps + k] * exp(T(0.5) * lv)",
        "T(0.5) * g * eps[b * ld_eps + k] * exp(lv)"),
    "bias gradient chunks all written to the first chunk's sums": (
        "linear.cu",
        "db[(long)blockIdx.y * H + j] = acc;",
        "db[j] = acc;"),
    "fold's window rows start at 0, not at the pixel's phase of the stride": (
        "conv.cu",
        "for (int i = (y + p) % s; i < kh; i += s) {",
        "for (int i = 0; i < kh; i += s) {"),
}


def plant(fault: str, folder: Path) -> Path:
    """A copy of ``kernels/`` in ``folder`` with ``fault`` planted; ``ValueError`` if its text is gone."""
    name, before, after = FAULTS[fault]
    copy = folder / "kernels"
    shutil.copytree(KERNELS, copy)
    text = (copy / name).read_text()
    if text.count(before) != 1:
        raise ValueError(f"{name} no longer holds the text the fault {fault!r} edits: {before!r}")
    (copy / name).write_text(text.replace(before, after))
    return copy


def run(fault: str, pytest_args: list[str]) -> tuple[int, list[str]]:
    """pytest's exit status and failed tests with ``fault`` planted."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TINYVAE_KERNELS": str(plant(fault, Path(tmp))), "HYPOTHESIS_PROFILE": "planted"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                              cwd=ROOT, env=env, capture_output=True, text=True)
    return done.returncode, sorted(set(re.findall(r"^FAILED (\S+)", done.stdout, re.M)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fault", action="append", choices=sorted(FAULTS), help="one fault (default: all)")
    p.add_argument("pytest_args", nargs="*", default=["-m", "cudasim"], help="after --: what pytest runs")
    args = p.parse_args(argv)
    missed = []
    for fault in args.fault or FAULTS:
        code, failed = run(fault, args.pytest_args)
        print(f"{fault}: pytest exit {code}, {len(failed)} failed")
        for test in failed:
            print(f"    {test}")
        if code == 0:
            missed.append(fault)
    for fault in missed:
        print(f"NOT CAUGHT: {fault}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
