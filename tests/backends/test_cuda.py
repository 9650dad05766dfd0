"""The cuda backend: its launch arithmetic, dtype and stride checks, every kernel
compiling with nvcc and exporting the names the Python side loads; and the
kernels run, on a GPU (``cuda``, marked ``gpu``; skipped with the reason where
CuPy or a device is missing) and in the CPU simulator (``cuda-sim``, marked
``cudasim``): the latent ops on column views, the float64 gradient check of the
whole VAE, the autoencoders against numpy. The op-by-op comparisons with the
reference and the training-step comparisons run for both in
test_backend_ops.py and test_backends_train.py, parametrised over the backends;
the simulator itself is tested in test_cudasim.py.
"""

import re
import shutil
import subprocess

import numpy as np
import pytest

from fused_backends import CUDA_BACKENDS, backend_or_skip
from tinyvae.backends import BackendUnavailable, cuda_ops, get_backend


# -- without a GPU ---------------------------------------------------------------
def test_row_stride_reads_column_views_and_refuses_strided_columns():
    heads = np.zeros((5, 8), np.float32)
    assert cuda_ops.row_stride(heads) == 8
    assert cuda_ops.row_stride(heads[:, 4:]) == 8  # logvar = heads[:, K:]
    assert cuda_ops.row_stride(np.zeros((3, 1))) == 1
    with pytest.raises(ValueError, match="unit column stride"):
        cuda_ops.row_stride(heads[:, ::2])
    with pytest.raises(ValueError, match="unit column stride"):
        cuda_ops.row_stride(heads.T)
    with pytest.raises(ValueError, match="2-D"):
        cuda_ops.row_stride(np.zeros(4))


def test_dtype_and_contiguity_checks():
    assert cuda_ops.suffix(np.float32) == "f32" and cuda_ops.suffix("float64") == "f64"
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda_ops.suffix(np.float16)
    with pytest.raises(TypeError, match="mixed dtypes"):
        cuda_ops._check(np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="contiguous 1-D"):
        cuda_ops._check(np.zeros(6)[::2])


@pytest.mark.parametrize("n,blocks", [(0, 1), (1, 1), (256, 1), (257, 2), (652824, 2551), (10**12, cuda_ops.MAX_BLOCKS)])
def test_grid_covers_every_element(n, blocks):
    assert cuda_ops.grid_for(n) == blocks
    assert cuda_ops.grid_for(n) * cuda_ops.THREADS >= min(n, cuda_ops.MAX_BLOCKS * cuda_ops.THREADS)


def test_column_rows_match_the_header():
    header = (cuda_ops.KERNEL_DIR / "common.cuh").read_text()
    assert re.search(rf"#define TINYVAE_COLUMN_ROWS {cuda_ops.COLUMN_ROWS}\b", header)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("family", sorted(set(cuda_ops.FAMILIES.values())))
def test_kernels_compile_and_export_every_op(family, tmp_path):
    """nvcc -arch=sm_90, warnings as errors; the PTX holds <op>_f32 and <op>_f64 of every op of the family
    (the op's own name for one whose kernel the dtype does not concern)."""
    src = cuda_ops.KERNEL_DIR / f"{family}.cu"
    out = tmp_path / f"{family}.ptx"
    subprocess.run(["nvcc", "-arch=sm_90", "--ptx", "-Werror", "all-warnings", str(src), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    entries = set(re.findall(r"\.entry\s+(\w+)\(", out.read_text()))
    assert entries == cuda_ops.kernel_names(family)


def test_every_op_has_a_kernel_family():
    from tinyvae.backends import OPS

    assert set(OPS) - {"matmul", "matmul_pair"} <= set(cuda_ops.FAMILIES)  # the GEMMs are cuBLAS's
    assert all(callable(getattr(cuda_ops.CudaOps, op)) for op in OPS)


def test_without_a_gpu_the_backend_is_refused_clearly():
    try:
        get_backend("cuda")
    except BackendUnavailable as e:
        assert "cuda backend" in str(e) and ("CuPy" in str(e) or "device" in str(e))
    else:
        pytest.skip("a usable GPU is here")


# -- the kernels running, on a GPU and in the simulator -----------------------------

@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,K", [(1, 1), (33, 20), (1000, 45), (4099, 3)])
def test_latent_ops_on_column_views(name, dtype, B, K):
    """heads (B, 2K) read as two strided halves, z and dz as views of (B, K + C), as in the model."""
    be = backend_or_skip(name)
    from tinyvae.backends import reference

    rng = np.random.default_rng(B)
    heads, eps, dz = rng.normal(0, 2, (B, 2 * K)).astype(dtype), rng.normal(size=(B, K)).astype(dtype), \
        rng.normal(size=(B, K + 3)).astype(dtype)
    d_heads, d_eps, d_dz = (be.xp.asarray(a) for a in (heads, eps, dz))
    z, kl = np.empty((B, K + 3), dtype), np.empty(B, dtype)
    d_z, d_kl = be.xp.zeros((B, K + 3), dtype), be.xp.zeros(B, dtype)
    reference.reparameterize_kl(heads, eps, z[:, :K], kl)
    be.reparameterize_kl(d_heads, d_eps, d_z[:, :K], d_kl)
    g, d_g = np.empty((B, 2 * K), dtype), be.xp.zeros((B, 2 * K), dtype)
    reference.reparameterize_kl_backward(dz[:, :K], heads, eps, 0.3, g)
    be.reparameterize_kl_backward(d_dz[:, :K], d_heads, d_eps, 0.3, d_g)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(be.to_host(d_z)[:, :K], z[:, :K], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(be.to_host(d_kl), kl, rtol=rtol, atol=rtol * np.abs(kl).max())
    np.testing.assert_allclose(be.to_host(d_g), g, rtol=rtol, atol=rtol)
    assert not be.to_host(d_z)[:, K:].any()  # the label columns are left alone


@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_vae_gradient_check_through_the_kernels(name, likelihood):
    """Central finite differences in float64 against the backward pass that runs every kernel of a step: every
    bias and 16 elements of each weight: 126 of the 310, which all took 8 s in the simulator while every
    finite difference ran a backward pass too (the reference's own check, in test_vae_gradients.py, takes every
    element)."""
    be = backend_or_skip(name)
    from tinyvae import gradcheck
    from tinyvae.models import VAE, VAEConfig

    rng = np.random.default_rng(0)
    model = VAE(VAEConfig(12, (8,), 3, "float64", likelihood=likelihood), be, seed=1)
    x, eps = rng.random((4, 12)), rng.standard_normal((4, 3))
    for tensor, r in gradcheck.check_model(model, x, max_per_tensor=16, eps=eps).items():
        assert r.tested > 0 and r.max_rel_error < 1e-6, (tensor, r)


@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("model", ["ae", "dae", "sparse-ae", "cae"])
def test_autoencoders_match_numpy(name, model):
    be = backend_or_skip(name)
    from tinyvae.models import AEConfig, Autoencoder

    cfg = AEConfig(784, () if model == "cae" else (400,), 64, "float64", model=model)
    ref, gpu = Autoencoder(cfg, "numpy", seed=3), Autoencoder(cfg, be, seed=3)
    rng = np.random.default_rng(1)
    x = rng.random((64, 784))
    corrupted = x * (rng.random(x.shape) > 0.3) if model == "dae" else None
    assert gpu.loss_and_grad(x, corrupted=corrupted)[0] == pytest.approx(ref.loss_and_grad(x, corrupted=corrupted)[0], rel=1e-12)
    np.testing.assert_allclose(be.to_host(gpu.grad), ref.grad, rtol=1e-9, atol=1e-12)
