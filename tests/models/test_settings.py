"""Settings declared once: the flags, their help, their checks, where they apply, the checkpoint's record
and the model's config all come from the declarations."""

import pytest

import tinyvae
from tinyvae.errors import SettingsError
from tinyvae.models.config import AEConfig, VAEConfig
from tinyvae.models.settings import resolve
from tinyvae.train import build_parser
from tinyvae.training.settings import SETTINGS, RunSettings


def test_every_declared_setting_is_a_flag_with_its_help_and_default():
    actions = {a.dest: a for a in build_parser()._actions}
    for name, s in SETTINGS.items():
        a = actions[name]
        assert a.option_strings == ["--" + name.replace("_", "-")]
        assert a.help.startswith(s.spec.help.split(" (default")[0]) and "default" in a.help
        assert tuple(a.choices or ()) == s.spec.choices
        assert a.default is None  # "not given": resolve() tells a default from a value typed


def test_the_data_sizes_are_no_flags():
    assert not {"input_dim", "data_shape", "n_classes"} & set(SETTINGS)


def test_a_record_round_trips_and_says_every_setting():
    settings = RunSettings.resolve({"model": "dae", "noise": 0.2, "hidden": (32,), "optimizer": "sgd"})
    record = settings.record()
    assert set(record) == set(SETTINGS) and record["hidden"] == [32] and record["noise"] == 0.2
    assert RunSettings.from_record(record) == settings


@pytest.mark.parametrize("given, message", [
    (dict(model="ae", beta=2.0), "--beta does not apply to --model ae"),
    (dict(model="vae", rho=0.1), "--rho does not apply to --model vae"),
    (dict(arch="conv", hidden=(8,)), "--hidden does not apply to --arch conv"),
    (dict(channels=(4,)), "--channels does not apply to --arch mlp"),
    (dict(momentum=0.5), "--momentum does not apply to --optimizer adam"),
    (dict(decoder_logvar=-1.0), "--decoder-logvar does not apply to --likelihood bernoulli"),
    (dict(latent_dim=0), "--latent-dim must be an int >= 1, got 0"),
    (dict(lr=float("nan")), "--lr must be a finite number, got nan"),
    (dict(model="gan"), "--model must be one of vae, cvae"),
    (dict(hidden=(0,)), "--hidden must be a list of ints >= 1"),
    (dict(wings=2), "unknown setting 'wings'"),
])
def test_a_setting_is_refused_by_name_with_what_is_accepted(given, message):
    with pytest.raises(SettingsError, match=message.replace("(", "\\(").replace(")", "\\)")):
        RunSettings.resolve(given)


def test_a_setting_that_does_not_apply_takes_its_off_value():
    assert RunSettings.resolve({"arch": "conv"}).model["hidden"] == ()
    assert RunSettings.resolve({}).model["channels"] == ()
    assert RunSettings.resolve({"model": "cae"}).model["hidden"] == ()
    assert RunSettings.resolve({"model": "cae", "hidden": ()}).model["hidden"] == ()  # its off value, typed
    # a record that holds every setting (an older checkpoint's) is read, each at its off value where it does not apply
    assert RunSettings.from_record({"arch": "mlp", "channels": [32, 64]}).model["channels"] == ()


def test_configs_check_their_fields_by_the_same_declarations():
    with pytest.raises(SettingsError, match="latent_dim must be an int >= 1, got 0"):
        VAEConfig(latent_dim=0)
    with pytest.raises(SettingsError, match="rho does not apply to model ae"):
        AEConfig(model="ae", rho=0.2)
    assert VAEConfig(arch="conv", data_shape=(1, 28, 28)).hidden == ()  # the default, where it does not apply
    assert VAEConfig(n_classes=3).model == "cvae"


def test_build_makes_the_model_of_the_command_lines_settings():
    model = tinyvae.build(model="cae", latent_dim=16, dtype="float64")
    assert isinstance(model, tinyvae.Autoencoder) and model.config == AEConfig(latent_dim=16, dtype="float64",
                                                                                model="cae", hidden=(),
                                                                                data_shape=(1, 28, 28))
    conv = tinyvae.build(arch="conv", channels=(4, 8), latent_dim=3)
    assert conv.config.image_shape == (28, 28) and conv.config.hidden == ()
    cvae = tinyvae.build(model="cvae", n_classes=4, input_dim=10, hidden=(6,))
    assert isinstance(cvae, tinyvae.VAE) and cvae.config.n_classes == 4
    with pytest.raises(SettingsError, match="unknown model setting lr"):
        tinyvae.build(lr=0.1)
    with pytest.raises(SettingsError, match="hidden does not apply to model cae"):
        tinyvae.build(model="cae", hidden=(256,))
    with pytest.raises(SettingsError, match="needs n_classes"):
        tinyvae.build(model="cvae")


def test_resolve_alone_names_settings_by_their_python_names():
    with pytest.raises(SettingsError, match="^beta does not apply to model ae$"):
        resolve({"model": "ae", "beta": 3.0}, SETTINGS)
