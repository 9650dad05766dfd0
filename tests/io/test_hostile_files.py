"""Every metadata field of a model file and of a checkpoint, replaced by hostile JSON, either loads or raises a
TinyVAEError naming the file and the field, before any work is done: never another exception, never an
allocation the file's sizes could not justify."""

import json
import resource
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyvae
from tinyvae.io.checkpoint import CHECKPOINT
from tinyvae.training.state import TrainingState
from tinyvae.train import main

ARGS = ["--dataset", "mnist", "--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--epochs", "1",
        "--backend", "numpy"]

hostile_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 10**15, 2**63, 3e7]),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
              st.sampled_from(["NaN", "Infinity", "-Infinity"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def rewrite_field(path, key: str, value, raw: str | None = None) -> None:
    """Replace metadata field ``key`` of a safetensors file by ``value`` as JSON (or by ``raw`` text)."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header["__metadata__"][key] = raw if raw is not None else json.dumps(value)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    # The tensors' offsets are relative to the end of the header, so the data follows the new header as it is.
    path.write_bytes(struct.pack("<Q", len(new)) + new + blob[8 + n:])


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("hostile")
    (root / "data").mkdir()
    assert main([*ARGS, "--data-dir", str(write_dataset(root / "data")), "--out", str(root / "run")]) == 0
    tinyvae.save(tinyvae.load(root / "run", backend="numpy"), root / "model.safetensors")
    return root


def read_field(path, key: str):
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(json.loads(blob[8:8 + n])["__metadata__"][key])


def fields_of(path) -> list[str]:
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return sorted(k for k in json.loads(blob[8:8 + n])["__metadata__"] if k != "format")


def under_a_memory_cap(load):
    """``load()`` with the address space capped at 4 GiB more than now: an allocation the file's few
    kilobytes cannot justify fails as MemoryError instead of taking the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (now + 4 * 2**30, hard))
    try:
        return load()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("kind", ["checkpoint", "model file"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=hostile_json)
def test_a_hostile_metadata_field_loads_or_is_one_named_error(a_run, tmp_path_factory, kind, data, value):
    source = a_run / "run" / CHECKPOINT if kind == "checkpoint" else a_run / "model.safetensors"
    key = data.draw(st.sampled_from(fields_of(source)), label="field")
    path = tmp_path_factory.mktemp("f") / "file.safetensors"
    path.write_bytes(source.read_bytes())
    stored = read_field(source, key)
    if isinstance(stored, dict) and stored and data.draw(st.booleans(), label="one entry"):
        entry = data.draw(st.sampled_from(sorted(stored)), label="entry")  # e.g. model_config's hidden: [3e7]
        value = {**stored, entry: value}
    raw = value if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity") else None
    rewrite_field(path, key, value, raw)
    load = (lambda: TrainingState.restore(path, "numpy")) if kind == "checkpoint" else \
        (lambda: tinyvae.load(path, backend="numpy"))
    try:
        under_a_memory_cap(load)
    except tinyvae.TinyVAEError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)
        named = key in str(e) or key == "model"  # 'model' is named with model_config
        assert named, (key, str(e))
