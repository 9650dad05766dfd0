"""The VAE of Kingma & Welling (2014), the whole training loop on one page, on tinyvae's layers and ops.

    python3 examples/vae_minimal.py [--epochs 10] [--data-dir /usr/share/datasets/fashion-mnist]

The model of the seeds and of PyTorch's example VAE (examples/vae/main.py): 784-400-20-400-784, ReLU,
a Bernoulli decoder, Adam at 1e-3, batches of 128. Every step is written out here: the forward pass,
the loss (the negative ELBO, in nats per image), and the backward pass derived by hand
(docs/derivations.md), each a call of a named op of the numpy backend (tinyvae/backends/reference.py,
the plain formulas) or a layer of tinyvae/nn. ``python -m tinyvae.train --backend numpy`` trains the
same model to the same numbers; this file is that run with every abstraction but the layers taken away.
"""

from __future__ import annotations

import argparse

import numpy as np

from tinyvae import rng as streams
from tinyvae.backends import get_backend
from tinyvae.io.datasets import load_dataset
from tinyvae.nn import stacks
from tinyvae.nn.layers import Linear
from tinyvae.nn.optim import Adam
from tinyvae.nn.params import FlatParams

ops = get_backend("numpy")  # the reference ops; "numba" gives the fused kernels, the same numbers to rounding


def make_vae(D: int, H: int, K: int, rng: np.random.Generator):
    """All weights in one flat buffer (PyTorch's nn.Linear layout and initialisation), a view per layer.
    The mu and logvar heads are stored back to back, so that one (2K, H) layer computes both."""
    layout = [("encoder.0.weight", (H, D)), ("encoder.0.bias", (H,)),
              ("encoder.mu.weight", (K, H)), ("encoder.logvar.weight", (K, H)),
              ("encoder.mu.bias", (K,)), ("encoder.logvar.bias", (K,)),
              ("decoder.0.weight", (H, K)), ("decoder.0.bias", (H,)),
              ("decoder.logits.weight", (D, H)), ("decoder.logits.bias", (D,))]
    params = FlatParams(layout, np, np.float32)
    grad = params.zeros_like()
    stacks.init_weights(params, rng, np)
    heads = Linear(params.span("encoder.mu.weight", "encoder.logvar.weight", (2 * K, H)),
                   params.span("encoder.mu.bias", "encoder.logvar.bias", (2 * K,)),
                   params.span("encoder.mu.weight", "encoder.logvar.weight", (2 * K, H), grad),
                   params.span("encoder.mu.bias", "encoder.logvar.bias", (2 * K,), grad), relu=False)
    layers = {"fc1": stacks.linear(params, grad, "encoder.0", relu=True), "heads": heads,
              "fc3": stacks.linear(params, grad, "decoder.0", relu=True),
              "fc4": stacks.linear(params, grad, "decoder.logits", relu=False)}
    return params, grad, layers


def forward(layers, x, eps):
    """Encoder, reparameterisation z = mu + exp(logvar / 2) eps, decoder: every activation, kept for backward."""
    B, K = eps.shape
    a = {"x": x, "eps": eps}
    a["h1"] = np.empty((B, layers["fc1"].out_features), np.float32)
    layers["fc1"].forward(ops, x, a["h1"])
    a["heads"] = np.empty((B, 2 * K), np.float32)         # [mu | logvar]
    layers["heads"].forward(ops, a["h1"], a["heads"])
    a["z"], a["kl"] = np.empty((B, K), np.float32), np.empty(B, np.float32)
    ops.reparameterize_kl(a["heads"], eps, a["z"], a["kl"])  # z, and KL(q(z|x) || N(0, I)) in closed form
    a["h3"] = np.empty((B, layers["fc3"].out_features), np.float32)
    layers["fc3"].forward(ops, a["z"], a["h3"])
    a["logits"] = np.empty((B, x.shape[1]), np.float32)
    layers["fc4"].forward(ops, a["h3"], a["logits"])
    return a


def loss_and_backward(layers, a, grad_scale: float):
    """The negative ELBO of each image (BCE from logits plus the KL), and, with ``grad_scale`` 1/B, the
    gradient of the batch mean into the layers' gradient views, layer by layer from the output down."""
    x, eps, B = a["x"], a["eps"], a["x"].shape[0]
    bce, dlogits = np.empty(B, np.float32), np.empty_like(a["logits"])
    ops.bce_with_logits(a["logits"], x, grad_scale, bce, dlogits)  # -log p(x|z), and d/dlogits of its mean
    if grad_scale:
        dh3, dz = np.empty_like(a["h3"]), np.empty_like(a["z"])
        layers["fc4"].backward(ops, a["h3"], a["logits"], dlogits, dh3)
        layers["fc3"].backward(ops, a["z"], a["h3"], dh3, dz)
        dheads = np.empty_like(a["heads"])  # dmu = dz + mu / B; dlogvar = dz eps sigma / 2 + (e^logvar - 1) / 2B
        ops.reparameterize_kl_backward(dz, a["heads"], eps, grad_scale, dheads)
        dh1 = np.empty_like(a["h1"])
        layers["heads"].backward(ops, a["h1"], a["heads"], dheads, dh1)
        layers["fc1"].backward(ops, x, a["h1"], dh1)
    return bce, a["kl"]


def main(argv=None) -> list[tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    data = load_dataset(args.dataset, args.data_dir)
    train_x, test_x = data.train.x, data.test.x            # (N, 784) float32 in [0, 1]
    N, K = len(train_x), args.latent_dim
    params, grad, layers = make_vae(train_x.shape[1], args.hidden, K, np.random.default_rng(args.seed))
    adam = Adam(params, ops, lr=1e-3)
    # Every draw is addressed by (seed, stream, step, example) (tinyvae/rng.py): no generator state.
    eps_key, test_key = streams.stream_key(args.seed, "eps"), streams.stream_key(args.seed, "evaluate")
    steps, history = -(-N // args.batch_size), []
    for epoch in range(args.epochs):
        order, total = streams.generator(args.seed, "shuffle", epoch).permutation(N), np.float32(0)
        for j, i in enumerate(range(0, N, args.batch_size)):
            rows = order[i:i + args.batch_size]            # the examples' indices address their eps
            eps = np.empty((len(rows), K), np.float32)
            ops.draw_normal(eps_key, epoch * steps + j, rows, eps)
            bce, kl = loss_and_backward(layers, forward(layers, train_x[rows], eps), 1.0 / len(rows))
            adam.step(grad)
            total += bce.sum() + kl.sum()
        test_bce = test_kl = 0.0
        for i in range(0, len(test_x), 1000):
            rows = np.arange(i, min(i + 1000, len(test_x)))
            eps = np.empty((len(rows), K), np.float32)  # the same draws every epoch
            ops.draw_normal(test_key, streams.EVALUATE_STEPS["elbo"], rows, eps)
            bce, kl = loss_and_backward(layers, forward(layers, test_x[rows], eps), 0.0)
            test_bce, test_kl = test_bce + float(bce.sum()), test_kl + float(kl.sum())
        history.append((float(total) / N, (test_bce + test_kl) / len(test_x)))
        print(f"epoch {epoch + 1:3d}  train {history[-1][0]:9.4f}  test {history[-1][1]:9.4f} nats/image")
    return history


if __name__ == "__main__":
    main()
