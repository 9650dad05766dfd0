"""The Python API a user starts from: tinyvae.load, tinyvae.save (tinyvae's names and PyTorch's example's),
encode / decode / reconstruct / sample / per_sample_loss with a seed, tinyvae.__version__."""

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import tinyvae
from tinyvae.models import Autoencoder
from tinyvae.errors import CheckpointError
from tinyvae.models import VAE, VAEConfig
from tinyvae.io.checkpoint import CHECKPOINT
from tinyvae.train import main

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--seed", "7",
        "--epochs", "1", "--backend", "numpy"]


@pytest.fixture
def moved_run(tiny_data_dir, tmp_path):
    """A VAE run whose dataset has since been deleted."""
    run = tmp_path / "run"
    assert main([*ARGS, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 0
    shutil.rmtree(tiny_data_dir)
    return run


def test_a_run_loads_without_its_dataset(moved_run):
    model = tinyvae.load(moved_run, backend="numpy")
    assert isinstance(model, VAE) and model.config.latent_dim == 3
    tensors = load_file(moved_run / CHECKPOINT)
    np.testing.assert_array_equal(model.params.view("encoder.0.weight"), tensors["encoder.0.weight"])
    x = np.random.default_rng(0).random((5, 64))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.reconstruct(x).shape == (5, 64) and model.decode(mu).shape == (5, 64)
    assert tinyvae.load(moved_run / CHECKPOINT, backend="numpy").config == model.config


@pytest.mark.parametrize("extra", [["--model", "cvae"], ["--model", "dae"], ["--model", "cae", "--hidden", ""]])
def test_every_kind_of_model_saves_and_loads_by_itself(extra, tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, *extra, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 0
    model = tinyvae.load(run, backend="numpy")
    path = tinyvae.save(model, tmp_path / "model.safetensors")
    assert set(load_file(path)) == set(model.params.names)  # weights only: no optimiser state
    assert path.stat().st_size < (run / CHECKPOINT).stat().st_size / 2
    again = tinyvae.load(path, backend="numpy")
    assert type(again) is type(model) and again.config == model.config
    np.testing.assert_array_equal(again.params.data, model.params.data)
    assert isinstance(model, Autoencoder) == ("--model" in extra and extra[1] in ("dae", "cae"))


def test_sample_and_per_sample_loss_take_a_seed(moved_run):
    model = tinyvae.load(moved_run, backend="numpy")
    a, b = model.sample(4, seed=1), model.sample(4, seed=1)
    assert a.shape == (4, 64) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, model.sample(4, seed=2)) and 0 <= a.min() and a.max() <= 1
    x = np.random.default_rng(0).random((6, 64))
    nll, kl = model.per_sample_loss(x, seed=3)
    assert nll.shape == kl.shape == (6,)
    np.testing.assert_array_equal(nll, model.per_sample_loss(x, seed=3)[0])
    assert not np.array_equal(nll, model.per_sample_loss(x, seed=4)[0])
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        model.sample(0)


def test_a_conditional_vae_samples_the_classes_asked_for(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, "--model", "cvae", "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 0
    model = tinyvae.load(run, backend="numpy")
    assert model.sample(3, y=np.array([0, 5, 9]), seed=0).shape == (3, 64)
    with pytest.raises(ValueError, match="label"):
        model.sample(3, seed=0)


def test_the_pytorch_example_names_load_strictly_into_its_model(tmp_path):
    import torch
    from safetensors.torch import load_file as torch_load_file

    from benchmarks.torch_reference import TorchVAE

    model = VAE(VAEConfig(784, (400,), 20), "numpy", seed=5)
    path = tinyvae.save(model, tmp_path / "fc.safetensors", names="pytorch-example")
    net = TorchVAE()
    net.load_state_dict(torch_load_file(path), strict=True)
    z = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    with torch.no_grad():
        theirs = torch.sigmoid(net.fc4(torch.relu(net.fc3(torch.from_numpy(z))))).numpy()
    np.testing.assert_allclose(model.decode(z), theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="PyTorch's example names"):
        tinyvae.load(path)


def test_what_pytorchs_example_cannot_hold_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one hidden layer"):
        tinyvae.save(VAE(VAEConfig(784, (400, 200), 20)), tmp_path / "x", names="pytorch-example")
    with pytest.raises(ValueError, match="names must be None"):
        tinyvae.save(VAE(VAEConfig(6, (4,), 2)), tmp_path / "x", names="keras")


def test_load_says_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        tinyvae.load(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        tinyvae.load(tmp_path / "junk.safetensors")
    with pytest.raises(tinyvae.TinyVAEError):
        tinyvae.load(tmp_path / "junk.safetensors")
    with pytest.raises(tinyvae.SettingsError, match="unknown backend 'tpu'"):
        tinyvae.load(tmp_path / "junk.safetensors", backend="tpu")


def test_auto_picks_a_backend_that_runs_here(moved_run):
    assert tinyvae.load(moved_run).backend.name in ("cuda", "numba", "numpy")


def test_the_version_is_the_packages():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert tinyvae.__version__ == project["version"]


@pytest.mark.parametrize("config, shape", [
    ({"arch": "conv", "channels": [2], "hidden": [], "input_dim": 36, "image_shape": [4, 9]}, (1, 4, 9)),
    ({"input_dim": 784, "image_shape": []}, (1, 28, 28)),
    ({"input_dim": 10, "image_shape": []}, (10,)),
], ids=["conv", "mlp-square", "mlp-other"])
def test_a_model_file_from_before_data_shape_is_read(tmp_path, config, shape):
    """Files written before the data's shape was in the config hold image_shape: (H, W) grey images for a
    conv model, and for an mlp square grey images where its inputs are a square."""
    from tinyvae.io.checkpoint import MODEL_FORMAT, save_checkpoint
    from tinyvae.models import VAE, VAEConfig

    new = {k: v for k, v in config.items() if k != "image_shape"}
    model = VAE(VAEConfig(**{**new, "hidden": tuple(new.get("hidden", (5,))), "channels": tuple(new.get("channels", ())),
                             "latent_dim": 2, "data_shape": shape}))
    old = {k: v for k, v in model.config.to_dict().items() if k != "data_shape"} | {"image_shape": config["image_shape"]}
    save_checkpoint(tmp_path / "old.safetensors", model.params.state_dict(), {"model": "vae", "model_config": old},
                    MODEL_FORMAT)
    loaded = tinyvae.load(tmp_path / "old.safetensors", backend="numpy")
    assert loaded.config.data_shape == shape
    np.testing.assert_array_equal(loaded.params.data, model.params.data)
