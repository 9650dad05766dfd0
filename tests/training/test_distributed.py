"""Data-parallel training (tinyvae.distributed): the pieces in one process, then real runs under mpirun.

The mpirun tests need Open MPI's ``mpirun`` and mpi4py (CI installs both: ``.ci/run``); they run as
root there, hence ``--allow-run-as-root``, and on 2 cores, hence ``--oversubscribe``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import write_dataset
from fused_backends import backend_or_skip
from tinyvae.io.checkpoint import load_checkpoint
from tinyvae.training.distributed import (DataParallel, DataParallelError, DataParallelOptimizer, MPIBuffers, NCCLBuffers,
                                 launched_size)
from tinyvae.models import VAE, VAEConfig

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).parents[1] / "mpi_worker.py"
MPIRUN = shutil.which("mpirun")
# Open MPI's mpirun and mpi4py are the test set-up's (README's test command installs them): without them
# these tests fail, and say what is missing.
from mpi4py import MPI  # noqa: E402


# -- in one process -------------------------------------------------------------------------------------------

def test_the_launch_is_read_from_the_launchers_environment():
    assert launched_size({}) == 1
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_size({"PMI_SIZE": "3"}) == 3
    assert launched_size({"OMPI_COMM_WORLD_SIZE": ""}) == 1


def fake_comm(rank, size):
    return SimpleNamespace(Get_rank=lambda: rank, Get_size=lambda: size)


def group_of(rank, size):
    return DataParallel(fake_comm(rank, size), None, SimpleNamespace(name="MPI"))


@pytest.mark.parametrize("n, size", [(128, 2), (96, 2), (1000, 3), (7, 4), (5, 5)])
def test_the_ranks_rows_cover_a_batch_once(n, size):
    pieces = [group_of(r, size).rows(n) for r in range(size)]
    assert pieces[0][0] == 0 and pieces[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    sizes = [hi - lo for lo, hi in pieces]
    assert max(sizes) - min(sizes) <= 1


def test_a_batch_that_does_not_split_is_refused_with_the_reason():
    g = group_of(0, 3)
    g.check_batches(60000, 120, 10000, 1000)  # 60000 = 500 * 120: no partial batch
    with pytest.raises(DataParallelError, match="--batch-size 128 is the global batch.*3 ranks"):
        g.check_batches(60000, 128, 10000, 1000)
    with pytest.raises(DataParallelError, match="last batch of the 60000 training images, 96"):
        group_of(0, 64).check_batches(60000, 128, 10000, 1000)
    with pytest.raises(DataParallelError, match="test batch of 2 images"):
        group_of(0, 4).check_batches(64, 32, 1002, 1000)


class FakeNCCL:
    """The parts of ``cupy.cuda.nccl`` that NCCLBuffers uses, recording its calls."""

    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0

    def __init__(self):
        self.calls = []

    def allReduce(self, send, recv, count, dtype, op, stream):
        self.calls.append(("allReduce", send, recv, count, dtype, op, stream))

    def bcast(self, ptr, count, dtype, root, stream):
        self.calls.append(("bcast", ptr, count, dtype, root, stream))


class FakeDeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):
        return SimpleNamespace(ptr=self.ctypes.data)


@pytest.mark.parametrize("dtype, code", [(np.float32, 7), (np.float64, 8)])
def test_nccl_collectives_pass_pointer_count_type_and_stream_then_scale(dtype, code):
    nccl = FakeNCCL()
    buffers = NCCLBuffers(nccl, 4, nccl, SimpleNamespace(ptr=1234))
    grad = np.arange(10, dtype=dtype).view(FakeDeviceArray)
    buffers.allreduce_mean_(grad)  # the fake sums nothing: the buffer is then scaled by 1/P
    assert nccl.calls == [("allReduce", grad.data.ptr, grad.data.ptr, 10, code, 0, 1234)]
    np.testing.assert_array_equal(np.asarray(grad), np.arange(10, dtype=dtype) / dtype(4))
    buffers.broadcast_(grad)
    assert nccl.calls[-1] == ("bcast", grad.data.ptr, 10, code, 0, 1234)


@pytest.mark.parametrize("bad", [np.zeros(4, np.float16), np.zeros((2, 2), np.float32), np.zeros(8, np.float32)[::2]])
def test_nccl_collectives_refuse_what_nccl_cannot_take(bad):
    nccl = FakeNCCL()
    with pytest.raises(TypeError, match="contiguous \\(n,\\) float32 or float64"):
        NCCLBuffers(nccl, 2, nccl, SimpleNamespace(ptr=0)).allreduce_mean_(bad.view(FakeDeviceArray))
    assert nccl.calls == []


@pytest.mark.parametrize("L", [1, 3])
def test_a_rank_draws_for_its_rows_what_one_process_draws_for_them(L):
    """eps of example i at step t is the eps stream's element block of (t, i): a rank passes its rows' indices
    and gets, row for row, what the whole batch's step gives those rows."""
    model = VAE(VAEConfig(input_dim=6, hidden=(4,), latent_dim=2, mc_samples=L, dtype="float64"), seed=3)
    x = np.random.default_rng(0).random((10, 6))
    examples = np.array([41, 7, 3, 99, 12, 5, 60, 8, 2, 77])
    whole = model.forward(x, noise=model.noise("eps", 10, step=4, rows=examples)).eps.reshape(L, 10, 2).copy()
    lo, hi = 4, 7
    mine = model.forward(x[lo:hi], noise=model.noise("eps", 3, step=4, rows=examples[lo:hi])).eps
    np.testing.assert_array_equal(mine.reshape(L, 3, 2), whole[:, lo:hi])


def test_the_optimizer_steps_on_the_mean_gradient():
    seen = []

    class Buffers:
        def allreduce_mean_(self, buf):
            buf /= 2

    opt = DataParallelOptimizer(SimpleNamespace(step=lambda g: seen.append(g.copy())),
                                SimpleNamespace(buffers=Buffers()))
    opt.step(np.array([2.0, 4.0]))
    np.testing.assert_array_equal(seen[0], [1.0, 2.0])


def group_of_one(engine: str):
    """A DataParallel group over MPI.COMM_SELF: the data-parallel path engaged, with P = 1."""
    if engine == "MPI":
        return DataParallel(MPI.COMM_SELF, MPI, MPIBuffers(MPI.COMM_SELF, MPI))
    import cupy

    from tinyvae.training.distributed import nccl_buffers

    return DataParallel(MPI.COMM_SELF, MPI, nccl_buffers(MPI.COMM_SELF, MPI, cupy))


@pytest.mark.parametrize("backend, engine", [("numpy", "MPI"), pytest.param("cuda", "NCCL", marks=pytest.mark.gpu)])
def test_a_group_of_one_trains_as_one_process(tmp_path, backend, engine):
    # The data-parallel path (row slices, the allreduce, sums, checksums) over MPI.COMM_SELF; on a GPU with NCCL.
    from tinyvae.training.settings import RunSettings
    from tinyvae.training.loop import Trainer

    backend_or_skip(backend)
    group = group_of_one(engine)
    assert group.name == engine
    data = write_dataset(tmp_path, n_train=192, n_test=40, side=6)
    settings = dict(data_dir=str(data), batch_size=64, hidden=(8,), latent_dim=2, eval_batch_size=16, binarize=True)
    alone = Trainer.start(RunSettings.resolve(settings, flags=False), backend, tmp_path / "alone")
    grouped = Trainer.start(RunSettings.resolve(settings, flags=False), backend, tmp_path / "grouped", group=group)
    a, b = alone.run(2, log=lambda *_: None), grouped.run(2, log=lambda *_: None)
    assert [r["test_loss"] for r in a] == [r["test_loss"] for r in b]
    host = alone.backend.to_host
    np.testing.assert_array_equal(host(alone.model.params.data), host(grouped.model.params.data))


@pytest.mark.gpu
def test_nccl_collectives_on_the_gpu():
    cupy = backend_or_skip("cuda").xp
    buffers = group_of_one("NCCL").buffers
    for dtype in (cupy.float32, cupy.float64):
        a = cupy.arange(1, 2**20 + 1, dtype=dtype)
        buffers.allreduce_mean_(a)
        buffers.broadcast_(a)
        cupy.cuda.get_current_stream().synchronize()
        np.testing.assert_array_equal(cupy.asnumpy(a), np.arange(1, 2**20 + 1, dtype=dtype))


# -- under mpirun -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # 320 = 5 batches of 64 (each splits over 2 ranks), 72 test images: test batches of 40 and 32.
    return write_dataset(tmp_path_factory.mktemp("data"), n_train=320, n_test=72)


def launch(ranks: int, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``args`` (a Python command line) alone (``ranks`` = 0: no launcher) or under ``mpirun -np ranks``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    cmd = [sys.executable, *args]
    if ranks:
        cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


TRAIN = ["-m", "tinyvae.train", "--backend", "numpy", "--batch-size", "64", "--hidden", "32", "--latent-dim", "4"]


def train(ranks, data_dir, out, *extra):
    done = launch(ranks, [*TRAIN, "--data-dir", str(data_dir), "--out", str(out), *extra])
    assert done.returncode == 0, done.stderr
    return done


def losses_of(run_dir):
    return [json.loads(line)["test_loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_take_the_steps_of_one_in_float64(tmp_path, data_dir):
    for ranks, out in ((0, tmp_path / "one"), (2, tmp_path / "two")):
        out.mkdir()
        done = launch(ranks, [str(WORKER), "float64", str(out), str(data_dir)])
        assert done.returncode == 0, done.stderr
    for name in ("vae", "cvae", "gaussian-learned", "dae-mask", "dae-gaussian", "cae", "conv-cvae", "iwae", "vamp",
                 "vqvae"):
        one, two = np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "two" / f"{name}.npy")
        assert one.dtype == np.float64
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=0, err_msg=name)
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"{name}_metrics.npy"),
                                   np.load(tmp_path / "one" / f"{name}_metrics.npy"), rtol=1e-12, err_msg=name)
        # every draw (op, stream key, step, example) of one process is made by exactly one of the two ranks,
        # and each rank draws for half of the rows: its own
        draws = lambda run, r: [tuple(d) for d in np.load(tmp_path / run / f"{name}_draws_{r}.npy", allow_pickle=True)]
        alone, (r0, r1) = draws("one", 0), (draws("two", 0), draws("two", 1))
        assert bool(alone) == (name not in ("cae", "vqvae")) and sorted(r0 + r1) == sorted(alone), name  # nothing drawn
        assert len(r0) == len(r1) == len(alone) // 2 and not set(r0) & set(r1), name


def test_two_ranks_train_as_one_process_in_float32(tmp_path, data_dir):
    train(0, data_dir, tmp_path / "one", "--epochs", "3")
    done = train(2, data_dir, tmp_path / "two", "--epochs", "3")
    assert "data-parallel over 2 ranks (MPI)" in done.stdout
    assert done.stdout.count("run directory:") == 1  # rank 0 alone speaks
    np.testing.assert_allclose(losses_of(tmp_path / "two"), losses_of(tmp_path / "one"), rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_backend_auto_picks_the_engine_of_the_backend_it_picks(tmp_path, data_dir):
    from tinyvae.backends import get_backend

    if get_backend("auto").name == "cuda":
        pytest.skip("auto picks cuda here: two ranks would need two GPUs (NCCL takes one per rank)")
    done = launch(2, [*TRAIN[:2], *TRAIN[4:], "--backend", "auto", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"),
                      "--epochs", "1"])
    assert done.returncode == 0, done.stderr
    assert "(backend numba" in done.stdout and "data-parallel over 2 ranks (MPI)" in done.stdout  # no GPU here


def test_one_rank_under_mpirun_changes_nothing(tmp_path, data_dir):
    train(0, data_dir, tmp_path / "alone", "--epochs", "1")
    done = train(1, data_dir, tmp_path / "np1", "--epochs", "1")
    assert "data-parallel" not in done.stdout
    assert losses_of(tmp_path / "np1") == losses_of(tmp_path / "alone")


@pytest.mark.parametrize("first, then", [(2, 0), (0, 2)])
def test_a_run_resumes_under_another_number_of_ranks(tmp_path, data_dir, first, then):
    train(0, data_dir, tmp_path / "straight", "--epochs", "3")
    train(first, data_dir, tmp_path / "run", "--epochs", "2")
    done = launch(then, [*TRAIN, "--resume", str(tmp_path / "run"), "--epochs", "3"])
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(losses_of(tmp_path / "run"), losses_of(tmp_path / "straight"), rtol=1e-5)


@pytest.mark.parametrize("kind, expect", [("data", "error: rank 1 of 2: planted: rank 1 cannot read batch 7"),
                                          ("bug", "RuntimeError: planted bug at step 7")])
def test_a_failing_rank_ends_the_job_and_the_last_checkpoint_stays(tmp_path, data_dir, kind, expect):
    # Rank 1 fails at its 7th step: the 2nd of epoch 2 (5 steps an epoch). Rank 0 is then in the allreduce.
    out = tmp_path / "run"
    start = time.perf_counter()
    done = launch(2, [str(WORKER), "fail", kind, "7", "--", *TRAIN[2:], "--data-dir", str(data_dir), "--out", str(out),
                      "--epochs", "3"], timeout=60)
    assert time.perf_counter() - start < 30
    assert done.returncode != 0
    assert expect in done.stderr
    tensors, meta = load_checkpoint(out / "checkpoint.safetensors")
    assert meta["epoch"] == 1 and len(losses_of(out)) == 1


def test_a_rank_that_cannot_start_says_so_alone_and_no_rank_waits(tmp_path, data_dir):
    out = tmp_path / "run"
    start = time.perf_counter()
    done = launch(2, [str(WORKER), "fail", "start", "0", "--", *TRAIN[2:], "--data-dir", str(data_dir), "--out",
                      str(out), "--epochs", "2"], timeout=60)
    assert time.perf_counter() - start < 30 and done.returncode != 0
    assert "error: rank 1 of 2: planted: rank 1 cannot read its data" in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "63"], "--batch-size 63 is the global batch and must split evenly over the 2 ranks"),
    (["--model", "sparse-ae"], "sparse-ae cannot train data-parallel"),
])
def test_a_run_that_cannot_be_data_parallel_is_refused(tmp_path, data_dir, extra, message):
    out = tmp_path / "run"
    done = launch(2, [*TRAIN, "--data-dir", str(data_dir), "--out", str(out), *extra])
    assert done.returncode != 0
    assert f"error: rank 0 of 2: {message}" in done.stderr
    assert done.stderr.count("error:") == 1, done.stderr  # every rank fails alike: rank 0 alone says it
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_a_launch_of_several_ranks_without_mpi4py_is_an_error_not_p_separate_runs(monkeypatch):
    from tinyvae.training.distributed import from_environment

    assert from_environment("numpy", env={}) is None  # no launcher: mpi4py is not even imported
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert from_environment("numpy", env={"OMPI_COMM_WORLD_SIZE": "1"}) is None
    with pytest.raises(ImportError, match="started by MPI with 2 ranks, but mpi4py is not installed"):
        from_environment("numpy", env={"OMPI_COMM_WORLD_SIZE": "2"})


def test_ranks_whose_weights_differ_stop_the_run(tmp_path, monkeypatch):
    from tinyvae.training.settings import RunSettings
    from tinyvae.training.loop import Trainer

    data = write_dataset(tmp_path, n_train=128, n_test=32, side=6)
    group = group_of_one("MPI")
    monkeypatch.setattr(group, "checksums", lambda host: [0x1234, 0xBEEF])
    settings = RunSettings.resolve(dict(data_dir=str(data), batch_size=64, hidden=(8,), latent_dim=2,
                                        eval_batch_size=16), flags=False)
    trainer = Trainer.start(settings, "numpy", tmp_path / "run", group=group)
    with pytest.raises(DataParallelError, match="after epoch 1, the ranks' weights differ .*00001234, 0000beef"):
        trainer.run(2, log=lambda *_: None)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_ctrl_c_under_mpirun_names_the_checkpoint_on_every_rank(tmp_path, data_dir):
    import signal

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, *TRAIN,
                            "--data-dir", str(data_dir), "--out", str(out), "--epochs", "100000"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends mpirun
    _, err = job.communicate(timeout=60)
    assert job.returncode != 0
    assert "interrupted: rank " in err and "of 2: stopped after epoch" in err and "is intact: continue with" in err
    _, meta = load_checkpoint(out / "checkpoint.safetensors")
    assert meta["epoch"] == len(losses_of(out)) >= 1
