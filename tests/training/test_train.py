"""The training CLI on small IDX files the tests write: outputs, resume, errors."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from tinyvae.io.checkpoint import CHECKPOINT
from tinyvae.train import main

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--seed", "7"]


def _metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_everything(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "3", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("nats/sample") == 3
    m = _metrics(run)
    assert [r["epoch"] for r in m] == [1, 2, 3]
    for r in m:
        assert {"epoch", "train_loss", "test_loss", "samples_per_s", "seconds"} <= set(r)
        assert np.isfinite(r["test_loss"]) and r["samples_per_s"] > 0
    assert m[-1]["train_loss"] < m[0]["train_loss"]  # it learns
    with Image.open(run / "reconstruction_3.png") as im:
        assert im.size == (8 * 58 + 2, 2 * 58 + 2)  # 8x8 images scaled 7x (at least 56 pixels), 2 of padding
    with Image.open(run / "sample_3.png") as im:
        assert im.size == (8 * 58 + 2, 8 * 58 + 2)
    tensors = load_file(run / CHECKPOINT)
    assert tensors["encoder.0.weight"].shape == (16, 64) and "optimizer.m" in tensors


def test_resume_gives_the_same_numbers(tiny_data_dir, tmp_path):
    common = [*ARGS, "--data-dir", str(tiny_data_dir), "--binarize"]
    assert main([*common, "--epochs", "3", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["--resume", str(tmp_path / "b"), "--epochs", "3"]) == 0
    strip = lambda ms: [{k: v for k, v in r.items() if "second" not in k and k != "samples_per_s"} for r in ms]
    assert strip(_metrics(tmp_path / "a")) == strip(_metrics(tmp_path / "b"))
    a, b = load_file(tmp_path / "a" / CHECKPOINT), load_file(tmp_path / "b" / CHECKPOINT)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("extra", [["--binarize", "--mc-samples", "2"], ["--model", "dae", "--corruption", "mask"],
                                   ["--model", "cvae"]], ids=lambda a: " ".join(a))
def test_pictures_on_or_off_change_no_number(extra, tiny_data_dir, tmp_path):
    """The pictures draw from their own stream: a run with them and one without are the same run."""
    common = [*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "2", *extra]
    assert main([*common, "--out", str(tmp_path / "on")]) == 0
    assert main([*common, "--no-pictures", "--out", str(tmp_path / "off")]) == 0
    strip = lambda ms: [{k: v for k, v in r.items() if "second" not in k and k != "samples_per_s"} for r in ms]
    assert strip(_metrics(tmp_path / "on")) == strip(_metrics(tmp_path / "off"))
    a, b = load_file(tmp_path / "on" / CHECKPOINT), load_file(tmp_path / "off" / CHECKPOINT)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert list((tmp_path / "on").glob("*.png")) and not list((tmp_path / "off").glob("*.png"))


def test_resume_from_a_corrupt_checkpoint_fails_cleanly(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(run)]) == 0
    good = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(good[:100])
    assert main(["--resume", str(run)]) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "empty")]) == 2


def _no_cuda():
    from tinyvae.backends import BackendUnavailable, get_backend

    try:
        get_backend("cuda")
    except BackendUnavailable:
        return True
    return False


@pytest.mark.parametrize("argv,match", [
    pytest.param(["--backend", "cuda"], "the cuda backend",
                 marks=pytest.mark.skipif(not _no_cuda(), reason="a usable GPU is here")),
    (["--dataset", "mnist"], "--data-dir"),
    (["--batch-size", "0"], "--batch-size must be an int >= 1, got 0"),
])
def test_clear_errors(argv, match, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert match in capsys.readouterr().err


def test_bad_pixels_in_data_are_refused(tmp_path, capsys):
    from conftest import write_dataset
    from tinyvae.io.idx import write_idx

    d = tmp_path / "d"
    d.mkdir()
    write_dataset(d)
    write_idx(d / "train-images-idx3-ubyte.gz", np.full((4, 8, 8), 1.5, np.float32))
    assert main(["--dataset", "mnist", "--data-dir", str(d), "--out", str(tmp_path / "r")]) == 2
    assert "uint8" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [
    ["--likelihood", "gaussian"],
    ["--likelihood", "gaussian-learned"],
    ["--mc-samples", "3"],
    ["--beta", "4", "--warmup-epochs", "1.5"],
], ids=lambda a: " ".join(a))
def test_variants_train(extra, tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "3", "--out", str(run), *extra]) == 0
    m = _metrics(run)
    assert all(np.isfinite(r["test_loss"]) and r["test_loss"] == pytest.approx(r["test_nll"] + r["test_kl"])
               for r in m)
    assert m[-1]["test_loss"] < m[0]["test_loss"]


def test_cvae_draws_one_row_per_class(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "2", "--out", str(run), "--model", "cvae"]) == 0
    with Image.open(run / "sample_2.png") as im:
        assert im.size == (8 * 58 + 2, 10 * 58 + 2)  # 10 classes in the test data, 8 draws each
    assert load_file(run / CHECKPOINT)["encoder.0.weight"].shape == (16, 64 + 10)


def test_beta_warmup_rises_linearly_then_holds():
    from tinyvae.training.settings import RunSettings

    s = RunSettings.resolve(dict(beta=2.0, warmup_epochs=2))
    betas = [s.beta_at(step, steps_per_epoch=10) for step in range(30)]
    np.testing.assert_allclose(betas[:20], 2.0 * np.arange(1, 21) / 20)
    assert betas[20:] == [2.0] * 10
    assert RunSettings.resolve(dict(beta=0.5)).beta_at(0, 10) == 0.5


def test_each_run_plots_its_loss_curves(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "2", "--out", str(run)]) == 0
    with Image.open(run / "loss.png") as im:
        assert im.size[0] >= 400


def test_sgd_with_momentum_trains_and_resumes_bit_exactly(tiny_data_dir, tmp_path, capsys):
    args = [*ARGS, "--optimizer", "sgd", "--momentum", "0.5", "--nesterov", "--lr", "0.01", "--data-dir",
            str(tiny_data_dir)]
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["--resume", str(tmp_path / "resumed"), "--epochs", "2"]) == 0
    straight, resumed = (load_file(tmp_path / d / CHECKPOINT) for d in ("straight", "resumed"))
    assert set(straight) >= {"optimizer.momentum_buffer"} and "optimizer.m" not in straight
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name])
    loss = [json.loads(l)["test_loss"] for l in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert loss[1] < loss[0]
    capsys.readouterr()
    assert main([*ARGS, "--momentum", "0.5", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "bad")]) == 2
    assert "--momentum does not apply to --optimizer adam" in capsys.readouterr().err
