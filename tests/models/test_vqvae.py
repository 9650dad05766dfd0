"""The VQ-VAE: the nearest code on every backend, the straight-through gradient against finite differences of
its surrogate and against PyTorch's autograd (detach for sg) in float64, sampling, perplexity, and the
training command."""

import numpy as np
import pytest

import tinyvae
from torch_grads import assert_autograd_agrees, torch_params
from fused_backends import FUSED_BACKENDS, assert_same_step, backend_or_skip
from tinyvae import gradcheck
from tinyvae.models.vqvae import VQVAE


def vq(dtype="float64", backend="numpy", **kw):
    return tinyvae.build(**{**dict(model="vqvae", codebook_size=6, code_dim=2, latent_dim=3, input_dim=12,
                                   hidden=(7,), dtype=dtype, backend=backend), **kw})


@pytest.mark.parametrize("name", ["numpy", *FUSED_BACKENDS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_nearest_code_is_the_argmin_of_the_distances_on_every_backend(name, dtype):
    be = backend_or_skip(name)
    rng = np.random.default_rng(0)
    z, codebook = rng.normal(size=(300, 7)).astype(dtype), rng.normal(size=(33, 7)).astype(dtype)
    codebook[5] = codebook[4]  # two equal codes: the lower index wins
    z[:3] = codebook[[4, 0, 32]]
    idx, dist = be.xp.zeros(300, np.int64), be.xp.zeros(300, dtype)
    be.nearest_code(be.xp.asarray(z), be.xp.asarray(codebook), idx, dist)
    d2 = ((z.astype(np.float64)[:, None] - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(be.to_host(idx), d2.argmin(axis=1))
    np.testing.assert_allclose(be.to_host(dist), d2.min(axis=1), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-13)
    assert list(be.to_host(idx)[:3]) == [4, 0, 32]


@pytest.mark.parametrize("kw", [dict(), dict(likelihood="gaussian-learned"), dict(commitment=0.0),
                                dict(arch="conv", hidden=(), channels=(2, 3), input_dim=63, data_shape=(1, 7, 9))],
                         ids=["bernoulli", "gaussian-learned", "no-commitment", "conv"])
def test_the_straight_through_gradient_matches_finite_differences_of_its_surrogate(kw):
    model = vq(**kw)
    assert isinstance(model, VQVAE)
    x = np.random.default_rng(1).random((5, model.config.input_dim))
    results = gradcheck.check_model(model, x, noise_seed=0)
    assert set(results) == set(model.params.names)
    gradcheck.assert_close(results, tol=1e-6)


def test_the_loss_and_gradient_are_pytorchs_with_detach_for_sg():
    import torch

    model = vq(commitment=0.3)
    x = np.random.default_rng(2).random((4, 12))
    terms = model.loss_and_grad(x)
    p = torch_params(model)
    X = torch.tensor(x)
    h = torch.relu(X @ p["encoder.0.weight"].T + p["encoder.0.bias"])
    ze = (h @ p["encoder.code.weight"].T + p["encoder.code.bias"]).reshape(4, 3, 2)
    e = p["codebook"]
    idx = ((ze.detach()[:, :, None] - e.detach()[None, None]) ** 2).sum(-1).argmin(-1)
    zq = e[idx]
    st = ze + (zq - ze).detach()  # the straight-through estimator
    logits = torch.relu(st.reshape(4, 6) @ p["decoder.0.weight"].T + p["decoder.0.bias"]) \
        @ p["decoder.logits.weight"].T + p["decoder.logits.bias"]
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, X, reduction="none").sum(-1)
    codebook = ((ze.detach() - zq) ** 2).sum((1, 2))
    commitment = 0.3 * ((ze - zq.detach()) ** 2).sum((1, 2))
    loss = (nll + codebook + commitment).mean()
    assert terms.commitment == pytest.approx(0.3 * terms.codebook, rel=1e-12)
    assert_autograd_agrees(model, terms.loss, loss, p)


def test_samples_draw_codes_uniformly_and_perplexity_counts_the_codes_in_use():
    model = vq(codebook_size=4, latent_dim=500, code_dim=1, input_dim=4, hidden=(3,))
    z = model.prior_draws(2, seed=0).reshape(-1)
    codebook = model.codebook.ravel()
    used = np.array([np.flatnonzero(codebook == v)[0] for v in z])
    assert np.bincount(used, minlength=4).min() > 150  # 1000 draws of 4 codes
    model = vq(codebook_size=8)
    x = np.random.default_rng(3).random((40, 12))
    m = model.evaluate([(model.as_batch(x), None, np.arange(40))])
    counts = np.bincount(model.codes(x).ravel(), minlength=8) / 120
    p = counts[counts > 0]
    assert m["test_perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert 1 <= m["test_perplexity"] <= 8 and m["test_loss"] > m["test_recon"]


@pytest.mark.parametrize("name", FUSED_BACKENDS)
def test_a_fused_backend_takes_the_numpy_step(name):
    x = np.random.default_rng(4).random((32, 784)).astype(np.float32)
    assert_same_step(lambda backend: vq(codebook_size=64, code_dim=8, latent_dim=4, input_dim=784, hidden=(64,),
                                        dtype="float32", backend=backend), backend_or_skip(name), x)


def test_the_training_command_trains_a_vqvae(tiny_data_dir, tmp_path, capsys):
    import json

    from tinyvae.evaluate import main as evaluate_main
    from tinyvae.train import main

    run = tmp_path / "run"
    assert main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--model", "vqvae", "--codebook-size", "32",
                 "--code-dim", "4", "--latent-dim", "4", "--hidden", "32", "--batch-size", "32", "--epochs", "3",
                 "--backend", "numpy", "--out", str(run)]) == 0
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["test_loss"] < m[0]["test_loss"] and all(1 <= r["test_perplexity"] <= 32 for r in m)
    assert (run / "sample_3.png").is_file() and (run / "reconstruction_3.png").is_file()
    assert tinyvae.load(run, backend="numpy").sample(3, seed=0).shape == (3, 64)
    capsys.readouterr()
    assert evaluate_main([str(run)]) == 2
    assert "the ELBO and IWAE bounds need a VAE" in capsys.readouterr().err
