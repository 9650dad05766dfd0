"""One Model protocol for every model, and one error family for every expected failure."""

import numpy as np
import pytest

import tinyvae
from tinyvae import errors
from tinyvae.models.protocol import Model

KINDS = [dict(model="vae"), dict(model="cvae", n_classes=3), dict(model="iwae"), dict(model="vae", prior="vamp"),
         dict(model="ae"), dict(model="dae"), dict(model="sparse-ae"), dict(model="cae"),
         dict(model="vqvae", codebook_size=4, code_dim=2)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k["model"])
def test_every_model_answers_the_protocol_without_being_asked_its_kind(kind):
    model = tinyvae.build(input_dim=12, latent_dim=2, **({"hidden": (5,)} if kind["model"] != "cae" else {}), **kind)
    assert isinstance(model, Model) and model.kind == kind["model"]
    rng = np.random.default_rng(0)
    x = rng.random((4, 12))
    y = np.array([0, 1, 2, 1]) if kind.get("n_classes") else None
    terms = model.loss_and_grad(x, y)
    assert terms.nll == terms[1]
    if kind["model"] != "iwae":  # the importance-weighted bound is not the sum of the ELBO's terms it reports
        assert terms.loss == pytest.approx(sum(terms[1:]))
    assert model.loss_rows_forward(x, y).dtype == np.float64
    assert model.code(x, y).shape == (4, model.code_size) and model.reconstruct(x, y).shape == (4, 12)
    nll, other = model.per_sample_loss(x, y, seed=3)
    assert nll.shape == other.shape == (4,)
    metrics = model.evaluate([(model.as_batch(x), y, np.arange(4))])
    assert next(iter(metrics)) == "test_loss"
    assert model.has_prior == (kind["model"] in ("vae", "cvae", "iwae", "vqvae"))
    assert model.bounds_likelihood == (kind["model"] in ("vae", "cvae", "iwae"))
    if model.has_prior:
        assert model.sample(3, y=y[:3] if y is not None else None, seed=0).shape == (3, 12)
    else:
        with pytest.raises(errors.SettingsError, match="no prior"):
            model.sample(3)
    assert model.denoises == (kind["model"] == "dae")
    assert model.rows_independent == (kind["model"] != "sparse-ae")


@pytest.mark.parametrize("name, builtin", [("SettingsError", ValueError), ("DataError", ValueError),
                                           ("CheckpointError", ValueError), ("BackendUnavailable", RuntimeError),
                                           ("KernelBuildError", RuntimeError), ("MissingDependency", ImportError),
                                           ("Diverged", RuntimeError)])
def test_every_error_is_a_tinyvae_error_and_the_builtin_it_replaces(name, builtin):
    cls = getattr(tinyvae, name)
    assert issubclass(cls, tinyvae.TinyVAEError) and issubclass(cls, builtin)


def test_a_bug_that_raises_a_value_error_keeps_its_traceback(tiny_data_dir, tmp_path, monkeypatch):
    """Only TinyVAEError and OSError are expected failures: any other ValueError is a bug, not an error: line."""
    from tinyvae import train
    from tinyvae.training.loop import Trainer

    def bug(*args, **kwargs):
        np.zeros(1568).reshape(16, 28, 28)

    monkeypatch.setattr(Trainer, "start", bug)
    with pytest.raises(ValueError, match="cannot reshape"):
        train.main(["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "run")])


def test_a_garbage_file_is_a_tinyvae_error(tmp_path):
    (tmp_path / "garbage").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(tinyvae.TinyVAEError):
        tinyvae.load(tmp_path / "garbage")
