"""Shared fixtures: small IDX datasets written by the tests themselves."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import Phase, settings

# CI runs a fixed set of examples (HYPOTHESIS_PROFILE=ci in .ci/run), so a red run can be replayed;
# elsewhere Hypothesis draws new examples each run. tests/planted_faults.py runs the same examples and
# skips shrinking: it asks whether a test fails, not for its smallest failing example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("planted", derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from hypothesis import assume
from hypothesis import strategies as st

from tinyvae.backends.reference import ConvGeometry
from tinyvae.io.datasets import FILES
from tinyvae.io.idx import write_idx


@st.composite
def conv_geometries(draw, side: int = 9, channels: int = 4):
    """Random convolution geometries (:class:`ConvGeometry`): images up to ``side`` square and ``channels``
    deep, windows of 1 to 5, strides of 1 to 3, padding of 0 to 2, at least one window position."""
    g = ConvGeometry(H=draw(st.integers(1, side)), W=draw(st.integers(1, side)), C=draw(st.integers(1, channels)),
                     kh=draw(st.integers(1, 5)), kw=draw(st.integers(1, 5)), stride=draw(st.integers(1, 3)),
                     padding=draw(st.integers(0, 2)))
    assume(g.H_out >= 1 and g.W_out >= 1)
    return g


def write_dataset(directory, n_train=256, n_test=64, side=8, seed=0, compress=True):
    """Four IDX files of random-blob images (uint8) and labels in ``directory``."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        yy, xx = np.mgrid[:side, :side]
        centres = rng.uniform(1, side - 2, (n, 2))
        blobs = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 4.0)
        images = np.rint(255 * np.clip(blobs + 0.1 * rng.random((n, side, side)), 0, 1)).astype(np.uint8)
        write_idx(directory / (FILES[f"{split}_images"] + suffix), images)
        write_idx(directory / (FILES[f"{split}_labels"] + suffix), labels)
    return directory


@pytest.fixture
def tiny_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    return write_dataset(tmp_path / "data")
