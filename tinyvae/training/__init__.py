"""Training runs: the settings of a run (:mod:`~tinyvae.training.settings`), the state a checkpoint saves
(:mod:`~tinyvae.training.state`), the loop (:mod:`~tinyvae.training.loop`), run directories
(:mod:`~tinyvae.training.rundir`) and data-parallel training over MPI or NCCL
(:mod:`~tinyvae.training.distributed`)."""
