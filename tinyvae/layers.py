"""Fully connected layers: forward and hand-derived backward side by side.

A :class:`Linear` layer computes ``y = act(x W^T + b)`` with ``W`` of shape
``(out, in)`` (PyTorch's ``nn.Linear`` layout) and ``act`` ReLU or identity.
Weights and gradients are views into the model's flat buffers
(:class:`tinyvae.params.FlatParams`), so every GEMM writes its result in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Linear:
    """One layer's parameter and gradient views.

    Attributes:
        W, gW: ``(out, in)`` weight and its gradient.
        b, gb: ``(out,)`` bias and its gradient.
        relu: whether a ReLU follows the affine map.
    """

    W: Any
    b: Any
    gW: Any
    gb: Any
    relu: bool

    @property
    def in_features(self) -> int:
        return self.W.shape[1]

    @property
    def out_features(self) -> int:
        return self.W.shape[0]

    def forward(self, backend, x, out):
        """``out = act(x W^T + b)``; x ``(B, in)``, out ``(B, out)``."""
        backend.xp.matmul(x, self.W.T, out=out)
        backend.bias_act(out, self.b, self.relu)

    def backward(self, backend, x, out, dout, dx=None):
        """Gradients of a layer, given ``dout`` = dL/d(out).

        ``dout`` is overwritten with dL/d(pre-activation). Writes ``gW = da^T x``,
        ``gb = sum_batch da`` and, when ``dx`` is given, ``dx = da W``.
        """
        backend.bias_act_backward(dout, out, self.relu, self.gb)
        backend.xp.matmul(dout.T, x, out=self.gW)
        if dx is not None:
            backend.xp.matmul(dout, self.W, out=dx)


class MLP:
    """A stack of :class:`Linear` layers with per-batch-size activation buffers."""

    def __init__(self, layers: list[Linear]):
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
