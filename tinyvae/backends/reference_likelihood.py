"""Reference implementations of the decoder's likelihoods, and of the IWAE's importance weights and their
gradient at the encoder (the conventions of :mod:`tinyvae.backends.reference` hold; the numba kernels are
:mod:`tinyvae.backends.numba_likelihood`, the CUDA ones ``kernels/likelihood.cu``).

A likelihood's targets may have B rows for its N = L B outputs, the L draws of a batch: output row ``l B + b``
is compared with ``x[b]`` (the fused backends read them in place; ``ValueError`` unless B divides N).
"""

from __future__ import annotations

import math

from .arrays import array_module


def check_targets(x, n: int):
    """``ValueError`` unless the targets ``x`` have rows for ``n`` outputs: n, or B dividing n (the module doc;
    every backend's check)."""
    if x.shape[0] == 0 or n % x.shape[0]:
        raise ValueError(f"{x.shape[0]} target rows for {n} output rows: not a whole number of draws")


def _targets(xp, x, n: int):
    """The targets of ``n`` output rows: ``x``, or its B rows repeated ``n / B`` times (the module doc)."""
    check_targets(x, n)
    return x if x.shape[0] == n else xp.tile(x, (n // x.shape[0], 1))


def bce_with_logits(logits, x, scale, loss_out, dlogits_out):
    """Bernoulli negative log-likelihood from logits, and its gradient.

    Per element, with l = logit and x = target in [0, 1], in the stable form
    that never evaluates ``log(sigmoid(l))``::

        bce(l, x) = max(l, 0) - l * x + log1p(exp(-|l|))      (nats)
        d bce / d l = sigmoid(l) - x

    (K&W Appendix C.1: log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i)
    with y = sigmoid(l).)

    Args:
        logits: ``(N, D)`` float32/float64 decoder outputs.
        x: ``(N, D)`` or ``(B, D)`` targets (the module doc) of the same dtype, values in [0, 1].
        scale: float multiplying the gradient (``1/N`` for a batch mean).
        loss_out: ``(N,)`` receives the per-sample BCE summed over D, nats.
        dlogits_out: ``(N, D)`` receives ``scale * (sigmoid(logits) - x)``.
    """
    xp = array_module(logits)
    x = _targets(xp, x, logits.shape[0])
    e = xp.exp(-xp.abs(logits))
    elem = xp.maximum(logits, 0) - logits * x + xp.log1p(e)
    xp.sum(elem, axis=1, out=loss_out)
    sig = xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    xp.multiply(sig - x, scale, out=dlogits_out)


def gaussian_nll(mean, x, logvar, scale, loss_out, dmean_out, dlogvar_out):
    """Gaussian negative log-likelihood with a per-pixel variance, and its gradients.

    Per element, with m = decoder mean, x = target and lv = log sigma^2 of that
    pixel (shared by every sample)::

        nll(m, x) = 0.5 * ((x - m)^2 * exp(-lv) + lv + log(2 pi))     (nats)
        d nll / d m  = (m - x) * exp(-lv)
        d nll / d lv = 0.5 * (1 - (x - m)^2 * exp(-lv))

    (K&W Appendix C.2, a diagonal Gaussian p(x|z); with a fixed lv = 0 this is
    half the squared error plus 0.5 log(2 pi) per pixel.)

    Args:
        mean: ``(N, D)`` float32/float64 decoder outputs.
        x: ``(N, D)`` or ``(B, D)`` targets (the module doc) of the same dtype (any finite values).
        logvar: ``(D,)`` per-pixel log-variance.
        scale: float multiplying the gradients (``1/N`` for a batch mean).
        loss_out: ``(N,)`` receives the per-sample NLL summed over D, nats.
        dmean_out: ``(N, D)`` receives ``scale * d nll / d mean``.
        dlogvar_out: ``(D,)`` receives ``scale * sum_batch d nll / d logvar``,
            or None when the variance is fixed.
    """
    xp = array_module(mean)
    x = _targets(xp, x, mean.shape[0])
    inv_var = xp.exp(-logvar)
    r = x - mean
    r2 = r * r * inv_var
    xp.sum(0.5 * (r2 + logvar + math.log(2 * math.pi)), axis=1, out=loss_out)
    xp.multiply(-r * inv_var, scale, out=dmean_out)
    if dlogvar_out is not None:
        xp.multiply(xp.sum(0.5 * (1 - r2), axis=0), scale, out=dlogvar_out)


def importance_weights(nll, heads, eps, z, scale, weights_out, bound_out):
    """The importance-weighted bound of each example and the normalised weights of its draws (Burda, Grosse &
    Salakhutdinov 2015, "Importance Weighted Autoencoders", eq. 8 and 14; derived in docs/derivations.md).

    Row ``n = j B + b`` holds draw j of example b, k = N / B draws each::

        log w_n = -nll_n - |z_n|^2 / 2 + |eps_n|^2 / 2 + sum(logvar_n) / 2   (the log 2 pi terms cancel)
        bound_out[b] = -log (1/k) sum_j w_(j B + b)      (nats; the log-sum-exp after the largest log w)
        weights_out[n] = scale * w_n / sum_j w_(j B + b), and 0 where that ratio is below the dtype's epsilon

    A draw cut so adds less to a gradient than the dtype resolves, and its products would be subnormal floats
    (docs/performance.md).

    Args:
        nll: ``(N,)`` ``-log p(x|z_n)`` of each draw, nats.
        heads: ``(N, 2K)`` ``[mu | logvar]`` of each draw's example.
        eps: ``(N, K)`` the standard normal draws; z: ``(N, K)`` ``mu + exp(logvar / 2) eps``.
        scale: multiplies the weights (``1/B`` for the gradient of a batch mean).
        weights_out: ``(N,)`` receives the weights; bound_out: ``(B,)`` receives ``-L_k`` of each example.

    Raises:
        ValueError: B does not divide N, or the shapes do not match.
    """
    xp = array_module(nll)
    check_draws(nll, heads, eps, z, weights_out, bound_out)
    N, B, K = z.shape[0], bound_out.shape[0], z.shape[1]
    log_w = -nll - 0.5 * (z * z).sum(axis=1) + 0.5 * (eps * eps).sum(axis=1) + 0.5 * heads[:, K:].sum(axis=1)
    log_w = log_w.reshape(N // B, B)
    top = log_w.max(axis=0)
    e = xp.exp(log_w - top)
    total = e.sum(axis=0)
    bound_out[...] = -(top + xp.log(total) - math.log(N // B))
    w = e / total
    w[w < xp.finfo(w.dtype).eps] = 0
    weights_out[...] = (w * scale).reshape(N)


def importance_weights_backward(dz, weights, heads, eps, z, dheads_out):
    """The gradient of the IWAE's loss at each example's ``[mu | logvar]``: what reaches its k draws of z, summed
    over them (Burda, Grosse & Salakhutdinov 2015, eq. 14, through the reparameterisation z = mu + sigma eps of
    Kingma & Welling 2014, Sec. 2.4; derived in docs/derivations.md).

    Row ``n = j B + b`` holds draw j of example b (as :func:`importance_weights`), of weight ``w_n``::

        g_n       = dz_n + w_n z_n                 (the decoder's gradient, and the prior's: -log p(z) = |z|^2 / 2 + c)
        dmu_b     = sum_j g_n
        dlogvar_b = 0.5 (exp(logvar_b / 2) sum_j g_n eps_n - sum_j w_n)   (z's path, and q's normaliser)

    Args (float32 or float64, one dtype):
        dz: ``(N, K)`` the gradient of the loss (nats) at each draw's z from the decoder (its weight already in it).
        weights: ``(N,)`` the draws' weights as :func:`importance_weights` writes them (``1/B`` times the
            normalised weights, for a batch mean).
        heads: ``(B, 2K)`` ``[mu | logvar]`` of each example; eps, z: ``(N, K)``, the draws.
        dheads_out: ``(B, 2K)`` receives ``[dmu | dlogvar]`` of each example.

    Raises:
        ValueError: B does not divide N, or the shapes do not match.
    """
    xp = array_module(dz)
    check_draws_backward(dz, weights, heads, eps, z, dheads_out)
    (N, K), B = z.shape, dheads_out.shape[0]
    w = weights[:, None]
    g = dz + w * z
    dheads_out[:, :K] = g.reshape(N // B, B, K).sum(axis=0)
    path = (g * eps).reshape(N // B, B, K).sum(axis=0)
    dheads_out[:, K:] = 0.5 * (xp.exp(0.5 * heads[:, K:]) * path - w.reshape(N // B, B, 1).sum(axis=0))


def _draws_error(op: str, N: int, B: int, **arrays):
    """The ``ValueError`` of the draws' checks below, naming ``op`` and the shapes it got."""
    shapes = ", ".join(f"{name} {a.shape}" for name, a in arrays.items())
    return ValueError(f"{op}: {N} rows of draws for {B} examples, {shapes}")


def check_draws(nll, heads, eps, z, weights_out, bound_out):
    """``ValueError`` unless the arguments of :func:`importance_weights` are the k draws of B examples (every
    backend's check; a chain of comparisons, as it runs every training step)."""
    (N, K), B = z.shape, bound_out.shape[0]
    if (B == 0 or N % B or nll.shape != (N,) or heads.shape != (N, 2 * K) or eps.shape != z.shape
            or weights_out.shape != (N,)):
        raise _draws_error("importance_weights", N, B, nll=nll, heads=heads, eps=eps, z=z, weights_out=weights_out)


def check_draws_backward(dz, weights, heads, eps, z, dheads_out):
    """``ValueError`` unless the arguments of :func:`importance_weights_backward` are the k draws of B examples
    (every backend's check)."""
    (N, K), B = z.shape, dheads_out.shape[0]
    if (B == 0 or N % B or dz.shape != z.shape or weights.shape != (N,) or heads.shape != (B, 2 * K)
            or eps.shape != z.shape or dheads_out.shape != (B, 2 * K)):
        raise _draws_error("importance_weights_backward", N, B, dz=dz, weights=weights, heads=heads, eps=eps, z=z,
                           dheads_out=dheads_out)
