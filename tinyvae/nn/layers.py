"""The layers: forward and hand-derived backward side by side.

* :class:`Linear`: ``y = act(x W^T + b)`` with ``W`` of shape ``(out, in)``
  (PyTorch's ``nn.Linear`` layout) and ``act`` ReLU or identity; next to a
  convolution it reads (or writes) the channels-last image with its weight
  permuted from the channels-first order of PyTorch's ``Flatten``.
* :class:`Conv2d` and :class:`ConvTranspose2d`: a convolution and its adjoint,
  each one GEMM over the whole batch and one :func:`unfold` (im2col) or
  :func:`fold` (col2im) op, with PyTorch's weight layouts; the derivation is in
  docs/derivations.md.

Every layer takes and gives a batch as a 2-D ``(B, features)`` array: an image is
one row, channels-last (``(y, x, c)`` at ``(y W + x) C + c``), so that a
convolution's GEMM writes its ``(B H_out W_out, C_out)`` result straight into
the next layer's input and the bias ops of :class:`Linear` serve it unchanged.
Weights and gradients are views into the model's flat buffers
(:class:`tinyvae.nn.params.FlatParams`), so every GEMM writes its result in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backends.reference import ConvGeometry


@dataclass
class Linear:
    """One layer's parameter and gradient views.

    Where a convolution meets a fully connected layer, the image is channels-last here and
    channels-first in PyTorch's ``Flatten`` / ``Unflatten``, whose order the weight keeps (so that a
    checkpoint loads into the PyTorch modules). The layer then multiplies by its weight (and bias)
    permuted to the image's order, a copy made each forward pass, and permutes the weight's gradient
    back: for a ``(B, 3136)`` image and a ``(40, 3136)`` weight, a copy of the weight instead of two of
    the batch's activations.

    Attributes:
        W, gW: ``(out, in)`` weight and its gradient.
        b, gb: ``(out,)`` bias and its gradient.
        relu: whether a ReLU follows the affine map.
        image_in: ``(P, C)`` when the input is a channels-last image of P pixels and C channels
            (columns ``p C + c``) and W's columns are channels-first (``c P + p``); else None.
        image_out: the same for the output, W's rows and b.
    """

    W: Any
    b: Any
    gW: Any
    gb: Any
    relu: bool
    image_in: tuple[int, int] | None = None
    image_out: tuple[int, int] | None = None
    Wp: Any = field(default=None, repr=False)  # W, b and their gradients in the image's order
    bp: Any = field(default=None, repr=False)
    gWp: Any = field(default=None, repr=False)
    gbp: Any = field(default=None, repr=False)

    @property
    def in_features(self) -> int:
        return self.W.shape[1]

    @property
    def out_features(self) -> int:
        return self.W.shape[0]

    def _permute(self, W, b, W_out, b_out, to_image: bool):
        """Write ``W, b`` into ``W_out, b_out`` permuted from PyTorch's channels-first order to the
        image's (``to_image``), or back."""
        o, i = self.W.shape
        if self.image_in is not None:  # W's columns
            P, C = self.image_in
            src, dst = ((o, C, P), (o, P, C)) if to_image else ((o, P, C), (o, C, P))
            W_out.reshape(dst)[...] = W.reshape(src).transpose(0, 2, 1)
            b_out[...] = b
        else:  # W's rows and b
            P, C = self.image_out
            src, dst = ((C, P), (P, C)) if to_image else ((P, C), (C, P))
            W_out.reshape(*dst, i)[...] = W.reshape(*src, i).transpose(1, 0, 2)
            b_out.reshape(dst)[...] = b.reshape(src).T

    def weights(self, xp):
        """``(W, b)`` to multiply by: the parameters, or their copies permuted to the image's order."""
        if self.image_in is None and self.image_out is None:
            return self.W, self.b
        if self.Wp is None:
            self.Wp, self.gWp = xp.empty_like(self.W), xp.empty_like(self.W)
            self.bp, self.gbp = xp.empty_like(self.b), xp.empty_like(self.b)
        self._permute(self.W, self.b, self.Wp, self.bp, to_image=True)
        return self.Wp, self.bp

    def forward(self, backend, x, out):
        """``out = act(x W^T + b)``; x ``(B, in)``, out ``(B, out)``."""
        W, b = self.weights(backend.xp)
        backend.matmul(x, W.T, out)
        backend.bias_act(out, b, self.relu)

    def backward(self, backend, x, out, dout, dx=None):
        """Gradients of a layer, given ``dout`` = dL/d(out); needs the :meth:`forward` of the same batch.

        ``dout`` is overwritten with dL/d(pre-activation). Writes ``gW = da^T x``,
        ``gb = sum_batch da`` and, when ``dx`` is given, ``dx = da W``.
        """
        permuted = self.image_in is not None or self.image_out is not None
        W, gW, gb = (self.Wp, self.gWp, self.gbp) if permuted else (self.W, self.gW, self.gb)
        backend.bias_act_backward(dout, out, self.relu, gb)
        if dx is None:
            backend.matmul(dout.T, x, gW)
        else:
            backend.matmul_pair(dout.T, x, gW, dout, W, dx)
        if permuted:
            self._permute(gW, gb, self.gW, self.gb, to_image=False)


@dataclass
class _WindowLayer:
    """What :class:`Conv2d` and :class:`ConvTranspose2d` share: parameter views, the geometry, and
    buffers made once per batch size (the patches) or once (the weight permuted to the patches' order)."""

    W: Any
    b: Any
    gW: Any
    gb: Any
    g: ConvGeometry
    relu: bool
    cols: Any = field(default=None, repr=False)  # (rows, kh kw C) patches of the largest batch so far
    Wr: Any = field(default=None, repr=False)   # W (A, B, kh, kw) as (A, kh kw B), the patches' column order
    gWr: Any = field(default=None, repr=False)  # its gradient, in the same order

    def patches(self, xp, batch: int, dtype):
        """The ``(B H_out W_out, kh kw C)`` patches of a batch of B: the first rows of one buffer, made again
        only for a larger batch (an IWAE's backward pass takes a different number of draws each step)."""
        rows = batch * self.g.H_out * self.g.W_out
        if self.cols is None or self.cols.shape[0] < rows or self.cols.dtype != dtype:
            self.cols = xp.empty((rows, self.g.patch), dtype)
        return self.cols[:rows]

    def permute_weight(self, xp):
        """``Wr = W`` permuted from PyTorch's ``(A, B, kh, kw)`` to ``(A, kh, kw, B)`` and flattened to
        ``(A, kh kw B)``: the column order of :func:`unfold`'s patches (a copy of the weight, made every
        forward pass; it is small beside the patches)."""
        A, B, kh, kw = self.W.shape
        if self.Wr is None:
            self.Wr, self.gWr = xp.empty((A, kh * kw * B), self.W.dtype), xp.empty((A, kh * kw * B), self.W.dtype)
        self.Wr.reshape(A, kh, kw, B)[...] = self.W.transpose(0, 2, 3, 1)
        return self.Wr

    def store_weight_grad(self):
        """``gW`` from ``gWr``, permuted back to PyTorch's layout."""
        A, B, kh, kw = self.W.shape
        self.gW[...] = self.gWr.reshape(A, kh, kw, B).transpose(0, 3, 1, 2)


@dataclass
class Conv2d(_WindowLayer):
    """A 2-D convolution (cross-correlation, as PyTorch's ``nn.Conv2d``) with bias and ReLU or identity.

    ``y[b, oy, ox, o] = act(b_o + sum_{c,i,j} W[o, c, i, j] x[b, oy s - p + i, ox s - p + j, c])``,
    computed as ``A = unfold(x) W_r^T``, one GEMM of the ``(B H_out W_out, kh kw C)`` patches by
    ``(kh kw C, C_out)``, ``W_r`` the weight permuted to the patches' order (Chellapilla et al. 2006,
    Sec. 2.1). Backward, with ``dA`` the gradient at the pre-activation: ``gW_r = dA^T unfold(x)``,
    ``gb = sum dA`` over batch and positions, ``dx = fold(dA W_r)`` (docs/derivations.md).

    Attributes:
        W, gW: ``(C_out, C, kh, kw)`` weight and its gradient (PyTorch's layout).
        b, gb: ``(C_out,)`` bias and its gradient.
        g: the input's :class:`ConvGeometry` (image size, channels C, window, stride, padding).
        relu: whether a ReLU follows.
    """

    @property
    def in_features(self) -> int:
        return self.g.H * self.g.W * self.g.C

    @property
    def out_features(self) -> int:
        return self.g.H_out * self.g.W_out * self.W.shape[0]

    def forward(self, backend, x, out):
        """``out`` ``(B, H_out W_out C_out)`` from ``x`` ``(B, H W C)``; keeps the patches for :meth:`backward`."""
        xp = backend.xp
        cols = self.patches(xp, x.shape[0], x.dtype)
        backend.unfold(x, self.g, cols)
        a = out.reshape(cols.shape[0], self.W.shape[0])
        backend.matmul(cols, self.permute_weight(xp).T, a)
        backend.bias_act(a, self.b, self.relu)

    def backward(self, backend, x, out, dout, dx=None):
        """As :meth:`Linear.backward`; needs the patches of the :meth:`forward` of the same batch, the layer's
        last forward pass."""
        cols = self.patches(backend.xp, x.shape[0], x.dtype)
        da = dout.reshape(cols.shape[0], self.W.shape[0])
        backend.bias_act_backward(da, out.reshape(da.shape), self.relu, self.gb)
        backend.matmul(da.T, cols, self.gWr)
        self.store_weight_grad()
        if dx is not None:
            backend.matmul(da, self.Wr, cols)  # the patches' gradient, in the patches' buffer
            backend.fold(cols, self.g, dx)


@dataclass
class ConvTranspose2d(_WindowLayer):
    """A transposed 2-D convolution (PyTorch's ``nn.ConvTranspose2d``) with bias and ReLU or identity:
    exactly the map that takes a :class:`Conv2d`'s output gradient to its input gradient.

    With ``g`` the geometry of the convolution from this layer's *output* (``H x W x C_out``) to its
    input grid (``g.H_out x g.W_out``, ``C_in`` channels): ``y = act(fold(x W_r) + b)``, ``W_r`` the
    weight ``(C_in, C_out, kh, kw)`` permuted to ``(C_in, kh kw C_out)``. An output
    ``H = (H_in - 1) s - 2 p + kh + output_padding`` names PyTorch's ``output_padding`` (< s): the rows
    a strided convolution of H would not reach. Backward: ``dC = unfold(dA)``, ``gW_r = x^T dC``,
    ``dx = dC W_r^T`` (Dumoulin & Visin 2016, Sec. 4).

    Attributes:
        W, gW: ``(C_in, C_out, kh, kw)`` weight and its gradient (PyTorch's layout).
        b, gb: ``(C_out,)`` bias and its gradient.
        g: the geometry of the output image (its C is C_out) and the window.
        relu: whether a ReLU follows.
    """

    @property
    def in_features(self) -> int:
        return self.g.H_out * self.g.W_out * self.W.shape[0]

    @property
    def out_features(self) -> int:
        return self.g.H * self.g.W * self.g.C

    def forward(self, backend, x, out):
        xp = backend.xp
        cols = self.patches(xp, x.shape[0], x.dtype)
        backend.matmul(x.reshape(cols.shape[0], self.W.shape[0]), self.permute_weight(xp), cols)
        backend.fold(cols, self.g, out)
        backend.bias_act(out.reshape(-1, self.g.C), self.b, self.relu)

    def backward(self, backend, x, out, dout, dx=None):
        cols = self.patches(backend.xp, x.shape[0], x.dtype)
        da = dout.reshape(-1, self.g.C)
        backend.bias_act_backward(da, out.reshape(da.shape), self.relu, self.gb)
        backend.unfold(dout, self.g, cols)
        xm = x.reshape(cols.shape[0], self.W.shape[0])
        if dx is None:
            backend.matmul(xm.T, cols, self.gWr)
        else:
            backend.matmul_pair(xm.T, cols, self.gWr, cols, self.Wr.T, dx.reshape(xm.shape))
        self.store_weight_grad()


class Sequential:
    """Layers applied in order, with per-batch-size activation buffers: every model's encoder and decoder."""

    def __init__(self, layers: list):
        self.layers = layers

    def buffers(self, xp, batch: int, dtype) -> list:
        """One ``(batch, out)`` array per layer (used for outputs, and again for their gradients)."""
        return [xp.empty((batch, l.out_features), dtype=dtype) for l in self.layers]

    def forward(self, backend, x, outs):
        """Run every layer; ``outs[i]`` receives layer i's output. Returns ``outs[-1]``."""
        inp = x
        for layer, out in zip(self.layers, outs):
            layer.forward(backend, inp, out)
            inp = out
        return outs[-1]

    def backward(self, backend, x, outs, douts, dx=None):
        """Backpropagate ``douts[-1]`` (filled by the caller) through all layers.

        ``douts[i]`` receives dL/d(outs[i]) on the way; ``dx`` (optional)
        receives dL/dx.
        """
        for i in range(len(self.layers) - 1, -1, -1):
            inp = outs[i - 1] if i > 0 else x
            dinp = douts[i - 1] if i > 0 else dx
            self.layers[i].backward(backend, inp, outs[i], douts[i], dinp)
