"""The command lines' conventions: python -m tinyvae, --version, defaults in every --help, --backend auto,
and runs that outlive the folder their data came from (--data-dir for resume, evaluate and sample)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinyvae
from tinyvae import __main__ as tinyvae_main
from tinyvae import evaluate, sample, train
from tinyvae.io.checkpoint import CHECKPOINT

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "2", "--seed", "7",
        "--backend", "numpy"]
PARSERS = {"train": train.build_parser, "evaluate": evaluate.build_parser, "sample": sample.build_parser}


def test_python_m_tinyvae_lists_and_runs_the_commands(capsys, tiny_data_dir, tmp_path):
    assert tinyvae_main.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c}" in out for c in ("train", "evaluate", "sample")) and tinyvae.__version__ in out
    assert tinyvae_main.main(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err
    assert tinyvae_main.main(["train", *ARGS, "--epochs", "1", "--data-dir", str(tiny_data_dir), "--out",
                              str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / CHECKPOINT).is_file()


@pytest.mark.parametrize("module", ["tinyvae", "tinyvae.train", "tinyvae.evaluate", "tinyvae.sample"])
def test_every_command_tells_its_version(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"tinyvae {tinyvae.__version__}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_says_its_default(name):
    parser = PARSERS[name]()
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version") and not action.required:
            assert "default" in (action.help or ""), f"{name} {action.option_strings[0]}: {action.help!r}"
    backend = next(a for a in parser._actions if a.dest == "backend")
    assert backend.default == "auto" and "auto" in backend.choices


def test_auto_prints_the_backend_it_chose(tiny_data_dir, tmp_path, capsys):
    args = [a for a in ARGS if a not in ("--backend", "numpy")]
    assert train.main([*args, "--epochs", "1", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "r")]) == 0
    chosen = tinyvae.load(tmp_path / "r").backend.name
    assert f"(backend {chosen}," in capsys.readouterr().out and chosen in ("cuda", "numba")


def test_a_run_outlives_the_folder_of_its_data(tiny_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_data_dir, tmp_path / "here")
    assert train.main([*ARGS, "--epochs", "1", "--data-dir", "here", "--out", "run"]) == 0
    meta = json.loads(json.loads(_metadata(tmp_path / "run" / CHECKPOINT))["settings"])
    assert meta["data_dir"] == str(tmp_path / "here")  # a relative --data-dir is stored absolute
    (tmp_path / "here").rename(tmp_path / "moved")
    capsys.readouterr()
    for what in ("samples", "manifold"):  # the model alone: no data needed
        assert sample.main(["run", "--what", what, "--backend", "numpy"]) == 0
    assert sample.main(["run", "--what", "interpolate", "--backend", "numpy"]) == 2
    assert "no directory holds" in capsys.readouterr().err
    from PIL import Image

    for i, name in enumerate(("a.png", "b.png")):  # interpolating between given images needs no dataset either
        Image.fromarray(np.full((8, 8), 60 * i + 30, np.uint8), mode="L").save(name)
    assert sample.main(["run", "--what", "interpolate", "--images", "a.png", "b.png", "--steps", "3",
                        "--backend", "numpy", "--out", "ab.png"]) == 0
    with Image.open("ab.png") as im:
        assert im.size == (5 * 58 + 2, 1 * 58 + 2)  # a, 3 decoded points, b; 8x8 images scaled 7x
    assert sample.main(["run", "--what", "interpolate", "--images", "a.png", "--backend", "numpy"]) == 2
    assert "pairs of images" in capsys.readouterr().err
    assert sample.main(["run", "--what", "interpolate", "--backend", "numpy", "--data-dir", "moved"]) == 0
    assert evaluate.main(["run", "--k", "3", "--n-images", "4", "--backend", "numpy", "--data-dir", "moved"]) == 0
    assert train.main(["--resume", "run", "--epochs", "2", "--backend", "numpy", "--data-dir", "moved"]) == 0
    assert "ignoring" not in capsys.readouterr().out
    meta = json.loads(_metadata(tmp_path / "run" / CHECKPOINT))
    assert json.loads(meta["settings"])["data_dir"] == str(tmp_path / "moved") and len(json.loads(meta["history"])) == 2


def test_evaluate_and_sample_read_only_the_test_files(tiny_data_dir, tmp_path, monkeypatch):
    """evaluate and the pictures of test images read the two t10k files, nothing else: not the training set."""
    monkeypatch.chdir(tmp_path)
    assert train.main([*ARGS, "--epochs", "1", "--data-dir", str(tiny_data_dir), "--out", "run"]) == 0
    (tmp_path / "t10k").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tiny_data_dir / name).rename(tmp_path / "t10k" / name)
    shutil.rmtree(tiny_data_dir)
    assert evaluate.main(["run", "--k", "3", "--n-images", "4", "--backend", "numpy", "--data-dir", "t10k"]) == 0
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["n_images"] == 4
    for what in ("interpolate", "scatter"):
        assert sample.main(["run", "--what", what, "--backend", "numpy", "--data-dir", "t10k"]) == 0
        assert (tmp_path / "run" / f"{what}.png").is_file()


def _metadata(path):
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return json.dumps(header["__metadata__"])
