"""The numba kernels' float32 exp and log1p, their dtype-generic names, and the bit casts between float and
integer that such functions take numbers apart with (the draws' float64 log: :mod:`tinyvae.backends.numba_random`).

Calls to libm's ``exp``/``log1p`` do not vectorise (pip's llvmlite has no SVML), so float32 kernels use
:func:`exp_neg32`, :func:`exp32` and :func:`log1p_unit32`, polynomial and branch-free; float64 (gradient
checks) keeps libm. A kernel written once for both dtypes calls :func:`exp`, :func:`exp_neg` and
:func:`log1p_unit`, which resolve at compile time to one or the other.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

# The kernels may reorder sums (LLVM vectorises a loop only then), never assume away NaN or inf:
# tinyvae.backends.numba_ops's module doc.
JIT = dict(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})

_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
_LOG2E = np.float32(1.4426950408889634)


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    """The float32 whose IEEE-754 bit pattern is the int32 ``i`` (a register move, no memory)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@intrinsic
def float64_bits(typingctx, x):
    """The int64 holding the IEEE-754 bit pattern of the float64 ``x`` (a register move)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def bits_float64(typingctx, i):
    """The float64 whose IEEE-754 bit pattern is the int64 ``i`` (a register move)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@njit(inline="always", **JIT)
def exp_neg32(a):
    """exp(-a) for float32 a >= 0 (a > 87 gives exp(-87) ~ 1.6e-38).

    Cody & Waite range reduction: a = n ln2 + r with |r| <= ln2 / 2 and ln2
    split into a short high part and a low part, so n * ln2_hi is exact;
    then exp(-a) = 2^-n * exp(-r), exp(-r) by its Taylor series to degree 7
    (truncation < 6e-9 relative). 2^-n (n <= 126, a normal number) is built
    from its bits, exponent field 127 - n: a table lookup instead becomes a
    vector gather, which slows the BCE kernel down.
    """
    a = min(a, np.float32(87.0))
    n = np.int32(a * _LOG2E + np.float32(0.5))
    r = np.float32(n) * _LN2_HI - a + np.float32(n) * _LN2_LO  # = -(a - n ln2)
    p = np.float32(1 / 5040)
    p = p * r + np.float32(1 / 720)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _int32_bits_as_float32((np.int32(127) - n) << np.int32(23))


@njit(inline="always", **JIT)
def log1p_unit32(e):
    """log1p(e) for float32 e in [0, 1]: 2 atanh(t) with t = e / (2 + e) <= 1/3.

    The odd series 2 (t + t^3/3 + ... + t^15/15) truncates below 1e-8 relative
    (the next term is at most (1/9)^8 / 17 of the first).
    """
    t = e / (np.float32(2.0) + e)
    t2 = t * t
    s = np.float32(1 / 15)
    s = s * t2 + np.float32(1 / 13)
    s = s * t2 + np.float32(1 / 11)
    s = s * t2 + np.float32(1 / 9)
    s = s * t2 + np.float32(1 / 7)
    s = s * t2 + np.float32(1 / 5)
    s = s * t2 + np.float32(1 / 3)
    s = s * t2 + np.float32(1.0)
    return np.float32(2.0) * t * s


@njit(inline="always", **JIT)
def exp32(x):
    """exp(x) for float32 x, branch-free: exp(-|x|) from :func:`exp_neg32`, inverted for x > 0.

    |x| is clamped at 87, so the result lies in [1.6e-38, 6.1e37]; libm would
    give 0 or inf only beyond |x| = 88.7.
    """
    e = exp_neg32(abs(x))
    return e if x <= np.float32(0.0) else np.float32(1.0) / e


# The kernels are written once for both dtypes; these three resolve, at
# compile time, to our float32 functions above or to libm in float64.
def exp(x):
    raise NotImplementedError  # only callable from compiled code


def exp_neg(a):
    raise NotImplementedError


def log1p_unit(e):
    raise NotImplementedError


def _by_dtype(generic, f32, f64):
    @overload(generic, inline="always", fastmath=JIT["fastmath"])
    def _impl(x):
        return f32 if x == types.float32 else f64


_by_dtype(exp, lambda x: exp32(x), lambda x: math.exp(x))
_by_dtype(exp_neg, lambda x: exp_neg32(x), lambda x: math.exp(-x))
_by_dtype(log1p_unit, lambda x: log1p_unit32(x), lambda x: math.log1p(x))
