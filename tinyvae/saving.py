"""Trained models as files, and the one-call loader (``tinyvae.load``).

Two files hold a model (both safetensors, never pickle, written atomically):

* a run's ``checkpoint.safetensors`` (:mod:`tinyvae.train`): the weights, the
  optimiser's state, the settings and the generator, to resume training;
* a model file (``model.save(path)``, format ``tinyvae-model-1``): the weights
  under their layer names (``encoder.0.weight``, ...) and the model's config,
  nothing else (a third of the checkpoint's size for the default VAE).

``model.save(path, names="pytorch-example")`` writes the weights of a VAE shaped
like PyTorch's example (one hidden layer, Bernoulli decoder, no labels) under
that example's names (``fc1``, ``fc21``, ``fc22``, ``fc3``, ``fc4``), so
``TorchVAE.load_state_dict(safetensors.torch.load_file(path), strict=True)``
takes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import MODEL_FORMAT, CheckpointError, check_tensors, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
PYTORCH_EXAMPLE = {"encoder.0": "fc1", "encoder.mu": "fc21", "encoder.logvar": "fc22", "decoder.0": "fc3",
                   "decoder.logits": "fc4"}


def model_kind(model) -> str:
    """``vae``, ``cvae``, or the autoencoder's name (``ae``, ``dae``, ``sparse-ae``, ``cae``)."""
    return getattr(model.config, "model", None) or ("cvae" if model.config.n_classes else "vae")


def save_model(model, path, names: str | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (see the module docstring); returns the path.

    Raises:
        ValueError: for ``names`` other than None and ``"pytorch-example"``, or a
            model PyTorch's example cannot hold.
        OSError: if the file cannot be written.
    """
    host = model.backend.to_host
    tensors = {k: np.array(host(v)) for k, v in model.params.state_dict().items()}
    if names is None:
        save_checkpoint(path, tensors, {"model": model_kind(model), "model_config": model.config.to_dict()},
                        MODEL_FORMAT)
    elif names == "pytorch-example":
        c = model.config
        if model_kind(model) != "vae" or len(c.hidden) != 1 or c.likelihood != "bernoulli":
            raise ValueError("PyTorch's example VAE has one hidden layer, a Bernoulli decoder and no labels; "
                             f"this model is a {model_kind(model)} with hidden {list(c.hidden)} and a "
                             f"{c.likelihood} decoder")
        renamed = {f"{PYTORCH_EXAMPLE[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in tensors.items()}
        save_checkpoint(path, renamed, {"names": "pytorch-example", "model_config": c.to_dict()}, MODEL_FORMAT)
    else:
        raise ValueError(f"names must be None (tinyvae's) or 'pytorch-example', got {names!r}")
    return Path(path)


def load_weights(model, tensors: dict, path) -> None:
    """Copy the checkpoint's ``tensors`` into ``model``'s parameters; ``CheckpointError`` for a missing,
    misshapen or non-finite tensor (:func:`tinyvae.checkpoint.check_tensors`)."""
    check_tensors(path, tensors, {name: (shape, model.dtype.name) for name, shape in model.params.shapes.items()})
    for name in model.params.names:
        model.params.view(name)[...] = model.xp.asarray(tensors[name])


def load(path, backend: str = "auto"):
    """The trained model in ``path``: a run directory, its ``checkpoint.safetensors``, or a model file.

    The dataset is not touched. Returns a :class:`tinyvae.model.VAE` (conditional
    or not) or a :class:`tinyvae.autoencoders.Autoencoder`, its weights loaded,
    on ``backend`` (``auto``: cuda where CuPy and a GPU are present, else numba,
    else numpy).

    Raises:
        CheckpointError: no such file, not a tinyvae file, a file in PyTorch's
            names, or a field or tensor that does not fit.
        BackendUnavailable: a named backend that cannot run here.
    """
    from .autoencoders import AEConfig, Autoencoder
    from .checkpoint import FORMAT
    from .model import VAE, VAEConfig

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    tensors, meta = load_checkpoint(path, formats=(FORMAT, MODEL_FORMAT))
    if meta.get("names") == "pytorch-example":
        raise CheckpointError(f"{path}: weights under PyTorch's example names; load them into PyTorch, or load "
                              "the run (or a file saved without names=) here")
    kind = meta.get("model") or (meta.get("settings") or {}).get("model")
    config = meta.get("model_config")
    if not isinstance(config, dict) or not isinstance(kind, str):
        raise CheckpointError(f"{path}: metadata fields 'model_config' and 'model' (or 'settings.model') "
                              "are missing or not what a model needs")
    try:
        model = (VAE(VAEConfig(**config), backend) if kind in ("vae", "cvae")
                 else Autoencoder(AEConfig(**config), backend))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata field 'model_config': {e}") from e
    load_weights(model, tensors, path)
    return model
