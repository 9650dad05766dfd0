"""tinyvae against PyTorch's example VAE: same weights, same batches, same eps, same numbers."""

import numpy as np
import pytest

import torch

from benchmarks.torch_reference import NAMES, load_from, loss_of  # noqa: E402
from tinyvae.models import VAE, VAEConfig  # noqa: E402
from tinyvae.nn.optim import Adam  # noqa: E402


def test_five_adam_steps_match_pytorch_in_float64():
    cfg = VAEConfig(784, (400,), 20, "float64")
    ours = VAE(cfg, seed=1)
    theirs = load_from(ours, torch.float64)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    opt = Adam(ours.params, ours.backend, lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.random((16, 784))
        eps = rng.standard_normal((16, 20))
        terms = ours.loss_and_grad(x, eps=eps)
        opt.step(ours.grad)
        xt = torch.from_numpy(x)
        loss = loss_of(theirs, xt, torch.from_numpy(eps)) / 16  # batch mean, as tinyvae
        opt_t.zero_grad()
        loss.backward()
        grads = {n: getattr(theirs, t).weight.grad.numpy() for t, n in NAMES.items()}
        opt_t.step()
        assert terms.loss == pytest.approx(loss.item(), rel=1e-12)
        for name, g in grads.items():
            np.testing.assert_allclose(ours.params.view(name + ".weight", ours.grad), g, rtol=1e-9, atol=1e-14)
    for tname, name in NAMES.items():
        np.testing.assert_allclose(ours.params.view(name + ".weight"), getattr(theirs, tname).weight.detach().numpy(),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_short_fashion_mnist_run_within_one_percent_of_pytorch():
    from benchmarks.parity import run_parity
    from tinyvae.io.datasets import load_dataset

    data = load_dataset("fashion-mnist")
    rows = run_parity(data, epochs=2, n_train=12800)
    for r in rows:
        assert abs(r["tinyvae_test_loss"] / r["torch_test_loss"] - 1) < 0.01, r
