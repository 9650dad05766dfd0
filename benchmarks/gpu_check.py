"""The one-call GPU check: what the cuda backend can only show on a GPU, in one run, every figure saved.

    bash benchmarks/gpu_check.sh OUTDIR --data-dir DIR    # installs tinyvae without dependencies, then this
    python -m benchmarks.gpu_check OUTDIR --data-dir DIR

For a machine with an NVIDIA GPU, CuPy and PyTorch and no package registry; DIR
holds the four Fashion-MNIST ``.gz`` files. The steps, each in its own process
with a time limit (about 6 minutes in all, under the 8 a lent GPU allows):

1. ``device``: the GPU (name, compute capability, memory), the CUDA runtime and
   driver, the versions of CuPy, PyTorch and NumPy, and the Python packages the
   tests need that are missing (carry their wheels: ``TINYVAE_WHEELS``, see
   gpu_check.sh);
2. ``tests``: ``pytest -m gpu``, every test that runs the cuda backend (each op
   against the reference on hypothesis shapes, training steps, variants,
   autoencoders, the float64 gradient check through the kernels);
3. ``memcheck`` and ``racecheck``: ``compute-sanitizer`` over
   :mod:`benchmarks.each_kernel`, which launches every kernel once;
4. ``benchmark``: ``python -m benchmarks.cuda --out OUTDIR``: each kernel against
   naive CuPy and NumPy with GB/s against the card's measured device-to-device
   copy bandwidth, and an epoch at batch 128 against PyTorch CUDA eager, in turns;
5. ``train``: ``python -m tinyvae.train`` for ``--epochs`` epochs (10) with
   ``--backend cuda`` and with ``--backend numpy``, same seed: each epoch's test
   loss and their ratio (within ``--loss-rtol``, 0.5 %).

A step that cannot run (no GPU, no compute-sanitizer) is recorded as not run,
with the reason (``"not_run"``); without PyTorch the benchmark times tinyvae
alone. Writes ``OUTDIR/gpu_check.json`` (every figure, the command of each step
and the tail of its output; each step's whole output in ``OUTDIR/<step>.log``)
and ``OUTDIR/gpu_check.md`` (a table of the steps), and prints the table. Exit
status: 0 when every step ran and passed, 1 when one failed or did not run on a
GPU, 2 with no GPU (nothing checked) or bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tinyvae.io.datasets import FILES

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("numpy", "numba", "scipy", "tqdm", "PIL", "safetensors", "threadpoolctl", "pytest", "hypothesis", "cupy")
TAIL = 4000  # characters of each step's output kept in the JSON


def device_info() -> dict:
    """The GPU and the software around it; ``{"error": ...}`` where CuPy or a device is missing."""
    info = {"python": sys.version.split()[0],
            "missing_packages": [m for m in NEEDED if importlib.util.find_spec(m) is None]}
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info.update(gpu=props["name"].decode(), compute_capability=f"{props['major']}.{props['minor']}",
                    memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                    cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                    cuda_driver=cupy.cuda.runtime.driverGetVersion(), cupy=cupy.__version__)
    except Exception as e:  # ImportError, CUDARuntimeError without a driver or device
        info["error"] = f"no usable CUDA device: {type(e).__name__}: {e}"
    for name in ("torch", "numpy"):
        spec = importlib.util.find_spec(name)
        info[name] = __import__(name).__version__ if spec else None
    return info


def run_step(name: str, cmd: list[str], timeout: float, out_dir: Path) -> dict:
    """Run ``cmd`` from the repository root; its exit status, seconds and output (whole in OUTDIR/<name>.log)."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        output = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
        output += f"\n[gpu_check: stopped after {timeout:.0f} s]"
    (out_dir / f"{name}.log").write_text(output)
    return {"command": " ".join(cmd), "exit": code, "seconds": round(time.perf_counter() - t0, 1),
            "output_tail": output[-TAIL:]}


def junit_counts(path: Path) -> dict:
    """Counts and failed test names from pytest's ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {**counts, "failed": failed}


def sanitizer_errors(output: str) -> int | None:
    """The error count in compute-sanitizer's summary line: memcheck's ``ERROR SUMMARY: N errors``,
    racecheck's ``RACECHECK SUMMARY: H hazards displayed (N errors, W warnings)``; ``None`` where it printed
    neither."""
    found = re.findall(r"(?:ERROR SUMMARY: |RACECHECK SUMMARY: \d+ hazards? displayed \()(\d+) error", output)
    return int(found[-1]) if found else None


def test_losses(run_dir: Path) -> list[float]:
    """Each epoch's test loss from a run's ``metrics.jsonl``."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["test_loss"] for line in lines if line.strip()]


def compare_losses(cuda: list[float], numpy: list[float], rtol: float) -> dict:
    ratios = [c / n for c, n in zip(cuda, numpy)]
    worst = max((abs(r - 1) for r in ratios), default=None)
    return {"test_loss_cuda": cuda, "test_loss_numpy": numpy, "ratio": ratios, "max_rel_diff": worst,
            "passed": len(cuda) == len(numpy) > 0 and worst is not None and worst <= rtol}


def check(out_dir: Path, data_dir: Path, epochs: int, loss_rtol: float, gpu: bool) -> dict:
    """Every step's record (see the module docstring); with ``gpu`` False none runs."""
    py = sys.executable
    steps: dict = {}

    def not_run(why):
        return {"not_run": why, "passed": False}

    def pytest_step():
        xml = out_dir / "pytest_gpu.xml"
        rec = run_step("tests", [py, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider",
                                 f"--junitxml={xml}"], 200, out_dir)
        if xml.is_file():
            rec.update(junit_counts(xml))
        rec["passed"] = rec["exit"] == 0 and rec.get("tests", 0) > 0 and rec.get("skipped", 1) == 0
        return rec

    def sanitizer_step(tool):
        sanitizer = shutil.which("compute-sanitizer")
        if sanitizer is None:
            return not_run("compute-sanitizer not on the PATH")
        rec = run_step(tool, [sanitizer, "--tool", tool, "--print-limit", "20", py, "-m", "benchmarks.each_kernel"],
                       90, out_dir)
        rec["errors"] = sanitizer_errors(rec["output_tail"])
        rec["passed"] = rec["exit"] == 0 and rec["errors"] == 0
        return rec

    def benchmark_step():
        rec = run_step("benchmark", [py, "-m", "benchmarks.cuda", "--out", str(out_dir), "--data-dir", str(data_dir)],
                       150, out_dir)
        for name in ("kernels_cuda", "train_cuda"):
            path = out_dir / f"{name}.json"
            if path.is_file():
                rec[name] = json.loads(path.read_text())["rows"]
        rec["passed"] = rec["exit"] == 0
        return rec

    def train_step():
        runs = {}
        for backend in ("cuda", "numpy"):
            run_dir = out_dir / f"train_{backend}"
            runs[backend] = run_step(f"train_{backend}", [py, "-m", "tinyvae.train", "--backend", backend, "--epochs",
                                                          str(epochs), "--data-dir", str(data_dir), "--seed", "1",
                                                          "--out", str(run_dir)], 150, out_dir)
            runs[backend]["losses"] = test_losses(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        rec = {"runs": runs, **compare_losses(runs["cuda"]["losses"], runs["numpy"]["losses"], loss_rtol)}
        rec["passed"] = rec["passed"] and len(rec["test_loss_cuda"]) == epochs
        return rec

    for name, step in (("tests", pytest_step), ("memcheck", lambda: sanitizer_step("memcheck")),
                       ("racecheck", lambda: sanitizer_step("racecheck")), ("benchmark", benchmark_step),
                       ("train", train_step)):
        steps[name] = step() if gpu else not_run("no GPU")
        print(f"gpu_check: {name}: {summary(name, steps[name])}", flush=True)
    return steps


def summary(name: str, rec: dict) -> str:
    """One line of the table for a step."""
    if "not_run" in rec:
        return f"not run: {rec['not_run']}"
    verdict = "passed" if rec["passed"] else "FAILED"
    if name == "tests":
        return (f"{verdict}: {rec.get('tests', 0)} tests, {rec.get('failures', 0) + rec.get('errors', 0)} failed, "
                f"{rec.get('skipped', 0)} skipped, {rec['seconds']} s")
    if name in ("memcheck", "racecheck"):
        return f"{verdict}: {rec['errors']} errors"
    if name == "benchmark":
        bce = [r for r in rec.get("kernels_cuda", []) if r["op"].startswith("bce") and "65536" in str(r["size"])]
        epochs = {r["what"]: r for r in rec.get("train_cuda", [])}
        parts = [f"BCE at 65536x784 {bce[0]['of_copy']:.2f} of copy bandwidth" if bce else None]
        for name, label in (("tinyvae cuda", "epoch"), ("tinyvae cuda conv", "conv epoch")):
            epoch = epochs.get(name, {})
            if epoch.get("vs_pytorch"):
                parts.append(f"{label} {epoch['epoch_s']:.3f} s, {epoch['vs_pytorch']:.2f}x PyTorch")
        return f"{verdict}: " + "; ".join(p for p in parts if p) if any(parts) else verdict
    if name == "train":
        worst = rec.get("max_rel_diff")
        return f"{verdict}: worst epoch's test loss {worst:.2e} from numpy's" if worst is not None else verdict
    return verdict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="folder for the JSON, the table and each step's log (made if missing)")
    p.add_argument("--data-dir", type=Path, required=True, help="folder of the four Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the cuda-against-numpy training comparison")
    p.add_argument("--loss-rtol", type=float, default=0.005, help="largest relative gap of an epoch's test loss")
    args = p.parse_args(argv)
    missing = [stem for stem in FILES.values() if not any((args.data_dir / f"{stem}{s}").is_file() for s in ("", ".gz"))]
    if missing:
        print(f"error: --data-dir {args.data_dir} lacks {', '.join(missing)} (.gz or raw)", file=sys.stderr)
        return 2
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"error: {args.out_dir} is not empty; name a new folder", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    device = device_info()
    gpu = "error" not in device
    print(f"gpu_check: device: {device.get('gpu') or device['error']}", flush=True)
    steps = check(args.out_dir.resolve(), args.data_dir.resolve(), args.epochs, args.loss_rtol, gpu)
    result = {"started": started, "device": device, "steps": steps,
              "passed": gpu and all(s["passed"] for s in steps.values())}
    (args.out_dir / "gpu_check.json").write_text(json.dumps(result, indent=1))
    table = ["| step | result |", "| --- | --- |", f"| device | {device.get('gpu') or device['error']} |",
             *(f"| {name} | {summary(name, rec)} |" for name, rec in steps.items())]
    (args.out_dir / "gpu_check.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 2 if not gpu else 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
