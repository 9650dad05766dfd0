"""The decoder's likelihoods p(x|z): the negative log-likelihood of a batch, its gradient, and the mean.

The decoder's output ``out`` ``(N, D)`` parametrises p(x|z):

* ``bernoulli``: logits, p(x|z) = Bernoulli(sigmoid(logits)) (Kingma & Welling 2014, Appendix C.1);
  -log p(x|z) is the BCE from logits summed over the D values (the backends' ``bce_with_logits``);
* ``gaussian``: the mean, p(x|z) = N(mean, exp(decoder_logvar) I) with a fixed log-variance (0: half the
  squared error plus (D/2) log 2 pi nats);
* ``gaussian-learned``: the mean, with a learned per-value log-variance, the parameter ``decoder.logvar``
  ``(D,)`` (K&W Appendix C.2), shared by every z.

The formulas and their gradients are in :mod:`tinyvae.backends.reference` (``bce_with_logits``,
``gaussian_nll``) and docs/derivations.md.
"""

from __future__ import annotations

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


def nll_and_grad(backend, likelihood: str, out, x, logvar, scale: float, nll_out, dout_out, dlogvar_out=None):
    """``nll_out (N,) = -log p(x|z)`` per row in nats and ``dout_out (N, D) = scale * d nll / d out``.

    Args:
        backend: the :class:`tinyvae.backends.Backend` whose op computes both in one pass.
        likelihood: one of :data:`LIKELIHOODS`.
        out: ``(N, D)`` the decoder's output; x: the targets (in [0, 1] for ``bernoulli``), ``(N, D)``, or
            ``(B, D)`` read for each of L = N / B draws (row ``l B + b`` of ``out`` is compared with ``x[b]``).
        logvar: ``(D,)`` the Gaussian's log-variance (unused for ``bernoulli``).
        scale: the gradient's factor (``1/N`` for a batch mean; 0 where only the NLL is wanted).
        dlogvar_out: ``(D,)`` receives the learned log-variance's gradient (``gaussian-learned``), else None.
    """
    if likelihood == "bernoulli":
        backend.bce_with_logits(out, x, scale, nll_out, dout_out)
    else:
        backend.gaussian_nll(out, x, logvar, scale, nll_out, dout_out, dlogvar_out)


def mean(backend, likelihood: str, out):
    """The mean of p(x|z) for the decoder's output ``out`` ``(B, D)``, as a new host array:
    ``sigmoid(out)`` (Bernoulli, as ``(1 + tanh(out / 2)) / 2``, which no finite value overflows) or ``out``
    itself (Gaussian)."""
    if likelihood != "bernoulli":
        return backend.to_host(out).copy()
    return backend.to_host(0.5 * (1.0 + backend.xp.tanh(0.5 * out)))
