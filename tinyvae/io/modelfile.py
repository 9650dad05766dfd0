"""Trained models as files: ``tinyvae.save`` and the one-call loader ``tinyvae.load``.

Two files hold a model (both safetensors, never pickle, written atomically; docs/formats.md):

* a run's ``checkpoint.safetensors`` (:mod:`tinyvae.training.state`): the weights, the
  optimiser's state, the settings and the generator, to resume training;
* a model file (``tinyvae.save(model, path)``, format ``tinyvae-model-1``): the weights
  under their layer names (``encoder.0.weight``, ...) and the model's config,
  nothing else (a third of the checkpoint's size for the default VAE).

``tinyvae.save(model, path, names="pytorch-example")`` writes the weights of a VAE shaped
like PyTorch's example (one hidden layer, Bernoulli decoder, no labels) under
that example's names (``fc1``, ``fc21``, ``fc22``, ``fc3``, ``fc4``), so
``TorchVAE.load_state_dict(safetensors.torch.load_file(path), strict=True)``
takes them.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..backends import CHOICES
from ..errors import CheckpointError, SettingsError
from ..models.build import model_for
from ..models.config import CONFIGS
from ..models.protocol import Model
from .checkpoint import CHECKPOINT, FORMAT, MODEL_FORMAT, check_tensors, load_checkpoint, save_checkpoint

PYTORCH_EXAMPLE = {"encoder.0": "fc1", "encoder.mu": "fc21", "encoder.logvar": "fc22", "decoder.0": "fc3",
                   "decoder.logits": "fc4"}


def save(model: Model, path, names: str | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (safetensors, no optimiser state), for :func:`load`;
    ``names="pytorch-example"`` writes a one-hidden-layer VAE under the names of PyTorch's example VAE (see
    the module doc). Returns the path.

    Raises:
        SettingsError: for ``names`` other than None and ``"pytorch-example"``, or a model PyTorch's example
            cannot hold.
        OSError: if the file cannot be written.
    """
    host = model.backend.to_host
    tensors = {k: np.array(host(v)) for k, v in model.params.state_dict().items()}
    if names is None:
        save_checkpoint(path, tensors, {"model": model.kind, "model_config": model.config.to_dict()}, MODEL_FORMAT)
    elif names == "pytorch-example":
        c = model.config
        if model.kind != "vae" or c.arch != "mlp" or len(c.hidden) != 1 or c.likelihood != "bernoulli":
            raise SettingsError("PyTorch's example VAE has one hidden layer, a Bernoulli decoder and no labels; "
                                f"this model is a {model.kind} ({c.arch}) with hidden {list(c.hidden)} and a "
                                f"{c.likelihood} decoder")
        renamed = {f"{PYTORCH_EXAMPLE[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in tensors.items()}
        save_checkpoint(path, renamed, {"names": "pytorch-example", "model_config": c.to_dict()}, MODEL_FORMAT)
    else:
        raise SettingsError(f"names must be None (tinyvae's) or 'pytorch-example', got {names!r}")
    return Path(path)


def load_weights(model: Model, tensors: dict, path) -> None:
    """Copy the file's ``tensors`` into ``model``'s parameters; ``CheckpointError`` for a missing,
    misshapen or non-finite tensor (:func:`tinyvae.io.checkpoint.check_tensors`), a tensor of another shape
    than its ``model_config`` gives being blamed on that field."""
    shapes = {name: (shape, model.dtype.name) for name, shape in model.params.shapes.items()}
    check_tensors(path, tensors, shapes, described_by="model_config")
    for name in model.params.names:
        model.params.view(name)[...] = model.xp.asarray(tensors[name])


def stored_config(path, meta: dict):
    """The model config that a checkpoint's or a model file's metadata ``meta`` holds (a field the file
    predates takes its default), checked, and within this machine's memory.

    Raises:
        CheckpointError: naming ``path`` and the field that is missing, of the wrong type, or refused.
    """
    settings = meta.get("settings")
    kind = meta.get("model") or (settings.get("model") if isinstance(settings, dict) else None)
    config = meta.get("model_config")
    if not isinstance(config, dict) or not isinstance(kind, str) or kind not in CONFIGS:
        raise CheckpointError(f"{path}: metadata fields 'model_config' and 'model' (or 'settings.model') "
                              "are missing or not what a model needs")
    cls = CONFIGS[kind]
    config = _with_data_shape(config)
    unknown = sorted(set(config) - {f.name for f in fields(cls)})
    if unknown:
        raise CheckpointError(f"{path}: metadata field 'model_config' holds {', '.join(map(repr, unknown))}, which a {kind} "
                              "config does not have")
    try:
        made = cls(**{"model": kind, **config})
        made.check_fits(1, "the sizes in its model_config")
    except SettingsError as e:
        raise CheckpointError(f"{path}: metadata field 'model_config': {e}") from e
    return made


def _with_data_shape(config: dict) -> dict:
    """A ``model_config`` written before ``data_shape`` existed, with it: ``image_shape`` ``[H, W]`` (conv) is
    grey images, ``(1, H, W)``; without one, an mlp of a square number of inputs drew them as square grey
    images, and is read so."""
    if "data_shape" in config or "image_shape" not in config:
        return config
    config = dict(config)
    shape, D = config.pop("image_shape"), config.get("input_dim")
    side = math.isqrt(D) if isinstance(D, int) and not isinstance(D, bool) and D > 0 else 0
    if isinstance(shape, list) and len(shape) == 2:
        config["data_shape"] = [1, *shape]
    elif shape == [] and side * side == D:
        config["data_shape"] = [1, side, side]
    return config


def load(path, backend: str = "auto") -> Model:
    """The trained model in ``path``: a run directory, its ``checkpoint.safetensors``, or a model file.

    The dataset is not touched. Returns a :class:`tinyvae.models.vae.VAE` (conditional
    or not) or a :class:`tinyvae.models.autoencoders.Autoencoder`, its weights loaded,
    on ``backend`` (``auto``: cuda where CuPy and a GPU are present, else numba,
    else numpy).

    Raises:
        SettingsError: a backend name that is not one of them.
        CheckpointError: no such file, not a tinyvae file, a file in PyTorch's
            names, or a field or tensor that does not fit.
        BackendUnavailable: a named backend that cannot run here.
    """
    if backend not in CHOICES:
        raise SettingsError(f"unknown backend {backend!r}; choose one of {', '.join(CHOICES)}")
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    tensors, meta = load_checkpoint(path, formats=(FORMAT, MODEL_FORMAT))
    if meta.get("names") == "pytorch-example":
        raise CheckpointError(f"{path}: weights under PyTorch's example names; load them into PyTorch, or load "
                              "the run (or a file saved without names=) here")
    model = model_for(stored_config(path, meta), backend)
    load_weights(model, tensors, path)
    return model
