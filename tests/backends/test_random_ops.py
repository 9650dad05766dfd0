"""The random ops on every backend against the numpy reference (tinyvae.rng's layout): Philox's words bit for
bit, the draws inside their consumers (eps in the reparameterisation, the dae's corruption, the binarising
gather) bit for bit where they are integers and comparisons, to the rounding of log, cos and sin where they
are normals."""

import math

import numpy as np
import pytest

from tinyvae import rng
from tinyvae.backends import get_backend

from fused_backends import FUSED_BACKENDS, backend_or_skip

REF = get_backend("numpy")
KEY = rng.stream_key(11, "eps")


def _on(be, a):
    return be.xp.asarray(a)


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


def test_the_reference_op_is_tinyvae_rng():
    c = np.random.default_rng(1).integers(0, 2**32, (100, 4), dtype=np.uint32)
    out = np.empty_like(c)
    REF.philox4x32_10(c, KEY, out)
    np.testing.assert_array_equal(out, rng.philox4x32_10(c, KEY))


@pytest.mark.parametrize("name", FUSED_BACKENDS)
def test_philox_words_equal_the_reference_bit_for_bit_on_10000_counters(name):
    be = backend_or_skip(name)
    c = np.random.default_rng(2).integers(0, 2**32, (10_000, 4), dtype=np.uint32)
    c[:3] = [[0, 0, 0, 0], [2**32 - 1] * 4, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]]
    key = np.array([0xA4093822, 0x299F31D0], np.uint32)
    out = _on(be, np.zeros_like(c))
    be.philox4x32_10(_on(be, c), key, out)
    np.testing.assert_array_equal(be.to_host(out), rng.philox4x32_10(c, key))


ROWS = np.array([0, 5, 59_999, 2**32 + 3, 17], np.int64)  # dataset indices, not 0..B-1


@pytest.mark.parametrize("name", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L, K", [(1, 20), (3, 5), (2, 1)])
def test_draw_normal_and_the_reparameterisation_that_draws_its_eps(name, dtype, L, K):
    be = backend_or_skip(name)
    B = ROWS.size
    want = np.empty((L * B, K), dtype)
    REF.draw_normal(KEY, 9, ROWS, want)
    got = _on(be, np.zeros((L * B, K), dtype))
    be.draw_normal(KEY, 9, _on(be, ROWS), got)
    np.testing.assert_allclose(be.to_host(got), want, **_tol(dtype))

    heads = np.random.default_rng(3).normal(size=(L * B, 2 * K)).astype(dtype)
    outs = [np.empty((L * B, K), dtype), np.empty((L * B, K), dtype), np.empty(L * B, dtype)]
    REF.reparameterize_kl_draw(heads, KEY, 9, ROWS, *outs)
    np.testing.assert_array_equal(outs[0], want)
    dev = [_on(be, np.zeros_like(o)) for o in outs]
    be.reparameterize_kl_draw(_on(be, heads), KEY, 9, _on(be, ROWS), *dev)
    for a, b in zip(dev, outs):
        np.testing.assert_allclose(be.to_host(a), b, **_tol(dtype))


def test_row_l_b_draws_elements_l_k_on_of_example_b():
    B, L, K = 3, 2, 3
    out = np.empty((L * B, K))
    REF.draw_normal(KEY, 4, ROWS[:B], out)
    z = rng.normals(KEY, 4, ROWS[:B], L * K)
    for l in range(L):
        np.testing.assert_array_equal(out[l * B:(l + 1) * B], z[:, l * K:(l + 1) * K])


@pytest.mark.parametrize("name", ["numpy", *FUSED_BACKENDS])
@pytest.mark.parametrize("kind, noise", [("mask", 0.3), ("mask", 0.0), ("mask", 1.0), ("salt-and-pepper", 0.5),
                                         ("gaussian", 0.2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_corrupt_equals_the_reference(name, kind, noise, dtype):
    be = backend_or_skip(name)
    B, D = ROWS.size, 13
    x = np.random.default_rng(4).random((B, D)).astype(dtype)
    key = rng.stream_key(11, "corruption")
    want = np.empty_like(x)
    REF.corrupt(x, key, 6, ROWS, kind, noise, want)
    got = _on(be, np.zeros_like(x))
    be.corrupt(_on(be, x), key, 6, _on(be, ROWS), kind, noise, got)
    got = be.to_host(got)
    if kind == "gaussian":
        np.testing.assert_allclose(got, want, **_tol(dtype))
        return
    np.testing.assert_array_equal(got, want)
    changed = got != x
    m = round(noise * D)
    assert (changed.sum(axis=1) <= m).all()  # the chosen pixels: m per row (some may keep their value)
    w = rng.words(key, 6, ROWS, 2 * D)
    chosen = np.argsort(w[:, :D], axis=1, kind="stable")[:, :m]
    for b in range(B):  # exactly the m pixels of smallest word, each set to 0, or to a fair coin's 0 or 1
        kept = np.setdiff1d(np.arange(D), chosen[b])
        np.testing.assert_array_equal(got[b, kept], x[b, kept])
        coin = (w[b, D:] < 2**31).astype(dtype) if kind == "salt-and-pepper" else np.zeros(D, dtype)
        np.testing.assert_array_equal(got[b, chosen[b]], coin[chosen[b]])


@pytest.mark.parametrize("name", ["numpy", *FUSED_BACKENDS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_binarising_gather_equals_the_reference_bit_for_bit(name, dtype):
    be = backend_or_skip(name)
    pixels = np.random.default_rng(5).integers(0, 256, (40, 11), dtype=np.uint8)
    rows = np.array([3, 39, 0, 3, 17], np.int64)
    key = rng.stream_key(2, "binarize")
    got = _on(be, np.full((5, 11), 7, dtype))
    be.gather_pixels(_on(be, pixels), _on(be, rows), 1 / 255, got, binarize=(key, 12))
    u = rng.uniforms(key, 12, rows, 11)
    p = (pixels[rows].astype(np.float32) * np.float32(1 / 255)).astype(np.float64)
    np.testing.assert_array_equal(be.to_host(got), (u < p).astype(dtype))
    # each example draws its own: the two copies of row 3 in one batch are the same draw
    np.testing.assert_array_equal(be.to_host(got)[0], be.to_host(got)[3])


def test_binarised_pixels_have_the_intensity_as_their_mean():
    pixels = np.full((2000, 4), 64, np.uint8)
    out = np.empty((2000, 4), np.float32)
    REF.gather_pixels(pixels, np.arange(2000), 1 / 255, out, binarize=(rng.stream_key(1, "binarize"), 0))
    assert abs(out.mean() - 64 / 255) < 4 * np.sqrt(0.25 / out.size)


def test_the_numba_box_mullers_log_cos_and_sin_are_within_an_ulp_or_two():
    """Over a million words, and the words at each quarter turn's edges: log u within 1.5 units in the last
    place of float64, cos and sin of 2 pi u within 4e-16 (below the rounding of the reference's angle
    ``fl(2 pi) u``, up to half an ulp of 2 pi, 4.4e-16), against long double (64-bit significand)."""
    from numba import njit

    from tinyvae.backends import numba_random as nr

    assert np.finfo(np.longdouble).nmant >= 63

    @njit
    def ours(w, log, cos, sin):
        for i in range(w.shape[0]):
            log[i] = nr._log_uniform(w[i])
            cos[i], sin[i] = nr._cos_sin_turns(w[i])

    edges = [q * 2**29 + d for q in range(9) for d in (-1, 0, 1)] + [2, 3, 2**16, 2**31 - 1]
    words = np.concatenate([np.array([w for w in edges if 0 <= w < 2**32], np.uint32),
                            np.random.default_rng(7).integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)])
    log, cos, sin = (np.empty(words.size) for _ in range(3))
    ours(words, log, cos, sin)
    u = (words.astype(np.longdouble) + np.longdouble(0.5)) * np.longdouble(2.0) ** -32
    angle = np.longdouble(2 * math.pi) * u
    want_log = np.log(u)
    ulps = np.abs(log.astype(np.longdouble) - want_log) / np.spacing(np.abs(want_log.astype(np.float64)))
    assert ulps.max() <= 1.5
    assert np.abs(cos - np.cos(angle)).max() <= 4e-16 and np.abs(sin - np.sin(angle)).max() <= 4e-16
