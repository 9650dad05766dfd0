"""Data-parallel training on existing engines: MPI (mpi4py) between processes, NCCL (CuPy) between GPUs.

``mpirun -np P python -m tinyvae.train ...`` trains one model over P ranks with no other flag:
:func:`from_environment` sees the launch, and the trainer then computes the same training as one
process, up to the order of floating-point sums:

* every rank holds the whole dataset and the same generator, draws the same epoch permutation
  and the same noise (``eps``, binarisation, a dae's corruption) for the *whole* global batch,
  and keeps its own rows (:meth:`DataParallel.rows`: rank r of P takes rows ``B r / P`` to
  ``B (r + 1) / P`` of a batch of B);
* each rank's gradient is the mean over its B / P rows; one in-place allreduce of the flat
  gradient buffer (the fused buffer of Horovod, Sergeev & Del Balso 2018) sums them, and a scale
  by 1 / P makes it the global batch's mean gradient; every rank then applies the same
  optimiser step to the same parameters;
* parameters and optimiser state are broadcast from rank 0 at the start (and on resume), and
  compared across ranks by a checksum after every epoch;
* scalars (the running loss, the test metrics' sums) are summed over MPI on the host.

Engines: :class:`MPIBuffers` moves host (NumPy) buffers with mpi4py, for the numpy, numba and
cuda-sim backends; :class:`NCCLBuffers` moves device (CuPy) buffers with NCCL through
``cupy.cuda.nccl``, one GPU per rank chosen by the rank's index on its node, its unique id
broadcast over MPI (as ChainerMN's ``pure_nccl`` communicator). Their interface is
``allreduce_mean_(buf)`` and ``broadcast_(buf)``, in place on a contiguous ``(n,)`` array.

Failure: a rank that fails calls ``MPI_Abort`` (:meth:`DataParallel.abort`), which ends every
rank of the job, so no rank waits forever in a collective for one that has gone.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np

from ..errors import MissingDependency, SettingsError

# Environment variables that MPI launchers set in each process: Open MPI's, then the PMI ones of
# MPICH's Hydra, Intel MPI and Slurm's srun.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE")


def launched_size(env=os.environ) -> int:
    """The number of ranks an MPI launcher started this process among, read from its environment
    (1 where none did)."""
    for name in SIZE_VARIABLES:
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class DataParallelError(SettingsError):
    """A run that cannot be, or go on being, data-parallel: a batch that does not split over the ranks, a
    model whose loss is not a mean over rows, ranks whose weights differ."""


class MPIBuffers:
    """In-place collectives on contiguous host arrays, over an mpi4py communicator."""

    name = "MPI"

    def __init__(self, comm, MPI):
        self.comm, self.MPI, self.size = comm, MPI, comm.Get_size()

    def allreduce_mean_(self, buf):
        """``buf`` ``(n,)`` becomes the mean of every rank's ``buf`` (a sum, then a scale by 1 / P)."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        buf *= buf.dtype.type(1.0 / self.size)

    def broadcast_(self, buf):
        """``buf`` becomes rank 0's ``buf``."""
        self.comm.Bcast(buf, root=0)


class NCCLBuffers:
    """In-place collectives on contiguous CuPy arrays, over an NCCL communicator.

    Args:
        comm: ``cupy.cuda.nccl.NcclCommunicator`` of ``size`` ranks.
        size: P.
        nccl: the ``cupy.cuda.nccl`` module (its constants).
        stream: the ``cupy.cuda.Stream`` the collectives are queued on (the one the
            training step's kernels run on, so no extra synchronisation is needed).
    """

    name = "NCCL"

    def __init__(self, comm, size: int, nccl, stream):
        self.comm, self.size, self.nccl, self.stream = comm, size, nccl, stream
        self.dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _checked(self, buf):
        """``(device pointer, count, NCCL dtype)`` of ``buf``; ``TypeError`` (a bug: the trainer passes its
        flat buffers) unless it is a contiguous ``(n,)`` float32 or float64 array."""
        dtype = self.dtypes.get(np.dtype(buf.dtype))
        if dtype is None or buf.ndim != 1 or not buf.flags.c_contiguous:
            raise TypeError(f"NCCL collectives take a contiguous (n,) float32 or float64 array, got "
                             f"{buf.dtype} {buf.shape}{'' if buf.flags.c_contiguous else ' (not contiguous)'}")
        return buf.data.ptr, buf.size, dtype

    def allreduce_mean_(self, buf):
        ptr, n, dtype = self._checked(buf)
        self.comm.allReduce(ptr, ptr, n, dtype, self.nccl.NCCL_SUM, self.stream.ptr)
        buf *= buf.dtype.type(1.0 / self.size)

    def broadcast_(self, buf):
        ptr, n, dtype = self._checked(buf)
        self.comm.bcast(ptr, n, dtype, 0, self.stream.ptr)


class DataParallel:
    """P ranks training one model: the rows each takes, its buffer engine, host scalars over MPI.

    Args:
        comm: an mpi4py communicator (``MPI.COMM_WORLD``).
        MPI: the ``mpi4py.MPI`` module.
        buffers: :class:`MPIBuffers` or :class:`NCCLBuffers`.

    Attributes:
        rank, size: this rank and P.
        name: ``"MPI"`` or ``"NCCL"``, the engine of the gradient's allreduce.
    """

    def __init__(self, comm, MPI, buffers):
        self.comm, self.MPI, self.buffers = comm, MPI, buffers
        self.rank, self.size, self.name = comm.Get_rank(), comm.Get_size(), buffers.name

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> tuple[int, int]:
        """``(lo, hi)``: this rank's rows of a batch of ``n``, ``n r / P`` to ``n (r + 1) / P`` rounded down
        (the ranks' shares differ by one row at most)."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def check_batches(self, n_train: int, batch_size: int, n_test: int, eval_batch_size: int):
        """:class:`DataParallelError` unless every training batch splits into P equal parts (so that the mean of the
        ranks' mean gradients is the batch's) and every test batch gives each rank a row."""
        P = self.size
        last = n_train % batch_size
        if batch_size % P or last % P:
            what = (f"so must the last batch of the {n_train} training images, {last}: choose a batch size that "
                    f"leaves a multiple of {P} too" if batch_size % P == 0 else f"choose a multiple of {P}")
            raise DataParallelError(f"--batch-size {batch_size} is the global batch and must split evenly over the {P} "
                                    f"ranks; {what}")
        smallest = min(eval_batch_size, n_test % eval_batch_size or eval_batch_size)
        if smallest < P:
            raise DataParallelError(f"a test batch of {smallest} images cannot give each of {P} ranks a row")

    def sum(self, values) -> np.ndarray:
        """The sum over ranks of ``values`` (a float or a sequence of floats), float64 on the host."""
        buf = np.array(values, dtype=np.float64, ndmin=1)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def share(self, obj):
        """Rank 0's ``obj`` (a small value: a path, a flag) on every rank."""
        return self.comm.bcast(obj, root=0)

    def checksums(self, host_array: np.ndarray) -> list[int]:
        """Every rank's CRC-32 of ``host_array``'s bytes, in rank order."""
        mine = np.array([zlib.crc32(np.ascontiguousarray(host_array).view(np.uint8))], dtype=np.int64)
        every = np.empty(self.size, dtype=np.int64)
        self.comm.Allgather(mine, every)
        return every.tolist()

    def abort(self, code: int):
        """End every rank of the job with exit status ``code`` (``MPI_Abort``); does not return."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def nccl_buffers(comm, MPI, xp) -> NCCLBuffers:
    """NCCL between the ranks' GPUs: the GPU is the rank's index among the ranks on its node, rank 0's
    NCCL unique id is broadcast over MPI, and the collectives run on CuPy's current stream.

    Raises:
        DataParallelError: more ranks on a node than it has GPUs.
    """
    from cupy.cuda import nccl

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    here, gpus = local.Get_size(), xp.cuda.runtime.getDeviceCount()
    if here > gpus:  # NCCL refuses two ranks on one GPU
        raise DataParallelError(f"{here} ranks on this node but {gpus} GPU{'s' * (gpus != 1)}: --backend cuda "
                                f"trains data-parallel with one GPU per rank; start at most {gpus} ranks per node")
    xp.cuda.Device(local.Get_rank()).use()
    local.Free()
    uid = comm.bcast(nccl.get_unique_id() if comm.Get_rank() == 0 else None, root=0)
    size = comm.Get_size()
    return NCCLBuffers(nccl.NcclCommunicator(size, uid, comm.Get_rank()), size, nccl, xp.cuda.get_current_stream())


def from_environment(backend_name: str, env=os.environ) -> DataParallel | None:
    """The :class:`DataParallel` group this process was started in by ``mpirun -np P`` (P > 1), or None
    (no MPI launch, or P = 1: nothing changes).

    The cuda backend's gradients (``auto``'s where it picks cuda) travel over NCCL, its GPU chosen here
    before any allocation; every other backend's over MPI. Sets BLAS's and Numba's threads to the cores per
    rank on the node.

    Raises:
        MissingDependency: started by an MPI launcher with P > 1 but mpi4py is not installed.
    """
    P = launched_size(env)
    if P <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MissingDependency(f"started by MPI with {P} ranks, but mpi4py is not installed: "
                          f"pip install -e '.[mpi]' (or pip install mpi4py)") from e
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return None
    if backend_name == "auto":  # the backend auto picks: cuda where a GPU is, and then NCCL
        from ..backends import get_backend

        backend_name = get_backend("auto").name
    if backend_name == "cuda":
        import cupy

        buffers = nccl_buffers(comm, MPI, cupy)
    else:
        buffers = MPIBuffers(comm, MPI)
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        per_rank = max(1, len(os.sched_getaffinity(0)) // local.Get_size())
        local.Free()
        from threadpoolctl import threadpool_limits

        threadpool_limits(per_rank, user_api="blas")
        try:  # the numba backend's kernels and GEMMs run on Numba's threads
            import numba

            numba.set_num_threads(min(per_rank, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
    return DataParallel(comm, MPI, buffers)


class DataParallelOptimizer:
    """An optimiser's step that first makes the gradient the mean over ranks (one allreduce of the
    flat buffer); the optimiser's state stays the wrapped optimiser's."""

    def __init__(self, optimizer, group: DataParallel):
        self.optimizer, self.group = optimizer, group

    def step(self, grad):
        self.group.buffers.allreduce_mean_(grad)
        self.optimizer.step(grad)
