"""Faults a user meets, and what tinyvae does: one ``error:`` line, a non-zero exit status, no
traceback, and every file of an earlier run as it was.

Classes covered here: divergence (a non-finite loss, metric, weight or optimiser state stops
the run at once and saves nothing of it; the API refuses a non-finite or negative beta) and run
directories (never overwritten, never colliding, nothing left behind by a failed start).
"""

import errno
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tinyvae.training import rundir
from tinyvae.io.checkpoint import load_checkpoint, save_checkpoint
from tinyvae.evaluate import main as evaluate_main
from tinyvae.models import VAE, VAEConfig
from tinyvae.sample import main as sample_main
from tinyvae.io.checkpoint import CHECKPOINT
from tinyvae.train import main
from tinyvae.errors import Diverged
from tinyvae.training.loop import Trainer

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--seed", "7"]


def _files(folder):
    """Every file under ``folder`` with its bytes, to show a run was left as it was."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys, *needles):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def a_run(tiny_data_dir, tmp_path):
    """A finished one-epoch run."""
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(run)]) == 0
    return run


# -- divergence --------------------------------------------------------------------
@pytest.mark.parametrize("extra,needles", [
    (["--lr", "1e6"], ["the training loss became", "at epoch 1, step", "--lr 1e+06"]),
    (["--likelihood", "gaussian", "--decoder-logvar", "-1000"],
     ["the training loss became inf at epoch 1, step 1 of", "--decoder-logvar -1000"]),
])
def test_a_run_that_diverges_in_its_first_epoch_stops_and_leaves_nothing(extra, needles, tiny_data_dir, tmp_path,
                                                                         capsys):
    run = tmp_path / "run"
    assert main([*ARGS, *extra, "--data-dir", str(tiny_data_dir), "--epochs", "3", "--out", str(run)]) == 1
    _one_error_line(capsys, *needles, "nothing was saved")
    assert not run.exists()


def test_the_cli_says_it_in_one_line(tiny_data_dir, tmp_path):
    """In a real process: no warning from NumPy's overflowing arithmetic, no traceback, one line."""
    done = subprocess.run([sys.executable, "-m", "tinyvae.train", *ARGS, "--lr", "1e6", "--data-dir",
                           str(tiny_data_dir), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: the training loss became")


def test_a_resumed_run_that_diverges_keeps_its_last_good_checkpoint(a_run, monkeypatch, capsys):
    before = _files(a_run)
    real_step = VAE.train_step

    def poisoned(self, *args, **kwargs):  # the weights blow up at the third step of epoch 2
        loss = real_step(self, *args, **kwargs)
        poisoned.calls += 1
        if poisoned.calls == 3:
            self.params.data[0] = np.inf
        return loss

    poisoned.calls = 0
    monkeypatch.setattr(VAE, "train_step", poisoned)
    assert main(["--resume", str(a_run), "--epochs", "3"]) == 1
    _one_error_line(capsys, "at epoch 2, step 4 of", f"the checkpoint of epoch 1 in {a_run} is intact")
    assert _files(a_run) == before


def test_on_a_gpu_the_loss_is_read_every_50_steps_and_the_first_bad_step_still_named(a_run, monkeypatch):
    """check_every > 1 is the GPU's path (no host read per step): the step is found on the device."""
    trainer = Trainer.resume(a_run, "numpy")
    trainer.check_every = 50
    real_step = VAE.train_step
    calls = []

    def nan_at_step_5(self, *args):
        calls.append(1)
        loss = real_step(self, *args)
        return loss * np.nan if len(calls) == 5 else loss

    monkeypatch.setattr(VAE, "train_step", nan_at_step_5)
    with pytest.raises(Diverged, match=r"became nan at epoch 2, step 5 of 8"):
        trainer.train_epoch()
    assert len(calls) == 8  # 256 images in batches of 32: the whole epoch ran before the read


def test_non_finite_test_metrics_or_optimiser_state_are_never_saved(a_run, monkeypatch):
    before = _files(a_run)
    trainer = Trainer.resume(a_run, "numpy")
    trainer.optimizer.v[3] = np.inf
    with pytest.raises(Diverged, match=r"after epoch 2, the optimiser's v hold non-finite values"):
        trainer.run(2)
    trainer = Trainer.resume(a_run, "numpy")
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"test_loss": math.nan, "test_nll": 1.0})
    with pytest.raises(Diverged, match=r"after epoch 2, test_loss hold non-finite values"):
        trainer.run(2)
    assert _files(a_run) == before


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--beta", "nan"), ("--beta", "-1"),
                                        ("--warmup-epochs", "nan")])
def test_non_finite_settings_are_refused(flag, value, tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*ARGS, flag, value, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 2
    _one_error_line(capsys, f"error: {flag} must be a finite number", value if value != "-1" else ">= 0, got -1.0")
    assert not run.exists()


@pytest.mark.parametrize("cli", [lambda run: evaluate_main([str(run), "--k", "2", "--n-images", "2"]),
                                 lambda run: sample_main([str(run), "--what", "samples"])],
                         ids=["evaluate", "sample"])
def test_a_checkpoint_with_non_finite_weights_is_refused(cli, a_run, capsys):
    tensors, meta = load_checkpoint(a_run / CHECKPOINT)
    tensors["decoder.0.bias"][1] = np.nan
    save_checkpoint(a_run / CHECKPOINT, tensors, meta)
    before = _files(a_run)
    assert cli(a_run) == 2
    _one_error_line(capsys, "non-finite values in decoder.0.bias")
    assert _files(a_run) == before


@pytest.mark.parametrize("beta", [math.nan, math.inf, -0.5])
def test_the_api_refuses_a_bad_beta(beta):
    model = VAE(VAEConfig(6, (4,), 2, "float64"), seed=0)
    x = np.random.default_rng(0).random((3, 6))
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        model.loss_and_grad(x, beta=beta, eps=np.zeros((3, 2)))


# -- run directories -----------------------------------------------------------------
def test_training_into_a_run_is_refused_and_the_run_kept(a_run, tiny_data_dir, capsys):
    before = _files(a_run)
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "2", "--out", str(a_run)]) == 2
    _one_error_line(capsys, f"{a_run} holds a run; continue a run with --resume {a_run}, or name a new folder")
    assert _files(a_run) == before


def test_a_folder_with_files_is_refused_an_empty_one_is_used(tiny_data_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(mine)]) == 2
    _one_error_line(capsys, f"{mine} is not an empty folder")
    assert _files(mine) == {mine.relative_to(mine) / "notes.txt": b"a user's file"}
    (tmp_path / "empty").mkdir()
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / CHECKPOINT).is_file()


def test_runs_started_in_the_same_second_get_their_own_folders(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20261130-101010")
    for _ in range(3):
        assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["20261130-101010", "20261130-101010-2", "20261130-101010-3"]
    assert all((tmp_path / "runs" / r / CHECKPOINT).is_file() for r in runs)


@pytest.mark.parametrize("out", [None, "new"])
def test_a_start_that_fails_leaves_nothing_behind(out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*ARGS, "--data-dir", str(tmp_path / "no-data"), *(["--out", out] if out else [])]
    assert main(args) == 2
    _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == [] or list(tmp_path.iterdir()) == [tmp_path / "runs"]
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    assert not (tmp_path / "new").exists()


# -- checkpoints and their metadata --------------------------------------------------
def _rewrite(run, change):
    """The run's checkpoint with its metadata (JSON text per key) changed by ``change(meta)``."""
    from safetensors.numpy import load_file, save

    path = run / CHECKPOINT
    with open(path, "rb") as f:
        raw = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    change(raw)
    path.write_bytes(save(load_file(path), metadata=raw))


def _set(key, value):
    """Metadata ``key`` set to ``value``: JSON text as it is, anything else dumped to JSON."""
    return lambda raw: raw.__setitem__(key, value if isinstance(value, str) else json.dumps(value))


def _set_setting(key, value):
    def change(raw):
        settings = json.loads(raw["settings"])
        settings[key] = value
        raw["settings"] = json.dumps(settings)
    return change


@pytest.mark.parametrize("change,needles", [
    (lambda raw: raw.pop("epoch"), ["metadata field 'epoch' is missing"]),
    (lambda raw: raw.pop("settings"), ["metadata field 'settings' is missing"]),
    (_set("epoch", '"1"'), ["metadata field 'epoch' is a str, not a int"]),
    (_set("epoch", -1), ["metadata field 'epoch' is -1 but the run's history holds 1 records"]),
    (_set("epoch", 5), ["metadata field 'epoch' is 5"]),
    (_set("settings", [1, 2]), ["metadata field 'settings' is a list, not a dict"]),
    (_set_setting("lr", "fast"), ["metadata field 'settings': lr must be a finite number, got 'fast'"]),
    (_set_setting("hidden", [10**9]), ["metadata field 'settings': these sizes need about", "GiB"]),
    (_set_setting("hidden", ["16"]), ["hidden must be a list of ints >= 1"]),
    (_set_setting("batch_size", True), ["batch_size must be an int, got True"]),
    (_set_setting("surprise", 1), ["metadata field 'settings'", "surprise"]),
    (_set("optimizer", {"name": "adam", "t": "many"}), ["metadata field 'optimizer'"]),
    (_set("settings", "[" * 100000 + "]" * 100000), ["metadata field 'settings' is not strict JSON (RecursionError"]),
], ids=["no-epoch", "no-settings", "epoch-str", "epoch-negative", "epoch-ahead", "settings-list", "lr-str",
        "absurd-size", "hidden-str", "batch-bool", "unknown-setting", "optimizer-t", "deep-json"])
def test_every_field_of_a_checkpoint_is_checked(change, needles, a_run, capsys):
    _rewrite(a_run, change)
    before = _files(a_run)
    assert main(["--resume", str(a_run), "--epochs", "2"]) == 2
    _one_error_line(capsys, str(a_run / CHECKPOINT), *needles)
    assert _files(a_run) == before


def test_an_older_checkpoint_with_a_generator_state_is_read(a_run, capsys):
    """Checkpoints of an older tinyvae hold 'rng_state', the state of the one generator their run drew from;
    nothing draws from it now, so it is read past, whatever it holds, and the run continues."""
    _rewrite(a_run, _set("rng_state", {"bit_generator": "PCG64", "state": 3}))
    assert main(["--resume", str(a_run), "--epochs", "2"]) == 0
    assert "rng_state" not in load_checkpoint(a_run / CHECKPOINT)[1]


# -- the operating system and Ctrl-C -----------------------------------------------
def test_an_unreadable_data_file_is_one_line(tiny_data_dir, tmp_path, monkeypatch, capsys):
    from tinyvae.io import idx

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(idx, "open", denied, raising=False)
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 2
    _one_error_line(capsys, "train-images-idx3-ubyte.gz: Permission denied")
    assert not run.exists()


# The training command in a child that takes Ctrl-C as an interactive run does: Python leaves SIGINT ignored
# where the tests were started with it ignored (a shell's background job), and the child would inherit that.
_TRAIN = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "runpy.run_module('tinyvae.train', run_name='__main__', alter_sys=True)")


def _train_process(args, **kwargs):
    return subprocess.Popen([sys.executable, "-c", _TRAIN, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_full_disk_at_a_save_keeps_the_last_checkpoint_and_leaves_no_temp_file(tiny_data_dir, tmp_path):
    """RLIMIT_FSIZE makes every write past 200 kB fail (EFBIG) as a full disk would, without root."""
    import resource

    run = tmp_path / "run"
    big = [*ARGS, "--hidden", "400", "--data-dir", str(tiny_data_dir)]
    assert main([*big, "--epochs", "1", "--out", str(run)]) == 0
    before = _files(run)
    assert len(before[run.relative_to(run) / CHECKPOINT]) > 200_000
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    done = _train_process(["--resume", str(run), "--epochs", "2"], preexec_fn=limit)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "File too large" in err, err
    after = _files(run)
    assert after[run.relative_to(run) / CHECKPOINT] == before[run.relative_to(run) / CHECKPOINT]
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def _stop_in_an_epoch_then_resume(tmp_path, signum):
    """Train with ``signum`` sent 0.2 s into the second epoch (4096 images at batch 1: about 0.5 s an epoch),
    resume to one epoch more than was saved, train as many epochs straight, and check the two runs agree
    bit for bit. Returns the stopped process's exit status and stderr."""
    import time

    from conftest import write_dataset
    from safetensors.numpy import load_file

    (tmp_path / "data").mkdir()
    common = [*ARGS, "--batch-size", "1", "--data-dir", str(write_dataset(tmp_path / "data", n_train=4096))]
    cut = tmp_path / "cut"
    proc = _train_process([*common, "--epochs", "50", "--out", str(cut)])
    deadline = time.monotonic() + 600  # the first epoch: about 0.5 s, minutes on a machine loaded by others
    while not (cut / CHECKPOINT).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert (cut / CHECKPOINT).exists(), "the first epoch's checkpoint never came"
    time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    saved = load_checkpoint(cut / CHECKPOINT)[1]["epoch"]
    assert main(["--resume", str(cut), "--epochs", str(saved + 1)]) == 0
    assert main([*common, "--epochs", str(saved + 1), "--out", str(tmp_path / "straight")]) == 0
    strip = lambda run: [{k: v for k, v in json.loads(line).items() if "second" not in k and k != "samples_per_s"}
                         for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(cut) == strip(tmp_path / "straight")
    a, b = load_file(cut / CHECKPOINT), load_file(tmp_path / "straight" / CHECKPOINT)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not [p for p in cut.iterdir() if ".tmp-" in p.name]
    return proc.returncode, err, saved


def test_ctrl_c_in_an_epoch_keeps_the_last_checkpoint_and_resume_is_bit_exact(tmp_path):
    import signal

    code, err, saved = _stop_in_an_epoch_then_resume(tmp_path, signal.SIGINT)
    assert code == 130 and err.count("\n") == 1, err
    assert err.startswith(f"interrupted: stopped after epoch {saved} was saved; its checkpoint in {tmp_path / 'cut'} "
                          f"is intact: continue with python -m tinyvae.train --resume {tmp_path / 'cut'}"), err


def test_ctrl_c_while_the_checkpoint_is_written_is_taken_once_the_metrics_are_written_too(tiny_data_dir, tmp_path,
                                                                                           monkeypatch, capsys):
    """The checkpoint and metrics.jsonl of a stopped run tell the same epochs: a Ctrl-C between the two writes
    used to leave the checkpoint one epoch ahead."""
    import signal

    from tinyvae.training import state

    def save_then_ctrl_c(path, tensors, metadata, *args):
        save_checkpoint(path, tensors, metadata, *args)
        if metadata["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(state, "save_checkpoint", save_then_ctrl_c)
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "4", "--out", str(run)]) == 130
    assert "interrupted: stopped after epoch 2 was saved" in capsys.readouterr().err
    assert load_checkpoint(run / CHECKPOINT)[1]["epoch"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back


def test_sigkill_in_an_epoch_keeps_the_last_checkpoint_and_resume_is_bit_exact(tmp_path):
    import signal

    code, _, _ = _stop_in_an_epoch_then_resume(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL


def test_a_temp_file_left_by_a_killed_save_is_removed_at_the_next(a_run):
    stale = a_run / f".{CHECKPOINT}.tmp-999999"
    stale.write_bytes(b"half a checkpoint")
    assert main(["--resume", str(a_run), "--epochs", "2"]) == 0
    assert not stale.exists()


def test_a_picture_that_cannot_be_replaced_is_kept(tmp_path, monkeypatch):
    from tinyvae.io import checkpoint
    from tinyvae.io.images import save_grid

    png = tmp_path / "grid.png"
    save_grid(png, np.zeros((4, 3, 3)), 2, 2)
    before = png.read_bytes()

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(checkpoint.os, "replace", no_space)
    with pytest.raises(OSError, match="No space left"):
        save_grid(png, np.ones((4, 3, 3)), 2, 2)
    assert png.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_evaluate_and_sample_say_an_os_error_or_ctrl_c_in_one_line(a_run, monkeypatch, capsys):
    from tinyvae import evaluate

    assert sample_main([str(a_run), "--what", "samples", "--out", str(a_run / "no" / "such" / "dir.png")]) == 2
    _one_error_line(capsys, "No such file or directory")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_run", interrupted)
    assert evaluate_main([str(a_run)]) == 130
    assert capsys.readouterr().err == f"interrupted: nothing was written; {a_run} is as it was\n"


# -- flags and the Python API ------------------------------------------------------
@pytest.mark.parametrize("extra,needles", [
    (["--epochs", "0"], ["--epochs is the total number of epochs, at least 1"]),
    (["--hidden", "abc"], ["argument --hidden: takes sizes separated by commas", "'abc'"]),
    (["--seed", "-1"], ["--seed must be an int in [0, 2^63), got -1"]),
])
def test_flags_are_refused_by_name(extra, needles, tiny_data_dir, tmp_path, capsys):
    assert main([*ARGS, *extra, "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, *needles)
    assert not (tmp_path / "run").exists()


def test_a_resume_to_an_epoch_already_reached_says_so(a_run, capsys):
    before = _files(a_run)
    assert main(["--resume", str(a_run), "--epochs", "1"]) == 2
    _one_error_line(capsys, "has trained 1 epochs already; --epochs is the total, so ask for more than 1")
    assert _files(a_run) == before


@pytest.mark.parametrize("kwargs", [dict(latent_dim=2.5), dict(hidden=(4.0,)), dict(input_dim=True),
                                    dict(mc_samples=1.5)])
def test_the_api_refuses_sizes_that_are_not_ints(kwargs):
    with pytest.raises(ValueError, match="must be an int|list of ints"):
        VAEConfig(**{"input_dim": 6, "hidden": (4,), "latent_dim": 2, **kwargs})


def test_a_non_finite_evaluation_is_not_written(a_run, monkeypatch, capsys):
    from tinyvae import evaluate

    monkeypatch.setattr(evaluate, "importance_weighted",
                        lambda model, x, k, y, seed, rows: (np.full(x.shape[0], -np.inf), np.zeros(x.shape[0])))
    assert evaluate_main([str(a_run), "--k", "2", "--n-images", "2"]) == 2
    _one_error_line(capsys, "the evaluation of its model gave non-finite iwae_nll, iwae_nll_se; evaluation.json not written")
    assert not (a_run / "evaluation.json").exists()


# -- data files, through the command line -------------------------------------------
def _corrupt_crc(path):
    gz = bytearray(path.read_bytes())
    gz[-8] ^= 1
    path.write_bytes(bytes(gz))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _labels_200(path):
    from tinyvae.io.idx import write_idx

    write_idx(path, np.full(256, 200, np.uint8))


DATA_FAULTS = [
    ("train-images-idx3-ubyte.gz", _corrupt_crc, "corrupt file (CRC check failed"),
    ("train-images-idx3-ubyte.gz", _truncate, "truncated: the compressed data end after"),
    ("train-labels-idx1-ubyte.gz", _labels_200, "label 200 at index 0 is not one of the dataset's 10 classes"),
]


@pytest.mark.parametrize("name,spoil,needle", DATA_FAULTS, ids=["crc", "truncated", "labels"])
def test_bad_data_stops_a_new_run_and_a_resumed_one(name, spoil, needle, tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(run)]) == 0
    before = _files(run)
    spoil(tiny_data_dir / name)
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "new")]) == 2
    _one_error_line(capsys, f"{tiny_data_dir / name}: {needle}")
    assert not (tmp_path / "new").exists()
    assert main(["--resume", str(run), "--epochs", "2"]) == 2
    _one_error_line(capsys, needle)
    assert _files(run) == before
