"""Finite-difference checks of the whole VAE's hand-derived gradient, in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvae import gradcheck
from tinyvae.models import VAE, VAEConfig

TOL = 1e-6


def _check(config, B, beta, seed=0, x_kind="uniform", max_per_tensor=None):
    rng = np.random.default_rng(seed)
    model = VAE(config, seed=seed + 1)
    x = rng.random((B, config.input_dim))
    if x_kind == "binary":
        x = np.round(x)
    elif x_kind == "real":  # any real values: the Gaussian decoder's data
        x = rng.normal(0.5, 1.0, x.shape)
    if config.likelihood == "gaussian-learned":  # move the log-variance off its initial 0
        model.params.view("decoder.logvar")[...] = rng.normal(0, 0.5, config.input_dim)
    y = rng.integers(0, config.n_classes, B) if config.n_classes else None
    results = gradcheck.check_model(model, x, max_per_tensor=max_per_tensor, seed=seed, noise_seed=seed, beta=beta,
                                    y=y)
    assert set(results) == set(model.params.names)  # every parameter tensor is checked
    for name, r in results.items():
        assert r.tested > 0, name
        assert r.max_rel_error < TOL, (name, r)
        assert r.max_noise_ratio < 2.0, (name, r)
    return results


@pytest.mark.parametrize("D,hidden,K,B,beta", [
    (12, (8,), 3, 4, 1.0),
    (20, (10, 6), 4, 5, 0.5),
    (16, (), 2, 3, 4.0),
    (9, (7, 5, 3), 2, 1, 0.0),
])
def test_vae_gradient_every_element(D, hidden, K, B, beta):
    _check(VAEConfig(D, hidden, K, "float64"), B, beta)


def test_vae_gradient_binary_targets():
    _check(VAEConfig(15, (9,), 3, "float64"), 6, 1.0, x_kind="binary")


def test_vae_gradient_sampled_elements_of_the_full_size_model():
    """784-400-20 itself, 40 seeded elements per tensor."""
    _check(VAEConfig(784, (400,), 20, "float64"), 3, 1.0, max_per_tensor=40)


@settings(max_examples=15, deadline=None)
@given(D=st.integers(1, 10), hidden=st.lists(st.integers(1, 6), max_size=2), K=st.integers(1, 4),
       B=st.integers(1, 4), beta=st.floats(0, 3), seed=st.integers(0, 100))
def test_vae_gradient_hypothesis_shapes(D, hidden, K, B, beta, seed):
    _check(VAEConfig(D, tuple(hidden), K, "float64"), B, beta, seed=seed)


@pytest.mark.parametrize("likelihood,logvar", [("gaussian", 0.0), ("gaussian", -1.5), ("gaussian-learned", 0.0)])
@pytest.mark.parametrize("hidden", [(7,), (6, 4)])
def test_gaussian_decoder_gradient(likelihood, logvar, hidden):
    _check(VAEConfig(10, hidden, 3, "float64", likelihood=likelihood, decoder_logvar=logvar), 4, 1.0, x_kind="real")


@pytest.mark.parametrize("L", [2, 5])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_monte_carlo_samples_gradient(L, likelihood):
    """L draws of z per image: the repeat of (mu, logvar) backpropagates as a sum over draws."""
    _check(VAEConfig(9, (6,), 3, "float64", likelihood=likelihood, mc_samples=L), 3, 0.7)


@pytest.mark.parametrize("hidden,L", [((6,), 1), ((), 1), ((5, 4), 3)])
def test_conditional_vae_gradient(hidden, L):
    """The one-hot label joins the encoder input and z; every weight, label columns included."""
    _check(VAEConfig(8, hidden, 2, "float64", n_classes=4, mc_samples=L), 5, 1.0)


@settings(max_examples=15, deadline=None)
@given(D=st.integers(1, 8), hidden=st.lists(st.integers(1, 5), max_size=2), K=st.integers(1, 3),
       B=st.integers(1, 3), L=st.integers(1, 3), C=st.integers(0, 3),
       likelihood=st.sampled_from(["bernoulli", "gaussian", "gaussian-learned"]), seed=st.integers(0, 100))
def test_variant_gradient_hypothesis(D, hidden, K, B, L, C, likelihood, seed):
    config = VAEConfig(D, tuple(hidden), K, "float64", likelihood=likelihood, mc_samples=L, n_classes=C)
    _check(config, B, 1.0, seed=seed, x_kind="uniform" if likelihood == "bernoulli" else "real")


def test_gradcheck_refuses_float32():
    with pytest.raises(ValueError, match="float64"):
        gradcheck.check_model(VAE(VAEConfig(4, (3,), 2)), np.zeros((1, 4)), noise_seed=0)


def test_check_model_restores_the_weights():
    model = VAE(VAEConfig(6, (4,), 2, "float64"))
    before = model.params.data.copy()
    gradcheck.check_model(model, np.full((2, 6), 0.5), noise_seed=0)
    np.testing.assert_array_equal(model.params.data, before)


# -- a check that cannot pass by accident -------------------------------------------
def test_a_random_loss_is_refused_not_passed():
    """Without noise_seed a VAE draws new noise at every evaluation: the check refuses rather than reporting 0
    error; with it, or with eps itself, the check passes."""
    model = VAE(VAEConfig(6, (4,), 2, "float64"), seed=0)
    x = np.random.default_rng(0).random((3, 6))
    with pytest.raises(ValueError, match="differs between two calls.*noise_seed="):
        gradcheck.check_model(model, x, max_per_tensor=10)
    gradcheck.assert_close(gradcheck.check_model(model, x, max_per_tensor=10, noise_seed=3), tol=TOL)
    eps = np.random.default_rng(1).standard_normal((3, 2))
    gradcheck.assert_close(gradcheck.check_model(model, x, max_per_tensor=10, eps=eps), tol=TOL)


def test_noise_seed_fixes_the_loss_and_eps_is_its_draw():
    """loss_and_grad(noise_seed=S) is loss_and_grad(eps=E) with E the eps stream of S at step 0, row b
    the example b."""
    from tinyvae import rng

    model = VAE(VAEConfig(6, (4,), 3, "float64", mc_samples=2), seed=0)
    x = np.random.default_rng(0).random((3, 6))
    a = model.loss_and_grad(x, noise_seed=7)
    assert model.loss_and_grad(x, noise_seed=7) == a and model.loss_and_grad(x, noise_seed=8) != a
    z = rng.normals(rng.stream_key(7, "eps"), 0, np.arange(3), 2 * 3)
    eps = np.concatenate([z[:, :3], z[:, 3:]])  # row l B + b: elements l K .. l K + K - 1 of example b
    assert model.loss_and_grad(x, eps=eps) == a
    with pytest.raises(ValueError, match="pass one of them, not both"):
        model.loss_and_grad(x, noise_seed=7, eps=eps)
    with pytest.raises(ValueError, match="seed must be an int"):
        model.loss_and_grad(x, noise_seed=-1)


def test_a_tensor_with_nothing_testable_is_an_error(monkeypatch):
    model = VAE(VAEConfig(6, (4,), 2, "float64"), seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 6)), rng.standard_normal((3, 2))
    patterns = iter(range(10**6))  # every evaluation sees another ReLU pattern: every element is skipped
    monkeypatch.setattr(gradcheck, "_relu_pattern", lambda model, batch: next(patterns))
    with pytest.raises(ValueError, match="no element of encoder.0.weight, .* could be tested"):
        gradcheck.check_model(model, x, max_per_tensor=3, eps=eps)


def test_assert_close_gives_a_pass_or_a_named_failure():
    def softplus(x):  # the objective's terms, and the hand-derived gradient of their sum
        return np.logaddexp(0, x), {"x": 1 / (1 + np.exp(-x))}

    good = gradcheck.check_op(softplus, {"x": np.linspace(-5, 5, 11)}, wrt={"x": 1e-3})
    gradcheck.assert_close(good, tol=1e-8)
    assert good["x"].passed(1e-8) and good["x"].tested == 11

    def wrong(x):
        return np.logaddexp(0, x), {"x": 1 / (1 + np.exp(x))}

    bad = gradcheck.check_op(wrong, {"x": np.linspace(-5, 5, 11)}, wrt={"x": 1e-3})
    with pytest.raises(AssertionError, match=r"x: max_rel_error .* \(tested 11"):
        gradcheck.assert_close(bad)
    with pytest.raises(AssertionError, match="nothing tested"):
        gradcheck.assert_close({"w": gradcheck.CheckResult(0.0, tested=0, skipped=4)})


def test_check_op_takes_floats_and_refuses_float32_and_integers():
    cube = lambda t: (np.array([t ** 3]), {"t": 3 * t ** 2})
    assert gradcheck.check_op(cube, {"t": 2.0}, wrt={"t": 1e-3})["t"].passed(1e-10)
    for bad in (np.float32(2.0), np.arange(3), np.arange(3, dtype=np.float32)):
        with pytest.raises(TypeError, match="float64 inputs; 't' is"):
            gradcheck.check_op(cube, {"t": bad}, wrt={"t": 1e-3})
