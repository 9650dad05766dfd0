"""tinyvae.rng, the reference of the random streams: Random123's known answers, the layout of counters and
keys, and the statistics of the uniforms and normals."""

import math

import numpy as np
import pytest
from scipy import stats

from tinyvae import rng
from tinyvae.errors import SettingsError

# Random123's kat_vectors for philox4x32_10: (counter, key, result).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox4x32_10_gives_random123s_known_answers(counter, key, expected):
    out = rng.philox4x32_10(np.array([counter], np.uint32), np.array(key, np.uint32))
    assert out.dtype == np.uint32 and out.shape == (1, 4)
    assert tuple(int(w) for w in out[0]) == expected


def test_a_block_is_a_function_of_its_counter_alone():
    c = np.random.default_rng(0).integers(0, 2**32, (50, 4), dtype=np.uint32)
    key = np.array([7, 9], np.uint32)
    whole = rng.philox4x32_10(c, key)
    np.testing.assert_array_equal(np.concatenate([rng.philox4x32_10(c[i:i + 1], key) for i in range(50)]), whole)


def test_the_counter_layout_is_the_documented_one():
    key = rng.stream_key(5, "eps")
    step, rows = 2**33 + 7, np.array([3, 2**32 + 1])
    w = rng.words(key, step, rows, 10)
    for b, r in enumerate(rows):
        for e in range(10):
            block = rng.philox4x32_10([[e // 4, r % 2**32, step % 2**32, step >> 32]], key)
            assert w[b, e] == block[0, e % 4]


def test_a_range_of_elements_is_the_same_as_in_the_whole_row():
    key, rows = rng.stream_key(2, "evaluate"), np.arange(5)
    whole_w, whole_z = rng.words(key, 3, rows, 41), rng.normals(key, 3, rows, 41)
    for start, n in [(0, 1), (1, 6), (13, 20), (38, 3), (40, 1)]:
        np.testing.assert_array_equal(rng.words(key, 3, rows, n, start), whole_w[:, start:start + n])
        np.testing.assert_array_equal(rng.normals(key, 3, rows, n, start), whole_z[:, start:start + n])


def test_streams_and_seeds_have_their_own_keys():
    keys = {(s, name): tuple(rng.stream_key(s, name)) for s in (0, 1, 2**40 + 1) for name in rng.STREAMS}
    assert len(set(keys.values())) == len(keys)


def test_uniforms_never_reach_0_or_1():
    u = rng.uniform(np.array([0, 1, 2**31, 2**32 - 1], np.uint32))
    assert u[0] == 2.0**-33 and u[-1] == 1 - 2.0**-33 and (u > 0).all() and (u < 1).all()
    z = rng.normal(np.array([0, 0, 2**32 - 1, 2**32 - 1], np.uint32))
    assert np.isfinite(z).all() and abs(z[0]) < 7


def test_box_muller_on_each_blocks_pairs():
    w = np.array([[11, 2**30, 2**31 + 5, 123456789]], np.uint32)
    u = (w.astype(np.float64) + 0.5) / 2**32
    r0, r1 = math.sqrt(-2 * math.log(u[0, 0])), math.sqrt(-2 * math.log(u[0, 2]))
    expected = [r0 * math.cos(2 * math.pi * u[0, 1]), r0 * math.sin(2 * math.pi * u[0, 1]),
                r1 * math.cos(2 * math.pi * u[0, 3]), r1 * math.sin(2 * math.pi * u[0, 3])]
    np.testing.assert_allclose(rng.normal(w)[0], expected, rtol=1e-15)


def test_a_million_normals_are_standard_normal():
    n = 10**6
    z = rng.normals(rng.stream_key(1, "eps"), 0, np.arange(1000), n // 1000).ravel()
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 4 * se
    assert abs(z.var() - 1) < 4 * math.sqrt(2) * se
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_a_million_uniforms_are_uniform():
    u = rng.uniforms(rng.stream_key(1, "binarize"), 0, np.arange(1000), 1000).ravel()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def _corr(a, b):
    return abs(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_streams_steps_examples_and_neighbouring_counters_are_uncorrelated():
    n_rows, n = 1000, 1000
    bound = 3 / math.sqrt(n_rows * n)
    rows = np.arange(n_rows)
    eps = rng.normals(rng.stream_key(1, "eps"), 0, rows, n)
    others = {
        "another stream": rng.normals(rng.stream_key(1, "corruption"), 0, rows, n),
        "another seed": rng.normals(rng.stream_key(2, "eps"), 0, rows, n),
        "the next step": rng.normals(rng.stream_key(1, "eps"), 1, rows, n),
        "the next example": rng.normals(rng.stream_key(1, "eps"), 0, rows + 1, n),
        "the next block": rng.normals(rng.stream_key(1, "eps"), 0, rows, n, start=4),
    }
    for name, z in others.items():
        assert _corr(eps, z) < bound, name
    # within a block: the two words of a Box-Muller pair, and the two pairs
    assert _corr(eps[:, 0::4], eps[:, 1::4]) < 2 * bound and _corr(eps[:, 0::4], eps[:, 2::4]) < 2 * bound


def test_the_shuffle_generator_depends_on_seed_and_epoch_alone():
    a = rng.generator(3, "shuffle", 0).permutation(100)
    np.testing.assert_array_equal(a, rng.generator(3, "shuffle", 0).permutation(100))
    assert not np.array_equal(a, rng.generator(3, "shuffle", 1).permutation(100))
    assert not np.array_equal(a, rng.generator(4, "shuffle", 0).permutation(100))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "1", None])
def test_a_bad_seed_is_refused(seed):
    with pytest.raises(SettingsError, match="seed must be an int in"):
        rng.stream_key(seed, "eps")
