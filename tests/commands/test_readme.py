"""The README's Python snippets run as written."""

import re
from pathlib import Path

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_the_readmes_python_snippets_run(tiny_data_dir, tmp_path, monkeypatch):
    """Against a small run at the path the README names (8x8 images: the shapes in its comments differ)."""
    from tinyvae.train import main

    monkeypatch.chdir(tmp_path)
    assert main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--hidden", "16", "--latent-dim", "20",
                 "--epochs", "1", "--backend", "numpy", "--out", "runs/fmnist"]) == 0
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert snippets
    namespace: dict = {}
    for code in snippets:  # in order: a later snippet may use an earlier one's names
        exec(compile(code, "README.md", "exec"), namespace)
