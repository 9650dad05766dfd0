"""The readers of a user's data (tinyvae.io.readers) and open_data: every format on files the tests write,
channels-last rows, classes from subfolders, the image cache, the held-out test set, and one DataError
naming the file for each input they do not take."""

import os

import numpy as np
import pytest
from PIL import Image

from tinyvae.errors import DataError, SettingsError
from tinyvae.io import readers
from tinyvae.io.datasets import from_arrays, open_data


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


def write_pngs(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        path = folder / (names[i] if names else f"{i:05d}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(path, format="PNG")
    return folder


def test_a_folder_of_grey_pngs_is_its_pixels_in_path_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    folder = write_pngs(tmp_path / "pngs", images, ["b.png", "a.png", "sub/c.png", "d.PNG", "e.png"])
    data, shape, y, classes = readers.read_image_folder(folder, progress=False)
    assert shape == (1, 6, 7) and data.dtype == np.uint8 and y is None and classes is None
    order = ["a.png", "b.png", "d.PNG", "e.png", "sub/c.png"]  # sorted by path in the folder
    names = ["b.png", "a.png", "sub/c.png", "d.PNG", "e.png"]
    np.testing.assert_array_equal(data, np.stack([images[names.index(n)] for n in order]).reshape(5, -1))


def test_class_subfolders_are_the_labels(tmp_path):
    rng = np.random.default_rng(1)
    for c, n in (("zebra", 2), ("ant", 3)):
        write_pngs(tmp_path / "pngs" / c, rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
    data, shape, y, classes = readers.read_image_folder(tmp_path / "pngs", progress=False)
    assert classes == ["ant", "zebra"] and list(y) == [0, 0, 0, 1, 1]


def test_colour_images_are_channels_last_rows(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    folder = write_pngs(tmp_path / "rgb", rgb)
    data, shape, _, _ = readers.read_image_folder(folder, progress=False)
    assert shape == (3, 5, 4)
    np.testing.assert_array_equal(data, rgb.reshape(3, -1))  # (H, W, C) per row, as PNG stores it
    grey, shape, _, _ = readers.read_image_folder(folder, color="gray", progress=False)
    assert shape == (1, 5, 4)
    np.testing.assert_array_equal(grey[0], np.asarray(Image.fromarray(rgb[0]).convert("L")).ravel())


def test_one_colour_image_makes_the_folder_rgb_under_auto(tmp_path):
    folder = write_pngs(tmp_path / "mixed", np.zeros((2, 4, 4), np.uint8))
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(folder / "z.png")
    _, shape, _, _ = readers.read_image_folder(folder, progress=False)
    assert shape == (3, 4, 4)


def test_mixed_sizes_are_refused_naming_both_unless_resized(tmp_path):
    folder = write_pngs(tmp_path / "sizes", np.zeros((1, 4, 6), np.uint8))
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "big.png")
    with pytest.raises(DataError, match=r"is 6x4 pixels but .*big.png is 5x5; pass --image-size H,W"):
        readers.read_image_folder(folder, progress=False)
    data, shape, _, _ = readers.read_image_folder(folder, image_size=(3, 2), progress=False)
    assert shape == (1, 3, 2) and data.shape == (2, 6)
    _, shape, _, _ = readers.read_image_folder(folder, image_size=(8,), progress=False)
    assert shape == (1, 8, 8)


def test_the_decoded_folder_is_cached_and_a_changed_file_is_decoded_again(tmp_path, cache, monkeypatch):
    folder = write_pngs(tmp_path / "pngs", np.random.default_rng(3).integers(0, 256, (4, 5, 5), dtype=np.uint8))
    first = readers.read_image_folder(folder, progress=False)[0]
    assert len(list(cache.glob("*.npy"))) == 1
    monkeypatch.setattr(readers, "_opened", lambda path: pytest.fail("decoded again"))
    np.testing.assert_array_equal(readers.read_image_folder(folder, progress=False)[0], first)
    monkeypatch.undo()
    monkeypatch.setenv("TINYVAE_CACHE", str(cache.parent))
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "00001.png")
    os.utime(folder / "00001.png", ns=(1, 1))
    again = readers.read_image_folder(folder, progress=False)[0]
    assert not again[1].any() and len(list(cache.glob("*.npy"))) == 2


def test_a_damaged_cache_is_decoded_again(tmp_path, cache):
    folder = write_pngs(tmp_path / "pngs", np.full((2, 3, 3), 7, np.uint8))
    readers.read_image_folder(folder, progress=False)
    next(cache.glob("*.npy")).write_bytes(b"not an array")
    assert (readers.read_image_folder(folder, progress=False)[0] == 7).all()


@pytest.mark.parametrize("make, match", [
    (lambda d: (d / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "x.png: not an image Pillow can read"),
    (lambda d: None, "no images \\(.png, .jpg, .jpeg, .bmp, .webp\\) in it or its subfolders"),
], ids=["corrupt", "empty"])
def test_a_folder_it_cannot_read_is_one_data_error(tmp_path, make, match):
    (tmp_path / "f").mkdir()
    make(tmp_path / "f")
    with pytest.raises(DataError, match=match):
        readers.read_image_folder(tmp_path / "f", progress=False)


def test_a_truncated_image_is_named(tmp_path):
    folder = write_pngs(tmp_path / "t", np.random.default_rng(4).integers(0, 256, (1, 30, 30), dtype=np.uint8))
    blob = (folder / "00000.png").read_bytes()
    (folder / "00000.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="00000.png: "):
        readers.read_image_folder(folder, progress=False)


@pytest.mark.parametrize("array, shape", [
    (np.arange(12, dtype=np.float64).reshape(3, 4), (4,)),
    (np.zeros((2, 5, 6), np.uint8), (1, 5, 6)),
    (np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2), (3, 2, 2)),
])
def test_npy_arrays_of_each_rank(tmp_path, array, shape):
    np.save(tmp_path / "a.npy", array)
    data, got, y, classes = readers.read_array(tmp_path / "a.npy")
    assert got == shape and y is None and data.dtype == (np.uint8 if array.dtype == np.uint8 else np.float32)
    expected = array.transpose(0, 2, 3, 1) if array.ndim == 4 else array
    np.testing.assert_array_equal(data, expected.reshape(len(array), -1).astype(data.dtype))


def test_a_float32_npy_stays_memory_mapped(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((10, 3), np.float32))
    assert isinstance(readers.read_array(tmp_path / "a.npy")[0], np.memmap)


def test_an_npz_gives_x_and_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 2), np.uint8), y=np.array([2, 0, 1, 2]))
    data, shape, y, classes = readers.read_array(tmp_path / "d.npz")
    assert shape == (1, 2, 2) and list(y) == [2, 0, 1, 2] and classes == ["0", "1", "2"]


@pytest.mark.parametrize("write, match", [
    (lambda p: np.save(p / "a.npy", np.zeros((3, 4), np.int32)), "holds int32 values; tinyvae takes uint8"),
    (lambda p: np.save(p / "a.npy", np.zeros(5)), "an array of shape \\(5,\\); tinyvae takes"),
    (lambda p: np.save(p / "a.npy", np.zeros((2, 4, 3, 3))), "C = 4 channels; tinyvae takes 1"),
    (lambda p: np.save(p / "a.npy", np.array([[0.5, np.nan]])), "example 0 holds NaN or inf"),
    (lambda p: np.save(p / "a.npy", np.array([{}], dtype=object)), "a.npy: not a readable .npy file"),
    (lambda p: (p / "a.npy").write_bytes(b"garbage"), "a.npy: not a readable .npy file"),
    (lambda p: np.savez(p / "a.npz", images=np.zeros((2, 2))), "holds images; a .npz takes the examples as x"),
    (lambda p: np.savez(p / "a.npz", x=np.zeros((2, 2)), y=np.array([0.5, 1])), "y must be \\(2,\\) integer labels"),
], ids=["dtype", "rank", "channels", "nan", "pickle", "garbage", "npz-no-x", "npz-float-y"])
def test_an_array_it_does_not_take_is_one_data_error(tmp_path, write, match):
    write(tmp_path)
    path = next(tmp_path.glob("a.np*"))
    with pytest.raises(DataError, match=match) as e:
        readers.read_array(path)
    assert str(path) in str(e.value)


def test_a_csv_with_a_header_and_without(tmp_path):
    (tmp_path / "h.csv").write_text("a, b ,c\n1,2,3\n\n4.5,-6,7e-1\n")
    data, shape, _, _ = readers.read_csv(tmp_path / "h.csv")
    assert shape == (3,) and data.dtype == np.float32
    np.testing.assert_array_equal(data, np.array([[1, 2, 3], [4.5, -6, 0.7]], np.float32))
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    assert readers.read_csv(tmp_path / "n.csv")[0].shape == (2, 2)


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,2\n3,x\n", "line 3, column 2: 'x' is not a finite number"),
    ("1,2\n3,nan\n", "line 2, column 2: 'nan' is not a finite number"),
    ("1,2\n3\n", "line 2: 1 columns where the first row has 2"),
    ("a,b\n", "no rows of numbers"),
], ids=["word", "nan", "ragged", "header-only"])
def test_a_csv_it_cannot_read_names_the_line(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        readers.read_csv(tmp_path / "t.csv")


def write_cifar10(folder, n=(3, 2), seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for name, k in (("data_batch_1.bin", n[0]), ("data_batch_2.bin", n[0]), ("test_batch.bin", n[1])):
        records = rng.integers(0, 256, (k, readers.CIFAR10_RECORD), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, k)
        records.tofile(folder / name)
    return folder


def test_cifar10s_binary_records_are_channels_last_images(tmp_path):
    folder = write_cifar10(tmp_path / "cifar")
    raw = np.fromfile(folder / "test_batch.bin", np.uint8).reshape(2, -1)
    data, shape, y, classes = readers.read_cifar10(folder, "test")
    assert shape == (3, 32, 32) and classes[0] == "airplane" and list(y) == list(raw[:, 0])
    np.testing.assert_array_equal(data[1].reshape(32, 32, 3), raw[1, 1:].reshape(3, 32, 32).transpose(1, 2, 0))
    assert readers.read_cifar10(folder, "train")[0].shape == (6, 3072)
    (folder / "test_batch.bin").write_bytes(b"\0" * 3000)
    with pytest.raises(DataError, match="3000 bytes is not a whole number of CIFAR-10 records"):
        readers.read_cifar10(folder, "test")


def test_open_data_holds_a_test_set_out_by_the_seed(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(200, dtype=np.float32).reshape(100, 2))
    d = open_data(tmp_path / "x.npy", val_fraction=0.2, seed=5)
    assert len(d.train) == 80 and len(d.test) == 20 and d.held_out == {"fraction": 0.2, "seed": 5, "of": 100}
    both = np.sort(np.concatenate([d.train.data[:, 0], d.test.data[:, 0]]))
    np.testing.assert_array_equal(both, np.arange(0, 200, 2))  # every example once
    assert (np.diff(d.train.data[:, 0]) > 0).all()  # each split keeps the file's order
    again, other = open_data(tmp_path / "x.npy", val_fraction=0.2, seed=5), open_data(tmp_path / "x.npy", seed=6)
    np.testing.assert_array_equal(again.test.data, d.test.data)
    assert not np.array_equal(other.test.data[:20], d.test.data)
    with pytest.raises(DataError, match="cannot give a test set of --val-fraction"):
        np.save(tmp_path / "one.npy", np.zeros((1, 2)))
        open_data(tmp_path / "one.npy")


def test_open_data_takes_a_test_set_beside_the_data_and_checks_it_fits(tmp_path):
    write_pngs(tmp_path / "train", np.zeros((3, 4, 4, 3), np.uint8))
    write_pngs(tmp_path / "test", np.zeros((2, 4, 4), np.uint8))  # grey files: read in the training set's colour
    d = open_data(tmp_path / "train", tmp_path / "test")
    assert d.shape == (3, 4, 4) and len(d.test) == 2 and d.held_out is None
    assert open_data(tmp_path / "train", tmp_path / "test", splits=("test",)).train is None
    write_pngs(tmp_path / "small", np.zeros((2, 3, 3, 3), np.uint8))
    with pytest.raises(DataError, match="small: its examples are \\(3, 3, 3\\) without labels, but"):
        open_data(tmp_path / "train", tmp_path / "small")


def test_open_data_reads_cifar10_and_idx_folders_by_their_own_splits(tmp_path):
    from conftest import write_dataset

    d = open_data(write_cifar10(tmp_path / "cifar"))
    assert len(d.train) == 6 and len(d.test) == 2 and d.n_classes == 10 and d.shape == (3, 32, 32)
    (tmp_path / "idx").mkdir()
    d = open_data(write_dataset(tmp_path / "idx"), splits=("test",))
    assert d.train is None and len(d.test) == 64 and d.shape == (1, 8, 8) and d.n_classes == 10


@pytest.mark.parametrize("name, match", [("none.npy", "none.npy: no such file or folder"),
                                         ("a.txt", "a .txt file; --data takes a .npy, .npz or .csv file")])
def test_open_data_says_what_it_takes(tmp_path, name, match):
    (tmp_path / "a.txt").write_text("1,2")
    with pytest.raises(DataError, match=match):
        open_data(tmp_path / name)


def test_image_options_are_for_a_folder_of_images(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(SettingsError, match="--image-size and --color apply to a folder of images"):
        open_data(tmp_path / "a.npy", image_size=(4,))


def test_arrays_in_memory_with_labels_and_a_test_set():
    x, y = np.zeros((10, 3, 4, 4), np.float32), np.arange(10) % 3
    d = from_arrays(x, y, np.ones((4, 3, 4, 4)), np.array([0, 1, 2, 3]))
    assert d.shape == (3, 4, 4) and d.classes == ["0", "1", "2", "3"] and len(d.test) == 4
    held = from_arrays(x, val_fraction=0.3, seed=2)
    assert len(held.train) == 7 and held.held_out["of"] == 10
    with pytest.raises(DataError, match="labels for one of x and test_x only"):
        from_arrays(x, y, np.ones((4, 3, 4, 4)))
