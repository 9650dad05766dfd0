"""Evaluation: the IWAE bound against quadrature, its chunking, active units, and the CLI."""

import json

import numpy as np
import pytest

from tinyvae.evaluate import main
from tinyvae.models.bounds import active_units, importance_weighted
from tinyvae.models import VAE, VAEConfig
from tinyvae.train import main as train_main


def _log_px_by_quadrature(model, x):
    """log p(x) = log integral p(x|z) N(z; 0, 1) dz for a 1-D latent, on a dense grid (trapezoid rule)."""
    z = np.linspace(-9, 9, 6001)
    nll = np.empty(len(z))
    mean = model.decode(z[:, None])
    logits = np.log(mean) - np.log1p(-mean)
    model.backend.bce_with_logits(logits, np.repeat(x, len(z), 0), 0.0, nll, np.empty_like(logits))
    log_f = -nll - 0.5 * z**2 - 0.5 * np.log(2 * np.pi)
    m = log_f.max()
    return m + np.log(np.trapezoid(np.exp(log_f - m), z))


def test_iwae_converges_to_the_true_log_likelihood():
    """K = 1, float64: the bound with k = 20000 is within 0.02 nats of log p(x) by quadrature, below it,
    and above the ELBO."""
    model = VAE(VAEConfig(6, (5,), 1, "float64"), seed=3)
    rng = np.random.default_rng(0)
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    iwae, elbo = importance_weighted(model, x, 20000, seed=1)
    exact = np.array([_log_px_by_quadrature(model, x[i:i + 1]) for i in range(3)])
    assert np.all(elbo < iwae)
    np.testing.assert_allclose(iwae, exact, atol=0.02)
    assert np.all(exact - elbo > 0.05)  # the ELBO is measurably looser than the IWAE bound here


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
def test_chunking_does_not_change_the_estimate(likelihood):
    model = VAE(VAEConfig(7, (6,), 3, "float64", n_classes=2, likelihood=likelihood), seed=1)
    x, y = np.random.default_rng(2).random((4, 7)), np.array([0, 1, 1, 0])
    a = importance_weighted(model, x, 50, y, 5, chunk=50)
    b = importance_weighted(model, x, 50, y, 5, chunk=7)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-12)
    assert np.all(a[0] >= a[1])


def test_iwae_with_one_draw_is_a_single_log_weight():
    """k = 1: both numbers estimate the ELBO from the same draw; only the KL differs (sampled vs closed form)."""
    model = VAE(VAEConfig(5, (4,), 2, "float64"), seed=2)
    x = np.random.default_rng(3).random((6, 5))
    iwae, elbo = importance_weighted(model, x, 1, seed=0)
    iwae_many, elbo_many = importance_weighted(model, x, 4000, seed=0)
    assert np.all(np.isfinite(iwae))
    assert abs(elbo_many.mean() - iwae_many.mean()) < abs(elbo_many.mean()) * 0.2
    assert np.all(iwae_many >= elbo_many)


def test_bad_arguments_are_refused():
    model = VAE(VAEConfig(5, (4,), 2))
    with pytest.raises(ValueError, match="k must be"):
        importance_weighted(model, np.zeros((2, 5)), 0)
    with pytest.raises(ValueError, match="NaN"):
        importance_weighted(model, np.full((2, 5), np.nan), 3)
    with pytest.raises(ValueError, match=r"rows must be the \(2,\) indices >= 0"):
        importance_weighted(model, np.zeros((2, 5)), 3, rows=np.array([0, -1]))


def test_each_image_draws_by_its_index_whatever_the_batch():
    model = VAE(VAEConfig(5, (4,), 2, "float64"), seed=2)
    x = np.random.default_rng(3).random((6, 5))
    whole = importance_weighted(model, x, 30, seed=4)
    parts = [importance_weighted(model, x[i:i + 2], 30, seed=4, rows=np.arange(i, i + 2)) for i in (0, 2, 4)]
    for u, v in zip(whole, zip(*parts)):
        np.testing.assert_allclose(u, np.concatenate(v), rtol=1e-13)


def test_active_units_counts_variances_above_the_threshold():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(20000, 4)) * np.array([1.0, 0.2, 0.05, 0.0])  # variances 1, 0.04, 0.0025, 0
    n, var = active_units(mu)
    assert n == 2
    np.testing.assert_allclose(var, [1.0, 0.04, 0.0025, 0.0], rtol=0.05, atol=1e-12)


def test_evaluate_cli_writes_a_table_and_json(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--batch-size", "32", "--hidden", "16",
            "--latent-dim", "3", "--epochs", "2", "--out", str(run)]
    assert train_main(args) == 0
    assert main([str(run), "--k", "64", "--n-images", "20"]) == 0
    out = capsys.readouterr().out
    assert "IWAE" in out and "active units" in out and f"{run}: epoch 2, backend " in out
    r = json.loads((run / "evaluation.json").read_text())
    assert r["n_images"] == 20 and r["k"] == 64 and 0 <= r["active_units"] <= 3
    assert r["iwae_nll"] <= r["elbo_nll"] and 0 < r["iwae_nll_se"] < 10
    # with the run's seed (the default), the test ELBO is the one the last epoch recorded
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert r["test_loss"] == pytest.approx(last["test_loss"], rel=1e-12)
    assert main([str(run), "--k", "64", "--n-images", "20", "--seed", "5"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["test_loss"] != r["test_loss"]
    assert main([str(run), "--k", "8", "--n-images", "1"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["iwae_nll_se"] is None
    assert main([str(tmp_path / "nothing")]) == 2
    assert main([str(run), "--k", "0"]) == 2


def test_the_standard_error_is_the_sample_deviation_over_root_n():
    from tinyvae.evaluate import standard_error

    assert standard_error(np.array([1.0, 3.0])) == pytest.approx(1.0)  # sd sqrt(2), over sqrt(2)
    v = np.random.default_rng(0).normal(5.0, 2.0, 10000)
    assert standard_error(v) == pytest.approx(0.02, rel=0.03)
    assert standard_error(np.array([4.0])) is None
