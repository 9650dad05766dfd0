"""Training on a user's own data, from the command line and from tinyvae.fit: a PNG copy of an IDX dataset
trains to the IDX run's numbers, class subfolders train a cvae, colour images a conv VAE with colour
pictures, a table a Gaussian decoder with its samples as a CSV; resume, evaluate and sample find the data;
every input the run cannot take is one error line."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

import tinyvae
from tinyvae.evaluate import main as evaluate_main
from tinyvae.io.checkpoint import CHECKPOINT, read_metadata
from tinyvae.io.idx import read_idx
from tinyvae.sample import main as sample_main
from tinyvae.train import main

SMALL = ["--batch-size", "32", "--hidden", "16", "--latent-dim", "3", "--backend", "numpy"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVAE_CACHE", str(tmp_path / "cache"))


def metrics(run):
    return [{k: v for k, v in json.loads(line).items() if "second" not in k and k != "samples_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def png_copy(idx_dir, out):
    """The IDX files of ``idx_dir`` as ``out/train/00000.png ...`` and ``out/test/...``, grey PNGs."""
    for split, stem in (("train", "train"), ("test", "t10k")):
        (out / split).mkdir(parents=True)
        for i, image in enumerate(read_idx(idx_dir / f"{stem}-images-idx3-ubyte.gz")):
            Image.fromarray(image).save(out / split / f"{i:05d}.png")
    return out


def test_a_png_copy_of_idx_files_trains_to_the_idx_runs_numbers(tiny_data_dir, tmp_path):
    copy = png_copy(tiny_data_dir, tmp_path / "pngs")
    assert main([*SMALL, "--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--epochs", "2",
                 "--out", str(tmp_path / "idx")]) == 0
    assert main([*SMALL, "--data", str(copy / "train"), "--test-data", str(copy / "test"), "--epochs", "2",
                 "--out", str(tmp_path / "png")]) == 0
    assert metrics(tmp_path / "png") == metrics(tmp_path / "idx")
    a, b = load_file(tmp_path / "idx" / CHECKPOINT), load_file(tmp_path / "png" / CHECKPOINT)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_class_subfolders_train_a_cvae(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("circle", "square", "star"):
        (tmp_path / "shapes" / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "shapes" / c / f"{i}.png")
    run = tmp_path / "run"
    assert main([*SMALL, "--data", str(tmp_path / "shapes"), "--model", "cvae", "--epochs", "2", "--out", str(run)]) == 0
    meta = read_metadata(run / CHECKPOINT)
    assert meta["model_config"]["n_classes"] == 3
    assert meta["data"]["classes"] == ["circle", "square", "star"]
    assert meta["data"]["n_test"] == 9  # --val-fraction 0.1 of 90, held out by the seed
    with Image.open(run / "sample_2.png") as im:
        assert im.size[1] == 3 * 58 + 2  # one row per class


def test_rgb_pngs_train_the_conv_vae_and_its_pictures_are_rgb(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "rgb").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "rgb" / f"{i:03d}.png")
    run = tmp_path / "run"
    assert main(["--data", str(tmp_path / "rgb"), "--arch", "conv", "--channels", "4,8", "--latent-dim", "3",
                 "--batch-size", "12", "--epochs", "1", "--backend", "numpy", "--out", str(run)]) == 0
    for name in ("sample_1.png", "reconstruction_1.png"):
        with Image.open(run / name) as im:
            assert im.mode == "RGB"
    model = tinyvae.load(run)
    assert model.config.data_shape == (3, 16, 16) and model.sample(2, seed=0).shape == (2, 768)
    assert sample_main([str(run), "--what", "interpolate", "--pairs", "2", "--steps", "3"]) == 0
    with Image.open(run / "interpolate.png") as im:
        assert im.mode == "RGB"


def test_an_array_of_rgb_images_trains_through_fit(tmp_path):
    x = np.random.default_rng(2).random((60, 3, 16, 16)).astype(np.float32)
    model = tinyvae.fit(x, epochs=2, arch="conv", channels=(4, 8), latent_dim=3, batch_size=16, backend="numpy",
                        out=tmp_path / "run")
    assert model.config.data_shape == (3, 16, 16) and len(model.history) == 2
    assert [{k: v for k, v in r.items() if "second" not in k and k != "samples_per_s"} for r in model.history] \
        == metrics(tmp_path / "run")
    again = tinyvae.fit(x, epochs=3, out=tmp_path / "run", resume=True, backend="numpy")
    assert [r["epoch"] for r in again.history] == [1, 2, 3]
    quiet = tinyvae.fit(x[:, 0], epochs=1, latent_dim=2, hidden=(8,), backend="numpy")  # (N, H, W), no run dir
    assert quiet.config.data_shape == (1, 16, 16) and quiet.history[0]["epoch"] == 1


def test_a_standardised_csv_trains_with_a_learned_variance(tmp_path):
    rng = np.random.default_rng(3)
    table = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 6))
    table = (table - table.mean(0)) / table.std(0)
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,d,e,f", comments="")
    run = tmp_path / "run"
    assert main([*SMALL, "--data", str(tmp_path / "t.csv"), "--likelihood", "gaussian-learned", "--epochs", "3",
                 "--out", str(run)]) == 0
    m = metrics(run)
    assert m[-1]["test_loss"] < m[0]["test_loss"]
    samples = np.loadtxt(run / "samples_3.csv", delimiter=",", skiprows=1)
    assert samples.shape == (64, 6) and (run / "samples_3.csv").read_text().startswith("x1,x2,x3,x4,x5,x6\n")
    assert not list(run.glob("sample_*.png"))
    assert sample_main([str(run), "--what", "samples"]) == 0 and (run / "samples.csv").is_file()
    assert evaluate_main([str(run), "--k", "8", "--n-images", "10"]) == 0


def test_a_table_defaults_to_the_gaussian_decoder(tmp_path):
    np.save(tmp_path / "t.npy", np.random.default_rng(4).normal(size=(100, 5)).astype(np.float32))
    run = tmp_path / "run"
    assert main([*SMALL, "--data", str(tmp_path / "t.npy"), "--epochs", "1", "--out", str(run)]) == 0
    assert read_metadata(run / CHECKPOINT)["settings"]["likelihood"] == "gaussian"


def test_a_table_trains_in_float64_to_the_float32_numbers(tmp_path):
    """Each batch of a table's float32 values is taken into the model's dtype."""
    np.save(tmp_path / "t.npy", np.random.default_rng(5).normal(size=(100, 5)).astype(np.float32))
    for d in ("float32", "float64"):
        assert main([*SMALL, "--data", str(tmp_path / "t.npy"), "--epochs", "2", "--dtype", d,
                     "--out", str(tmp_path / d)]) == 0
    a, b = (metrics(tmp_path / d) for d in ("float32", "float64"))
    np.testing.assert_allclose([r["test_loss"] for r in b], [r["test_loss"] for r in a], rtol=1e-4)


def test_a_run_on_data_resumes_evaluates_and_samples_where_the_data_are_now(tmp_path, capsys):
    x = np.random.default_rng(5).integers(0, 256, (120, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    assert main([*SMALL, "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--out", str(run)]) == 0
    (tmp_path / "x.npy").rename(tmp_path / "moved.npy")
    assert main(["--resume", str(run), "--epochs", "2", "--data", str(tmp_path / "moved.npy")]) == 0
    assert evaluate_main([str(run), "--k", "4", "--n-images", "5"]) == 0  # the run keeps the new place
    assert sample_main([str(run), "--what", "interpolate", "--pairs", "2"]) == 0
    np.save(tmp_path / "moved.npy", x[:100])
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "3"]) == 2
    one_error_line(capsys, "moved.npy: holds 90 training and 10 test examples", "but the run trained on 108 training")


def test_a_resume_on_other_values_of_the_same_sizes_is_refused_and_an_older_record_gains_their_crc(tmp_path, capsys):
    """The run's record of its data holds the values' CRC-32: data with the same shape and counts but other
    values are refused, naming both; a checkpoint whose record predates the CRC resumes on its data and
    records it."""
    from tinyvae.io.checkpoint import load_checkpoint, save_checkpoint

    x = np.random.default_rng(6).integers(0, 256, (120, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    assert main([*SMALL, "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--out", str(run)]) == 0
    record = read_metadata(run / "checkpoint.safetensors")["data"]
    assert isinstance(record["crc32"], int)
    other = x.copy()
    other[7, 2, 3] ^= 1  # one pixel of one image
    np.save(tmp_path / "x.npy", other)
    before = (run / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2"]) == 2
    one_error_line(capsys, "x.npy: holds 108 training and 12 test examples of shape (1, 6, 6), values of CRC-32 ",
                   f"but the run trained on 108 training and 12 test examples of shape (1, 6, 6), values of CRC-32 "
                   f"{record['crc32']:08x}")
    assert (run / "checkpoint.safetensors").read_bytes() == before
    np.save(tmp_path / "x.npy", x)
    tensors, meta = load_checkpoint(run / "checkpoint.safetensors")
    meta["data"] = {k: v for k, v in record.items() if k != "crc32"}
    save_checkpoint(run / "checkpoint.safetensors", tensors, meta)
    assert main(["--resume", str(run), "--epochs", "2"]) == 0
    assert read_metadata(run / "checkpoint.safetensors")["data"] == record


def bad_png_folder(p):
    (p / "f").mkdir()
    (p / "f" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return ["--data", str(p / "f")]


def csv_with_a_word(p):
    (p / "t.csv").write_text("1,2\n3,4\n5,six\n")
    return ["--data", str(p / "t.csv")]


def npy(p, array, *extra):
    np.save(p / "a.npy", array)
    return ["--data", str(p / "a.npy"), *extra]


@pytest.mark.parametrize("make, needles", [
    (bad_png_folder, ["f/a.png: not an image Pillow can read"]),
    (csv_with_a_word, ["t.csv, line 3, column 2: 'six' is not a finite number"]),
    (lambda p: (p / "empty").mkdir() or ["--data", str(p / "empty")], ["empty: no images"]),
    (lambda p: npy(p, np.zeros((20, 4), np.int16)), ["a.npy: holds int16 values"]),
    (lambda p: npy(p, np.zeros((20, 4, 4), np.uint8), "--model", "cvae"), ["--model cvae is conditional on a label",
                                                                          "a.npy has none"]),
    (lambda p: npy(p, np.full((20, 2, 2), 2.0), "--likelihood", "bernoulli"),
     ["training example 0 holds 2; the Bernoulli decoder takes values in [0, 1]"]),
    (lambda p: npy(p, np.zeros((20, 2, 2), np.float32), "--binarize"), ["--binarize draws each pixel of uint8 images"]),
    (lambda p: ["--test-data", str(p)], ["--test-data applies only with --data"]),
    (lambda p: npy(p, np.zeros((20, 3)), "--image-size", "4"), ["--image-size and --color apply to a folder of images"]),
], ids=["corrupt-image", "csv-word", "empty-folder", "npy-dtype", "cvae-without-labels", "bernoulli-range",
        "binarize-floats", "test-data-alone", "image-size-npy"])
def test_each_input_a_run_cannot_take_is_one_error_line(tmp_path, capsys, make, needles):
    argv = make(tmp_path)
    assert main([*SMALL, *argv, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys, *needles)
    assert not (tmp_path / "run").exists()
