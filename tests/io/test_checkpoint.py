"""Checkpoints: atomic writes, and clear errors for anything unreadable."""

import json
import os

import numpy as np
import pytest

from tinyvae.errors import CheckpointError
from tinyvae.io.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(4)}
    meta = {"epoch": 3, "rng": {"state": 2**100 + 7}}
    save_checkpoint(tmp_path / "c.safetensors", t, meta)
    got, m = load_checkpoint(tmp_path / "c.safetensors", {"a": ((2, 3), "float32")})
    np.testing.assert_array_equal(got["a"], t["a"])
    assert m == meta
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp file left


def test_it_is_a_plain_safetensors_file(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", {"w": np.ones(2, np.float32)}, {})
    raw = (tmp_path / "c.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + n])["w"]["dtype"] == "F32"


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.bin"
    atomic_write_bytes(path, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["c.bin"]


@pytest.mark.parametrize("mutate", [
    lambda b: b[: len(b) // 2],
    lambda b: b[:5],
    lambda b: b"",
    lambda b: b"\x80\x04\x95garbage-pickle",
    lambda b: (10**9).to_bytes(8, "little") + b[8:],
])
def test_unreadable_checkpoints(tmp_path, mutate):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.ones(100, np.float32)}, {"epoch": 1})
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_foreign_and_mismatched(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.numpy import save_file

    save_file({"w": np.ones(2, np.float32)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not a tinyvae file of format tinyvae-checkpoint-1"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    save_checkpoint(tmp_path / "c.safetensors", {"w": np.ones(2, np.float32)}, {})
    with pytest.raises(CheckpointError, match="should be"):
        load_checkpoint(tmp_path / "c.safetensors", {"w": ((3,), "float32")})
