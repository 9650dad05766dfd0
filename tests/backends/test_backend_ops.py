"""Every fused op of every available backend against the NumPy reference op.

Tolerances: float64 to 1e-12 relative; float32 within FLOAT32_RTOL relative
(plus an absolute floor of FLOAT32_ATOL times the output's scale): the fused
float32 ops use their own exp/log1p and sum in another order than the reference.

The CUDA backends (``cuda`` on a GPU, ``cuda-sim`` in the CPU simulator) launch
their kernels with each 2-D array's row stride. They get every array as a view
into the middle of a NaN-filled buffer (a row above and below, columns on both
sides), and their outputs start as NaN: a kernel that addresses a row by its
length instead of its stride, reads past an edge, or leaves an output element
unwritten puts a NaN where the reference has a number, and one that writes past
an edge leaves a number in the margin.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import conv_geometries
from fused_backends import CUDA_BACKENDS, backend_or_skip
from fused_backends import FUSED_BACKENDS as BACKENDS
from tinyvae.backends import get_backend
from tinyvae.backends.reference import ConvGeometry

ref = get_backend("numpy")
FLOAT64_RTOL = 1e-12
FLOAT32_RTOL, FLOAT32_ATOL = 2e-5, 1e-6


STRIDED = ("cuda", "cuda-sim")


def _close(got, want, dtype, scale=None):
    """``got`` within the dtype's tolerance of ``want``; the absolute floor scales with ``scale``, by default
    the largest ``|want|`` (a sum whose terms cancel passes the sum of their magnitudes)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = np.abs(want).max(initial=0) if scale is None else scale
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=FLOAT64_RTOL, atol=1e-300 + FLOAT64_RTOL * 1e-3 * scale)
    else:
        np.testing.assert_allclose(got, want, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL * max(1.0, scale))


def _padded(xp, shape, dtype, fill=np.nan):
    """A buffer filled with ``fill`` and the index of a ``shape`` view in its middle."""
    if len(shape) == 2:
        return xp.full((shape[0] + 2, shape[1] + 5), fill, dtype), (slice(1, shape[0] + 1), slice(2, shape[1] + 2))
    return xp.full(shape[0] + 4, fill, dtype), (slice(2, shape[0] + 2),)


def _margin_untouched(be, buf, idx, fill=np.nan):
    host = np.array(be.to_host(buf), copy=True)
    host[idx] = fill
    assert np.array_equal(host, np.full_like(host, fill), equal_nan=True), "a kernel wrote outside its array"


def _arrays(be, host, shapes, dtype):
    """Backend copies of the ``host`` inputs and new outputs of ``shapes`` (``None`` stays ``None``): plain
    arrays, or for the CUDA backends views into NaN-filled buffers (outputs left NaN). Returns the arrays and
    their ``(buffer, index)`` pairs (empty for plain arrays)."""
    xp = be.xp
    if be.name not in STRIDED:
        return [xp.array(a, copy=True) for a in host] + [None if s is None else xp.zeros(s, dtype) for s in shapes], []
    bufs = [_padded(xp, a.shape, dtype) for a in host] + [_padded(xp, s, dtype) for s in shapes if s is not None]
    views = [buf[idx] for buf, idx in bufs]
    for v, a in zip(views, host):
        v[...] = xp.asarray(a)
    it = iter(views[len(host):])
    return views[:len(host)] + [None if s is None else next(it) for s in shapes], bufs


def _run(be, op, inputs, outs, dtype, extra=(), scale=None):
    """Run op on the reference and on backend ``be`` from the same inputs; compare every output and every
    input (the in-place ops write them). ``outs``: the output shapes, ``None`` for an output not asked for;
    ``scale``: see :func:`_close`, for every output, or a list of one per output."""
    outs = [s if s is None or isinstance(s, tuple) else (s,) for s in outs]
    r_in = [np.array(a, dtype=dtype) for a in inputs]
    f_all, bufs = _arrays(be, r_in, outs, dtype)
    r_out = [None if s is None else np.zeros(s, dtype) for s in outs]
    getattr(ref, op)(*r_in, *extra, *r_out)
    getattr(be, op)(*f_all[:len(r_in)], *extra, *f_all[len(r_in):])
    scales = [None] * len(r_in) + (list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(r_out))
    for a, b, sc in zip(f_all, r_in + r_out, scales):
        if b is not None:
            _close(be.to_host(a), b, dtype, sc)
    for buf, idx in bufs:
        _margin_untouched(be, buf, idx)


dtypes = st.sampled_from([np.float32, np.float64])
sizes = st.tuples(st.integers(1, 300), st.integers(1, 800))


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 60), D=st.integers(1, 800), B=st.integers(1, 70), dtype=dtypes, seed=st.integers(0, 2**16),
       hint=st.sampled_from(["none", "rows", "out of range"]))
def test_gather_pixels(name, N, D, B, dtype, seed, hint):
    """Exactly the reference's values (one float32 product per pixel), whatever the prefetch hint."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (N, D), dtype=np.uint8)
    rows = rng.integers(-N, N, B)  # negative indices count from the end; rows repeat
    next_rows = {"none": None, "rows": rng.integers(0, N, B), "out of range": np.array([N, -N - 1, 10**9])}[hint]
    want = np.empty((B, D), dtype)
    ref.gather_pixels(pixels, rows, 1 / 255, want)
    xp = be.xp
    if name in STRIDED:  # pixels with a row stride, in a margin of 255s; out a view into NaNs
        pbuf, pidx = _padded(xp, pixels.shape, np.uint8, fill=255)
        pbuf[pidx] = xp.asarray(pixels)
        obuf, oidx = _padded(xp, (B, D), dtype)
        dev_pixels, got = pbuf[pidx], obuf[oidx]
    else:
        dev_pixels, got = xp.asarray(pixels), xp.empty((B, D), dtype)
    be.gather_pixels(dev_pixels, xp.asarray(rows), 1 / 255, got, None if next_rows is None else xp.asarray(next_rows))
    np.testing.assert_array_equal(be.to_host(got), want)
    np.testing.assert_array_equal(want, (pixels[rows] * np.float32(1 / 255)).astype(dtype))
    if name in STRIDED:
        _margin_untouched(be, obuf, oidx)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_gather_pixels_rejects_rows_out_of_range(name):
    be = backend_or_skip(name)
    for bad in ([5], [-6]):
        with pytest.raises(IndexError):
            be.gather_pixels(np.zeros((5, 3), np.uint8), np.array(bad), 1 / 255, np.empty((1, 3), np.float32))


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_gather_pixels_takes_rows_modulo_n_in_the_cuda_kernel(name):
    """The GPU does not check row indices (a check would copy to the host every batch)."""
    be = backend_or_skip(name)
    pixels = np.arange(15, dtype=np.uint8).reshape(5, 3)
    out = be.xp.empty((2, 3), np.float32)
    be.gather_pixels(be.xp.asarray(pixels), be.xp.asarray([5, -6]), 1.0, out)
    np.testing.assert_array_equal(be.to_host(out), pixels[[0, 4]])


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_gather_pixels_rejects_a_wrong_out_shape(name):
    be = backend_or_skip(name)
    with pytest.raises(ValueError, match="shape"):
        be.gather_pixels(be.xp.zeros((5, 3), np.uint8), be.xp.asarray([0, 1]), 1 / 255, be.xp.empty((3, 3), np.float32))


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(shape=sizes, dtype=dtypes, seed=st.integers(0, 2**16), extreme=st.booleans(), draws=st.integers(1, 3))
@example(shape=(1, 1), dtype=np.float32, seed=0, extreme=False, draws=1)
@example(shape=(1, 257), dtype=np.float64, seed=1, extreme=True, draws=1)  # one row, one column past a block of 256
def test_bce_with_logits(name, shape, dtype, seed, extreme, draws):
    """Also with the targets of ``draws`` draws given once: ``(B, D)`` for ``(draws B, D)`` logits."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    N = draws * shape[0]
    logits = rng.uniform(-60, 60, (N, shape[1])) if extreme else rng.normal(0, 3, (N, shape[1]))
    x = rng.random(shape) if seed % 2 else (rng.random(shape) < 0.5).astype(float)
    # A row's loss sums max(l, 0) - l x + log1p(e^-|l|), whose first two terms cancel where x is 1 and l > 0:
    # the kernels may add them in another order, so the loss is judged against the size of its terms.
    terms = 2 * np.abs(logits) + np.log1p(np.exp(-np.abs(logits)))
    _run(be, "bce_with_logits", [logits, x], [N, logits.shape], dtype, extra=(1.0 / N,),
         scale=[terms.sum(1).max(), None])


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(shape=sizes, n=st.integers(0, 300), dtype=dtypes, seed=st.integers(0, 2**16), extreme=st.booleans(),
       scaled=st.booleans())
@example(shape=(1, 1), n=1, dtype=np.float32, seed=0, extreme=False, scaled=True)
def test_take_rows(name, shape, n, dtype, seed, extreme, scaled):
    """Exactly the reference's values (one product per value, or a copy), rows in any order and repeated."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=shape) * (1e30 if extreme else 1.0)).astype(dtype)
    weights = (rng.random(shape[0]) * (rng.random(shape[0]) < 0.7)).astype(dtype)  # the bound's cut draws weigh 0
    rows = rng.integers(0, shape[0], n)
    want = np.empty((n, shape[1]), dtype)
    ref.take_rows(a, rows, weights if scaled else None, want)
    np.testing.assert_array_equal(want, a[rows] * weights[rows, None] if scaled else a[rows])
    f_all, bufs = _arrays(be, [a, weights], [(n, shape[1])], dtype)
    dev_a, dev_w, got = f_all
    be.take_rows(dev_a, be.xp.asarray(rows), dev_w if scaled else None, got)
    np.testing.assert_array_equal(be.to_host(got), want)
    for buf, idx in bufs:
        _margin_untouched(be, buf, idx)


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_take_rows_rejects_rows_out_of_range_and_shapes_that_do_not_match(name):
    be = backend_or_skip(name)
    xp = be.xp
    a, out = xp.zeros((5, 3), np.float32), xp.empty((2, 3), np.float32)
    if name not in STRIDED:  # the CUDA kernel takes them modulo N (test below)
        for bad in ([0, 5], [-1, 0]):
            with pytest.raises(IndexError):
                be.take_rows(a, xp.asarray(bad), None, out)
    with pytest.raises(IndexError):
        be.take_rows(xp.zeros((0, 3), np.float32), xp.asarray([0, 0]), None, out)
    for wrong_out, wrong_scale in [((3, 3), None), ((2, 4), None), ((2, 3), 4)]:
        with pytest.raises(ValueError, match="do not match"):
            be.take_rows(a, xp.asarray([0, 1]), None if wrong_scale is None else xp.ones(wrong_scale, np.float32),
                         xp.empty(wrong_out, np.float32))


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_take_rows_takes_rows_modulo_n_in_the_cuda_kernel(name):
    """The GPU does not check row indices (a check would copy to the host every step)."""
    be = backend_or_skip(name)
    a = np.arange(15, dtype=np.float32).reshape(5, 3)
    out = be.xp.empty((2, 3), np.float32)
    be.take_rows(be.xp.asarray(a), be.xp.asarray([5, -6]), None, out)
    np.testing.assert_array_equal(be.to_host(out), a[[0, 4]])


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(shape=sizes, dtype=dtypes, seed=st.integers(0, 2**16), learned=st.booleans(), draws=st.integers(1, 3))
def test_gaussian_nll(name, shape, dtype, seed, learned, draws):
    """Also with the targets of ``draws`` draws given once, as the BCE's."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    B, D = shape
    N = draws * B
    mean, x, logvar = rng.normal(size=(N, D)), rng.random(shape), rng.uniform(-8, 8, D)
    nll = 0.5 * ((np.tile(x, (draws, 1)) - mean) ** 2 * np.exp(-logvar) + logvar + np.log(2 * np.pi))  # the sums' terms
    _run(be, "gaussian_nll", [mean, x, logvar], [N, mean.shape, D if learned else None], dtype, extra=(1.0 / N,),
         scale=max(np.abs(nll).sum(1).max(), (0.5 + np.abs(nll)).sum(0).max() / N))


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_likelihoods_reject_targets_that_are_not_whole_draws(name):
    """3 target rows for 4 outputs (or none) cannot be the draws of one batch: ``ValueError`` on every backend."""
    be = backend_or_skip(name)
    xp = be.xp
    out, nll = xp.zeros((4, 5)), xp.zeros(4)
    for rows in (3, 0):
        x = xp.zeros((rows, 5))
        with pytest.raises(ValueError, match="draws"):
            be.bce_with_logits(out, x, 1.0, nll, xp.zeros((4, 5)))
        with pytest.raises(ValueError, match="draws"):
            be.gaussian_nll(out, x, xp.zeros(5), 1.0, nll, xp.zeros((4, 5)), xp.zeros(5))


def _draws_cases(test):
    """The IWAE ops' cases, on every fused backend: k draws of B examples of K latent values, either dtype,
    ``extreme`` values or not, and the smallest case always."""
    test = example(B=1, k=1, K=1, dtype=np.float32, seed=0, extreme=False)(test)
    test = given(B=st.integers(1, 70), k=st.integers(1, 9), K=st.integers(1, 24), dtype=dtypes,
                 seed=st.integers(0, 2**16), extreme=st.booleans())(test)
    return pytest.mark.parametrize("name", BACKENDS)(settings(max_examples=30, deadline=None)(test))


@_draws_cases
def test_importance_weights(name, B, k, K, dtype, seed, extreme):
    """The bound and the weights; ``extreme``: log weights hundreds of nats apart, most weights cut to 0."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    N = k * B
    mu, logvar = rng.normal(0, 1, (N, K)), rng.normal(0, 1, (N, K))
    eps = rng.standard_normal((N, K)) * (8 if extreme else 1)
    z = mu + np.exp(0.5 * logvar) * eps
    nll = rng.uniform(50, 600 if extreme else 60, N)
    # A weight is the exp of its log weight less the others': it is as exact, relative to its size (at most
    # 1 / B), as the log weights, sums whose terms reach `terms` nats, rounded in the dtype and summed in
    # another order by each backend. Passed as the absolute floor of _close for weights up to 1 / B.
    terms = (nll + (z * z).sum(1) + (eps * eps).sum(1) + np.abs(logvar).sum(1)).max()
    floor = FLOAT32_ATOL if dtype == np.float32 else FLOAT64_RTOL * 1e-3
    _run(be, "importance_weights", [nll, np.concatenate([mu, logvar], 1), eps, z], [N, B], dtype,
         extra=(1.0 / B,), scale=[8 * np.finfo(dtype).eps * terms / B / floor, terms])


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_importance_weights_rejects_rows_that_are_not_whole_draws(name):
    be = backend_or_skip(name)
    z, xp = np.zeros((6, 2)), be.xp
    for B, heads in ((4, np.zeros((6, 4))), (3, np.zeros((6, 3))), (0, np.zeros((6, 4)))):
        with pytest.raises(ValueError, match="importance_weights"):
            be.importance_weights(xp.zeros(6), xp.asarray(heads), xp.asarray(z), xp.asarray(z), 1.0, xp.zeros(6),
                                  xp.zeros(B))


@_draws_cases
def test_importance_weights_backward(name, B, k, K, dtype, seed, extreme):
    """The gradient at each example's [mu | logvar] from its k draws; ``extreme``: logvar up to +-20, most weights
    0 (as the cut leaves them) and the others up to 1 / B."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    N = k * B
    heads, _ = _latent(rng, (B, K), extreme)
    eps = rng.standard_normal((N, K))
    z = np.tile(heads[:, :K], (k, 1)) + np.tile(np.exp(0.5 * heads[:, K:]), (k, 1)) * eps
    weights = rng.dirichlet(np.ones(k), B).T.reshape(N) / B
    if extreme:
        weights[rng.random(N) < 0.7] = 0
    _run(be, "importance_weights_backward", [rng.normal(0, 1e-2, (N, K)), weights, heads, eps, z], [(B, 2 * K)],
         dtype)


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_importance_weights_backward_rejects_rows_that_are_not_whole_draws(name):
    be = backend_or_skip(name)
    xp = be.xp
    z = xp.zeros((6, 2))
    for B, heads, weights in ((4, (4, 4), 6), (3, (6, 4), 6), (3, (3, 3), 6), (3, (3, 4), 5), (0, (0, 4), 6)):
        with pytest.raises(ValueError, match="importance_weights_backward"):
            be.importance_weights_backward(z, xp.zeros(weights), xp.zeros(heads), z, z, xp.zeros((B, 4)))


def _latent(rng, shape, extreme):
    """``heads (B, 2K) = [mu | logvar]`` and ``eps (B, K)``."""
    mu = rng.uniform(-10, 10, shape) if extreme else rng.normal(0, 1, shape)
    logvar = rng.uniform(-20, 20, shape) if extreme else rng.normal(0, 1, shape)
    return np.concatenate([mu, logvar], axis=1), rng.standard_normal(shape)


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 700), K=st.integers(1, 40), dtype=dtypes, seed=st.integers(0, 2**16), extreme=st.booleans())
@example(B=1, K=33, dtype=np.float64, seed=0, extreme=False)  # K past a warp of 32
def test_reparameterize_kl(name, B, K, dtype, seed, extreme):
    be = backend_or_skip(name)
    heads, eps = _latent(np.random.default_rng(seed), (B, K), extreme)
    _run(be, "reparameterize_kl", [heads, eps], [(B, K), B], dtype)


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 700), K=st.integers(1, 40), dtype=dtypes, seed=st.integers(0, 2**16), extreme=st.booleans())
def test_reparameterize_kl_backward(name, B, K, dtype, seed, extreme):
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    heads, eps = _latent(rng, (B, K), extreme)
    dz = rng.normal(0, 1e-2, (B, K))
    _run(be, "reparameterize_kl_backward", [dz, heads, eps], [(B, 2 * K)], dtype, extra=(0.3 / B,))


@pytest.mark.parametrize("name", BACKENDS)
def test_latent_ops_take_column_views_for_z(name):
    """z and dz arrive as the first K columns of the decoder's (B, K + C) input, as in a CVAE (for the IWAE's
    op, with one draw an example)."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(0)
    heads, eps = _latent(rng, (37, 5), False)
    dzin, weights = rng.normal(size=(37, 8)), rng.random(37)
    outs = {}
    for b in (ref, be):
        zin, kl, d, dw = b.xp.zeros((37, 8)), b.xp.zeros(37), b.xp.zeros((37, 10)), b.xp.zeros((37, 10))
        h, e, dz = b.xp.asarray(heads), b.xp.asarray(eps), b.xp.asarray(dzin)[:, :5]
        b.reparameterize_kl(h, e, zin[:, :5], kl)
        b.reparameterize_kl_backward(dz, h, e, 0.1, d)
        b.importance_weights_backward(dz, b.xp.asarray(weights), h, e, zin[:, :5], dw)
        outs[b.name] = [b.to_host(a) for a in (zin, kl, d, dw)]
    assert not outs[be.name][0][:, 5:].any()  # the label columns are left alone
    for a, r in zip(outs[be.name], outs["numpy"]):
        _close(a, r, np.float64)


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(shape=sizes, dtype=dtypes, seed=st.integers(0, 2**16), relu=st.booleans())
@example(shape=(2305, 3), dtype=np.float64, seed=0, relu=True)  # 10 chunks of rows, the last one short
@example(shape=(257, 40), dtype=np.float32, seed=1, relu=False)  # one row past a chunk
def test_bias_act_backward(name, shape, dtype, seed, relu):
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    out = np.maximum(rng.normal(size=shape), 0) if relu else rng.normal(size=shape)
    dout = rng.normal(size=shape)
    _run(be, "bias_act_backward", [dout, out], [shape[1]], dtype, extra=(relu,), scale=np.abs(dout).sum(0).max())


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(shape=sizes, dtype=dtypes, seed=st.integers(0, 2**16), relu=st.booleans())
def test_bias_act(name, shape, dtype, seed, relu):
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    _run(be, "bias_act", [rng.normal(size=shape), rng.normal(size=shape[1])], [], dtype, extra=(relu,))


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(g=conv_geometries(side=16, channels=9), B=st.integers(1, 5), dtype=dtypes, seed=st.integers(0, 2**16))
@example(g=ConvGeometry(28, 28, 1, 4, 4, 2, 1), B=3, dtype=np.float32, seed=0)  # the conv VAE's first layer
@example(g=ConvGeometry(14, 14, 32, 4, 4, 2, 1), B=2, dtype=np.float64, seed=1)  # and its second
def test_unfold_and_fold(name, g, B, dtype, seed):
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    rows = B * g.H_out * g.W_out
    _run(be, "unfold", [rng.normal(size=(B, g.H * g.W * g.C))], [(rows, g.patch)], dtype, extra=(g,))
    cols = rng.normal(size=(rows, g.patch))
    _run(be, "fold", [cols], [(B, g.H * g.W * g.C)], dtype, extra=(g,), scale=g.kh * g.kw * np.abs(cols).max())


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=20, deadline=None)
@given(P=st.integers(1, 5000), dtype=dtypes, seed=st.integers(0, 2**16), step=st.integers(1, 1000))
def test_adam_step(name, P, dtype, seed, step):
    be = backend_or_skip(name)
    rng = np.random.default_rng(seed)
    p, g, m = rng.normal(size=(3, P))
    v = rng.random(P) * 1e-2
    _run(be, "adam_step", [p, g, m, v], [], dtype, extra=(1e-3, 0.9, 0.999, 1e-8, step))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step(name, nesterov):
    be = backend_or_skip(name)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _run(be, "sgd_step", list(rng.normal(size=(3, 1001))), [], dtype, extra=(0.05, 0.9, nesterov))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("M,K,N", [(7, 5, 3), (3, 40, 100), (1, 9, 1), (257, 3, 2), (64, 300, 64), (2, 1, 5),
                                   (5, 200, 150)])
def test_matmul(name, M, K, N):
    """Every layout the layers pass (each operand C-contiguous or a transposed view), both dtypes, slabs
    split by rows (M >= N, or K <= 128) and by columns (the last; with b a transposed view, its product
    computed transposed), fewer rows or columns than threads."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(M * K * N)
    for dtype in (np.float32, np.float64):
        a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
        want = a @ b
        for a_in in (a, np.asfortranarray(a)):
            for b_in in (b, np.asfortranarray(b)):
                out = be.xp.full((M, N), np.nan, dtype)
                be.matmul(be.xp.asarray(a_in.astype(dtype)), be.xp.asarray(b_in.astype(dtype)), out)
                _close(be.to_host(out), want, dtype, scale=np.abs(a).max() * np.abs(b).max() * K)


_PAIRS = [((784, 37, 400), (37, 784, 400)),  # a layer's weight and input gradients (dout.T @ x, dout @ W)
          ((3, 200, 150), (3, 200, 150)),  # the same shape twice, wider than tall, K over 128
          ((7, 5, 3), (257, 3, 2)), ((1, 9, 1), (2, 1, 5))]


@pytest.mark.parametrize("name,threads", [*(pytest.param(*b.values, None, marks=b.marks) for b in BACKENDS),
                                          ("numba", 4), ("numba", 5)])
@pytest.mark.parametrize("first,second", _PAIRS)
def test_matmul_pair(name, threads, first, second, monkeypatch):
    """Two GEMMs in one call, in every layout the layers pass, both dtypes; on the numba backend also as if it
    had 4 or 5 threads (2 and 3 a product, the prange's parts run on the threads there are): row, column and
    transposed-product slabs side by side, two transposed products of one shape each in its own buffer."""
    be = backend_or_skip(name)
    if threads is not None:
        monkeypatch.setattr("numba.get_num_threads", lambda: threads)
    rng = np.random.default_rng(sum(first) * sum(second))
    for dtype in (np.float32, np.float64):
        ab = [(rng.standard_normal((M, K)), rng.standard_normal((K, N))) for M, K, N in (first, second)]
        for layout in (np.ascontiguousarray, np.asfortranarray):
            args = []
            for a, b in ab:
                out = be.xp.full((a.shape[0], b.shape[1]), np.nan, dtype)
                args += [be.xp.asarray(layout(a).astype(dtype)), be.xp.asarray(layout(b).astype(dtype)), out]
            be.matmul_pair(*args)
            for (a, b), out in zip(ab, (args[2], args[5])):
                _close(be.to_host(out), a @ b, dtype, scale=np.abs(a).max() * np.abs(b).max() * a.shape[1])


@pytest.mark.parametrize("name", BACKENDS)
def test_matmul_pair_where_an_output_is_an_operand_of_the_other_goes_in_order(name):
    """As two ``matmul`` calls in order: ``out2 = out1 @ b2`` reads the first product, and the first product reads
    ``b1`` before ``out2``, which overlaps it, is written."""
    be = backend_or_skip(name)
    rng = np.random.default_rng(1)
    a1, b1, b2 = (be.xp.asarray(rng.standard_normal(s)) for s in ((6, 8), (8, 5), (5, 4)))
    h1, hb2 = be.to_host(a1) @ be.to_host(b1), be.to_host(b2)
    out1, out2 = be.xp.empty((6, 5)), be.xp.empty((6, 4))
    be.matmul_pair(a1, b1, out1, out1, b2, out2)
    np.testing.assert_allclose(be.to_host(out1), h1, rtol=1e-12)
    np.testing.assert_allclose(be.to_host(out2), h1 @ hb2, rtol=1e-12)
    c = be.xp.asarray(rng.standard_normal((8, 9)))
    hc = be.to_host(c).copy()
    be.matmul_pair(a1, c[:, :5], out1, a1[:, :5], b2, c[:6, 1:5])  # out2 inside b1
    np.testing.assert_allclose(be.to_host(out1), be.to_host(a1) @ hc[:, :5], rtol=1e-12)
    np.testing.assert_allclose(be.to_host(c)[:6, 1:5], be.to_host(a1)[:, :5] @ hb2, rtol=1e-12)
    with pytest.raises(ValueError):
        be.matmul_pair(a1, b1, out1, a1, b1, be.xp.empty((6, 4)))


def test_numba_matmul_takes_any_layout_and_leaves_blas_threads_as_they_were():
    be = backend_or_skip("numba")
    from tinyvae.backends import numba_gemm

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 8)), rng.standard_normal((4, 5))
    out = np.empty((3, 5))
    be.matmul(a[::2, ::2], b, out)  # a layout BLAS cannot read in place: numpy.matmul
    np.testing.assert_allclose(out, a[::2, ::2] @ b, rtol=1e-13)
    for view in (a[1:4, 2:6], a[2:6, 1:4].T, a[::-1][:3, :4]):  # rows apart (lda > K), transposed, reversed
        be.matmul(view, b, out)
        np.testing.assert_allclose(out, view @ b, rtol=1e-13)
    wide = np.zeros((3, 9))
    be.matmul(a[:3, :4], b, wide[:, 2:7])  # into a view whose rows lie apart
    np.testing.assert_allclose(wide[:, 2:7], a[:3, :4] @ b, rtol=1e-13)
    assert not wide[:, :2].any() and not wide[:, 7:].any()
    c = rng.standard_normal((8, 8))
    want = c[:, :4] @ c[:4, 4:]
    be.matmul(c[:, :4], c[:4, 4:], c[:, 4:])  # out overlaps an operand: numpy.matmul, which copies
    np.testing.assert_allclose(c[:, 4:], want, rtol=1e-13)
    frozen = a[:3, :4].copy()
    frozen.flags.writeable = False  # read-only operands (a memory-mapped file's), unaligned ones too
    unaligned = np.frombuffer(np.zeros(4 * 5 * 8 + 1, np.uint8).data, np.float64, 20, offset=1).reshape(4, 5)
    unaligned[...] = b
    assert not unaligned.flags.aligned
    be.matmul(frozen, unaligned, out)
    np.testing.assert_allclose(out, a[:3, :4] @ b, rtol=1e-13)
    gW = np.empty((5, 5))
    be.matmul_pair(frozen, unaligned, out, unaligned.T, unaligned, gW)
    np.testing.assert_allclose(gW, b.T @ b, rtol=1e-13)
    frozen_out = np.empty((3, 5))
    frozen_out.flags.writeable = False
    with pytest.raises(ValueError):  # as NumPy: the output is read-only
        be.matmul(frozen, b, frozen_out)
    with pytest.raises(ValueError):  # never a BLAS call past the arrays' ends
        be.matmul(a[:3], b, out)
    with pytest.raises(ValueError):
        be.matmul(a[:3, :4], b, np.empty((3, 4)))
    with pytest.MonkeyPatch.context() as mp:  # a NumPy whose BLAS lacks the entry points
        mp.setattr(numba_gemm, "OWN_GEMMS", False)
        out[...] = np.nan
        be.matmul(a[:3, :4], b, out)
        np.testing.assert_allclose(out, a[:3, :4] @ b, rtol=1e-13)
    if not numba_gemm.OWN_GEMMS:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS with openblas_set_num_threads_local: numpy.matmul")
    import ctypes

    from tinyvae.backends.blas import numpy_blas

    local = ctypes.CDLL(numpy_blas()["filepath"]).openblas_set_num_threads_local
    local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
    before = local(3)  # the caller's setting, which the GEMM sets to 1 for its parts and puts back
    be.matmul(rng.standard_normal((200, 30)), rng.standard_normal((30, 20)), np.empty((200, 20)))
    assert local(before) == 3  # and the process's own setting is put back too: 3 threads on 2 cores would spin


def test_the_numba_bias_gradient_does_not_depend_on_the_thread_count():
    """Its column sums go by fixed blocks of rows whatever thread runs each: a run's numbers do not change
    with the machine's cores."""
    numba = pytest.importorskip("numba")
    be = backend_or_skip("numba")
    rng = np.random.default_rng(0)
    dout, out = rng.standard_normal((1000, 300)).astype(np.float32), rng.standard_normal((1000, 300)).astype(np.float32)
    got = []
    before = numba.get_num_threads()
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            db = np.empty(300, np.float32)
            be.bias_act_backward(dout.copy(), out, True, db)
            got.append(db)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(got[0], got[1])


def test_the_numba_float32_exp_and_log1p_are_within_three_ulps():
    """The likelihoods' and the latent ops' float32 functions over dense grids of their ranges and tiny
    arguments, against float64: exp_neg32 on [0, 87] and exp32 on [-87, 87] within 2 units in the last place
    of float32, log1p_unit32 on [0, 1] within 3 (its atanh series is evaluated in float32)."""
    from numba import njit

    from tinyvae.backends import numba_math as nm

    @njit
    def ours(a, x, e, exp_neg, exp, log1p):
        for i in range(a.shape[0]):
            exp_neg[i], exp[i], log1p[i] = nm.exp_neg32(a[i]), nm.exp32(x[i]), nm.log1p_unit32(e[i])

    grid = lambda lo, hi: np.concatenate([np.linspace(lo, hi, 1_000_001), np.geomspace(1e-30, 1e-3, 10_000)])
    a, e = grid(0, 87).astype(np.float32), grid(0, 1).astype(np.float32)
    x = np.concatenate([-a, a])[::2].copy()
    exp_neg, exp, log1p = np.empty_like(a), np.empty_like(x), np.empty_like(e)
    ours(a, x, e, exp_neg, exp, log1p)
    for got, want, bound in ((exp_neg, np.exp(-a.astype(np.float64)), 2), (exp, np.exp(x.astype(np.float64)), 2),
                             (log1p, np.log1p(e.astype(np.float64)), 3)):
        ulps = np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
        assert ulps[want > 0].max() <= bound, ulps.max()


_CALL_EVERY_NUMBA_KERNEL = """
import numpy as np
from tinyvae.backends import numba_ops as n
for dt in (np.float32, np.float64):
    a, k = np.ones((3, 5), dt), np.ones(3, dt)
    n.bce_with_logits(a, a, 1.0, k, a.copy())
    n.gaussian_nll(a, a, a[0], 1.0, k, a.copy(), a[0].copy())
    n.gaussian_nll(a, a, a[0], 1.0, k, a.copy(), None)
    heads = np.ones((3, 10), dt)
    n.reparameterize_kl(heads, a, a.copy(), k)
    n.importance_weights(k, heads, a, a, 1.0, k.copy(), k[:1].copy())
    n.importance_weights_backward(a, k, heads[:1], a, a, heads[:1].copy())
    n.take_rows(a, np.arange(3), k, a.copy())
    n.take_rows(a, np.arange(3), None, a.copy())
    n.reparameterize_kl_backward(a, heads, a, 1.0, heads.copy())
    n.bias_act(a.copy(), k.copy()[:1].repeat(5), True)
    n.bias_act_backward(a.copy(), a, True, k.copy()[:1].repeat(5))
    n.bias_act_backward(a.copy(), a, False, k.copy()[:1].repeat(5))
    tall = np.ones((200, 9), dt)  # blocks of rows on every thread
    n.bias_act_backward(tall.copy(), tall, True, tall[0].copy())
    n.matmul(a, a.T, np.empty((3, 3), dt))
    n.matmul_pair(a, a.T, np.empty((3, 3), dt), a.T, a, np.empty((5, 5), dt))
    p = np.ones(7, dt)
    n.adam_step(p, p.copy(), p.copy(), p.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
    n.sgd_step(p, p.copy(), p.copy(), 1e-2, 0.9, True)
from tinyvae.backends import numba_gemm as g
misses = {name: dict(f.stats.cache_misses) for name, f in (*vars(n).items(), *vars(g).items())
          if hasattr(f, "stats") and hasattr(f, "py_func") and f.stats.cache_misses}
print(misses)
"""


def test_numba_kernels_load_from_the_cache_in_a_second_process():
    import subprocess
    import sys

    run = lambda: subprocess.run([sys.executable, "-c", _CALL_EVERY_NUMBA_KERNEL],
                                 capture_output=True, text=True, check=True).stdout.strip()
    run()  # compiles whatever is not cached yet
    assert run() == "{}", "kernels compiled again in a second process"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_optimisers_store_subnormal_moments_as_zero(dtype):
    """A moment below the dtype's smallest normal number is stored as 0 (see numba_ops: subnormal arithmetic
    is microcoded on Intel CPUs); it could not have moved its weight; a NaN still goes through."""
    be = backend_or_skip("numba")
    tiny = np.finfo(dtype).tiny
    m = np.array([tiny * 0.5, tiny * 4, -tiny * 0.25, 0.1, np.nan], dtype)
    v = np.array([tiny * 0.5, tiny * 4, tiny * 0.25, 0.2, 0.2], dtype)
    g = np.zeros(5, dtype)
    p = np.full(5, 0.5, dtype)
    want_p = p.copy()
    ref.adam_step(want_p, g.copy(), m.copy(), v.copy(), 1e-3, 0.9, 0.999, 1e-8, 3)
    be.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 3)
    assert m[0] == m[2] == v[0] == v[2] == 0 and m[1] != 0 and v[1] != 0 and np.isnan(m[4])
    np.testing.assert_array_equal(p[:4], want_p[:4])  # the flushed moments moved nothing
    assert np.isnan(p[4])
    buf = np.array([tiny * 0.5, 1.0], dtype)
    be.sgd_step(np.ones(2, dtype), np.zeros(2, dtype), buf, 0.1, 0.9, False)
    assert buf[0] == 0 and buf[1] == dtype(0.9)
