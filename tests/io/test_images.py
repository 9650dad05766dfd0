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
    images, rows, cols = prior_samples(model, 0, per_row=4)
    assert (rows, cols) == (3, 4) and images.shape == (12, 6)


@pytest.mark.parametrize("what,latent", [("samples", 3), ("interpolate", 3), ("manifold", 2), ("scatter", 2),
                                         ("scatter", 3)])
def test_sample_cli(what, latent, tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--batch-size", "32", "--hidden", "16",
                       "--latent-dim", str(latent), "--epochs", "1", "--out", str(run)]) == 0
    assert main([str(run), "--what", what, "--n", "5", "--pairs", "3", "--steps", "4"]) == 0
    with Image.open(run / f"{what}.png") as im:
        size = im.size
    side = 8 * 7 + 2  # 8x8 test images scaled 7x to reach 56 pixels, plus padding
    expected = {"samples": (8 * side + 2, 8 * side + 2), "interpolate": (6 * side + 2, 3 * side + 2),
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
