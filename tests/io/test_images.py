"""Pictures from a saved run: the functions and the CLI."""

import numpy as np
import pytest
from PIL import Image

from tinyvae.models import VAE, VAEConfig
from tinyvae.io.images import interpolate, manifold, prior_samples
from tinyvae.sample import main
from tinyvae.train import main as train_main


def test_interpolation_runs_from_a_to_b():
    model = VAE(VAEConfig(6, (5,), 3, "float64"), seed=1)
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 6)), rng.random((2, 6))
    lines = interpolate(model, a, b, steps=5)
    assert lines.shape == (2, 7, 6)
    np.testing.assert_array_equal(lines[:, 0], a)
    np.testing.assert_array_equal(lines[:, -1], b)
    np.testing.assert_allclose(lines[:, 1], model.decode(model.encode(a)[0]))
    np.testing.assert_allclose(lines[:, 5], model.decode(model.encode(b)[0]))


def test_manifold_decodes_the_inverse_cdf_grid():
    model = VAE(VAEConfig(6, (5,), 2, "float64"), seed=1)
    grid = manifold(model, n=3)
    assert grid.shape == (9, 6)
    q = 0.6744897501960817  # Phi^-1(0.75): the grid of n = 3 is Phi^-1 of 1/4, 1/2, 3/4
    np.testing.assert_allclose(grid[0], model.decode(np.array([[-q, q]]))[0])
    np.testing.assert_allclose(grid[8], model.decode(np.array([[q, -q]]))[0])
    with pytest.raises(ValueError, match="2-D latent"):
        manifold(VAE(VAEConfig(6, (5,), 3)))


def test_conditional_prior_samples_share_z_across_rows():
    model = VAE(VAEConfig(6, (5,), 2, n_classes=3), seed=1)
    images, rows, cols = prior_samples(model, 0, n=4)
    assert (rows, cols) == (3, 4) and images.shape == (12, 6)


@pytest.mark.parametrize("what,latent", [("samples", 3), ("interpolate", 3), ("manifold", 2), ("scatter", 2),
                                         ("scatter", 3)])
def test_sample_cli(what, latent, tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--batch-size", "32", "--hidden", "16",
                       "--latent-dim", str(latent), "--epochs", "1", "--out", str(run)]) == 0
    extra = ["--n", "5"] if what in ("samples", "manifold") else ["--pairs", "3", "--steps", "4"]
    assert main([str(run), "--what", what, *extra]) == 0
    with Image.open(run / f"{what}.png") as im:
        size = im.size
    side = 8 * 7 + 2  # 8x8 test images scaled 7x to reach 56 pixels, plus padding
    expected = {"samples": (5 * side + 2, 1 * side + 2), "interpolate": (6 * side + 2, 3 * side + 2),
                "manifold": (5 * side + 2, 5 * side + 2)}
    if what in expected:
        assert size == expected[what]
    assert "wrote" in capsys.readouterr().out


def test_sample_cli_errors(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--hidden", "8", "--latent-dim", "3",
                       "--epochs", "1", "--out", str(run)]) == 0
    assert main([str(run), "--what", "manifold"]) == 2
    assert "2-D latent" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--what", "samples"]) == 2


@pytest.mark.parametrize("argv, needle", [
    (["--what", "samples", "--n", "0"], "--n must be an int from 1 to 10000, got 0"),
    (["--what", "manifold", "--n", "100000"], "--n must be an int from 1 to 10000, got 100000"),
    (["--what", "interpolate", "--steps", "1000000000"], "--steps must be an int from 2 to 1000"),
    (["--what", "interpolate", "--pairs", "0"], "--pairs must be an int from 1 to 1000, got 0"),
    (["--what", "samples", "--seed", "-1"], "--seed must be an int from 0 to"),
    (["--what", "scatter", "--n", "5"], "--what scatter does not take it"),
], ids=["n-0", "n-huge", "steps-huge", "pairs-0", "seed-negative", "n-scatter"])
def test_every_argument_of_the_pictures_is_bounded(tiny_data_dir, tmp_path, capsys, argv, needle):
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--hidden", "8", "--latent-dim", "2",
                       "--epochs", "1", "--out", str(run), "--no-pictures"]) == 0
    capsys.readouterr()
    assert main([str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_samples_take_n_and_a_grid_of_eight_a_row(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--hidden", "8", "--latent-dim", "2",
                       "--epochs", "1", "--out", str(run), "--no-pictures"]) == 0
    assert main([str(run), "--what", "samples", "--n", "11"]) == 0
    with Image.open(run / "samples.png") as im:
        assert im.size == (8 * 58 + 2, 2 * 58 + 2)  # 11 samples: 8 a row, the second row's last 5 tiles empty


def test_a_sample_larger_than_memory_is_refused_naming_n():
    from tinyvae.errors import SettingsError

    with pytest.raises(SettingsError, match="10000000000000 draws decoded at once"):
        VAE(VAEConfig()).sample(10**13)


def test_evaluate_bounds_k(tiny_data_dir, tmp_path, capsys):
    from tinyvae.evaluate import main as evaluate_main

    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--hidden", "8", "--latent-dim", "2",
                       "--epochs", "1", "--out", str(run), "--no-pictures"]) == 0
    capsys.readouterr()
    assert evaluate_main([str(run), "--k", "1000000000000"]) == 2
    assert "--k must be an int from 1 to 1,000,000" in capsys.readouterr().err
