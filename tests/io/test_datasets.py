"""IDX reading, dataset discovery, and bad data files."""

import gzip

import numpy as np
import pytest

from tinyvae.io import datasets as data
from tinyvae.errors import DataError
from tinyvae.io.datasets import load_dataset, pixels_to_unit
from tinyvae.io.idx import read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / f"a{suffix}", a)
    b = read_idx(tmp_path / f"a{suffix}")
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def _blob(tmp_path, a=np.zeros((3, 2, 2), np.uint8)):
    write_idx(tmp_path / "x", a)
    return (tmp_path / "x").read_bytes()


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "bad magic"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b[:-1], "header says|truncated: 11 of the 12 data bytes"),
    (lambda b: b + b"\x00", "header says|more data than its header's"),
    (lambda b: b[:4] + (10**6).to_bytes(4, "big") + b[8:], "header says"),
    (lambda b: b"", "bad magic"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_bad_idx_files(tmp_path, mutate, match, compress):
    blob = mutate(_blob(tmp_path))
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(blob) if compress else blob)
    with pytest.raises(DataError, match=match):
        read_idx(path)


def test_truncated_and_corrupt_gzip(tmp_path):
    gz = gzip.compress(_blob(tmp_path, np.arange(4000, dtype=np.uint8).reshape(10, 20, 20)))
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError):
        read_idx(tmp_path / "cut.gz")
    corrupt = bytearray(gz)
    corrupt[20:40] = b"\xff" * 20
    (tmp_path / "bad.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DataError):
        read_idx(tmp_path / "bad.gz")


def _gz(tmp_path, blob, name="x.gz"):
    (tmp_path / name).write_bytes(blob)
    return tmp_path / name


def test_a_gzip_crc_or_length_that_does_not_match_is_refused(tmp_path):
    gz = bytearray(gzip.compress(_blob(tmp_path, np.arange(400, dtype=np.uint8).reshape(4, 10, 10))))
    bad_crc = bytes(gz[:-8]) + bytes([gz[-8] ^ 1]) + bytes(gz[-7:])
    with pytest.raises(DataError, match="corrupt file.*CRC check failed"):
        read_idx(_gz(tmp_path, bad_crc))
    bad_len = bytes(gz[:-4]) + (len(gz) + 1).to_bytes(4, "little")
    with pytest.raises(DataError, match="corrupt file.*[Ii]ncorrect length"):
        read_idx(_gz(tmp_path, bad_len))


def test_a_size_that_matches_modulo_2_32_allocates_nothing(tmp_path):
    """A header declaring 2^32 + 12 bytes over 12 bytes of data: gzip's ISIZE (length mod 2^32) agrees."""
    blob = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (2**30 + 3).to_bytes(4, "big") + (1).to_bytes(4, "big")
    with pytest.raises(DataError, match=r"header says .* but the file holds at most \d+ bytes uncompressed"):
        read_idx(_gz(tmp_path, gzip.compress(blob + bytes(12))))


def test_a_multi_member_gzip_is_read_whole(tmp_path):
    blob = _blob(tmp_path, np.arange(48, dtype=np.uint8).reshape(3, 4, 4))
    two = gzip.compress(blob[:20]) + gzip.compress(blob[20:])  # as `cat a.gz b.gz` makes
    np.testing.assert_array_equal(read_idx(_gz(tmp_path, two)), np.arange(48).reshape(3, 4, 4))


def test_a_truncated_gzip_says_how_much_arrived(tmp_path):
    gz = gzip.compress(_blob(tmp_path, np.random.default_rng(0).integers(0, 256, (50, 20, 20), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"truncated: the compressed data end after \d+ of the data bytes"):
        read_idx(_gz(tmp_path, gz[: len(gz) // 2]))


@pytest.mark.parametrize("split,labels,match", [
    ("train", np.full(256, 200, np.uint8), "label 200 at index 0 is not one of the dataset's 10 classes"),
    ("train", np.r_[np.zeros(255), -1].astype(np.int8), "label -1 at index 255"),
    ("test", np.r_[np.zeros(63), 10].astype(np.uint8), "label 10 at index 63"),
    ("test", np.zeros(64, np.float32), "labels must be integers"),
])
def test_labels_outside_the_classes_are_refused_before_training(tiny_data_dir, split, labels, match):
    write_idx(tiny_data_dir / f"{data.FILES[split + '_labels']}.gz", labels)
    with pytest.raises(DataError, match=match):
        load_dataset("mnist", tiny_data_dir)


def test_a_split_without_images_is_refused(tiny_data_dir):
    write_idx(tiny_data_dir / "t10k-images-idx3-ubyte.gz", np.zeros((0, 8, 8), np.uint8))
    write_idx(tiny_data_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("mnist", tiny_data_dir)


def test_mnist_from_a_named_directory(tiny_data_dir):
    d = load_dataset("mnist", tiny_data_dir)
    assert d.train.x.shape == (256, 64) and d.test.x.shape == (64, 64)
    assert d.train.x.dtype == np.float32 and 0 <= d.train.x.min() and d.train.x.max() <= 1
    assert d.image_shape == (8, 8) and d.train.y.dtype == np.int64


def test_pixels_are_kept_and_scaled_by_one_rule(tiny_data_dir):
    d = load_dataset("mnist", tiny_data_dir)
    assert d.train.data.dtype == np.uint8 and d.train.data.shape == (256, 64)
    expected = d.train.data.astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(d.train.x, expected, rtol=2e-7, atol=0)
    assert d.train.x[d.train.data == 255].min(initial=1) == 1 and d.train.x[d.train.data == 0].max(initial=0) == 0
    every = np.arange(256, dtype=np.uint8)
    wide = pixels_to_unit(every, out=np.empty(256))  # a float64 batch holds the same values, widened
    np.testing.assert_array_equal(wide, pixels_to_unit(every).astype(np.float64))


def test_raw_files_work_too(tmp_path):
    from conftest import write_dataset

    d = load_dataset("mnist", write_dataset(tmp_path, compress=False))
    assert d.train.x.shape == (256, 64)


def test_mnist_needs_a_directory():
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("mnist")


def test_missing_dataset_names_paths_and_install(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TINYVAE_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert "empty" in msg and "debian" in msg and "apt-get install -y dataset-fashion-mnist" in msg


def test_tinyvae_data_naming_no_folder_is_refused_not_passed_over(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVAE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="TINYVAE_DATA names .*nowhere, which is not a folder"):
        load_dataset("fashion-mnist")


def test_the_test_split_alone_needs_only_the_t10k_files(tiny_data_dir):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tiny_data_dir / name).unlink()
    d = load_dataset("mnist", tiny_data_dir, splits=("test",))
    assert d.train is None and len(d.test) == 64 and d.image_shape == (8, 8)
    with pytest.raises(DataError, match="train-images"):
        load_dataset("mnist", tiny_data_dir)


def test_env_var_is_searched(tiny_data_dir, monkeypatch):
    monkeypatch.setenv("TINYVAE_DATA", str(tiny_data_dir))
    assert load_dataset("fashion-mnist").source == str(tiny_data_dir)


def test_labels_must_match_images(tiny_data_dir):
    write_idx(tiny_data_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_dataset("mnist", tiny_data_dir)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")
