"""The importance-weighted autoencoder: its bound and its hand-derived gradient, against finite differences,
PyTorch's autograd in float64, the fused backends, and the training command."""

import math

import numpy as np
import pytest

import tinyvae
from torch_grads import assert_autograd_agrees, torch_params
from fused_backends import FUSED_BACKENDS, assert_same_step, backend_or_skip
from tinyvae import gradcheck
from tinyvae.models import IWAE, VAEConfig


def iwae(dtype="float64", backend="numpy", **kw):
    return tinyvae.build(**{**dict(model="iwae", k=4, input_dim=12, hidden=(7,), latent_dim=3, dtype=dtype,
                                   backend=backend), **kw})


@pytest.mark.parametrize("kw", [dict(), dict(likelihood="gaussian"), dict(likelihood="gaussian-learned"),
                                dict(k=1), dict(hidden=(6, 5), k=7),
                                dict(arch="conv", hidden=(), channels=(2, 3), input_dim=63, data_shape=(1, 7, 9))],
                         ids=["bernoulli", "gaussian", "gaussian-learned", "k=1", "two-layers", "conv"])
def test_the_gradient_matches_finite_differences(kw):
    model = iwae(**kw)
    assert isinstance(model, IWAE)
    rng = np.random.default_rng(0)
    x = rng.random((5, model.config.input_dim))
    if model.config.likelihood == "gaussian-learned":
        model.params.view("decoder.logvar")[...] = rng.normal(0, 0.5, model.config.input_dim)
    results = gradcheck.check_model(model, x, noise_seed=3)
    assert set(results) == set(model.params.names)
    gradcheck.assert_close(results, tol=1e-6)


def torch_iwae_loss(model, x, eps):
    """-L_k of each example by PyTorch's autograd on tinyvae's weights (the MLP of one hidden layer)."""
    import torch

    p = torch_params(model)
    k, K = model.config.k, model.config.latent_dim
    X = torch.tensor(x)
    h = torch.relu(X @ p["encoder.0.weight"].T + p["encoder.0.bias"])
    mu = h @ p["encoder.mu.weight"].T + p["encoder.mu.bias"]
    logvar = h @ p["encoder.logvar.weight"].T + p["encoder.logvar.bias"]
    E = torch.tensor(eps).reshape(k, len(x), K)
    z = mu + torch.exp(0.5 * logvar) * E
    d = torch.relu(z @ p["decoder.0.weight"].T + p["decoder.0.bias"])
    logits = d @ p["decoder.logits.weight"].T + p["decoder.logits.bias"]
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, X.expand_as(logits), reduction="none").sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    bound = torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(k)
    return -bound, p


@pytest.mark.parametrize("far", [False, True], ids=["every-draw", "draws-cut"])
def test_the_bound_and_its_gradient_are_pytorchs_in_float64(far):
    """Also with each example's first draw far out in q's tail: its weight, below float64's resolution, is cut
    to 0 and the draw left out of the decoder's backward pass; PyTorch's autograd keeps it."""
    model = iwae(k=6)
    rng = np.random.default_rng(1)
    x, eps = rng.random((4, 12)), rng.standard_normal((6 * 4, 3))
    if far:
        eps[:4] *= 25
    terms = model.loss_and_grad(x, eps=eps)
    assert (np.asarray(model.workspace(4).weights) == 0).sum() == (4 if far else 0)
    theirs, p = torch_iwae_loss(model, x, eps)
    loss = theirs.mean()
    assert_autograd_agrees(model, terms.loss, loss, p)


def test_draws_whose_weight_the_dtype_cannot_resolve_count_as_zero():
    model = iwae(k=6, dtype="float32")
    rng = np.random.default_rng(1)
    x, eps = rng.random((4, 12)), rng.standard_normal((6 * 4, 3))
    eps[:4] *= 18  # each example's first draw far out in q's tail
    model.loss_and_grad(x, eps=eps)
    reference = iwae(k=6)  # float64 resolves more: its cut is at 2^-52
    reference.params.data[...] = model.params.data
    reference.loss_and_grad(x, eps=eps)
    w, w64 = (np.asarray(m.workspace(4).weights).ravel() * 4 for m in (model, reference))
    assert 0 < w64[0] < np.finfo(np.float32).eps and w[0] == 0
    assert ((w == 0) | (w >= np.finfo(np.float32).eps)).all()
    np.testing.assert_allclose(model.grad, reference.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(likelihood="gaussian-learned"), dict(hidden=(6, 5)),
                                dict(arch="conv", hidden=(), channels=(2, 3), input_dim=63, data_shape=(1, 7, 9))],
                         ids=["bernoulli", "gaussian-learned", "two-layers", "conv"])
def test_the_decoder_runs_on_the_draws_of_nonzero_weight_and_the_gradient_is_every_draws(kw, monkeypatch):
    model = iwae(k=6, **kw)
    rng = np.random.default_rng(4)
    x, eps = rng.random((4, model.config.input_dim)), rng.standard_normal((6 * 4, 3))
    eps[[0, 1, 9, 23]] *= 25  # draws far out in q's tail: weights below float64's resolution, cut to 0
    model.loss_and_grad(x, eps=eps)
    ws = model.workspace(4)
    w = np.asarray(ws.weights).ravel()
    cut = np.flatnonzero(w == 0)
    assert 0 < cut.size < w.size and model.kept_rows(ws).tolist() == np.flatnonzero(w).tolist()
    kept, dz = model.grad.copy(), ws.dz.copy()
    assert not dz[cut].any()
    monkeypatch.setattr(IWAE, "kept_rows", lambda self, ws: ws.kept.every)  # as on a GPU: every draw
    model.loss_and_grad(x, eps=eps)
    np.testing.assert_allclose(model.grad, kept, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ws.dz, dz, rtol=1e-13, atol=1e-15)


def test_the_bound_is_tighter_than_the_elbo_of_the_same_draws():
    model = iwae(k=8)
    x = np.random.default_rng(2).random((6, 12))
    ws = model.forward_loss(model.as_batch(x), noise=model.noise("eps", 6, seed=0))
    bound, w = model.bound_rows(ws)
    per_draw = -log_weights(ws).reshape(8, 6)
    assert np.all(bound <= per_draw.mean(axis=0) + 1e-12)  # Jensen: -L_k <= the mean of -log w_j
    np.testing.assert_allclose(w.reshape(8, 6).sum(axis=0), 1.0)
    one = iwae(k=1)
    one.params.data[...] = model.params.data
    ws1 = one.forward_loss(one.as_batch(x), noise=one.noise("eps", 6, seed=0))
    np.testing.assert_allclose(one.bound_rows(ws1)[0], -log_weights(ws1))  # L_1 is one draw's log weight


def log_weights(ws):
    """Each draw's ``log p(x, z) - log q(z|x)``, from its terms as written in the module doc."""
    K = ws.z.shape[1]
    return (-ws.nll - 0.5 * (ws.z * ws.z).sum(axis=1) + 0.5 * (ws.eps * ws.eps).sum(axis=1)
            + 0.5 * ws.heads[:, K:].sum(axis=1))


def test_beta_and_labels_are_refused():
    with pytest.raises(ValueError, match="no KL term to weigh"):
        iwae().loss_and_grad(np.zeros((2, 12)), beta=0.5, noise_seed=0)
    with pytest.raises(ValueError, match="iwae takes no labels"):
        VAEConfig(model="iwae", n_classes=3)
    with pytest.raises(ValueError, match="--k does not apply to --model vae"):
        from tinyvae.training.settings import RunSettings
        RunSettings.resolve({"k": 7})


@pytest.mark.parametrize("name", FUSED_BACKENDS)
def test_a_fused_backend_takes_the_numpy_steps(name):
    x = np.random.default_rng(3).random((32, 784)).astype(np.float32)
    # The weights are a softmax of log w, each a sum of 784 float32 terms of about 500 nats: their rounding
    # (1e-4 nats) moves the weights, and so the gradient, by about 1e-5 relative.
    assert_same_step(lambda backend: iwae(k=5, input_dim=784, hidden=(64,), latent_dim=8, dtype="float32",
                                          backend=backend), backend_or_skip(name), x, 1e-4, noise_seed=4)


def test_the_training_command_trains_and_evaluates_an_iwae(tiny_data_dir, tmp_path):
    import json

    from tinyvae.evaluate import main as evaluate_main
    from tinyvae.train import main

    run = tmp_path / "run"
    assert main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--model", "iwae", "--k", "5",
                 "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--epochs", "2", "--backend", "numpy",
                 "--out", str(run)]) == 0
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["test_loss"] < m[0]["test_loss"] and all("test_elbo_loss" in r for r in m)
    assert evaluate_main([str(run), "--k", "16", "--n-images", "10"]) == 0
    r = json.loads((run / "evaluation.json").read_text())
    assert r["iwae_nll"] <= r["elbo_nll"]
