"""Which array module an array belongs to: the one thing every backend layer asks of an array."""

from __future__ import annotations


def array_module(a):
    """The array module (numpy or cupy) that owns array ``a``."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy
