"""The VampPrior: its prior, its single-sample KL and its hand-derived gradient (the encoder's and the
pseudo-inputs' included), against finite differences, PyTorch's autograd in float64, the fused backends and
the training command."""

import math

import numpy as np
import pytest

import tinyvae
from torch_grads import assert_autograd_agrees, torch_params
from fused_backends import FUSED_BACKENDS, assert_same_step, backend_or_skip
from tinyvae import gradcheck
from tinyvae.models.vamp import VampVAE


def vamp(dtype="float64", backend="numpy", seed=0, **kw):
    model = tinyvae.build(**{**dict(prior="vamp", pseudo_inputs=6, input_dim=12, hidden=(7,), latent_dim=3,
                                    dtype=dtype, backend=backend), **kw})
    model.pseudo[...] = model.xp.asarray(np.random.default_rng(seed).random(model.pseudo.shape), model.dtype)
    return model


@pytest.mark.parametrize("kw", [dict(), dict(likelihood="gaussian-learned"), dict(mc_samples=3), dict(pseudo_inputs=1),
                                dict(arch="conv", hidden=(), channels=(2, 3), input_dim=63, data_shape=(1, 7, 9))],
                         ids=["bernoulli", "gaussian-learned", "L=3", "one-pseudo-input", "conv"])
def test_the_gradient_matches_finite_differences(kw):
    model = vamp(**kw)
    assert isinstance(model, VampVAE) and "prior.pseudo_inputs" in model.params.names
    rng = np.random.default_rng(1)
    x = rng.random((5, model.config.input_dim))
    if model.config.likelihood == "gaussian-learned":
        model.params.view("decoder.logvar")[...] = rng.normal(0, 0.5, model.config.input_dim)
    results = gradcheck.check_model(model, x, noise_seed=2, beta=0.7)
    assert results["prior.pseudo_inputs"].tested > 0
    gradcheck.assert_close(results, tol=1e-6)


def test_the_loss_and_its_gradient_are_pytorchs_in_float64():
    import torch

    model = vamp(pseudo_inputs=4)
    rng = np.random.default_rng(3)
    x, eps = rng.random((5, 12)), rng.standard_normal((5, 3))
    terms = model.loss_and_grad(x, eps=eps, beta=0.5)
    p = torch_params(model)

    def encode(inp):
        h = torch.relu(inp @ p["encoder.0.weight"].T + p["encoder.0.bias"])
        return h @ p["encoder.mu.weight"].T + p["encoder.mu.bias"], h @ p["encoder.logvar.weight"].T + p["encoder.logvar.bias"]

    X = torch.tensor(x)
    mu, logvar = encode(X)
    z = mu + torch.exp(0.5 * logvar) * torch.tensor(eps)
    logits = torch.relu(z @ p["decoder.0.weight"].T + p["decoder.0.bias"]) @ p["decoder.logits.weight"].T \
        + p["decoder.logits.bias"]
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, X, reduction="none").sum(-1)
    m, lv = encode(p["prior.pseudo_inputs"])
    comps = torch.distributions.Normal(m[None], torch.exp(0.5 * lv)[None]).log_prob(z[:, None]).sum(-1)
    log_p = torch.logsumexp(comps, dim=1) - math.log(4)
    log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    loss = (nll + 0.5 * (log_q - log_p)).mean()
    assert_autograd_agrees(model, terms.loss, loss, p)


def test_the_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    model = vamp(pseudo_inputs=3)
    mu, logvar = model.encode(model.pseudo)
    z = np.random.default_rng(4).standard_normal((7, 3))
    comps = -0.5 * (np.log(2 * np.pi) + logvar[None] + (z[:, None] - mu[None]) ** 2 * np.exp(-logvar[None])).sum(-1)
    np.testing.assert_allclose(model.log_prior(z), np.logaddexp.reduce(comps, axis=1) - np.log(3), rtol=1e-12)
    draws = vamp(pseudo_inputs=3).prior_draws(3000, seed=1)
    # the draws' mean is the components' mean (each picked with probability 1/3)
    assert np.abs(draws.mean(0) - mu.mean(0)).max() < 4 * np.sqrt((np.exp(logvar) + mu ** 2).mean(0).max() / 3000)
    assert model.kl_closed_form(mu, logvar) is None


def test_narrow_components_keep_the_float32_kl_and_gradient():
    """The prior's log density and its gradient's sums expand ``(z - m_p)^2``: with the posteriors' variance at
    exp(-10) and each pseudo-input one of the batch's images, a row's z lies 0.007 from its component's mean and
    1 from 0, the expansion's terms 10^5 times its value. Taken in float64, the float32 model's KL and gradient
    are the float64 model's (to float32's rounding of the network, and a percent of each tensor's largest)."""
    rng = np.random.default_rng(3)
    x = rng.random((6, 12))
    models = [vamp(dtype=dtype, latent_dim=4) for dtype in ("float32", "float64")]
    for model in models:
        model.params.data[...] = models[0].params.data
        model.params.view("encoder.logvar.bias")[...] = -10
        model.pseudo[...] = model.xp.asarray(x, model.dtype)
    eps = rng.standard_normal((6, 4))
    ours, exact = (model.loss_and_grad(x, eps=eps) for model in models)
    assert ours.kl == pytest.approx(exact.kl, abs=2e-5)  # expanded in float32: 4e-4 nats off
    for name in models[0].params.names:  # float32 sums: the logvar head's gradients off by 30 to 50 %
        ours, exact = (m.params.view(name, m.grad) for m in models)
        np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-2 * np.abs(exact).max(), err_msg=name)


@pytest.mark.parametrize("name", FUSED_BACKENDS)
def test_a_fused_backend_takes_the_numpy_step(name):
    x = np.random.default_rng(5).random((32, 784)).astype(np.float32)
    assert_same_step(lambda backend: vamp(pseudo_inputs=20, input_dim=784, hidden=(64,), latent_dim=8,
                                          dtype="float32", backend=backend), backend_or_skip(name), x, noise_seed=6)


def test_the_training_command_starts_the_pseudo_inputs_from_training_images(tiny_data_dir, tmp_path):
    import json

    from tinyvae.evaluate import main as evaluate_main
    from tinyvae.io.datasets import load_dataset
    from tinyvae.train import main
    from tinyvae.training.loop import Trainer
    from tinyvae.training.settings import RunSettings

    settings = RunSettings.resolve({"dataset": "mnist", "data_dir": str(tiny_data_dir), "prior": "vamp",
                                    "pseudo_inputs": 10, "hidden": (16,), "latent_dim": 3}, flags=False)
    trainer = Trainer.start(settings, "numpy", None)
    train = load_dataset("mnist", tiny_data_dir).train.x
    assert all((np.abs(train - u).max(axis=1) == 0).any() for u in trainer.model.pseudo)  # each is an image
    run = tmp_path / "run"
    assert main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--prior", "vamp", "--pseudo-inputs", "10",
                 "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--epochs", "2", "--backend", "numpy",
                 "--out", str(run)]) == 0
    assert (run / "pseudo_inputs_2.png").is_file() and (run / "sample_2.png").is_file()
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["test_loss"] < m[0]["test_loss"]
    assert evaluate_main([str(run), "--k", "16", "--n-images", "10"]) == 0
    r = json.loads((run / "evaluation.json").read_text())
    assert np.isfinite(r["iwae_nll"]) and r["iwae_nll"] <= r["elbo_nll"] + 1.0
    assert tinyvae.load(run, backend="numpy").sample(4, seed=0).shape == (4, 64)
