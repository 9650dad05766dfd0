"""The autoencoder family: float64 gradient checks of every term, the penalties
against independent computations, the corruptions, and the training CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr

from fused_backends import FUSED_BACKENDS, backend_or_skip
from tinyvae import gradcheck
from tinyvae.models import AEConfig, Autoencoder
from tinyvae.nn.penalties import (contractive_penalty, sigmoid_into,
                                  sparsity_penalty)
from tinyvae.train import main

TOL = 1e-6


def _sigmoid(a):
    h = np.empty_like(a)
    sigmoid_into(a, h, np)
    return h


def _check(config, B=4, seed=0):
    """Gradient check of every parameter tensor; a dae's corruption is fixed by a noise seed."""
    rng = np.random.default_rng(seed)
    model = Autoencoder(config, seed=seed + 1)
    x = rng.random((B, config.input_dim))
    if config.likelihood != "bernoulli":
        x = rng.normal(0.5, 1.0, x.shape)
    if config.likelihood == "gaussian-learned":
        model.params.view("decoder.logvar")[...] = rng.normal(0, 0.5, config.input_dim)
    fixed = {"noise_seed": 0}
    results = gradcheck.check_model(model, x, **fixed)
    assert set(results) == set(model.params.names)
    for name, r in results.items():
        assert r.tested > 0, name
        assert r.max_rel_error < TOL, (name, r)
        assert r.max_noise_ratio < 2.0, (name, r)
    return model, x, fixed


@pytest.mark.parametrize("config", [
    AEConfig(12, (8,), 3, "float64", model="ae"),
    AEConfig(12, (), 4, "float64", model="ae", code_activation="linear"),
    AEConfig(10, (7, 5), 3, "float64", model="ae", likelihood="gaussian"),
    AEConfig(12, (8,), 3, "float64", model="dae", corruption="mask", noise=0.4),
    AEConfig(12, (), 5, "float64", model="dae", corruption="gaussian", noise=0.5),
    AEConfig(12, (6,), 3, "float64", model="dae", corruption="salt-and-pepper", noise=0.25),
    AEConfig(12, (8,), 5, "float64", model="sparse-ae", rho=0.1, sparsity_weight=3.0),
    AEConfig(9, (), 6, "float64", model="sparse-ae", rho=0.7, sparsity_weight=0.5, likelihood="gaussian-learned"),
    AEConfig(12, (), 4, "float64", model="cae", contractive_weight=2.0),
    AEConfig(8, (), 7, "float64", model="cae", contractive_weight=30.0, likelihood="gaussian"),
], ids=lambda c: f"{c.model}-{c.hidden}-{c.likelihood}-{c.corruption if c.model == 'dae' else ''}")
def test_gradients_of_every_model(config):
    _check(config)


@settings(max_examples=12, deadline=None)
@given(model=st.sampled_from(["ae", "dae", "sparse-ae", "cae"]), D=st.integers(1, 9), K=st.integers(1, 5),
       hidden=st.lists(st.integers(1, 6), max_size=2), B=st.integers(1, 5),
       likelihood=st.sampled_from(["bernoulli", "gaussian", "gaussian-learned"]),
       weight=st.floats(0.0, 20.0), seed=st.integers(0, 100))
def test_gradients_hypothesis(model, D, K, hidden, B, likelihood, weight, seed):
    hidden = () if model == "cae" else tuple(hidden)
    weights = {"sparse-ae": dict(sparsity_weight=weight), "cae": dict(contractive_weight=weight)}.get(model, {})
    config = AEConfig(D, hidden, K, "float64", likelihood=likelihood, model=model, **weights)
    _check(config, B, seed)


def test_the_penalties_change_the_gradient():
    """The checks above would pass with a penalty left out of both loss and gradient: this one would not."""
    x = np.random.default_rng(0).random((6, 10))
    plain = Autoencoder(AEConfig(10, (), 4, "float64", model="ae"), seed=3)
    plain.loss_and_grad(x)
    for model, key in (("sparse-ae", "sparsity_weight"), ("cae", "contractive_weight")):
        m = Autoencoder(AEConfig(10, (), 4, "float64", model=model, **{key: 5.0}), seed=3)
        loss, nll, _ = m.loss_and_grad(x)
        assert loss > nll and nll == pytest.approx(plain.loss_and_grad(x)[1])
        assert np.abs(m.grad - plain.grad).max() > 1e-3


# -- the penalties on their own -------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 6), K=st.integers(1, 5), scale=st.sampled_from([0.1, 1.0, 4.0]),
       rho=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
def test_sparsity_penalty_value_and_gradient(B, K, scale, rho, seed):
    """Against scipy's relative entropy of the batch means, and d/da by finite differences."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, scale, (B, K))
    rho_hat = _sigmoid(a).mean(axis=0)
    expected = 2.5 * np.sum(rel_entr(rho, rho_hat) + rel_entr(1 - rho, 1 - rho_hat))
    assert float(sparsity_penalty(a, rho, 2.5, np)) == pytest.approx(expected, rel=1e-10, abs=1e-12)

    def fun(a):
        da = np.zeros_like(a)
        return np.atleast_1d(sparsity_penalty(a, rho, 2.5, np, da)), {"a": da}

    r = gradcheck.check_op(fun, {"a": a}, {"a": 1e-4})["a"]
    assert r.max_rel_error < TOL and r.max_noise_ratio < 2.0, r


@settings(max_examples=30, deadline=None)
@given(a=st.lists(st.floats(-800, 800), min_size=1, max_size=8), rho=st.floats(0.01, 0.99),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_sparsity_penalty_stays_finite_for_saturated_units(a, rho, dtype):
    """A unit whose sigmoid rounds to 0 or 1 over the whole batch still has a finite penalty and gradient,
    the analytic value where rho_hat is representable."""
    a = np.asarray(a, dtype)[:, None]
    da = np.zeros_like(a)
    value = float(sparsity_penalty(a, rho, 1.0, np, da))
    assert np.isfinite(value) and np.isfinite(da).all()
    a64 = a.astype(np.float64)
    # 1 - rho_hat as the mean of sigmoid(-a): 1 minus a rho_hat near 1 would keep few of its digits
    rho_hat, one_minus_rho_hat = _sigmoid(a64).mean(), _sigmoid(-a64).mean()
    if 1e-300 < rho_hat and 1e-300 < one_minus_rho_hat:
        expected = rel_entr(rho, rho_hat) + rel_entr(1 - rho, one_minus_rho_hat)
        f32 = dtype == np.float32
        assert value == pytest.approx(expected, rel=1e-4 if f32 else 1e-9, abs=1e-5 if f32 else 1e-12)
        assert np.asarray(sparsity_penalty(a, rho, 1.0, np)).dtype == dtype


def _jacobian_norm(W, b, x, step=1e-5):
    """sum over the batch of ||dh/dx||_F^2 by central differences of h = sigmoid(x W^T + b)."""
    total = 0.0
    for row in x:
        J = np.empty((W.shape[0], row.size))
        for i in range(row.size):
            e = np.zeros_like(row)
            e[i] = step
            J[:, i] = (_sigmoid((row + e) @ W.T + b) - _sigmoid((row - e) @ W.T + b)) / (2 * step)
        total += np.sum(J * J)
    return total


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 4), K=st.integers(1, 5), D=st.integers(1, 6), scale=st.sampled_from([0.3, 2.0, 6.0]),
       seed=st.integers(0, 1000))
def test_contractive_penalty_is_the_jacobian_norm(B, K, D, scale, seed):
    """The closed form against the Jacobian by finite differences; its gradient wrt a and W."""
    rng = np.random.default_rng(seed)
    W, b, x = rng.normal(0, scale, (K, D)), rng.normal(0, 1, K), rng.random((B, D))
    h = _sigmoid(x @ W.T + b)
    value, _ = contractive_penalty(h, W, 0.7, np)
    assert float(value) == pytest.approx(0.7 * _jacobian_norm(W, b, x) / B, rel=1e-6, abs=1e-12)

    def fun(a, W):
        h = _sigmoid(a)
        da = np.zeros_like(h)
        value, row_scale = contractive_penalty(h, W, 0.7, np, da)
        return np.atleast_1d(value), {"a": da, "W": row_scale[:, None] * W}

    a = x @ W.T + b
    for name, r in gradcheck.check_op(fun, {"a": a, "W": W}, {"a": 1e-4, "W": 1e-4}).items():
        assert r.max_rel_error < TOL and r.max_noise_ratio < 2.0, (name, r)


# -- the denoising path -----------------------------------------------------------
def _reference_nll(model, inp, target):
    """-log p(target | decoder(encoder(inp))) per image, written out with the numpy reference op."""
    from tinyvae.backends import reference

    h = inp
    for layer in model.encoder.layers[:-1]:
        h = np.maximum(h @ layer.W.T + layer.b, 0)
    code = model.encoder.layers[-1]
    h = _sigmoid(h @ code.W.T + code.b)
    for layer in model.decoder.layers:
        h = h @ layer.W.T + layer.b
        h = np.maximum(h, 0) if layer.relu else h
    loss = np.empty(len(inp))
    reference.bce_with_logits(h, target, 0.0, loss, np.empty_like(h))
    return loss


def test_dae_encodes_the_corrupted_input_and_reconstructs_the_clean_one():
    rng = np.random.default_rng(0)
    model = Autoencoder(AEConfig(12, (7,), 3, "float64", model="dae"))
    x = rng.random((5, 12))
    corrupted = x * (rng.random(x.shape) > 0.5)
    _, nll, _ = model.loss_and_grad(x, corrupted=corrupted)
    assert nll == pytest.approx(_reference_nll(model, corrupted, x).mean(), rel=1e-12)
    assert nll != pytest.approx(_reference_nll(model, corrupted, corrupted).mean(), rel=1e-6)
    # evaluation never corrupts: the test loss is that of the clean input
    metrics = model.evaluate([(x, None, np.arange(5))])
    assert metrics["test_recon"] == pytest.approx(_reference_nll(model, x, x).mean(), rel=1e-12)
    # ... and the denoising loss uses one fixed corruption of the test set, the same at every call
    again = model.evaluate([(x, None, np.arange(5))])
    assert again == metrics and metrics["test_denoising"] != metrics["test_recon"]


@pytest.mark.parametrize("corruption", ["mask", "salt-and-pepper"])
@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_chosen_pixel_corruptions_hit_a_fixed_number_per_image(corruption, noise):
    D, B = 200, 64
    model = Autoencoder(AEConfig(D, (), 4, model="dae", corruption=corruption, noise=noise))
    x = np.full((B, D), 0.5, np.float32)
    hits = []
    for _ in range(2):
        ws = model.forward(x, noise=model.noise("corruption", B))
        hit = ws.xin != 0.5
        assert (hit.sum(axis=1) == round(noise * D)).all()
        assert set(np.unique(ws.xin[hit])) <= ({0.0} if corruption == "mask" else {0.0, 1.0})
        hits.append(hit.copy())
        if corruption == "salt-and-pepper" and noise > 0:  # a fair coin: 3840 or 12800 flips
            n = hit.sum()
            assert abs((ws.xin[hit] == 1).mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    if 0 < noise < 1:
        assert (hits[0] != hits[1]).any(), "the corruption must be fresh each batch"
        assert (hits[0][0] != hits[0][1]).any(), "and differ between images"
        # every pixel is equally likely to be chosen: no position bias across 64 images
        assert hits[0].mean(axis=0).std() < 0.2


def test_gaussian_corruption_adds_noise_of_the_given_std():
    model = Autoencoder(AEConfig(100, (), 4, model="dae", corruption="gaussian", noise=0.2))
    x = np.random.default_rng(0).random((256, 100)).astype(np.float32)
    ws = model.forward(x, noise=model.noise("corruption", 256))
    delta = (ws.xin - x).astype(np.float64)
    assert abs(delta.mean()) < 4 * 0.2 / np.sqrt(delta.size)
    assert delta.std() == pytest.approx(0.2, rel=0.02)


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="cae", hidden=(8,)), "hidden does not apply to model cae"),
    (dict(model="cae", arch="conv", data_shape=(1, 2, 5), channels=(4,)), "one sigmoid layer"),
    (dict(model="sparse-ae", code_activation="linear"), "needs a sigmoid code"),
    (dict(model="sparse-ae", rho=0.0), "rho"),
    (dict(model="dae", noise=1.5), "noise"),
    (dict(model="dae", corruption="gaussian", noise=float("inf")), "noise"),
    (dict(model="cae", hidden=(), contractive_weight=-1.0), ">= 0"),
    (dict(model="vae"), "model must be one of"),
    (dict(corruption="blur"), "corruption"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AEConfig(**{"input_dim": 10, "latent_dim": 3, **kwargs})


def test_bad_input_is_refused():
    model = Autoencoder(AEConfig(6, (), 2, model="dae"))
    x = np.full((3, 6), 0.5)
    with pytest.raises(ValueError, match="shape"):
        model.loss_and_grad(x, corrupted=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="finite"):
        model.loss_and_grad(x, corrupted=np.full((3, 6), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.loss_and_grad(x + 1)
    with pytest.raises(ValueError, match="not ae"):
        Autoencoder(AEConfig(6, (), 2, model="ae")).loss_and_grad(x, corrupted=x)


# -- backends and training -------------------------------------------------------
@pytest.mark.parametrize("name", FUSED_BACKENDS)
@pytest.mark.parametrize("model", ["ae", "dae", "sparse-ae", "cae"])
def test_fused_gradients_match_numpy(name, model):
    """float32, each fused backend against numpy from the same weights."""
    be = backend_or_skip(name)
    cfg = AEConfig(784, () if model == "cae" else (400,), 64, model=model)
    ref, fused = Autoencoder(cfg, "numpy", seed=3), Autoencoder(cfg, be, seed=3)
    rng = np.random.default_rng(1)
    x = rng.random((64, 784)).astype(np.float32)
    corrupted = (x * (rng.random(x.shape) > 0.3)).astype(np.float32) if model == "dae" else None
    a, b = ref.loss_and_grad(x, corrupted=corrupted), fused.loss_and_grad(x, corrupted=corrupted)
    assert b[0] == pytest.approx(a[0], rel=1e-5)
    assert np.abs(be.to_host(fused.grad) - ref.grad).max() / np.abs(ref.grad).max() < 1e-5


ARGS = ["--dataset", "mnist", "--batch-size", "32", "--latent-dim", "6", "--seed", "3", "--epochs", "3"]


@pytest.mark.parametrize("extra", [
    ["--model", "ae", "--hidden", "16"],
    ["--model", "ae", "--hidden", "", "--code-activation", "linear", "--likelihood", "gaussian"],
    ["--model", "dae", "--hidden", "16", "--corruption", "salt-and-pepper", "--noise", "0.2"],
    ["--model", "sparse-ae", "--hidden", "16", "--rho", "0.1"],
    ["--model", "cae", "--hidden", "", "--contractive-weight", "0.5"],
])
def test_every_model_trains(extra, tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main([*ARGS, *extra, "--data-dir", str(tiny_data_dir), "--out", str(run)]) == 0
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    for m in metrics:
        assert m["test_loss"] == m["test_recon"] and np.isfinite(m["test_loss"])
        assert {"test_penalty", "test_mean_activation"} <= set(m)
    assert (run / "reconstruction_3.png").exists() and not (run / "sample_3.png").exists()
    assert (run / "denoising_3.png").exists() == ("dae" in extra)


def test_sparsity_pulls_the_mean_activation_towards_rho(tiny_data_dir, tmp_path):
    runs = {}
    for name, extra in (("ae", ["--model", "ae"]), ("sparse", ["--model", "sparse-ae", "--rho", "0.05",
                                                                "--sparsity-weight", "30"])):
        assert main([*ARGS, *extra, "--hidden", "", "--lr", "0.01", "--epochs", "6", "--data-dir",
                     str(tiny_data_dir), "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    assert runs["sparse"]["test_mean_activation"] < 0.5 * runs["ae"]["test_mean_activation"]


def test_dae_resumes_to_the_same_numbers(tiny_data_dir, tmp_path):
    common = [*ARGS[:-2], "--model", "dae", "--hidden", "8", "--data-dir", str(tiny_data_dir)]
    assert main([*common, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["--resume", str(tmp_path / "b"), "--epochs", "2"]) == 0
    loss = lambda d: [json.loads(l)["test_loss"] for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert loss("a") == loss("b")


@pytest.mark.parametrize("argv,match", [
    (["--model", "ae", "--beta", "2"], "--beta does not apply to --model ae"),
    (["--model", "vae", "--rho", "0.1"], "--rho does not apply"),
    (["--model", "sparse-ae", "--noise", "0.1"], "--noise does not apply"),
    (["--model", "cae", "--hidden", "16"], "--hidden does not apply to --model cae"),
])
def test_cli_refuses_flags_of_other_models(argv, match, tiny_data_dir, tmp_path, capsys):
    assert main([*argv, "--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "r")]) == 2
    assert match in capsys.readouterr().err


def test_vae_tools_refuse_an_autoencoder_run(tiny_data_dir, tmp_path, capsys):
    from tinyvae import evaluate, sample

    run = tmp_path / "run"
    assert main([*ARGS[:-2], "--model", "ae", "--hidden", "8", "--epochs", "1", "--data-dir", str(tiny_data_dir),
                 "--out", str(run)]) == 0
    assert evaluate.main([str(run)]) == 2
    assert sample.main([str(run), "--what", "samples"]) == 2
    assert capsys.readouterr().err.count("holds a ae run") == 2
