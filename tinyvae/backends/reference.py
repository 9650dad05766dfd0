"""Reference implementations of tinyvae's named ops: the oracle for every backend.

Each op is written as the plain array expression of its formula, against the
array module of its arguments (NumPy here; the same code runs on CuPy arrays,
where it serves as the "naive CuPy" baseline of the CUDA benchmarks). Fused
backends (numba, cuda) implement the same names with the same signatures and
are tested against these functions.

The likelihoods and the IWAE's importance weights are in
:mod:`tinyvae.backends.reference_likelihood`, imported here.

Conventions shared by all backends:

* ``B`` is the batch size, ``D`` the data dimension, ``K`` the latent size.
* Every op writes into caller-owned ``out`` arrays and returns nothing, so a
  training step can reuse its buffers. ``mu``/``logvar`` (and their gradients)
  may be non-contiguous column views of a ``(B, 2K)`` array.
* Losses are in nats. The per-sample loss of a batch is written to a ``(B,)``
  array; the caller reduces it.
* A random op draws inside itself, from a stream's ``key`` (``(2,)`` uint32), a
  ``step`` and ``rows``, the ``(B,)`` int64 indices of the batch's examples in
  their dataset: :mod:`tinyvae.rng` is the layout and its reference.

Sources: Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014
(K&W below): eq. (3) for the SGVB estimator, eq. (10) and Appendix B for the
analytic KL to N(0, I), Appendix C.1 for the Bernoulli decoder, C.2 for the
Gaussian one. Adam:
Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
Algorithm 1, in the form of PyTorch's ``torch.optim.Adam`` (bias corrections
folded into the step size and the denominator).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import rng
from .arrays import array_module
from .reference_likelihood import (bce_with_logits, gaussian_nll, importance_weights,  # noqa: F401
                                  importance_weights_backward)


def _host(a):
    """``a`` as a NumPy array (a CuPy array copied to the host)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def gather_pixels(pixels, rows, scale, out, next_rows=None, binarize=None):
    """A batch of images from a uint8 training set, scaled: ``out = pixels[rows] * scale``; with
    ``binarize``, a fresh Bernoulli draw of each pixel instead: ``out = u < pixels[rows] * scale``.

    The product is taken in float32 (``scale`` is cast to it), the rule of
    :func:`tinyvae.io.datasets.pixels_to_unit`; a float64 ``out`` receives the
    float32 values, widened.

    Args:
        pixels: ``(N, D)`` uint8 images, the whole set.
        rows: ``(B,)`` integer indices into ``pixels`` (negative ones count from the end).
        scale: the factor, e.g. :data:`tinyvae.io.datasets.PIXEL_SCALE` = float32(1/255) for [0, 1].
        out: ``(B, D)`` float32/float64 receives the batch.
        next_rows: optional indices of the next batch; a backend that can ask the
            CPU to start loading those rows into its caches while the step runs
            does (numba). A hint only: no result depends on it, and this
            reference ignores it.
        binarize: None, or ``(key, step)``: ``u`` is the uniform of element ``d`` of example ``rows[i]``
            (taken modulo N) at ``step`` of the stream of ``key`` (:mod:`tinyvae.rng`), compared in float64.

    Raises:
        IndexError: a row index outside ``[-N, N)``.
        ValueError: ``out`` not of shape ``(B, D)``.
    """
    if out.shape != (rows.shape[0], pixels.shape[1]):
        raise ValueError(f"out must have shape {(rows.shape[0], pixels.shape[1])}, got {out.shape}")
    xp = array_module(pixels)
    xp.multiply(xp.take(pixels, rows, axis=0), xp.float32(scale), out=out)
    if binarize is not None:
        key, step = binarize
        u = rng.uniforms(key, step, _host(rows) % pixels.shape[0], pixels.shape[1])
        out[...] = xp.asarray(u) < out.astype(np.float64)


def take_rows(a, rows, scale, out):
    """Rows of ``a``, each times its factor: ``out[i] = a[rows[i]] * scale[rows[i]]``, or a copy with ``scale``
    None. The IWAE's backward pass runs its decoder on the draws whose weight is not 0 (a draw of weight 0
    adds nothing to any gradient): it takes their rows of each activation, and of the likelihood's gradient
    times the weight (Burda et al. 2015, eq. 14; :mod:`tinyvae.models.iwae`).

    Args:
        a: ``(N, D)`` float32/float64.
        rows: ``(n,)`` integer indices into ``a``'s rows, each in ``[0, N)``.
        scale: ``(N,)`` of ``a``'s dtype, or None.
        out: ``(n, D)`` of ``a``'s dtype, apart from ``a``; receives the rows.

    Raises:
        IndexError: a row index outside ``[0, N)``.
        ValueError: ``out`` not of shape ``(n, D)``, or ``scale`` not of shape ``(N,)``.
    """
    check_take_rows(a, rows, scale, out)
    xp = array_module(a)
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= a.shape[0]):
        raise IndexError(f"take_rows: a row index outside [0, {a.shape[0]})")
    xp.take(a, rows, axis=0, out=out)
    if scale is not None:
        out *= scale[rows][:, None]


def check_take_rows(a, rows, scale, out):
    """``ValueError`` unless the shapes of :func:`take_rows`'s arguments match (the reference's and the CUDA
    launcher's check)."""
    if out.shape != (rows.shape[0], a.shape[1]) or scale is not None and scale.shape != (a.shape[0],):
        raise ValueError(f"take_rows: a {a.shape}, rows {rows.shape}, scale "
                         f"{None if scale is None else scale.shape}, out {out.shape} do not match")


def philox4x32_10(counter, key, out):
    """Random123's Philox4x32-10 (:func:`tinyvae.rng.philox4x32_10`): ``out (n, 4)`` uint32, the words of
    ``counter`` ``(n, 4)`` uint32 under ``key`` ``(2,)`` uint32 (a host array)."""
    out[...] = array_module(out).asarray(rng.philox4x32_10(_host(counter), key))


def draw_normal(key, step: int, rows, out):
    """``out (L*B, K)``: N(0, 1) draws, row ``l*B + b`` holding elements ``l K .. l K + K - 1`` of example
    ``rows[b]`` at ``step`` of the stream of ``key`` (:func:`tinyvae.rng.normals`), rounded to ``out``'s dtype."""
    B, (N, K) = rows.shape[0], out.shape
    z = rng.normals(key, step, _host(rows), (N // B) * K).reshape(B, N // B, K).transpose(1, 0, 2)
    out[...] = array_module(out).asarray(z.reshape(N, K).astype(out.dtype))


CORRUPTION_CODES = {"gaussian": 0, "mask": 1, "salt-and-pepper": 2}  # the kernels' number for each kind


def corrupt(x, key, step: int, rows, kind: str, noise: float, out):
    """A denoising autoencoder's corruption of ``x`` ``(B, D)`` into ``out``, drawn from the stream of ``key`` at
    ``step`` for the examples ``rows`` (Vincent et al. 2008, Sec. 2.3; 2010, Sec. 4.2):

    * ``gaussian``: ``out = x + noise * z``, z the normal of element d;
    * ``mask``: the ``m = round(noise D)`` pixels of smallest word (element d's; ties by index) are set to 0;
    * ``salt-and-pepper``: the same m pixels are set to 0 or 1, 1 where the word of element ``D + d`` is
      below 2^31 (a fair coin).
    """
    xp = array_module(x)
    B, D = x.shape
    host_rows = _host(rows)
    if kind == "gaussian":
        z = rng.normals(key, step, host_rows, D).astype(x.dtype)
        xp.add(x, x.dtype.type(noise) * xp.asarray(z), out=out)
        return
    xp.copyto(out, x)
    m = round(noise * D)
    if m == 0:
        return
    w = rng.words(key, step, host_rows, 2 * D)
    chosen = np.zeros((B, D), bool)
    chosen[np.arange(B)[:, None], np.argsort(w[:, :D], axis=1, kind="stable")[:, :m]] = True
    value = 0 if kind == "mask" else (w[:, D:] < np.uint32(2**31)).astype(x.dtype)
    xp.copyto(out, xp.asarray(np.broadcast_to(value, (B, D)).astype(x.dtype)), where=xp.asarray(chosen))


def reparameterize_kl(heads, eps, z_out, kl_out):
    """Reparameterized sample of q(z|x) and its analytic KL to N(0, I).

    ::

        z  = mu + exp(0.5 * logvar) * eps                    (K&W eq. 10 context, Sec. 2.4)
        kl = -0.5 * sum_k (1 + logvar - mu^2 - exp(logvar))  (K&W Appendix B), nats

    Args:
        heads: ``(B, 2K)`` float array, the encoder's output ``[mu | logvar]``
            (one GEMM computes both heads; the fused kernels read it whole).
        eps: ``(B, K)`` noise, ``eps ~ N(0, I)``.
        z_out: ``(B, K)`` receives z.
        kl_out: ``(B,)`` receives the per-sample KL(q(z|x) || N(0, I)) in nats.
    """
    xp = array_module(heads)
    K = eps.shape[1]
    mu, logvar = heads[:, :K], heads[:, K:]
    xp.add(mu, xp.exp(0.5 * logvar) * eps, out=z_out)
    xp.multiply(xp.sum(1 + logvar - mu * mu - xp.exp(logvar), axis=1), -0.5, out=kl_out)


def reparameterize_kl_draw(heads, key, step: int, rows, eps_out, z_out, kl_out):
    """:func:`reparameterize_kl` drawing its own ``eps``: ``eps_out (L*B, K)`` receives :func:`draw_normal`'s
    draws (for the backward pass), then ``z_out`` and ``kl_out`` as there."""
    draw_normal(key, step, rows, eps_out)
    reparameterize_kl(heads, eps_out, z_out, kl_out)


NEAREST_ROWS = 1024  # rows of z per block of the (rows, K, D) differences: bounds their memory


def nearest_code(z, codebook, idx_out, dist_out):
    """A VQ-VAE's quantisation (van den Oord et al. 2017, Sec. 3.1): for each row of ``z`` ``(N, D)``, the index
    of the nearest row of ``codebook`` ``(K, D)`` by squared Euclidean distance ``sum_d (z_d - e_kd)^2`` (the
    lowest index among equals) into ``idx_out`` ``(N,)`` int64, and that distance into ``dist_out`` ``(N,)``.
    Each distance is that sum taken along d, as the kernels take it."""
    for lo in range(0, z.shape[0], NEAREST_ROWS):
        diff = z[lo:lo + NEAREST_ROWS, None, :] - codebook[None]
        d2 = (diff * diff).sum(axis=2)
        idx_out[lo:lo + NEAREST_ROWS] = d2.argmin(axis=1)
        dist_out[lo:lo + NEAREST_ROWS] = d2.min(axis=1)


def reparameterize_kl_backward(dz, heads, eps, kl_scale, dheads_out):
    """Gradient of ``sum(dz * z) + kl_scale * sum(kl)`` with respect to ``[mu | logvar]``.

    The reparameterization gradient (K&W Sec. 2.4) plus the gradient of the
    analytic KL (K&W Appendix B)::

        dmu     = dz + kl_scale * mu
        dlogvar = 0.5 * dz * eps * exp(0.5 * logvar) + 0.5 * kl_scale * (exp(logvar) - 1)

    Args:
        dz: ``(B, K)`` gradient of the loss with respect to z.
        heads: ``(B, 2K)`` ``[mu | logvar]`` and eps ``(B, K)``, as given to
            :func:`reparameterize_kl`.
        kl_scale: float weight of the summed KL in the loss (``beta / B``).
        dheads_out: ``(B, 2K)`` receives ``[dmu | dlogvar]``.
    """
    xp = array_module(heads)
    K = eps.shape[1]
    mu, logvar = heads[:, :K], heads[:, K:]
    dmu_out, dlogvar_out = dheads_out[:, :K], dheads_out[:, K:]
    xp.add(dz, kl_scale * mu, out=dmu_out)
    xp.add(0.5 * dz * eps * xp.exp(0.5 * logvar), 0.5 * kl_scale * (xp.exp(logvar) - 1), out=dlogvar_out)


def matmul(a, b, out):
    """A GEMM, ``out = a @ b``: every product of weights and activations in every layer.

    Args:
        a: ``(M, K)``; b: ``(K, N)``; either may be a transposed view (``W.T``, ``dout.T``).
        out: ``(M, N)`` C-contiguous, not overlapping ``a`` or ``b``; overwritten.

    Raises:
        ValueError: shapes that do not match.

    BLAS through NumPy here (and in the numpy backend), cuBLAS through CuPy in the cuda backend; the
    numba backend runs BLAS calls on its own threads (:func:`tinyvae.backends.numba_gemm.matmul`).
    """
    array_module(a).matmul(a, b, out=out)


def matmul_pair(a1, b1, out1, a2, b2, out2):
    """Two GEMMs, ``out1 = a1 @ b1``, then ``out2 = a2 @ b2``, each as :func:`matmul` takes it: a layer's weight
    gradient and input gradient, which the numba backend computes side by side, each on half of its
    threads (:func:`tinyvae.backends.numba_gemm.matmul_pair`); where an output overlaps another operand, in
    this order there too.

    Raises:
        ValueError: shapes that do not match.
    """
    matmul(a1, b1, out1)
    matmul(a2, b2, out2)


def bias_act(out, b, relu):
    """Bias add and optional ReLU, in place: ``out = act(out + b)``.

    Args:
        out: ``(B, H)`` GEMM result ``x W^T``; overwritten with the activation.
        b: ``(H,)`` bias.
        relu: apply ``max(., 0)`` when true, else the identity.
    """
    xp = array_module(out)
    out += b
    if relu:
        xp.maximum(out, 0, out=out)


def bias_act_backward(dout, out, relu, db_out):
    """Backward of :func:`bias_act`, in place: the activation's gradient and the bias gradient.

    With ``out = act(a)`` and ``a = x W^T + b``: ``da = dout * (out > 0)`` for
    ReLU (``da = dout`` for the identity) and ``db = sum_batch da``.

    Args:
        dout: ``(B, H)`` gradient with respect to ``out``; overwritten with ``da``.
        out: ``(B, H)`` the layer's outputs (read only for ReLU).
        relu: as given to :func:`bias_act`.
        db_out: ``(H,)`` receives the bias gradient.
    """
    xp = array_module(dout)
    if relu:
        xp.multiply(dout, out > 0, out=dout)
    xp.sum(dout, axis=0, out=db_out)


class ConvGeometry(NamedTuple):
    """A convolution's image and window: ``(H, W, C)`` input images, a ``(kh, kw)`` window moved by
    ``stride`` over the image padded with ``padding`` zeros on each side (the same in both directions).

    Images are stored channels-last, each a row of ``H * W * C`` values, ``(y, x, c)`` at ``(y * W + x) * C + c``.
    """

    H: int
    W: int
    C: int
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0

    @property
    def H_out(self) -> int:
        """Window positions down: ``(H + 2 padding - kh) // stride + 1`` (PyTorch's ``Conv2d``)."""
        return (self.H + 2 * self.padding - self.kh) // self.stride + 1

    @property
    def W_out(self) -> int:
        return (self.W + 2 * self.padding - self.kw) // self.stride + 1

    @property
    def patch(self) -> int:
        """Values under one window position: ``kh * kw * C``."""
        return self.kh * self.kw * self.C


def unfold(x, g: ConvGeometry, cols_out):
    """im2col: every window position's patch as a row, so that a convolution is one GEMM.

    ``cols[(b * H_out + oy) * W_out + ox, (i * kw + j) * C + c] = x_b[oy * stride - padding + i,
    ox * stride - padding + j, c]``, 0 where that falls in the padding. A patch row is channels-last
    like the image, so each of its kh window rows is one contiguous run of ``kw * C`` image values. The
    convolution is then ``cols @ W_r^T`` with ``W_r`` a PyTorch ``Conv2d`` weight ``(C_out, C, kh, kw)``
    permuted to ``(C_out, kh, kw, C)`` and flattened (Chellapilla, Puri & Simard 2006, "High
    Performance Convolutional Neural Networks for Document Processing", Sec. 2.1).

    Args:
        x: ``(B, H * W * C)`` images, channels-last (:class:`ConvGeometry`).
        g: the geometry.
        cols_out: ``(B * H_out * W_out, kh * kw * C)`` receives the patches.
    """
    xp = array_module(x)
    B, s, p = x.shape[0], g.stride, g.padding
    padded = xp.zeros((B, g.H + 2 * p, g.W + 2 * p, g.C), x.dtype)
    padded[:, p:p + g.H, p:p + g.W] = x.reshape(B, g.H, g.W, g.C)
    cols = cols_out.reshape(B, g.H_out, g.W_out, g.kh, g.kw, g.C)
    for i in range(g.kh):
        for j in range(g.kw):
            cols[:, :, :, i, j] = padded[:, i:i + s * (g.H_out - 1) + 1:s, j:j + s * (g.W_out - 1) + 1:s]


def fold(cols, g: ConvGeometry, x_out):
    """col2im, the adjoint of :func:`unfold`: each patch added back where :func:`unfold` read it.

    ``x_out`` is the sum, over the window positions that cover a pixel, of the entries of ``cols`` that
    :func:`unfold` would have copied from it (<unfold(x), c> = <x, fold(c)> for every x and c). It is
    the input gradient of a convolution, given the patches' gradient, and the forward map of a
    transposed convolution (Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep
    learning", Sec. 4).

    Args:
        cols: ``(B * H_out * W_out, kh * kw * C)``, laid out as :func:`unfold` writes.
        g: the geometry.
        x_out: ``(B, H * W * C)`` receives the images (overwritten, not accumulated).
    """
    xp = array_module(cols)
    B, s, p = x_out.shape[0], g.stride, g.padding
    padded = xp.zeros((B, g.H + 2 * p, g.W + 2 * p, g.C), x_out.dtype)
    patches = cols.reshape(B, g.H_out, g.W_out, g.kh, g.kw, g.C)
    for i in range(g.kh):
        for j in range(g.kw):
            padded[:, i:i + s * (g.H_out - 1) + 1:s, j:j + s * (g.W_out - 1) + 1:s] += patches[:, :, :, i, j]
    x_out.reshape(B, g.H, g.W, g.C)[...] = padded[:, p:p + g.H, p:p + g.W]


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    """One Adam update of a flat parameter buffer, in place.

    PyTorch's ``torch.optim.Adam`` (weight_decay=0, amsgrad=False)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Args:
        p, g, m, v: ``(P,)`` parameters, gradients, first and second moments.
        lr, beta1, beta2, eps: floats.
        step: int t >= 1, the number of this update.
    """
    xp = array_module(p)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    step_size = lr / (1 - beta1**step)
    denom = xp.sqrt(v) / (1 - beta2**step) ** 0.5 + eps
    p -= step_size * m / denom


def sgd_step(p, g, buf, lr, momentum, nesterov):
    """One SGD-with-momentum update of a flat parameter buffer, in place.

    PyTorch's ``torch.optim.SGD`` with dampening=0 (a zero-initialised buffer
    reproduces its first step, ``buf = g``)::

        buf = momentum * buf + g
        p  -= lr * (g + momentum * buf if nesterov else buf)

    Args:
        p, g, buf: ``(P,)`` parameters, gradients, momentum buffer.
        lr, momentum: floats; nesterov: bool.
    """
    buf *= momentum
    buf += g
    p -= lr * (g + momentum * buf if nesterov else buf)
