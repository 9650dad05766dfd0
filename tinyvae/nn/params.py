"""All parameters of a model in one flat buffer, with a named view per tensor.

An optimiser step is then one pass over one contiguous array, and a gradient
buffer of the same layout receives every layer's gradient in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class FlatParams:
    """Named tensors laid out back to back in one contiguous 1-D array.

    Args:
        layout: ``(name, shape)`` pairs, in storage order.
        xp: array module (numpy or cupy).
        dtype: element type of the buffer (float32 or float64).

    Attributes:
        data: ``(P,)`` the flat buffer; ``P = size``.
        offsets: name -> ``(start, stop)`` index range into ``data``.
        shapes: name -> shape.
    """

    def __init__(self, layout: Sequence[tuple[str, tuple[int, ...]]], xp, dtype):
        self.xp = xp
        self.dtype = xp.dtype(dtype)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, shape in layout:
            if name in self.shapes:
                raise ValueError(f"duplicate parameter name {name!r}")
            n = math.prod(shape)
            self.shapes[name] = tuple(shape)
            self.offsets[name] = (start, start + n)
            start += n
        self.size = start
        self.data = xp.zeros(self.size, dtype=self.dtype)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def view(self, name: str, buffer=None):
        """The tensor ``name`` as a view of ``buffer`` (default: ``data``)."""
        buf = self.data if buffer is None else buffer
        lo, hi = self.offsets[name]
        return buf[lo:hi].reshape(self.shapes[name])

    def span(self, first: str, last: str, shape: tuple[int, ...], buffer=None):
        """A view covering the tensors from ``first`` to ``last`` (adjacent in storage).

        Used to run one GEMM over two heads stored back to back, e.g. the mu
        and logvar weights as one ``(2K, H)`` matrix.
        """
        buf = self.data if buffer is None else buffer
        lo, hi = self.offsets[first][0], self.offsets[last][1]
        if math.prod(shape) != hi - lo:
            raise ValueError(f"span {first}..{last} has {hi - lo} elements, not {shape}")
        return buf[lo:hi].reshape(shape)

    def zeros_like(self):
        """A new zero buffer of the same size and dtype (gradients, moments)."""
        return self.xp.zeros(self.size, dtype=self.dtype)

    def state_dict(self, buffer=None, prefix: str = "") -> dict:
        """``{prefix + name: view}`` for every tensor of ``buffer`` (default: ``data``)."""
        return {prefix + n: self.view(n, buffer) for n in self.shapes}
