"""The reference ops: formulas, stability at extreme values, and their gradients (float64)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinyvae import gradcheck
from tinyvae.backends import get_backend

ref = get_backend("numpy")
TOL = 1e-6  # max relative error of the float64 finite-difference checks

shapes = st.tuples(st.integers(1, 6), st.integers(1, 9))
finite = dict(allow_nan=False, allow_infinity=False)


def _bce(logits, x):
    loss, dl = np.empty(logits.shape[0]), np.empty_like(logits)
    ref.bce_with_logits(logits, x, 1.0, loss, dl)
    return loss, dl


def test_bce_matches_the_textbook_formula_where_it_is_safe():
    rng = np.random.default_rng(0)
    l, x = rng.uniform(-8, 8, (4, 10)), rng.random((4, 10))
    y = 1 / (1 + np.exp(-l))
    loss, dl = _bce(l, x)
    np.testing.assert_allclose(loss, -(x * np.log(y) + (1 - x) * np.log(1 - y)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(dl, y - x, rtol=1e-12, atol=1e-15)


@given(st.data())
def test_bce_is_finite_and_exact_at_extreme_logits(data):
    shape = data.draw(shapes)
    l = data.draw(arrays(np.float64, shape, elements=st.floats(-60, 60, **finite)))
    x = data.draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 0.5, 0.25])))
    loss, dl = _bce(l, x)
    assert np.isfinite(loss).all() and np.isfinite(dl).all()
    assert (dl >= -1).all() and (dl <= 1).all()
    # softplus(l) - l x == bce; softplus via logaddexp is exact for all l.
    np.testing.assert_allclose(loss, (np.logaddexp(0, l) - l * x).sum(1), rtol=1e-12, atol=1e-12)


@given(st.data())
def test_reparameterize_kl_forward_at_extremes(data):
    shape = data.draw(shapes)
    mu = data.draw(arrays(np.float64, shape, elements=st.floats(-10, 10, **finite)))
    logvar = data.draw(arrays(np.float64, shape, elements=st.floats(-20, 20, **finite)))
    eps = data.draw(arrays(np.float64, shape, elements=st.floats(-5, 5, **finite)))
    z, kl = np.empty(shape), np.empty(shape[0])
    ref.reparameterize_kl(np.concatenate([mu, logvar], axis=1), eps, z, kl)
    np.testing.assert_allclose(z, mu + np.sqrt(np.exp(logvar)) * eps, rtol=1e-12, atol=1e-12)
    # KL(N(mu, s^2) || N(0, 1)) per dimension = log(1/s) + (s^2 + mu^2)/2 - 1/2 >= 0
    s2 = np.exp(logvar)
    np.testing.assert_allclose(kl, (-0.5 * logvar + 0.5 * (s2 + mu**2) - 0.5).sum(1), rtol=1e-10, atol=1e-9)
    assert (kl >= -1e-9).all()


def _assert_passes(results):
    for name, r in results.items():
        assert r.max_rel_error < TOL, (name, r)
        assert r.max_noise_ratio < 2.0, (name, r)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bce_gradient(data):
    fun, wrt = gradcheck.op_objectives()["bce"]
    shape = data.draw(shapes)
    inputs = dict(
        logits=data.draw(arrays(np.float64, shape, elements=st.floats(-60, 60, **finite))),
        x=data.draw(arrays(np.float64, shape, elements=st.floats(0, 1, **finite))),
        w=data.draw(arrays(np.float64, shape[:1], elements=st.floats(-2, 2, **finite))),
    )
    _assert_passes(gradcheck.check_op(fun, inputs, wrt))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_reparameterize_kl_gradient(data):
    fun, wrt = gradcheck.op_objectives()["reparameterize_kl"]
    shape = data.draw(shapes)
    inputs = dict(
        mu=data.draw(arrays(np.float64, shape, elements=st.floats(-10, 10, **finite))),
        logvar=data.draw(arrays(np.float64, shape, elements=st.floats(-20, 20, **finite))),
        eps=data.draw(arrays(np.float64, shape, elements=st.floats(-5, 5, **finite))),
        wz=data.draw(arrays(np.float64, shape, elements=st.floats(-2, 2, **finite))),
        c=data.draw(st.floats(0, 2)),
    )
    _assert_passes(gradcheck.check_op(fun, inputs, wrt))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_gaussian_nll_gradient(data):
    fun, wrt = gradcheck.op_objectives()["gaussian_nll"]
    shape = data.draw(shapes)
    inputs = dict(
        mean=data.draw(arrays(np.float64, shape, elements=st.floats(-5, 5, **finite))),
        x=data.draw(arrays(np.float64, shape, elements=st.floats(-2, 3, **finite))),
        logvar=data.draw(arrays(np.float64, shape[1:], elements=st.floats(-10, 10, **finite))),
        w=data.draw(arrays(np.float64, shape[:1], elements=st.floats(-2, 2, **finite))),
    )
    _assert_passes(gradcheck.check_op(fun, inputs, wrt))


def test_gaussian_nll_is_the_normal_log_density():
    """Against the textbook density: log N(x; m, s^2) summed over pixels (s = exp(lv / 2))."""
    rng = np.random.default_rng(3)
    m, x, lv = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=6)
    s = np.exp(lv / 2)
    log_density = -np.log(s * np.sqrt(2 * np.pi)) - (x - m) ** 2 / (2 * s**2)
    loss = np.empty(4)
    ref.gaussian_nll(m, x, lv, 1.0, loss, np.empty((4, 6)), None)
    np.testing.assert_allclose(loss, -log_density.sum(1), rtol=1e-13)


def test_gradcheck_catches_a_wrong_gradient():
    """The checker must fail when the analytic gradient is off (here: the KL term's 0.5 dropped)."""
    def wrong(dz, heads, eps, kl_scale, dheads_out):
        ref.reparameterize_kl_backward(dz, heads, eps, kl_scale, dheads_out)
        K = eps.shape[1]
        dheads_out[:, K:] += 0.5 * kl_scale * (np.exp(heads[:, K:]) - 1)

    broken = ref.__class__(**{**ref.__dict__, "reparameterize_kl_backward": wrong})
    fun, wrt = gradcheck.op_objectives(broken)["reparameterize_kl"]
    rng = np.random.default_rng(0)
    inputs = dict(mu=rng.normal(size=(3, 4)), logvar=rng.normal(size=(3, 4)), eps=rng.normal(size=(3, 4)),
                  wz=rng.normal(size=(3, 4)), c=0.7)
    assert gradcheck.check_op(fun, inputs, wrt)["logvar"].max_rel_error > 1e-2


@pytest.mark.parametrize("relu", [True, False])
def test_bias_act_backward(relu):
    rng = np.random.default_rng(1)
    out = np.maximum(rng.normal(size=(5, 7)), 0) if relu else rng.normal(size=(5, 7))
    dout = rng.normal(size=(5, 7))
    expected = dout * (out > 0) if relu else dout.copy()
    db = np.empty(7)
    ref.bias_act_backward(dout, out, relu, db)
    np.testing.assert_array_equal(dout, expected)
    np.testing.assert_allclose(db, expected.sum(0), rtol=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_matches_its_formula(nesterov):
    rng = np.random.default_rng(2)
    p, g, buf = rng.normal(size=10), rng.normal(size=10), rng.normal(size=10)
    b2 = 0.9 * buf + g
    expected = p - 0.1 * ((g + 0.9 * b2) if nesterov else b2)
    ref.sgd_step(p, g, buf, 0.1, 0.9, nesterov)
    np.testing.assert_allclose(p, expected, rtol=1e-14)
    np.testing.assert_allclose(buf, b2, rtol=1e-14)
