"""Finite-difference checks of the hand-derived gradients, in float64.

Numerical derivative: the fourth-order central difference
``f'(t) ~ (f(t-2h) - 8 f(t-h) + 8 f(t+h) - f(t+2h)) / (12 h)``
(truncation error O(h^4); Abramowitz & Stegun 25.3.6), which leaves room for a
step large enough that rounding error stays near 1e-12 for losses of O(10).

Error measure, per element: ``|a - n| / max(|a|, |n|, floor)`` with ``a`` the
analytic and ``n`` the numerical derivative; below ``floor`` in magnitude, the
comparison is absolute. Each check returns the maximum over the elements tested.

Rounding: the stencil's own rounding error for an element is bounded by
``noise = 2^-52 * sum(|f(t-2h)| + 8|f(t-h)| + 8|f(t+h)| + |f(t+2h)|) / (12 h)``
over all terms (a term that depends on t can stay put when its change is below
its rounding step, so moving or not says nothing). Where ``noise`` exceeds ``RESOLVE * max(|n|, floor)``
the difference cannot resolve the derivative to the tolerance of the tests (a
per-sample KL of ~1e9 from one logvar of 20 beside an O(1) mu in the same row,
say); such an element is counted as ``noise_limited`` and judged by
``|a - n| / noise`` instead (``max_noise_ratio``), which is < ~1 when the
analytic gradient is right.

ReLU is not differentiable at 0: an element whose stencil moves any ReLU
pre-activation across 0 has no meaningful finite difference. It is tried once
more with a step ``KINK_RETRY`` times shorter, and if that still crosses a
kink it is skipped and counted (``skipped`` in the result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import Backend, get_backend
from .errors import SettingsError
from .models.protocol import Model

H = 1e-3
KINK_RETRY = 1e-2
FLOOR = 1e-5
RESOLVE = 1e-7


@dataclass
class CheckResult:
    """Result of one gradient check.

    Attributes:
        max_rel_error: largest per-element error (see module doc) over the elements tested.
        tested: number of elements compared.
        skipped: elements skipped because the stencil crossed a ReLU kink.
        noise_limited: elements the stencil cannot resolve to ``RESOLVE``
            relative, judged by ``max_noise_ratio`` instead of ``max_rel_error``.
        max_noise_ratio: largest ``|a - n| / noise`` over those elements.
    """

    max_rel_error: float
    tested: int
    skipped: int = 0
    noise_limited: int = 0
    max_noise_ratio: float = 0.0

    def passed(self, tol: float = 1e-6) -> bool:
        """True when elements were tested, every resolvable one within ``tol`` (relative, as
        :attr:`max_rel_error`) and every noise-limited one within its rounding bound."""
        return self.tested > 0 and self.max_rel_error <= tol and self.max_noise_ratio <= 1.0


def assert_close(results: dict[str, CheckResult], tol: float = 1e-6) -> None:
    """Raise ``AssertionError`` naming every check of ``results`` that did not pass (:meth:`CheckResult.passed`):
    a gradient off by more than ``tol``, or a check that tested nothing."""
    failed = {name: r for name, r in results.items() if not r.passed(tol)}
    if failed:
        lines = [f"  {name}: {'nothing tested' if not r.tested else f'max_rel_error {r.max_rel_error:.2e}'} "
                 f"(tested {r.tested}, skipped {r.skipped}, noise-limited {r.noise_limited}, "
                 f"max_noise_ratio {r.max_noise_ratio:.2f})" for name, r in failed.items()]
        raise AssertionError(f"gradient check failed at tol={tol:g}:\n" + "\n".join(lines))


def _compare(analytic, numeric, noise, skipped: int, floor: float) -> CheckResult:
    a, n, e = (np.asarray(v, np.float64).ravel() for v in (analytic, numeric, noise))
    limited = e > RESOLVE * np.maximum(np.abs(n), floor)
    ratio = np.abs(a[limited] - n[limited]) / e[limited]
    return CheckResult(rel_error(a[~limited], n[~limited], floor), a.size, skipped,
                       int(limited.sum()), float(ratio.max()) if ratio.size else 0.0)


def rel_error(analytic, numeric, floor: float = FLOOR) -> float:
    """Max over elements of ``|a - n| / max(|a|, |n|, floor)``; 0.0 for empty input."""
    a, n = np.asarray(analytic, np.float64).ravel(), np.asarray(numeric, np.float64).ravel()
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)))


def _stencil(f, t: float, h: float):
    """Fourth-order central difference at ``t`` of ``sum(terms)``, where ``f(t) -> (terms, aux)``.

    The stencil is applied to each term before summing: terms that do not depend
    on ``t`` are bitwise equal at every point and cancel exactly.
    Returns the derivative, its rounding-noise bound and the four ``aux`` values.
    """
    (fm2, am2), (fm1, am1), (fp1, ap1), (fp2, ap2) = [f(t + k * h) for k in (-2, -1, 1, 2)]
    # Every term counts towards the noise, the ones that did not move too: a term
    # that depends on t may change by less than its rounding step and stay put
    # (a KL of 1e7 beside a logvar of 1e-7), and its share of the derivative is lost.
    noise = np.sum(np.abs(fm2) + 8 * np.abs(fm1) + 8 * np.abs(fp1) + np.abs(fp2)) * 2.0**-52 / (12 * h)
    deriv = float(np.sum((fm2 - 8 * fm1) + (8 * fp1 - fp2)) / (12 * h))
    return deriv, noise, (am2, am1, ap1, ap2)


def _relu_pattern(model: Model, batch: int):
    """The sign pattern of every ReLU output of the last forward pass at this batch size."""
    ws = model.workspace(batch)
    pairs = [(model.encoder, ws.enc_outs), (model.decoder, ws.dec_outs)]
    return tuple(
        bytes(np.asarray(model.backend.to_host(out) > 0).ravel())
        for net, outs in pairs
        for layer, out in zip(net.layers, outs) if getattr(layer, "relu", False)
    )


def check_model(model: Model, x, max_per_tensor: int | None = None, seed: int = 0,
                h: float = H, floor: float = FLOOR, **fixed) -> dict[str, CheckResult]:
    """Check every parameter tensor's gradient of a model's mean loss (float64 models only).

    Args:
        model: a :class:`tinyvae.models.protocol.Model` (a VAE or an autoencoder) with
            ``config.dtype == "float64"``; its weights are restored afterwards.
        x: ``(B, D)`` data (in [0, 1] for the Bernoulli decoder).
        max_per_tensor: test at most this many elements per tensor (a seeded
            sample); None tests every element.
        seed: seeds the element sample.
        fixed: the rest of ``model.loss_and_grad``'s arguments, held fixed: all
            its randomness (``noise_seed=S`` fixes every draw of the loss by a
            seed; or the noise itself, ``eps`` of a VAE, ``corrupted`` of a
            denoising autoencoder), and ``beta`` or labels ``y``.

    Returns:
        ``{tensor name: CheckResult}``; judge it with :func:`assert_close`.

    Raises:
        SettingsError: if the model is not float64; if its loss is not the same at
            the same weights (its randomness is not fixed: pass ``noise_seed``); if some tensor had no
            element that could be tested (every one skipped at a ReLU kink).
    """
    if model.dtype != np.float64:
        raise SettingsError("gradient checks need a float64 model (dtype='float64')")
    first = model.loss_and_grad(x, **fixed)
    analytic = model.backend.to_host(model.grad).copy()
    if model.loss_and_grad(x, **fixed) != first:
        raise SettingsError("the model's loss differs between two calls at the same weights, so finite differences "
                         "mean nothing: fix its randomness with noise_seed=")
    p = model.params.data
    batch = np.shape(x)[0]
    base = _relu_pattern(model, batch)
    rng = np.random.default_rng(seed)

    def f_at(i):
        t0 = float(p[i])

        def f(t):  # a forward pass: the backward pass's gradient is not needed here
            p[i] = t
            return model.loss_rows_forward(x, **fixed), _relu_pattern(model, batch)

        return t0, f

    results = {}
    for name in model.params.names:
        lo, hi = model.params.offsets[name]
        idx = np.arange(lo, hi)
        if max_per_tensor is not None and idx.size > max_per_tensor:
            idx = np.sort(rng.choice(idx, max_per_tensor, replace=False))
        a_kept, n_kept, noise_kept, skipped = [], [], [], 0
        for i in idx:
            t0, f = f_at(int(i))
            for step in (h, h * KINK_RETRY):  # a kink in reach of the stencil: try once with a shorter step
                n, noise, patterns = _stencil(f, t0, step)
                p[int(i)] = t0
                if all(pat == base for pat in patterns):
                    break
            else:
                skipped += 1
                continue
            a_kept.append(analytic[i])
            n_kept.append(n)
            noise_kept.append(noise)
        results[name] = _compare(a_kept, n_kept, noise_kept, skipped, floor)
    model.loss_and_grad(x, **fixed)  # leave grad consistent with the restored weights
    untested = [name for name, r in results.items() if r.tested == 0]
    if untested:
        raise SettingsError(f"no element of {', '.join(untested)} could be tested: the stencil crossed a ReLU kink "
                         "at every one; check other elements (seed=, max_per_tensor=) or a smaller h")
    return results


def check_op(fun, inputs: dict, wrt: dict[str, float], floor: float = FLOOR) -> dict[str, CheckResult]:
    """Check the gradient of a scalar function of arrays, element by element.

    Args:
        fun: ``fun(**inputs) -> (terms, grads)`` where ``terms`` is a float64
            host array whose sum is the objective, and ``grads`` maps each name
            in ``wrt`` to its analytic gradient.
        inputs: name -> host array or Python float; those in ``wrt`` must be
            float64 (or a float) and are copied, the copies perturbed.
        wrt: name -> step ``h`` for each input to differentiate; the step is
            scaled by ``max(1, |t|)`` for each element ``t``.

    Returns:
        ``{input name: CheckResult}``; judge it with :func:`assert_close`.

    Raises:
        TypeError: an input in ``wrt`` that is float32, integer or not numeric:
            float32 rounding (about 1e-7 relative) swamps a finite difference,
            and an integer cannot be perturbed.
        KeyError: ``fun`` returned no gradient for an input in ``wrt``.
    """
    inputs = dict(inputs)
    for name in wrt:
        value = inputs[name]
        if isinstance(value, float):
            value = np.float64(value)
        if np.asarray(value).dtype != np.float64:
            raise TypeError(f"check_op differentiates float64 inputs; {name!r} is {np.asarray(value).dtype} "
                            "(float32 rounding swamps the finite difference, an integer cannot be perturbed): "
                            "pass it as np.float64")
        inputs[name] = np.array(value, dtype=np.float64)
    _, grads = fun(**inputs)
    out = {}
    for name, h in wrt.items():
        flat = inputs[name].reshape(-1)
        numeric, noise = np.empty(flat.size), np.empty(flat.size)
        for i in range(flat.size):
            t0 = float(flat[i])

            def f(t, i=i):
                flat[i] = t
                return fun(**inputs)[0], None

            numeric[i], noise[i], _ = _stencil(f, t0, h * max(1.0, abs(t0)))
            flat[i] = t0
        out[name] = _compare(np.asarray(grads[name]).reshape(-1), numeric, noise, 0, floor)
    return out


def op_objectives(backend: Backend | str = "numpy"):
    """Scalar objectives over the loss ops of ``backend``, for :func:`check_op`.

    Maps a name to ``(fun, wrt)``: ``fun`` takes float64 host arrays and returns
    ``(terms, analytic grads)``, the objective being ``sum(terms)``; the weights ``w`` (cotangents) make every output
    of the op count; ``wrt`` names the differentiated inputs.

    * ``bce``: ``sum(bce_with_logits(logits, x) per sample * w)``, gradient wrt logits.
    * ``reparameterize_kl``: ``sum(z * wz) + c * sum(kl)``, gradients wrt mu and logvar.
    * ``gaussian_nll``: ``sum(nll per sample * w)``, gradients wrt the mean and the log-variance.
    """
    be = get_backend(backend) if isinstance(backend, str) else backend
    xp = be.xp

    def bce(logits, x, w):
        B = logits.shape[0]
        loss, dl = xp.empty(B), xp.empty(logits.shape)
        lg, xx = xp.asarray(logits), xp.asarray(x)
        be.bce_with_logits(lg, xx, 1.0, loss, dl)
        ww = xp.asarray(w)
        return be.to_host(loss * ww), {"logits": be.to_host(dl * ww[:, None])}

    def reparameterize_kl(mu, logvar, eps, wz, c):
        heads, e, g = xp.asarray(np.concatenate([mu, logvar], axis=1)), xp.asarray(eps), xp.asarray(wz)
        B, K = e.shape
        z, kl, dheads = xp.empty((B, K)), xp.empty(B), xp.empty((B, 2 * K))
        be.reparameterize_kl(heads, e, z, kl)
        be.reparameterize_kl_backward(g, heads, e, c, dheads)
        terms = xp.concatenate([(z * g).ravel(), c * kl])
        dheads = be.to_host(dheads)
        return be.to_host(terms), {"mu": dheads[:, :K], "logvar": dheads[:, K:]}

    def gaussian_nll(mean, x, logvar, w):
        m, xx, lv = (xp.asarray(a) for a in (mean, x, logvar))
        B, D = m.shape
        loss, dm, dlv, dlv_sum = xp.empty(B), xp.empty((B, D)), xp.empty(D), xp.zeros(D)
        for b in range(B):  # the op sums the log-variance gradient over its rows: one weighted row at a time
            be.gaussian_nll(m[b:b + 1], xx[b:b + 1], lv, float(w[b]), loss[b:b + 1], dm[b:b + 1], dlv)
            dlv_sum += dlv
        return be.to_host(loss) * w, {"mean": be.to_host(dm), "logvar": be.to_host(dlv_sum)}

    return {
        "bce": (bce, {"logits": H}),
        "gaussian_nll": (gaussian_nll, {"mean": H, "logvar": H}),
        "reparameterize_kl": (reparameterize_kl, {"mu": 0.1, "logvar": H}),
    }
