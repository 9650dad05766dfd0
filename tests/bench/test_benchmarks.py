"""The training benchmark's contenders each run their epochs on a small dataset, in turns.

Only that they run: their timings are the benchmark's business, not a test's.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.train import gemm_floor_epoch, rounds, tinyvae_epoch


def test_train_benchmark_contenders_run_in_turns():
    data = SimpleNamespace(train=SimpleNamespace(
        data=np.random.default_rng(0).integers(0, 256, (300, 784), dtype=np.uint8)))
    contenders = {"numba": tinyvae_epoch(data, "numba", 128),
                  "gemm_adam_floor": gemm_floor_epoch(data, 128, adam=True),
                  "gemm_floor": gemm_floor_epoch(data, 128)}
    times = rounds(contenders, 2)
    assert list(times) == list(contenders)
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_a_contender_runs_in_its_own_process_and_answers_with_its_epoch_time():
    from benchmarks.train import in_child

    data = SimpleNamespace(train=SimpleNamespace(
        data=np.random.default_rng(0).integers(0, 256, (300, 784), dtype=np.uint8)))
    before = set(multiprocessing.active_children())
    epoch = in_child(gemm_floor_epoch, data, 128, adam=True)
    assert len(set(multiprocessing.active_children()) - before) == 1
    assert [t > 0 for t in (epoch(), epoch())] == [True, True]


def test_a_report_is_aligned_names_its_units_and_writes_where_it_is_told(tmp_path, capsys):
    from benchmarks.common import RESULTS, report

    before = sorted(RESULTS.iterdir())
    rows = [{"op": "bce_with_logits", "size": "128x784", "numpy_us": 1373.6, "GBps": 13.8},
            {"op": "adam_step", "size": "652824", "numpy_us": 2312.9, "GBps": None}]
    path = report("demo", rows, [("op", "<"), ("size", "<"), ("numpy_us", ".1f"), ("GBps", ".1f")], {"x": 1}, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "op" and "numpy (us)" in lines[0] and lines[0].endswith("GB/s")
    assert len({len(line) for line in lines[:3]}) == 1  # every row as wide as the header
    assert lines[1].startswith("bce_with_logits  128x784") and lines[2].endswith("-")
    assert path == tmp_path / "demo.json" and sorted(RESULTS.iterdir()) == before


def test_only_publish_writes_the_published_record(tmp_path):
    import argparse

    from benchmarks.common import RESULTS, add_output_args, out_dir

    p = argparse.ArgumentParser()
    add_output_args(p)
    assert out_dir(p.parse_args([])) == Path("benchmark-results")
    assert out_dir(p.parse_args(["--out", str(tmp_path)])) == tmp_path
    assert out_dir(p.parse_args(["--publish"])) == RESULTS


def test_every_kernel_case_runs_even_with_more_rows_than_the_dataset(monkeypatch):
    # benchmarks.cuda asks for B = 65,536 rows of the 60,000: the gather must draw with repetition.
    from benchmarks import kernels
    from tinyvae.backends import get_backend

    monkeypatch.setattr(kernels, "N", 100)
    ref, rng = get_backend("numpy"), np.random.default_rng(0)
    for op, _, make, _ in kernels.cases(130, rng) + kernels.optimizer_cases(rng):
        getattr(ref, op)(*make())


def test_the_cuda_benchmarks_epochs_run_their_loops_on_a_stand_in_for_cupy(tmp_path, monkeypatch):
    # benchmarks.cuda runs only where a GPU is lent: its loops and shapes are run here on NumPy dressed as
    # CuPy (numba's ops), without PyTorch, so that a slip shows before a GPU's minutes are spent on it.
    import dataclasses
    import sys

    from benchmarks import cuda
    from conftest import write_dataset
    from tinyvae.backends import get_backend

    fake = SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")},
                           asnumpy=np.asarray,
                           cuda=SimpleNamespace(Device=lambda: SimpleNamespace(synchronize=lambda: None),
                                                runtime=SimpleNamespace(getDeviceProperties=lambda i: {"name": b"none"})))
    monkeypatch.setitem(sys.modules, "torch", None)
    data = write_dataset(tmp_path, n_train=96, n_test=16, side=8)
    args = SimpleNamespace(data_dir=str(data), batch_size=32, epochs=1, out=tmp_path / "out", publish=False)
    backend = dataclasses.replace(get_backend("numba"), xp=fake)
    cuda.train(backend, args)
    cuda.kernels(backend, SimpleNamespace(batches="16", repeats=1, out=tmp_path / "out", publish=False), 100.0)
    import json

    rows = json.loads((tmp_path / "out" / "train_cuda.json").read_text())["rows"]
    assert [r["what"] for r in rows] == ["tinyvae cuda", "tinyvae cuda conv"]


def test_the_conv_benchmark_times_each_layer_kind_and_each_op():
    from benchmarks.conv import step_parts, timed_backend
    from tinyvae.backends import get_backend
    from tinyvae.models import VAE, VAEConfig

    config = VAEConfig(input_dim=64, hidden=(), latent_dim=3, arch="conv", channels=(2, 4), data_shape=(1, 8, 8))
    data = SimpleNamespace(train=SimpleNamespace(data=np.random.default_rng(0).integers(0, 256, (8, 64), dtype=np.uint8)))
    step, layers, ops = step_parts(config, data, batch_size=8, steps=2)
    assert step > 0 and set(layers) == {"Conv2d", "ConvTranspose2d", "Linear"}
    # 8x8 images -> 4x4 (2 channels) -> 2x2 (4): 128 and 32 patch rows; 495 parameters
    assert {"unfold (8, 64)", "fold (128, 16)", "matmul (32, 32) @ (32, 4)", "adam_step (495,)"} <= set(ops)
    x = data.train.data / 255.0
    plain, timed = VAE(config, "numba", seed=1), VAE(config, timed_backend(get_backend("numba"), {}), seed=1)
    assert timed.loss_and_grad(x, eps=np.ones((8, 3)))[0] == plain.loss_and_grad(x, eps=np.ones((8, 3)))[0]


def test_the_draws_benchmark_times_each_case_with_and_without_its_draws():
    from benchmarks.draws import CASES, contenders, measure

    pixels = np.random.default_rng(0).integers(0, 256, (400, 784), dtype=np.uint8)
    for config, binarize in CASES.values():
        times = measure(contenders(pixels, config, binarize, 8), 1)
        assert list(times) == ["draw_ops", "handed_ops", "draw_step", "handed_step"]
        assert all(t > 0 for t in times.values())


def test_the_conv_benchmark_trains_on_random_images_of_any_shape():
    import torch  # noqa: F401  (the PyTorch contender is the benchmark's other half)

    from benchmarks.train import random_images, tinyvae_epoch, torch_epoch_here
    from tinyvae.models import VAEConfig

    config = VAEConfig(input_dim=3 * 8 * 8, hidden=(), latent_dim=3, arch="conv", channels=(2, 4), data_shape=(3, 8, 8))
    random_images((3, 8, 8), 32, tinyvae_epoch, "numba", 8, config=config)()
    random_images((3, 8, 8), 32, torch_epoch_here, 8, 1, conv=((2, 4), 3))()


def test_the_image_folder_benchmark_reads_a_folder_in_a_process_of_its_own(tmp_path):
    from PIL import Image

    from benchmarks.image_folder import timed_read

    (tmp_path / "f").mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "f" / f"{i}.png")
    assert timed_read(tmp_path / "f", tmp_path / "cache") > 0
    assert list((tmp_path / "cache" / "images").glob("*.npy"))


def test_the_iwae_benchmarks_contenders_run_an_epoch_each():
    import torch  # noqa: F401  (the PyTorch contender)

    from benchmarks.train import random_images, tinyvae_epoch, torch_epoch_here
    from tinyvae.models import VAEConfig

    from tinyvae.models.iwae import IWAE

    config = VAEConfig(model="iwae", k=3)
    epoch = random_images((1, 28, 28), 32, tinyvae_epoch, "numba", 16, config=config)
    assert type(epoch.model) is IWAE  # the bound's model, not a VAE of k draws
    epoch()
    random_images((1, 28, 28), 32, torch_epoch_here, 16, 1, iwae_k=3)()


def test_the_likelihood_table_runs_each_cell_in_its_own_process_and_keeps_finished_ones(tmp_path, capsys):
    import torch  # noqa: F401  (the PyTorch contender)

    from benchmarks.beyond_elbo import main

    args = ["--epochs", "1", "--rows", "vae,vqvae", "--k", "4", "--n-images", "20", "--threads", "1",
            "--work", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    main([*args, "--contenders", "tinyvae"])
    assert not (tmp_path / "out").exists()  # a table waits for every cell
    main(args)  # tinyvae's cells are kept; PyTorch's are run
    table = json.loads((tmp_path / "out" / "beyond_elbo.json").read_text())["rows"]
    assert [r["model"] for r in table] == ["vae", "vqvae"] and [r["figure"] for r in table] == ["nll", "recon"]
    for r in table:  # one epoch: both near 250 nats on the same 20 images, with standard errors of them
        assert 150 < r["tinyvae_nats"] < 350 and 150 < r["pytorch_nats"] < 350 and r["tinyvae_se"] > 0
    assert "vqvae  recon" in capsys.readouterr().out
    main([*args, "--rows", "vae", "--seed", "2", "--contenders", "tinyvae"])  # another seed: new cells, a new run
    runs = tmp_path / "runs"
    assert (runs / "vae-tinyvae-seed2.json").exists() and (runs / "vae-tinyvae-seed2").is_dir()
    assert not (tmp_path / "out" / "beyond_elbo_seed2.json").exists()
    with pytest.raises(SystemExit, match="vae-tinyvae-seed1.json was made with .*'k': 4.*; give another --work"):
        main([*[a if a != "4" else "8" for a in args], "--rows", "vae"])  # a kept cell of another k is not reused
