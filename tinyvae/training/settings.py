"""The settings of a training run: the training's own, declared here, and the model's, declared with the
models' configs (:mod:`tinyvae.models.config`). Together they determine the run's numbers, and its
checkpoint stores them.

Each is declared once (:func:`tinyvae.models.settings.setting`); the command line's flags, their help and
checks, the refusal of a flag that does not apply, the checkpoint's record and the model's config all
come from the declarations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import SettingsError
from ..io.datasets import DATASETS
from ..models.build import GIVEN as MODEL_SETTINGS
from ..models.build import make_config
from ..models.config import ELBO_MODELS, NetworkConfig
from ..io.readers import COLORS
from ..models.settings import ANY, check_fields, declared, resolve, setting
from ..nn.optim import OPTIMIZERS

positive = dict(check=lambda v: v >= 1, accepts="an int >= 1")
non_negative = dict(check=lambda v: v >= 0, accepts="a finite number >= 0")


@dataclass(frozen=True)
class TrainSettings:
    """The training's own settings (see each field's help); checked when made."""

    data: str | None = setting(None, "train on your data: a folder of images (PNG, JPEG, BMP, WebP; first-level "
                                     "subfolders are classes), a .npy, .npz or .csv file, CIFAR-10's binary folder, "
                                     "or a folder of IDX files (docs/data.md); stored absolute (default: --dataset)")
    test_data: str | None = setting(None, "the test set, in any form --data takes (default: --data's own test "
                                          "split, else --val-fraction of it)", only={"data": (ANY,)})
    val_fraction: float = setting(0.1, "the fraction of --data held out as the test set, drawn from --seed, where "
                                       "it has no test split and no --test-data", check=lambda v: 0 < v < 1,
                                  accepts="in (0, 1)", only={"data": (ANY,), "test_data": (None,)})
    image_size: tuple[int, ...] = setting((), "a folder of images: resize each to H,W (one number: square) with "
                                              "Pillow (default: keep their one size)",
                                          check=lambda v: len(v) <= 2, accepts="H,W or one side",
                                          only={"data": (ANY,)})
    color: str = setting("auto", "a folder of images: gray, rgb, or auto (rgb where any image has colour)",
                         choices=COLORS, only={"data": (ANY,)})
    dataset: str = setting("fashion-mnist", "the dataset: fashion-mnist, or mnist from --data-dir",
                           choices=DATASETS, only={"data": (None,)})
    data_dir: str | None = setting(None, "the folder of the four IDX files, .gz or raw, stored absolute (default: "
                                         "$TINYVAE_DATA, else /usr/share/datasets/fashion-mnist)",
                                   only={"data": (None,)})
    batch_size: int = setting(128, "examples per training step (the global batch when data-parallel)", **positive)
    eval_batch_size: int = setting(1000, "examples per evaluation batch", **positive)
    optimizer: str = setting("adam", "adam (Kingma & Ba 2015) or sgd (with momentum)", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "the learning rate", check=lambda v: v > 0, accepts="a finite number > 0")
    momentum: float = setting(0.9, "sgd: the momentum", check=lambda v: 0 <= v < 1, accepts="in [0, 1)",
                              only={"optimizer": ("sgd",)})
    nesterov: bool = setting(False, "sgd: Nesterov's momentum", only={"optimizer": ("sgd",)})
    beta: float = setting(1.0, "the KL weight (beta-VAE; 1: the ELBO)", **non_negative, only={"model": ELBO_MODELS})
    warmup_epochs: float = setting(0.0, "raise the KL weight linearly from 0 to --beta over this many epochs",
                                   **non_negative, only={"model": ELBO_MODELS})
    seed: int = setting(1, "seeds the initial weights and every random draw of the run",
                        check=lambda v: 0 <= v < 2**63, accepts="an int in [0, 2^63)")
    binarize: bool = setting(False, "dynamic binarisation of the pixels, drawn afresh each step (off: "
                                    "intensities in [0, 1])")

    def __post_init__(self):
        for name, value in check_fields(self, declared(TrainSettings)).items():
            object.__setattr__(self, name, value)


TRAIN_SETTINGS = declared(TrainSettings)
SETTINGS = {**TRAIN_SETTINGS, **MODEL_SETTINGS}  # every setting of a run, by name


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines a run's numbers: ``train``, the training's settings, and ``model``, every
    model setting by name (:data:`tinyvae.models.build.GIVEN`)."""

    train: TrainSettings
    model: dict

    @classmethod
    def resolve(cls, given: dict, flags: bool = True, strict: bool = True) -> "RunSettings":
        """The settings of a new run from those ``given`` (name -> value): the rest at their defaults, and a
        setting that does not apply at its ``off`` value (:func:`tinyvae.models.settings.resolve`).

        Raises:
            SettingsError: an unknown name, a bad value, or (``strict``) a setting given where it does not
                apply; named as flags when ``flags``.
        """
        values = resolve(given, SETTINGS, flags, strict)
        return cls(TrainSettings(**{k: values[k] for k in TRAIN_SETTINGS}),
                   {k: values[k] for k in MODEL_SETTINGS})

    @classmethod
    def from_record(cls, record: dict) -> "RunSettings":
        """The settings a checkpoint recorded (:meth:`record`); a setting the record predates takes its default.

        Raises:
            SettingsError: a record that is not an object, an unknown setting, or a bad value.
        """
        if not isinstance(record, dict):
            raise SettingsError(f"the settings must be a JSON object, got a {type(record).__name__}")
        # Checkpoints of tinyvae 0.1 kept the history among the settings, and every setting at its default
        # where it did not apply.
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k != "history"}
        return cls.resolve(values, flags=False, strict=False)

    def record(self) -> dict:
        """Every setting as a JSON value, for the checkpoint."""
        values = {**asdict(self.train), **self.model}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @property
    def kind(self) -> str:
        """The model: ``vae``, ``cvae``, ``ae``, ``dae``, ``sparse-ae`` or ``cae``."""
        return self.model["model"]

    def model_config(self, data_shape: tuple[int, ...], n_classes: int) -> NetworkConfig:
        """The model's config for examples of ``data_shape`` (``(C, H, W)`` images or ``(D,)`` table rows) with
        labels of ``n_classes`` classes, checked to fit in this machine's memory for the run's batches.

        Raises:
            SettingsError: sizes or settings the model refuses, or sizes that would not fit.
        """
        config = make_config(self.model, data_shape, n_classes)
        rows = max(self.train.batch_size, self.train.eval_batch_size) * config.draws
        sizes = {k: self.model[k] for k in ("hidden", "channels", "latent_dim") if self.model[k]}
        what = ", ".join(f"{k} {list(v) if isinstance(v, tuple) else v}" for k, v in sizes.items())
        config.check_fits(rows, f"{what}, batch_size {self.train.batch_size}")
        return config

    def beta_at(self, step: int, steps_per_epoch: int) -> float:
        """The KL weight of training step ``step`` (0-based): beta * min(1, (step + 1) / warm-up steps).

        The linear warm-up of Bowman et al. 2016 ("Generating Sentences from a
        Continuous Space", Sec. 3.1) and Sønderby et al. 2016 (Sec. 2.4).
        """
        t = self.train
        if t.warmup_epochs == 0:
            return t.beta
        return t.beta * min(1.0, (step + 1) / (t.warmup_epochs * steps_per_epoch))


def check_epochs(epochs: int) -> None:
    """``SettingsError`` unless ``epochs`` (the total a run trains to) is an int >= 1."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise SettingsError(f"--epochs is the total number of epochs, at least 1; got {epochs!r}")
