"""examples/vae_minimal.py, the training loop on one page, is the training command's run, number for number."""

import importlib.util
import json
from pathlib import Path

from tinyvae.train import main as train_main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vae_minimal.py"


def test_the_minimal_example_trains_to_the_commands_numbers(tiny_data_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("vae_minimal", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sizes = ["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--batch-size", "32", "--hidden", "16",
             "--latent-dim", "3"]
    history = example.main([*sizes, "--epochs", "3"])
    assert train_main([*sizes, "--epochs", "3", "--backend", "numpy", "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history == [(r["train_loss"], r["test_loss"]) for r in records]
    assert len(EXAMPLE.read_text().splitlines()) <= 150
