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


def test_the_tables_pytorch_contenders_compute_tinyvaes_objectives_in_float64():
    """benchmarks.beyond_elbo's PyTorch models and losses, on tinyvae's weights and draws, give tinyvae's numbers:
    the same networks and the same objectives, so that the table compares training, not models."""
    import tinyvae
    from benchmarks.beyond_elbo import iwae_bound
    from benchmarks.torch_reference import iwae_loss, vamp_log_prior, vamp_loss, vq_loss

    rng = np.random.default_rng(0)
    x = (rng.random((6, 784)) < 0.4).astype(np.float64)
    X = torch.from_numpy(x)
    iwae = tinyvae.build(model="iwae", k=3, dtype="float64")
    eps = rng.standard_normal((3, 6, 20))
    theirs = load_from(iwae, torch.float64)
    assert iwae.loss_and_grad(x, eps=eps.reshape(18, 20)).loss == pytest.approx(
        iwae_loss(theirs, X, 3, torch.from_numpy(eps)).item() / 6, rel=1e-12)
    one = iwae.loss_and_grad(x[:1], eps=eps[:, 0]).loss  # -L_3 of the first image
    assert -iwae_bound(theirs, X[0], 3, eps=torch.from_numpy(eps[:, 0])) == pytest.approx(one, rel=1e-12)

    vamp = tinyvae.build(prior="vamp", pseudo_inputs=4, dtype="float64")
    vamp.params.view("prior.pseudo_inputs")[...] = rng.random((4, 784))
    pseudo = torch.from_numpy(np.array(vamp.params.view("prior.pseudo_inputs")))
    theirs = load_from(vamp, torch.float64)
    assert vamp.loss_and_grad(x, eps=eps[0]).loss == pytest.approx(
        vamp_loss(theirs, pseudo, X, torch.from_numpy(eps[0])).item() / 6, rel=1e-12)
    z = rng.standard_normal((5, 20))
    hp = torch.relu(theirs.fc1(pseudo))
    np.testing.assert_allclose(vamp_log_prior(torch.from_numpy(z), theirs.fc21(hp), theirs.fc22(hp)).detach().numpy(),
                               vamp.log_prior(z), rtol=1e-12)
    from tinyvae import rng as streams
    from tinyvae.models.bounds import importance_weighted

    drawn = streams.normals(streams.stream_key(vamp.seed, "evaluate"), streams.EVALUATE_STEPS["iwae"], [0], 7 * 20)
    ours = importance_weighted(vamp, x[:1], 7)[0][0]  # the first image's bound under the VampPrior, 7 draws
    assert iwae_bound(theirs, X[0], 7, pseudo, torch.from_numpy(drawn.reshape(7, 20))) == pytest.approx(ours, rel=1e-12)

    vq = tinyvae.build(model="vqvae", dtype="float64")
    assert vq.loss_and_grad(x).loss == pytest.approx(vq_loss(load_from(vq, torch.float64), X).item() / 6, rel=1e-12)
