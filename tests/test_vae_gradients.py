"""Finite-difference checks of the whole VAE's hand-derived gradient, in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvae import gradcheck
from tinyvae.model import VAE, VAEConfig

TOL = 1e-6


def _check(config, B, beta, seed=0, x_kind="uniform", max_per_tensor=None):
    rng = np.random.default_rng(seed)
    model = VAE(config, seed=seed + 1)
    x = rng.random((B, config.input_dim))
    if x_kind == "binary":
        x = np.round(x)
    eps = rng.standard_normal((B, config.latent_dim))
    results = gradcheck.check_vae(model, x, eps, beta, max_per_tensor=max_per_tensor, seed=seed)
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


def test_gradcheck_refuses_float32():
    with pytest.raises(ValueError, match="float64"):
        gradcheck.check_vae(VAE(VAEConfig(4, (3,), 2)), np.zeros((1, 4)), np.zeros((1, 2)))


def test_check_vae_restores_the_weights():
    model = VAE(VAEConfig(6, (4,), 2, "float64"))
    before = model.params.data.copy()
    gradcheck.check_vae(model, np.full((2, 6), 0.5), np.ones((2, 2)))
    np.testing.assert_array_equal(model.params.data, before)
