"""Whole training steps and runs: each fused backend against the numpy reference."""

import tracemalloc

import numpy as np
import pytest

from fused_backends import FUSED_BACKENDS as BACKENDS
from fused_backends import backend_or_skip
from tinyvae.models import VAE, VAEConfig
from tinyvae.nn.optim import Adam
from tinyvae.train import main

# float32, norm-wise relative errors ||fused - ref|| / ||ref||. From identical weights the gradients
# agree to float32 rounding (GRAD_RTOL). Along a trajectory the weights drift apart by rounding, and
# a ReLU unit whose pre-activation sits within that drift of 0 can switch state in one backend only,
# which moves its layer's gradient by ~1e-3 (seen: 5e-3 in one layer after one step); so the
# trajectory is judged by its losses (LOSS_RTOL) and weights (PARAM_RTOL). Adam moves an element
# whose gradient is ~0 by +-lr on the sign of rounding noise, so a few thousand of the 652,824
# weights differ by up to 1e-3 per step: 2e-4 norm-wise after 5 steps (seen).
GRAD_RTOL, LOSS_RTOL, PARAM_RTOL = 1e-6, 1e-5, 1e-3
# A convolution's weight and bias gradients sum over every window position of the batch (6,272 to
# 25,088 terms at batch 64, against 64 for a Linear layer's), in another order in each backend: 1.9e-6 seen.
CONV_GRAD_RTOL = 1e-5


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


@pytest.mark.parametrize("name", BACKENDS)
def test_training_steps_match_numpy(name):
    be = backend_or_skip(name)
    cfg = VAEConfig(784, (400,), 20)
    ref, fused = VAE(cfg, "numpy", seed=3), VAE(cfg, be, seed=3)
    opts = Adam(ref.params, ref.backend), Adam(fused.params, fused.backend)
    rng = np.random.default_rng(0)
    for step in range(5):
        x = rng.random((128, 784)).astype(np.float32)
        eps = rng.standard_normal((128, 20)).astype(np.float32)
        a = ref.loss_and_grad(x, eps=eps)
        b = fused.loss_and_grad(x, eps=eps)
        assert b.loss == pytest.approx(a.loss, rel=LOSS_RTOL)
        if step == 0:
            assert _rel(be.to_host(fused.grad), ref.grad) < GRAD_RTOL
        opts[0].step(ref.grad)
        opts[1].step(fused.grad)
    assert _rel(be.to_host(fused.params.data), ref.params.data) < PARAM_RTOL


CONV = dict(arch="conv", hidden=(), channels=(8, 16), data_shape=(1, 28, 28))
VARIANTS = [
    dict(likelihood="gaussian"),
    dict(likelihood="gaussian-learned"),
    dict(mc_samples=3),
    dict(n_classes=10),
    CONV,
    dict(CONV, n_classes=10),
]


def variant_id(variant: dict) -> str:
    """A test id without spaces (tests/planted_faults.py reads ids from pytest's output)."""
    return "-".join(f"{k}={v}".replace(" ", "") for k, v in variant.items()) or "vae"


def config(**variant) -> VAEConfig:
    """The 784-400-20 VAE, or a variant of it."""
    return VAEConfig(**{**dict(input_dim=784, hidden=(400,), latent_dim=20), **variant})


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_variant_gradients_match_numpy(name, variant):
    """Every variant's first gradient, fused backend against numpy, from the same weights and eps."""
    be = backend_or_skip(name)
    cfg = config(**variant)
    ref, fused = VAE(cfg, "numpy", seed=3), VAE(cfg, be, seed=3)
    rng = np.random.default_rng(1)
    x = rng.random((64, 784)).astype(np.float32)
    eps = rng.standard_normal((cfg.mc_samples * 64, 20)).astype(np.float32)
    y = rng.integers(0, 10, 64) if cfg.n_classes else None
    a, b = ref.loss_and_grad(x, y, beta=0.5, eps=eps), fused.loss_and_grad(x, y, beta=0.5, eps=eps)
    assert b.loss == pytest.approx(a.loss, rel=LOSS_RTOL)
    assert _rel(be.to_host(fused.grad), ref.grad) < (CONV_GRAD_RTOL if cfg.arch == "conv" else GRAD_RTOL)


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
@pytest.mark.parametrize("variant", [{}, dict(mc_samples=3), dict(n_classes=10), CONV], ids=variant_id)
def test_every_backend_gives_the_same_per_sample_loss_for_a_seed(name, variant):
    """Each backend draws eps in its own kernels, from the same counters: float32 on every backend against
    the numpy reference in float64 at the same weights, to 1e-4 relative."""
    be = backend_or_skip(name)
    cfg = config(**variant)
    model, ref = VAE(cfg, be, seed=3), VAE(config(**variant, dtype="float64"), "numpy", seed=3)
    ref.params.data[...] = be.to_host(model.params.data)
    rng = np.random.default_rng(2)
    x, y = rng.random((16, 784)).astype(np.float32), (rng.integers(0, 10, 16) if cfg.n_classes else None)
    for got, want in zip(model.per_sample_loss(x, y, seed=11), ref.per_sample_loss(x, y, seed=11)):
        np.testing.assert_allclose(got, want, rtol=1e-4)
    assert not np.allclose(model.per_sample_loss(x, y, seed=12)[0], ref.per_sample_loss(x, y, seed=11)[0])


@pytest.mark.parametrize("variant", [{}, *VARIANTS], ids=variant_id)
def test_numba_training_step_allocates_nothing(variant):
    model = VAE(config(**variant), "numba")
    opt = Adam(model.params, model.backend)
    x = np.random.default_rng(0).random((128, 784)).astype(np.float32)
    y = np.arange(128) % 10 if model.config.n_classes else None
    model.train_step(x, opt, y, 1.0)  # first step: compile and make the workspace
    tracemalloc.start()
    for _ in range(3):
        model.train_step(x, opt, y, 1.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 1024, f"a training step allocated {peak} bytes"


@pytest.mark.parametrize("name", BACKENDS)
def test_cli_trains_to_the_numpy_numbers(name, tiny_data_dir, tmp_path):
    backend_or_skip(name)
    import json

    args = ["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--batch-size", "32", "--hidden", "32",
            "--latent-dim", "4", "--epochs", "3"]
    assert main([*args, "--backend", "numpy", "--out", str(tmp_path / "np")]) == 0
    assert main([*args, "--backend", name, "--out", str(tmp_path / name)]) == 0
    loss = lambda d: [json.loads(l)["test_loss"] for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(loss(name), loss("np"), rtol=1e-3)
