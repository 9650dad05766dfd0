"""Shared fixtures: small IDX datasets written by the tests themselves."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

# CI runs a fixed set of examples (HYPOTHESIS_PROFILE=ci in .ci/run), so a red run can be replayed;
# elsewhere Hypothesis draws new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from tinyvae.data import FILES, write_idx


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
