"""Model layout, initialisation, bad input, and the optimisers' formulas."""

import numpy as np
import pytest

from tinyvae.backends import get_backend
from tinyvae.models import VAE, VAEConfig
from tinyvae.nn.optim import SGD, Adam


def test_default_model_matches_pytorch_example_sizes():
    m = VAE()
    assert m.params.size == 652824  # 784-400-20 VAE of PyTorch's examples
    assert m.params.shapes["encoder.0.weight"] == (400, 784)
    assert m.params.shapes["encoder.mu.weight"] == (20, 400)
    assert m.params.shapes["decoder.logits.weight"] == (784, 400)
    assert m.params.data.dtype == np.float32


def test_views_share_the_flat_buffers():
    m = VAE(VAEConfig(6, (5, 4), 3))
    m.params.view("decoder.1.bias")[...] = 7
    lo, hi = m.params.offsets["decoder.1.bias"]
    assert (m.params.data[lo:hi] == 7).all()
    heads = m.encoder.layers[-1]
    assert np.shares_memory(heads.W, m.params.view("encoder.logvar.weight"))
    assert np.shares_memory(heads.gW, m.params.view("encoder.mu.weight", m.grad))


def test_init_is_pytorch_linear_default_and_seeded():
    m = VAE()
    for name, shape in m.params.shapes.items():
        bound = 1 / np.sqrt(m.params.shapes[name.rsplit(".", 1)[0] + ".weight"][1])
        v = m.params.view(name)
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound, name
    np.testing.assert_array_equal(VAE(seed=3).params.data, VAE(seed=3).params.data)
    assert not np.array_equal(VAE(seed=3).params.data, VAE(seed=4).params.data)


def test_every_gradient_element_is_written():
    m = VAE(VAEConfig(10, (6, 5), 3))
    m.grad[...] = np.nan
    m.loss_and_grad(np.random.default_rng(0).random((4, 10)))
    assert np.isfinite(m.grad).all()


@pytest.mark.parametrize("x,match", [
    (np.zeros((3, 5)), r"shape \(B, 6\)"),
    (np.zeros(6), r"shape \(B, 6\)"),
    (np.zeros((0, 6)), r"B >= 1"),
    (np.full((2, 6), np.nan), "NaN or inf"),
    (np.full((2, 6), np.inf), "NaN or inf"),
    (np.full((2, 6), 1.5), r"\[0, 1\]"),
    (np.full((2, 6), -0.1), r"\[0, 1\]"),
    (np.zeros((2, 6), dtype=np.int64), "floating-point"),
])
def test_bad_batches_are_refused_and_change_nothing(x, match):
    m = VAE(VAEConfig(6, (4,), 2))
    before = m.params.data.copy()
    with pytest.raises(ValueError, match=match):
        m.loss_and_grad(x)
    np.testing.assert_array_equal(m.params.data, before)


def test_bad_eps_and_z_are_refused():
    m = VAE(VAEConfig(6, (4,), 2))
    with pytest.raises(ValueError, match="eps"):
        m.loss_and_grad(np.zeros((2, 6)), eps=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="z"):
        m.decode(np.full((1, 2), np.nan))


def test_bad_config():
    with pytest.raises(ValueError):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError):
        VAEConfig(dtype="float16")


def test_decode_is_finite_for_huge_logits():
    m = VAE(VAEConfig(4, (3,), 2))
    m.params.data[...] = 1e3
    y = m.decode(np.full((2, 2), 50.0))
    assert np.isfinite(y).all() and ((y >= 0) & (y <= 1)).all()


def test_eps_from_generator_is_seeded():
    x = np.random.default_rng(0).random((3, 784))
    assert VAE(seed=5).loss_and_grad(x) == VAE(seed=5).loss_and_grad(x)


def test_adam_matches_its_formula_over_steps():
    m = VAE(VAEConfig(5, (4,), 2, "float64"))
    opt = Adam(m.params, m.backend, lr=0.01)
    p = m.params.data.copy()
    mom, vel = np.zeros_like(p), np.zeros_like(p)
    rng = np.random.default_rng(0)
    for t in range(1, 4):
        g = rng.normal(size=p.size)
        opt.step(g)
        mom = 0.9 * mom + 0.1 * g
        vel = 0.999 * vel + 0.001 * g * g
        p = p - 0.01 * (mom / (1 - 0.9**t)) / (np.sqrt(vel / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(m.params.data, p, rtol=1e-12)


def test_optimizer_settings_are_checked():
    m = VAE(VAEConfig(5, (4,), 2))
    with pytest.raises(ValueError):
        Adam(m.params, m.backend, lr=0)
    with pytest.raises(ValueError):
        SGD(m.params, m.backend, momentum=1.0)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("tpu")


def test_mc_samples_average_the_single_draw_losses():
    """L draws of z: the nll is the mean of L single-draw nlls from the same eps rows; the KL is unchanged."""
    rng = np.random.default_rng(5)
    x, eps = rng.random((6, 12)), rng.standard_normal((3 * 6, 4))
    many = VAE(VAEConfig(12, (8,), 4, "float64", mc_samples=3), seed=2)
    one = VAE(VAEConfig(12, (8,), 4, "float64"), seed=2)
    terms = many.loss_and_grad(x, eps=eps)
    singles = [one.loss_and_grad(x, eps=eps[l * 6:(l + 1) * 6]) for l in range(3)]
    assert terms.nll == pytest.approx(np.mean([t.nll for t in singles]), rel=1e-12)
    assert terms.kl == pytest.approx(singles[0].kl, rel=1e-12)
    nll, kl = many.per_sample_loss(x)
    assert nll.shape == kl.shape == (6,)


def test_conditional_vae_needs_valid_labels():
    model = VAE(VAEConfig(5, (4,), 2, n_classes=3))
    x = np.full((2, 5), 0.5)
    with pytest.raises(ValueError, match="needs labels"):
        model.loss_and_grad(x)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.loss_and_grad(x, y=np.array([0, 3]))
    with pytest.raises(ValueError, match="integer labels"):
        model.loss_and_grad(x, y=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="unconditional"):
        VAE(VAEConfig(5, (4,), 2)).loss_and_grad(x, y=np.array([0, 1]))
    assert np.isfinite(model.loss_and_grad(x, y=np.array([0, 2])).loss)
    assert model.decode(np.zeros((3, 2)), np.array([0, 1, 2])).shape == (3, 5)


def test_conditional_decoder_uses_the_label():
    model = VAE(VAEConfig(5, (4,), 2, n_classes=3), seed=4)
    z = np.zeros((3, 2))
    out = model.decode(z, np.array([0, 1, 2]))
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[1], out[2])


def test_gaussian_decoder_accepts_real_data_and_reports_a_proper_nll():
    """Fixed log-variance 0: nll = 0.5 * squared error + 0.5 * D * log(2 pi) per sample."""
    model = VAE(VAEConfig(6, (5,), 2, "float64", likelihood="gaussian"), seed=1)
    x = np.random.default_rng(0).normal(size=(3, 6)) * 4  # outside [0, 1]: fine for a Gaussian
    eps = np.zeros((3, 2))
    terms = model.loss_and_grad(x, eps=eps)
    mean = model.decode(model.encode(x)[0])
    expected = np.mean(0.5 * ((x - mean) ** 2).sum(1) + 3 * np.log(2 * np.pi))
    assert terms.nll == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bad", [dict(likelihood="poisson"), dict(mc_samples=0), dict(n_classes=-1),
                                 dict(decoder_logvar=float("inf"))])
def test_bad_variant_configs_are_refused(bad):
    with pytest.raises(ValueError):
        VAEConfig(4, (3,), 2, **bad)
