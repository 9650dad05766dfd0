"""Train a VAE or an autoencoder: ``python -m tinyvae.train [--model vae] [--backend numpy] [--epochs 10] ...``.

Every epoch prints the train loss (the minimised objective: nll + beta * kl
for a VAE, nll plus the model's penalty for an autoencoder) and the test loss
(the negative ELBO, nll + kl, for a VAE; the reconstruction loss -log p(x|z)
for an autoencoder), both in nats per sample, and writes into the run directory:

* ``metrics.jsonl``: one JSON object per epoch;
* ``checkpoint.safetensors``: weights, optimiser state and epoch, written
  atomically, so ``--resume RUN_DIR`` continues exactly (every random draw is
  addressed by the seed, the step and the example: :mod:`tinyvae.rng`);
* ``reconstruction_{epoch}.png`` (8 test images above their reconstructions)
  and ``sample_{epoch}.png`` (an 8x8 grid of decoded z ~ N(0, I); for
  ``--model cvae`` one row per class, the same 8 draws of z in every row; VAEs only);
* ``denoising_{epoch}.png`` (``--model dae``): 8 test images corrupted, their
  reconstructions, and the originals, row by row;
* ``loss.png``: the train and test loss per epoch (where matplotlib is installed).

``--no-pictures`` writes none of the PNGs. The pictures draw from their own random
stream, so a run's numbers are the same with them or without.

Variants: ``--likelihood {bernoulli,gaussian,gaussian-learned}``, ``--beta``
with a linear KL warm-up over ``--warmup-epochs``, ``--mc-samples L`` draws of
z per image, ``--model cvae`` (the label joins the encoder input and z), ``--model iwae``
with ``--k`` draws (trained on the importance-weighted bound, :mod:`tinyvae.models.iwae`),
``--prior vamp`` with ``--pseudo-inputs`` (:mod:`tinyvae.models.vamp`); ``--model vqvae`` with
``--codebook-size``, ``--code-dim`` and ``--commitment`` (:mod:`tinyvae.models.vqvae`).
Autoencoders (:mod:`tinyvae.models.autoencoders`): ``--model ae``, ``dae`` with
``--corruption`` and ``--noise``, ``sparse-ae`` with ``--rho`` and
``--sparsity-weight``, ``cae`` with ``--contractive-weight``; ``--code-activation``.
``--arch conv`` with ``--channels`` puts convolutions in the encoder and transposed
convolutions in the decoder (:mod:`tinyvae.nn.stacks`). ``--optimizer sgd`` with
``--momentum`` replaces Adam. A flag that does not apply to the chosen model,
architecture, likelihood or optimiser is refused. The settings are declared in
:mod:`tinyvae.models.config` and :mod:`tinyvae.training.settings`; the loop is
:class:`tinyvae.training.loop.Trainer`.

``--out`` must be a new or empty folder; a run is continued with ``--resume``.
Exit status: 0; 1 when the run diverged (stopped at the first non-finite loss,
metric, weight or optimiser state, its last good checkpoint intact); 2 for an
expected failure, in one ``error:`` line (:mod:`tinyvae.cli`); 130 for Ctrl-C.

Data parallel: started by ``mpirun -np P`` (P > 1), the run trains over the P
ranks (:mod:`tinyvae.training.distributed`): ``--batch-size`` stays the global batch,
the training is the one-process run's up to the order of floating-point sums,
and rank 0 alone writes the run directory. A rank that fails ends the job.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from . import cli
from .backends.blas import avx512_hint, cpu_flags, numpy_blas
from .errors import Diverged, SettingsError, TinyVAEError
from .models.config import AEConfig, VAEConfig
from .models.settings import Setting, add_flags, declared
from .training.distributed import DataParallel, from_environment
from .training.loop import Trainer
from .training.rundir import claim, new_run_dir, release, remove_if_empty
from .training.state import checkpoint_of
from .training.data import load_run_data, settings_for_data, train_settings
from .training.settings import SETTINGS, TRAIN_SETTINGS, check_epochs

AE_ONLY = set(declared(AEConfig)) - set(declared(VAEConfig))


def group_of(s: Setting) -> str:
    """The section of ``--help`` a setting is listed in."""
    if s.name in TRAIN_SETTINGS:
        return "training"
    return "autoencoders" if s.name in AE_ONLY else "model"


def build_parser():
    p = cli.parser("python -m tinyvae.train", __doc__)
    p.add_argument("--epochs", type=int, default=10, help="total epochs, also when resuming (default 10)")
    p.add_argument("--out", default=None,
                   help="run directory, new or empty (default runs/<timestamp>); a run in it is continued with --resume")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR with its own settings (default: a new run); --data-dir, "
                        "--data and --test-data name where its data are now")
    p.add_argument("--no-pictures", action="store_true",
                   help="write no PNG (the numbers of the run are the same with pictures or without; default: off)")
    add_flags(p, SETTINGS, group_of)
    return p


def main(argv=None) -> int:
    args = build_parser().parse(argv)
    if args is None:
        return 2
    given = {k: getattr(args, k) for k, s in SETTINGS.items() if s.spec.flag and getattr(args, k) is not None}
    given.update(cli.moved_data(args))  # absolute, so the run can be resumed, evaluated and sampled from anywhere
    run: dict = {"trainer": None, "dir": None, "created": False, "claimed": None, "agreed": False}

    def resume() -> Trainer:
        ignored = [k for k in given if k not in cli.LOCATIONS] + (["out"] if args.out else [])
        if ignored and (group is None or group.is_root):
            print(f"resuming {args.resume}: its settings come from the checkpoint; "
                  f"ignoring {', '.join('--' + k.replace('_', '-') for k in ignored)}")
        if group is None or group.is_root:  # one process trains a run at a time
            run["claimed"] = checkpoint_of(Path(args.resume)).parent
            claim(run["claimed"])
        trainer = Trainer.resume(Path(args.resume), args.backend, cli.moved_data(args), group,
                                 not args.no_pictures)
        if trainer.epoch >= args.epochs:
            raise SettingsError(f"{args.resume} has trained {trainer.epoch} epochs already; --epochs is the "
                                f"total, so ask for more than {trainer.epoch}")
        return trainer

    def prepare():
        """A new run's data and settings, and rank 0's run directory."""
        data = load_run_data(train_settings(given))
        settings = settings_for_data(given, data)
        if group is None or group.is_root:
            run["dir"], run["created"] = new_run_dir(args.out)
            run["claimed"] = run["dir"]
        return data, settings

    def start() -> Trainer:
        """The run's Trainer, made by every rank in steps that every rank takes (:func:`agreed`), no rank
        waiting in a collective while another has failed."""
        check_epochs(args.epochs)
        if args.resume:
            return together(resume)
        data, settings = together(prepare)
        if group is not None:  # rank 0 names the run directory (a new timestamped one by default)
            run["dir"] = Path(group.share(str(run["dir"]) if group.is_root else None))
        return together(lambda: Trainer.start(settings, args.backend, run["dir"], group, data,
                                              pictures=not args.no_pictures))

    def together(step):
        run["agreed"] = True  # a failure of the step is known to every rank: none waits for another
        result = agreed(group, step)
        run["agreed"] = False
        return result

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
    if run["claimed"] is not None:
        release(run["claimed"])
    if group is not None and code not in (0, 1) and not run["agreed"]:
        group.abort(code)  # the other ranks may wait in a collective for this one: end them all
    return code


def agreed(group: DataParallel | None, step):
    """``step()`` on every rank, then, where it failed on any, the end of every rank: a rank's expected failure
    is printed by that rank, or by rank 0 alone where every rank failed alike (the same settings and data
    fail the same way everywhere). A rank whose failure another reports ends with :class:`tinyvae.cli.Reported`."""
    try:
        result, failure = step(), None
    except (TinyVAEError, OSError) as e:
        result, failure = None, e
    if group is None:
        if failure is not None:
            raise failure
        return result
    failed = int(group.sum(float(failure is not None))[0])
    if failed:
        if failure is not None and (failed < group.size or group.is_root):
            raise failure
        raise cli.Reported(f"rank {group.rank}: another rank reports the failure")
    return result


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
