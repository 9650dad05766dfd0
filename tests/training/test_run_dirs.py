"""A run directory is trained by one process at a time, and a start that fails leaves it as it found it."""

import errno
import subprocess
import sys
import time

import numpy as np
import pytest

import tinyvae
from tinyvae.io import checkpoint
from tinyvae.io.checkpoint import CHECKPOINT
from tinyvae.training import rundir
from tinyvae.train import main

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--backend", "numpy"]


def one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def train_process(*args):
    return subprocess.Popen([sys.executable, "-m", "tinyvae.train", *ARGS, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_runs_started_together_on_one_new_folder_one_trains(tiny_data_dir, tmp_path):
    out = tmp_path / "new"
    procs = [train_process("--data-dir", str(tiny_data_dir), "--epochs", "2", "--out", str(out)) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2)
    assert refused.startswith("error: ") and refused.count("\n") == 1
    assert "another process is training the run" in refused or "holds a run" in refused or "not an empty" in refused
    assert len(tinyvae.load(out, backend="numpy").params.data)  # the one run is whole


def test_a_run_being_trained_cannot_be_resumed_beside_it(tiny_data_dir, tmp_path, capsys):
    from conftest import write_dataset

    (tmp_path / "big").mkdir()
    data = write_dataset(tmp_path / "big", n_train=4096)
    out = tmp_path / "run"
    proc = train_process("--data-dir", str(data), "--batch-size", "1", "--epochs", "50", "--out", str(out))
    deadline = time.monotonic() + 60
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert main(["--resume", str(out), "--epochs", "60"]) == 2
        one_error_line(capsys, f"another process is training the run in {out}")
    finally:
        proc.kill()
        proc.wait()
    assert main(["--resume", str(out), "--epochs", "2", "--no-pictures"]) in (0, 2)  # the killed process let go


def test_a_first_epoch_that_fails_leaves_the_folder_as_it_found_it(tiny_data_dir, tmp_path, monkeypatch, capsys):
    real = checkpoint.atomic_write_bytes

    def full(path, blob):
        if str(path).endswith(CHECKPOINT):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, blob)

    monkeypatch.setattr("tinyvae.training.state.atomic_write_bytes", full, raising=False)
    monkeypatch.setattr("tinyvae.io.checkpoint.atomic_write_bytes", full)
    empty = tmp_path / "empty"
    empty.mkdir()
    for out, existed in ((tmp_path / "new", False), (empty, True)):
        assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(out)]) == 2
        one_error_line(capsys, f"{out / CHECKPOINT}: No space left on device",
                       "stopped before the first epoch was saved")
        assert out.exists() == existed and (not existed or not list(out.iterdir()))  # pictures and lock gone
    monkeypatch.undo()
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(empty)]) == 0


def test_a_write_that_fails_names_the_file_not_its_temporary(tmp_path):
    target = tmp_path / "y.png"
    real_open = open

    def failing(path, *args, **kwargs):
        if ".tmp-" in str(path):
            raise OSError(errno.EFBIG, "File too large", str(path))
        return real_open(path, *args, **kwargs)

    import builtins
    builtins_open, builtins.open = builtins.open, failing
    try:
        with pytest.raises(OSError) as e:
            checkpoint.atomic_write_bytes(target, b"png")
    finally:
        builtins.open = builtins_open
    assert e.value.filename == str(target) and e.value.strerror == "File too large"


def test_a_killed_runs_temporary_file_does_not_block_the_folder(tiny_data_dir, tmp_path):
    out = tmp_path / "killed"
    out.mkdir()
    (out / f".{CHECKPOINT}.tmp-4242").write_bytes(b"\0" * 1000)  # what a SIGKILL mid-write leaves
    (out / rundir.LOCK).write_bytes(b"")
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(out)]) == 0
    assert not list(out.glob("*.tmp-*")) and (out / CHECKPOINT).is_file()


def test_a_refused_folder_is_left_as_it_was(tiny_data_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_model_file_is_not_a_run_to_resume_or_evaluate(tiny_data_dir, tmp_path, capsys):
    from tinyvae.evaluate import main as evaluate_main

    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(run)]) == 0
    tinyvae.save(tinyvae.load(run, backend="numpy"), tmp_path / "m.safetensors")
    capsys.readouterr()
    for command in (lambda: main(["--resume", str(tmp_path / "m.safetensors"), "--epochs", "2"]),
                    lambda: evaluate_main([str(tmp_path / "m.safetensors"), "--k", "2"])):
        assert command() == 2
        one_error_line(capsys, "m.safetensors: a model file (weights and config), not a run's checkpoint")
    assert main(["--resume", str(run / CHECKPOINT), "--epochs", "2"]) == 0  # the checkpoint file itself: fine
    assert np.isfinite(tinyvae.load(run / CHECKPOINT, backend="numpy").params.data).all()


@pytest.fixture
def read_only_lock(monkeypatch):
    """A run directory's lock cannot be made: the folder is read-only (root writes where chmod says not to)."""
    real_open = rundir.os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(rundir.LOCK):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rundir.os, "open", read_only)


def test_a_run_directory_that_cannot_be_written_is_refused_before_training(tiny_data_dir, tmp_path, read_only_lock,
                                                                          capsys):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 2
    one_error_line(capsys, f"cannot write in the run directory {run}: Read-only file system")
    assert not run.exists()
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", "/proc/tinyvae-run"]) == 2
    one_error_line(capsys, "cannot make the run directory /proc/tinyvae-run")


def test_a_run_directory_that_cannot_be_written_is_found_before_a_resume_trains(tiny_data_dir, tmp_path, monkeypatch,
                                                                                capsys, request):
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(run)]) == 0
    before = (run / CHECKPOINT).read_bytes()
    request.getfixturevalue("read_only_lock")
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2"]) == 2
    one_error_line(capsys, f"cannot write in the run directory {run}: Read-only file system")
    assert (run / CHECKPOINT).read_bytes() == before
