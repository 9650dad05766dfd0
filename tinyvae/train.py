"""Train a VAE or an autoencoder: ``python -m tinyvae.train [--model vae] [--backend numpy] [--epochs 10] ...``.

Every epoch prints the train loss (the minimised objective: nll + beta * kl
for a VAE, nll plus the model's penalty for an autoencoder) and the test loss
(the negative ELBO, nll + kl, for a VAE; the reconstruction loss -log p(x|z)
for an autoencoder), both in nats per sample, and writes into the run directory:

* ``metrics.jsonl``: one JSON object per epoch;
* ``checkpoint.safetensors``: weights, optimiser state, random generator state
  and epoch, written atomically, so ``--resume RUN_DIR`` continues exactly;
* ``reconstruction_{epoch}.png`` (8 test images above their reconstructions)
  and ``sample_{epoch}.png`` (an 8x8 grid of decoded z ~ N(0, I); for
  ``--model cvae`` one row per class, the same 8 draws of z in every row; VAEs only);
* ``denoising_{epoch}.png`` (``--model dae``): 8 test images corrupted, their
  reconstructions, and the originals, row by row;
* ``loss.png``: the train and test loss per epoch (where matplotlib is installed).

Variants: ``--likelihood {bernoulli,gaussian,gaussian-learned}``, ``--beta``
with a linear KL warm-up over ``--warmup-epochs``, ``--mc-samples L`` draws of
z per image, ``--model cvae`` (the label joins the encoder input and z).
Autoencoders (:mod:`tinyvae.autoencoders`): ``--model ae``, ``dae`` with
``--corruption`` and ``--noise``, ``sparse-ae`` with ``--rho`` and
``--sparsity-weight``, ``cae`` with ``--contractive-weight``; ``--code-activation``.
``--arch conv`` with ``--channels`` puts convolutions in the encoder and transposed
convolutions in the decoder (:mod:`tinyvae.network`). A flag that does not apply to
the chosen model or architecture is refused. The loop itself is
:class:`tinyvae.trainer.Trainer`.

``--out`` must be a new or empty folder; a run is continued with ``--resume``.
Exit status: 0; 1 when the run diverged (stopped at the first non-finite loss,
metric, weight or optimiser state, its last good checkpoint intact); 2 for an
expected failure, in one ``error:`` line (:mod:`tinyvae.cli`); 130 for Ctrl-C.

Data parallel: started by ``mpirun -np P`` (P > 1), the run trains over the P
ranks (:mod:`tinyvae.distributed`): ``--batch-size`` stays the global batch,
the training is the one-process run's up to the order of floating-point sums,
and rank 0 alone writes the run directory. A rank that fails ends the job.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from . import cli
from .autoencoders import AE_MODELS, CODE_ACTIVATIONS, CORRUPTIONS, AEConfig
from .blas import avx512_hint, cpu_flags, numpy_blas
from .data import DATASETS
from .distributed import DataParallel, from_environment
from .network import ARCHS, LIKELIHOODS
from .rundir import new_run_dir, remove_if_empty
from .settings import MODELS, VAE_MODELS, TrainSettings
from .trainer import Diverged, Trainer


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m tinyvae.train", __doc__)
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default fashion-mnist")
    cli.add_data_dir(p)
    p.add_argument("--epochs", type=int, default=10, help="total epochs, also when resuming (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate, default 1e-3")
    p.add_argument("--latent-dim", type=int, default=None, help="default 20")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="mlp (default): fully connected layers; conv: 4x4 stride-2 convolutions (see --channels)")
    p.add_argument("--hidden", default=None, help="mlp: hidden sizes, comma separated, default 400")
    p.add_argument("--channels", default=None,
                   help="conv: the convolutions' channels, comma separated, default 32,64 (28x28 -> 14x14 -> 7x7)")
    p.add_argument("--model", choices=MODELS, default=None,
                   help="vae (default), cvae (label-conditional), or an autoencoder: ae, dae, sparse-ae, cae")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default=None, help="decoder p(x|z), default bernoulli")
    p.add_argument("--decoder-logvar", type=float, default=None,
                   help="fixed log-variance of --likelihood gaussian, default 0 (sigma = 1)")
    p.add_argument("--mc-samples", type=int, default=None, help="draws of z per image (L), default 1")
    p.add_argument("--beta", type=float, default=None, help="KL weight, default 1.0")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="raise the KL weight linearly from 0 to --beta over this many epochs, default 0")
    ae = p.add_argument_group("autoencoders")
    ae.add_argument("--code-activation", choices=CODE_ACTIVATIONS, default=None, help="the code h, default sigmoid")
    ae.add_argument("--corruption", choices=CORRUPTIONS, default=None, help="dae: default mask")
    ae.add_argument("--noise", type=float, default=None,
                    help=f"dae: corrupted fraction (mask, salt-and-pepper) or std (gaussian), default {AEConfig.noise}")
    ae.add_argument("--rho", type=float, default=None, help=f"sparse-ae: target mean activation, default {AEConfig.rho}")
    ae.add_argument("--sparsity-weight", type=float, default=None,
                    help=f"sparse-ae: weight of sum_j KL(rho || rho_hat_j), default {AEConfig.sparsity_weight}")
    ae.add_argument("--contractive-weight", type=float, default=None,
                    help=f"cae: weight of ||dh/dx||_F^2, default {AEConfig.contractive_weight}")
    p.add_argument("--seed", type=int, default=None, help="default 1")
    p.add_argument("--binarize", action="store_true", default=None,
                   help="dynamic binarisation of the pixels (default off: intensities in [0, 1])")
    p.add_argument("--out", default=None,
                   help="run directory, new or empty (default runs/<timestamp>); a run in it is continued with --resume")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR with its own settings (default: a new run); --data-dir "
                        "names where its data are now")
    return p


SETTING_FLAGS = ("dataset", "data_dir", "batch_size", "lr", "latent_dim", "hidden", "arch", "channels", "beta", "warmup_epochs", "model",
                 "likelihood", "decoder_logvar", "mc_samples", "code_activation", "corruption", "noise", "rho",
                 "sparsity_weight", "contractive_weight", "seed", "binarize")
# The flags that apply to some models only.
ONLY_FOR = {"beta": VAE_MODELS, "warmup_epochs": VAE_MODELS, "mc_samples": VAE_MODELS, "code_activation": AE_MODELS,
            "corruption": ("dae",), "noise": ("dae",), "rho": ("sparse-ae",), "sparsity_weight": ("sparse-ae",),
            "contractive_weight": ("cae",)}


ONLY_FOR_ARCH = {"hidden": ("mlp",), "channels": ("conv",)}


def _sizes(flag: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        example = "32,64" if flag == "channels" else "512,256, or '' for none"
        raise ValueError(f"--{flag} takes sizes separated by commas (e.g. {example}), got {text!r}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    given = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    run: dict = {"trainer": None, "dir": None, "created": False}

    def start() -> Trainer:
        if args.epochs < 1:
            raise ValueError(f"--epochs is the total number of epochs, at least 1; got {args.epochs}")
        if args.resume:
            ignored = [k for k in given if k != "data_dir"] + (["out"] if args.out else [])
            if ignored and (group is None or group.is_root):
                print(f"resuming {args.resume}: its settings come from the checkpoint; "
                      f"ignoring {', '.join('--' + k.replace('_', '-') for k in ignored)}")
            trainer = Trainer.resume(Path(args.resume), args.backend, args.data_dir, group)
            if trainer.epoch >= args.epochs:
                raise ValueError(f"{args.resume} has trained {trainer.epoch} epochs already; --epochs is the total, "
                                 f"so ask for more than {trainer.epoch}")
            return trainer
        model = given.get("model", TrainSettings.model)
        wrong = [k for k in given if model not in ONLY_FOR.get(k, MODELS)]
        if wrong:
            raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in wrong)} does not apply to --model {model}")
        for flag in ("hidden", "channels"):
            if flag in given:
                given[flag] = _sizes(flag, given[flag])
        arch = given.get("arch", TrainSettings.arch)
        wrong = [k for k in given if k in ONLY_FOR_ARCH and arch not in ONLY_FOR_ARCH[k]]
        if wrong:
            raise ValueError(f"{', '.join('--' + k for k in wrong)} does not apply to --arch {arch}")
        if arch == "conv":
            given["hidden"] = ()
        if "data_dir" in given:  # stored absolute, so the run can be resumed, evaluated and sampled from anywhere
            given["data_dir"] = str(Path(given["data_dir"]).resolve())
        settings = TrainSettings(**given)
        if group is None or group.is_root:
            run["dir"], run["created"] = new_run_dir(args.out)
        if group is not None:  # rank 0 names the run directory (a new timestamped one by default)
            run["dir"] = Path(group.share(str(run["dir"]) if group.is_root else None))
        return Trainer(settings, args.backend, run["dir"], group=group)

    def body() -> int:
        nonlocal group
        group = from_environment(args.backend)
        if group is not None:
            sys.excepthook = abort_on_exception(group)
            signal.signal(signal.SIGTERM, interrupt)  # mpirun passes Ctrl-C on to the ranks as SIGTERM
        trainer = run["trainer"] = start()
        say = print if trainer.writes else lambda *a, **k: None
        say(f"run directory: {trainer.run_dir}  (backend {trainer.backend.name}, {trainer.data.name} from "
            f"{trainer.data.source})")
        if group is not None:
            say(f"data-parallel over {group.size} ranks ({group.name})")
        hint = avx512_hint(numpy_blas(), cpu_flags()) if trainer.backend.name != "cuda" and group is None else None
        if hint:
            say(hint)
        try:
            trainer.run(args.epochs, log=say)
        except Diverged as e:  # every rank stops at the same step: the loss is summed over them
            say(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    def interrupted() -> str:
        trainer = run["trainer"]
        if trainer is None or trainer.saved_epoch == 0:
            return "stopped before the first epoch was saved; nothing was kept"
        return (f"stopped after epoch {trainer.saved_epoch} was saved; its checkpoint in {trainer.run_dir} is intact: "
                f"continue with python -m tinyvae.train --resume {trainer.run_dir} --epochs {args.epochs}")

    group = None
    code = cli.run(body, interrupted, where=lambda: "" if group is None else f"rank {group.rank} of {group.size}: ")
    trainer = run["trainer"]
    if code and (trainer is None or trainer.saved_epoch == 0) and run["dir"] is not None:
        remove_if_empty(run["dir"], run["created"])  # a start that failed leaves nothing behind
    if group is not None and code not in (0, 1):
        group.abort(code)  # the other ranks may wait in a collective for this one: end them all
    return code


def interrupt(signum, frame):
    """A signal handler: the signal as Ctrl-C (``KeyboardInterrupt``), which the command reports."""
    raise KeyboardInterrupt


def abort_on_exception(group: DataParallel):
    """A ``sys.excepthook`` for a rank: the traceback (a bug), then ``MPI_Abort``, so that no rank waits
    for this one."""
    def hook(kind, value, tb):
        sys.__excepthook__(kind, value, tb)
        group.abort(1)

    return hook


if __name__ == "__main__":
    sys.exit(main())
