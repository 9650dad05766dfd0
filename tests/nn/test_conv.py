"""Convolutions: the unfold and fold ops, the Conv2d and ConvTranspose2d layers, the conv architecture.

Each op against its definition written as loops and against its adjoint; each layer against finite
differences in float64 and, where PyTorch is installed, against ``torch.nn.functional.conv2d`` and
``conv_transpose2d`` and autograd; whole conv models against finite differences; their weights loading
into the equivalent PyTorch modules. The fused backends' ops are compared with the reference in
test_backend_ops.py, their training steps in test_backends_train.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import conv_geometries
import tinyvae
from tinyvae import gradcheck
from tinyvae.models import AEConfig, Autoencoder
from tinyvae.backends import get_backend
from tinyvae.backends.reference import ConvGeometry, fold, unfold
from tinyvae.nn.layers import Conv2d, ConvTranspose2d, Linear
from tinyvae.models import VAE, VAEConfig

ref = get_backend("numpy")


def unfold_by_loops(x, g):
    """The definition of unfold, one value at a time."""
    B = x.shape[0]
    cols = np.zeros((B * g.H_out * g.W_out, g.patch))
    img = x.reshape(B, g.H, g.W, g.C)
    for b in range(B):
        for oy in range(g.H_out):
            for ox in range(g.W_out):
                for i in range(g.kh):
                    for j in range(g.kw):
                        y, xx = oy * g.stride - g.padding + i, ox * g.stride - g.padding + j
                        if 0 <= y < g.H and 0 <= xx < g.W:
                            cols[(b * g.H_out + oy) * g.W_out + ox, (i * g.kw + j) * g.C:(i * g.kw + j + 1) * g.C] \
                                = img[b, y, xx]
    return cols


@settings(max_examples=60, deadline=None)
@given(g=conv_geometries(), B=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_unfold_is_its_definition_and_fold_its_adjoint(g, B, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, g.H * g.W * g.C))
    cols = np.full((B * g.H_out * g.W_out, g.patch), np.nan)
    unfold(x, g, cols)
    np.testing.assert_array_equal(cols, unfold_by_loops(x, g))
    c = rng.standard_normal(cols.shape)
    back = np.full_like(x, np.nan)
    fold(c, g, back)
    assert np.sum(cols * c) == pytest.approx(np.sum(x * back), rel=1e-12, abs=1e-12)


# -- the layers -------------------------------------------------------------------------------------------------

# (C_in, C_out, H, W, k, stride, padding): stride, padding, odd and non-square sizes, C_in != C_out.
CASES = [(1, 2, 6, 6, 4, 2, 1), (3, 2, 7, 5, 3, 2, 1), (2, 3, 5, 6, 2, 1, 0), (2, 2, 9, 7, 4, 3, 2), (3, 1, 4, 4, 1, 1, 0)]


def conv_layer(kind, C_in, C_out, H, W, k, s, p, relu, rng, output_padding=0):
    """A layer of ``kind`` with its own float64 parameter arrays (a convolution of H x W x C_in images, or the
    transposed convolution back to them from its H_out x W_out x C_out grid)."""
    if kind is Conv2d:
        g, shape = ConvGeometry(H, W, C_in, k, k, s, p), (C_out, C_in, k, k)
    else:  # the image the transposed convolution makes is H x W x C_out: H = (H_in - 1) s - 2p + k + op
        g, shape = ConvGeometry(H, W, C_out, k, k, s, p), (C_in, C_out, k, k)
    W_ = rng.standard_normal(shape) / np.sqrt(C_in * k * k)
    b = rng.standard_normal(C_out)
    return kind(W_, b, np.zeros_like(W_), np.zeros_like(b), g, relu=relu)


def run_layer(layer, x, dout):
    """The layer's output, and its gradients for the output gradient ``dout``."""
    out = np.empty((x.shape[0], layer.out_features))
    layer.forward(ref, x, out)
    dx = np.empty_like(x)
    layer.backward(ref, x, out, dout.copy(), dx)
    return out, layer.gW.copy(), layer.gb.copy(), dx


@pytest.mark.parametrize("kind", [Conv2d, ConvTranspose2d])
@pytest.mark.parametrize("case", CASES)
def test_layer_gradients_match_finite_differences(kind, case):
    # The linear map alone: a finite difference across a ReLU's kink is no derivative (the ReLU is
    # bias_act's, checked in the model checks, which skip kinks, and against autograd below).
    rng = np.random.default_rng(sum(case))
    layer = conv_layer(kind, *case, False, rng)
    B = 2
    x = rng.standard_normal((B, layer.in_features))
    R = rng.standard_normal((B, layer.out_features))  # the objective: sum(R * out)

    def fun(W, b, x):
        layer.W[...], layer.b[...] = W, b
        out, gW, gb, dx = run_layer(layer, x, R)
        return (R * out).ravel(), {"W": gW, "b": gb, "x": dx}

    results = gradcheck.check_op(fun, {"W": layer.W.copy(), "b": layer.b.copy(), "x": x},
                                 wrt={"W": 1e-3, "b": 1e-3, "x": 1e-3})
    assert all(r.tested > 0 for r in results.values())
    gradcheck.assert_close(results, tol=1e-7)


@pytest.mark.parametrize("side", ["image_in", "image_out"])
def test_linear_next_to_an_image_is_pytorchs_flatten(side):
    """A Linear reading (writing) a channels-last image equals PyTorch's Linear after ``Flatten`` (before
    ``Unflatten``) of the channels-first image, in its output and all three gradients; the weight keeps
    PyTorch's layout."""
    B, P, C, n = 3, 6, 5, 4
    rng = np.random.default_rng(0)
    o, i = (n, P * C) if side == "image_in" else (P * C, n)
    W, b = rng.standard_normal((o, i)), rng.standard_normal(o)
    layer = Linear(W, b, np.empty_like(W), np.empty_like(b), relu=True, **{side: (P, C)})
    plain = Linear(W, b, np.empty_like(W), np.empty_like(b), relu=True)

    def first(a):  # channels-last rows (p, c) -> channels-first (c, p)
        return a.reshape(-1, P, C).transpose(0, 2, 1).reshape(a.shape[0], -1)

    def last(a):
        return a.reshape(-1, C, P).transpose(0, 2, 1).reshape(a.shape[0], -1)

    x, dy = rng.standard_normal((B, i)), rng.standard_normal((B, o))
    out, dx = np.empty((B, o)), np.empty((B, i))
    layer.forward(ref, x, out)
    layer.backward(ref, x, out, dy.copy(), dx)
    x_plain, dy_plain = (first(x), dy) if side == "image_in" else (x, first(dy))
    out_plain, dx_plain = np.empty((B, o)), np.empty((B, i))
    plain.forward(ref, x_plain, out_plain)
    plain.backward(ref, x_plain, out_plain, dy_plain, dx_plain)
    want_out, want_dx = (out_plain, last(dx_plain)) if side == "image_in" else (last(out_plain), dx_plain)
    np.testing.assert_allclose(out, want_out, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.gW, plain.gW, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.gb, plain.gb, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(layer.W, W)  # PyTorch's layout, untouched


# -- against PyTorch --------------------------------------------------------------------------------------------

def nchw(a, H, W, C):
    return a.reshape(-1, H, W, C).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("kind", [Conv2d, ConvTranspose2d])
@pytest.mark.parametrize("case", CASES)
def test_layers_match_pytorch_and_autograd(kind, case):
    import torch
    F = torch.nn.functional
    C_in, C_out, H, W, k, s, p = case
    rng = np.random.default_rng(7)
    if kind is ConvTranspose2d:  # its input: the grid a convolution of the H x W image gives
        conv = ConvGeometry(H, W, C_out, k, k, s, p)
        H_in, W_in = conv.H_out, conv.W_out
        op = (H - ((H_in - 1) * s - 2 * p + k), W - ((W_in - 1) * s - 2 * p + k))
    else:
        H_in, W_in, op = H, W, None
    layer = conv_layer(kind, *case, True, rng)
    B = 3
    x = rng.standard_normal((B, layer.in_features))
    dout = rng.standard_normal((B, layer.out_features))
    out, gW, gb, dx = run_layer(layer, x, dout)
    xt = torch.tensor(nchw(x, H_in, W_in, C_in), requires_grad=True)
    Wt, bt = torch.tensor(layer.W, requires_grad=True), torch.tensor(layer.b, requires_grad=True)
    if kind is Conv2d:
        yt = F.relu(F.conv2d(xt, Wt, bt, stride=s, padding=p))
        H_o, W_o = layer.g.H_out, layer.g.W_out
    else:
        yt = F.relu(F.conv_transpose2d(xt, Wt, bt, stride=s, padding=p, output_padding=op))
        H_o, W_o = H, W
    assert tuple(yt.shape) == (B, C_out, H_o, W_o)
    np.testing.assert_allclose(nchw(out, H_o, W_o, C_out), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    yt.backward(torch.tensor(nchw(dout, H_o, W_o, C_out)))
    np.testing.assert_allclose(gW, Wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nchw(dx, H_in, W_in, C_in), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_unfold_holds_pytorchs_unfold_in_channels_last_order():
    import torch
    g = ConvGeometry(7, 6, 3, 3, 2, 2, 1)
    x = np.random.default_rng(0).standard_normal((2, g.H * g.W * g.C))
    cols = np.empty((2 * g.H_out * g.W_out, g.patch))
    unfold(x, g, cols)
    theirs = torch.nn.functional.unfold(torch.tensor(nchw(x, g.H, g.W, g.C)), (g.kh, g.kw), padding=g.padding,
                                        stride=g.stride).numpy()  # (B, C kh kw, L), columns (c, i, j)
    ours = cols.reshape(2, g.H_out * g.W_out, g.kh, g.kw, g.C).transpose(0, 4, 2, 3, 1).reshape(theirs.shape)
    np.testing.assert_array_equal(ours, theirs)


# -- whole models -----------------------------------------------------------------------------------------------

def conv_config(cls=VAEConfig, **kw):
    return cls(**{**dict(input_dim=7 * 9, hidden=(), latent_dim=3, dtype="float64", arch="conv", channels=(2, 3),
                         data_shape=(1, 7, 9)), **kw})


RGB = dict(input_dim=3 * 7 * 9, data_shape=(3, 7, 9))


@pytest.mark.parametrize("variant", [dict(), dict(likelihood="gaussian-learned"), dict(n_classes=3),
                                     dict(mc_samples=2), RGB, dict(RGB, n_classes=2)],
                         ids=["vae", "gaussian-learned", "cvae", "L=2", "rgb", "rgb-cvae"])
def test_conv_vae_gradients_match_finite_differences(variant):
    # 7 x 9 images: 3 x 4 after one convolution, 1 x 2 after two; the decoder's output_padding restores 7 x 9.
    model = VAE(conv_config(**variant), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((4, model.config.input_dim))
    y = np.array([0, 1, 1, 0]) if model.config.n_classes else None
    results = gradcheck.check_model(model, x, noise_seed=0, y=y)
    assert {name for name in results} == set(model.params.names)
    gradcheck.assert_close(results, tol=1e-6)


@pytest.mark.parametrize("model", ["ae", "dae", "sparse-ae"])
def test_conv_autoencoder_gradients_match_finite_differences(model):
    net = Autoencoder(conv_config(AEConfig, model=model), seed=0)
    x = np.random.default_rng(1).random((4, 63))
    gradcheck.assert_close(gradcheck.check_model(net, x, noise_seed=0), tol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=(8,)), "hidden does not apply to arch conv"),
    (dict(channels=()), "takes channels"),
    (dict(data_shape=(1, 7, 8)), "data_shape must be \\(C, H, W\\) or \\(D,\\) with input_dim 63 values"),
    (dict(data_shape=(63,)), "the conv architecture takes images"),
    (dict(channels=(2, 3, 4, 5)), "halve 7x9 images to 0x0; they take images of at least 16 pixels a side"),
    (dict(arch="mlp", hidden=(8,)), "channels does not apply to arch mlp"),
])
def test_a_conv_config_that_cannot_be_built_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_config(**kwargs)


def test_cae_refuses_the_conv_architecture():
    with pytest.raises(ValueError, match="cae"):
        conv_config(AEConfig, model="cae")


def test_a_conv_vae_saved_loads_into_the_equivalent_pytorch_modules(tmp_path):
    import torch
    from safetensors.torch import load_file

    from benchmarks.torch_reference import TorchConvVAE

    cfg = VAEConfig(input_dim=28 * 28, hidden=(), latent_dim=5, dtype="float64", arch="conv", channels=(4, 6),
                    data_shape=(1, 28, 28))
    ours = VAE(cfg, seed=2)
    tinyvae.save(ours, tmp_path / "conv.safetensors")
    theirs = TorchConvVAE((1, 28, 28), (4, 6), 5).double()
    theirs.load_state_dict(load_file(tmp_path / "conv.safetensors"), strict=True)
    x = np.random.default_rng(0).random((3, 784))
    mu, logvar = ours.encode(x)
    tmu, tlogvar = theirs.encode(torch.tensor(x))
    np.testing.assert_allclose(mu, tmu.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(logvar, tlogvar.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.decode(mu), torch.sigmoid(theirs.decode(tmu)).detach().numpy().reshape(3, -1),
                               rtol=1e-10, atol=1e-12)


def test_a_conv_model_round_trips_through_tinyvae_load(tmp_path):
    model = VAE(conv_config(dtype="float32", n_classes=3), seed=4)
    tinyvae.save(model, tmp_path / "m.safetensors")
    back = tinyvae.load(tmp_path / "m.safetensors")
    assert back.config == model.config
    np.testing.assert_array_equal(back.params.data, model.params.data)


def test_a_conv_run_resumes_bit_exactly_and_refuses_flags_of_the_other_arch(tiny_data_dir, tmp_path, capsys):
    import json

    from tinyvae.train import main

    args = ["--backend", "numba", "--data-dir", str(tiny_data_dir), "--arch", "conv", "--channels", "4,8",
            "--latent-dim", "3", "--model", "cvae", "--batch-size", "32"]
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["--backend", "numba", "--resume", str(tmp_path / "resumed"), "--epochs", "2"]) == 0
    losses = [[json.loads(line)["test_loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("straight", "resumed")]
    assert losses[0] == losses[1]
    capsys.readouterr()
    assert main([*args, "--hidden", "16", "--out", str(tmp_path / "bad")]) == 2
    assert "--hidden does not apply to --arch conv" in capsys.readouterr().err
    assert main(["--channels", "4", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "bad")]) == 2
    assert "--channels does not apply to --arch mlp" in capsys.readouterr().err


def test_an_rgb_conv_vae_is_pytorchs_on_channels_first_images(tmp_path):
    """(3, H, W) images: tinyvae's channels-last rows, PyTorch's channels-first tensors, the same numbers."""
    import torch
    from safetensors.torch import load_file

    from benchmarks.torch_reference import TorchConvVAE, channels_first

    shape = (3, 10, 12)
    cfg = VAEConfig(input_dim=360, hidden=(), latent_dim=4, dtype="float64", arch="conv", channels=(5, 6),
                    data_shape=shape)
    ours = VAE(cfg, seed=4)
    tinyvae.save(ours, tmp_path / "rgb.safetensors")
    theirs = TorchConvVAE(shape, (5, 6), 4).double()
    theirs.load_state_dict(load_file(tmp_path / "rgb.safetensors"), strict=True)
    x = np.random.default_rng(0).random((3, 360))
    mu, _ = ours.encode(x)
    tmu, _ = theirs.encode(torch.tensor(channels_first(x, shape)))
    np.testing.assert_allclose(mu, tmu.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(channels_first(ours.decode(mu), shape),
                               torch.sigmoid(theirs.decode(tmu)).detach().numpy(), rtol=1e-10, atol=1e-12)
