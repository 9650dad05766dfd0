"""The named ops as our CUDA kernels (``kernels/*.cu``): on a GPU, or in the CPU simulator.

Same names, signatures and formulas as :mod:`tinyvae.backends.reference` (read
the formulas and their sources there). Arrays are CuPy arrays (NumPy arrays in
the simulator); the GEMMs (ops ``matmul`` and ``matmul_pair``) go through cuBLAS (``cupy.matmul`` with
``out=``; NumPy's in the simulator), as in the reference.

Each ``kernels/<family>.cu`` exports ``<op>_f32`` and ``<op>_f64``. The ops
are written once, in :class:`CudaOps`, against a module loader: on the GPU
(backend ``cuda``) each file is compiled once per process, on first use, by
``cupy.RawModule`` (NVRTC; CuPy also keeps the binary in its on-disk kernel
cache); on the CPU (backend ``cuda-sim``) by :mod:`tinyvae.backends.cudasim`,
which runs the same launches on NumPy arrays. The kernels are found where the
environment variable ``TINYVAE_KERNELS`` points, else in the installed package
(``tinyvae/kernels``, where a wheel puts the repository's ``kernels`` folder), else
in the ``kernels`` folder of the source checkout (an editable install).

Launch shapes (see each ``.cu`` file): one 256-thread block per row for the
likelihoods, one warp per row for the reparameterization forward, blocks of
(32, 8) threads per 32 columns for the column sums (the Gaussian log-variance
gradient; the bias gradient too, with a block per chunk of 256 rows and a second
kernel adding the chunks' sums when there are more rows, as a convolution's
output has), and grid-stride loops of 256-thread blocks for the elementwise ops.

``gather_pixels`` reads the batch's uint8 rows from the training set held on
the GPU; it does not check the row indices (see ``kernels/data.cu``), and its
``next_rows`` hint (a CPU cache prefetch in the numba backend) is ignored.

The ops raise ``TypeError`` for mixed or unsupported dtypes and ``ValueError``
for an array whose columns are not adjacent (:func:`row_stride`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable
from . import reference
from .arrays import array_module
from .reference import CORRUPTION_CODES
from .reference_likelihood import check_draws, check_draws_backward, check_targets


def kernel_dir() -> Path:
    """The folder of the ``.cu`` files: ``$TINYVAE_KERNELS``, else the installed package's ``kernels``
    (a wheel), else the checkout's."""
    if os.environ.get("TINYVAE_KERNELS"):
        return Path(os.environ["TINYVAE_KERNELS"])
    package = Path(__file__).resolve().parents[1]
    installed = package / "kernels"
    return installed if installed.is_dir() else package.parent / "kernels"


KERNEL_DIR = kernel_dir()
FAMILIES = {  # the op -> the kernels/<family>.cu that defines it
    "philox4x32_10": "random", "draw_normal": "random", "corrupt": "random",
    "gather_pixels": "data", "take_rows": "data",
    "bce_with_logits": "likelihood", "gaussian_nll": "likelihood", "gaussian_nll_dlogvar": "likelihood",
    "importance_weights": "likelihood", "importance_weights_backward": "likelihood",
    "reparameterize_kl": "latent", "reparameterize_kl_draw": "latent", "reparameterize_kl_backward": "latent",
    "bias_act": "linear", "bias_act_backward": "linear", "bias_act_backward_sum": "linear",
    "unfold": "conv", "fold": "conv",
    "nearest_code": "vq",
    "adam_step": "optim", "sgd_step": "optim",
}
UNTYPED = ("philox4x32_10",)  # ops on words alone: one kernel, named as the op, not <op>_f32 and <op>_f64


def kernel_names(family: str | None = None) -> set[str]:
    """The names of the kernels that the ops of ``family`` (default: every family) launch."""
    return {name for op, f in FAMILIES.items() if family in (None, f)
            for name in ((op,) if op in UNTYPED else (f"{op}_f32", f"{op}_f64"))}

THREADS = 256     # threads per block of the row and elementwise kernels
WARPS = THREADS // 32   # rows per block of the warp-per-row kernels
COLUMNS = 32      # columns per block of the column-sum kernels
COLUMN_ROWS = 8   # TINYVAE_COLUMN_ROWS in kernels/common.cuh
MAX_BLOCKS = 65535 * 8  # cap of the grid-stride loops' grids
CHUNK_ROWS = 256  # rows per block of bias_act_backward (more blocks, and a second kernel, above that)
MAX_CHUNKS = 1024

def suffix(dtype) -> str:
    """``"f32"`` or ``"f64"``, the kernel name suffix for ``dtype``; ``TypeError`` for any other dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "f32"
    if dtype == np.float64:
        return "f64"
    raise TypeError(f"the CUDA kernels take float32 or float64 arrays, got {dtype}")


def row_stride(a) -> int:
    """The row stride of a 2-D array in elements; ``ValueError`` unless its columns are adjacent.

    The kernels take each ``(rows, cols)`` argument as a pointer and this stride,
    so column views such as ``heads[:, :K]`` are read in place.
    """
    if a.ndim != 2 or (a.shape[1] > 1 and a.strides[1] != a.itemsize) or a.strides[0] % a.itemsize:
        raise ValueError(f"expected a 2-D array with unit column stride, got shape {a.shape}, strides {a.strides}")
    return a.strides[0] // a.itemsize


def grid_for(n: int, threads: int = THREADS) -> int:
    """Blocks for a grid-stride loop over ``n`` elements (at least 1, at most :data:`MAX_BLOCKS`)."""
    return max(1, min(MAX_BLOCKS, math.ceil(n / threads)))


def _check(*arrays) -> str:
    """The common dtype's kernel suffix; ``TypeError`` for mixed dtypes, ``ValueError`` for a
    strided 1-D array (2-D arrays are checked by :func:`row_stride`)."""
    dtype = arrays[0].dtype
    for a in arrays:
        if a.dtype != dtype:
            raise TypeError(f"mixed dtypes {dtype} and {a.dtype}")
        if a.ndim == 1 and a.size > 1 and a.strides[0] != a.itemsize:
            raise ValueError(f"expected a contiguous 1-D array, got strides {a.strides}")
    return suffix(dtype)


def _targets(x, n: int):
    """A likelihood kernel's arguments for its targets ``x`` of ``n`` output rows: the array, its row stride and
    its row count (:func:`tinyvae.backends.reference_likelihood.check_targets`)."""
    check_targets(x, n)
    return x, np.int64(row_stride(x)), np.int32(x.shape[0])


def source(op: str) -> Path:
    """The ``kernels/<family>.cu`` file that defines ``op``."""
    return KERNEL_DIR / f"{FAMILIES[op]}.cu"


def gpu_module(path: Path):
    """``path`` compiled for the GPU by ``cupy.RawModule`` (NVRTC)."""
    import cupy

    if not path.is_file():
        raise BackendUnavailable(f"the CUDA kernel source {path} is missing; set TINYVAE_KERNELS to the kernels folder")
    return cupy.RawModule(code=path.read_text(), options=("-std=c++17", f"-I{KERNEL_DIR}"))


def _scalar(value, sfx):
    return np.float32(value) if sfx == "f32" else np.float64(value)


def _key(key) -> tuple:
    """A stream's ``(2,)`` uint32 key as the kernels' two ``unsigned int`` arguments."""
    return np.uint32(int(key[0])), np.uint32(int(key[1]))


def _rows(rows):
    """Example indices as the kernels' contiguous ``long`` array."""
    return rows.astype(np.int64, order="C", copy=False)


def _halves(heads, K) -> tuple:
    """The two halves of a ``(N, 2K)`` array (``[mu | logvar]``, or their gradients) with their row strides: the
    four arguments the latent kernels take for it."""
    first, second = heads[:, :K], heads[:, K:]
    return first, np.int64(row_stride(first)), second, np.int64(row_stride(second))


def _contiguous(a):
    return array_module(a).ascontiguousarray(a)


class CudaOps:
    """The ops, each launching its kernel from a module that ``load(path)`` makes of a kernel file.

    ``CudaOps(gpu_module)`` runs them on the GPU with CuPy arrays;
    ``CudaOps(tinyvae.backends.cudasim.module)`` runs the same launches on NumPy
    arrays in the CPU simulator. A module is loaded once per :class:`CudaOps`,
    on first use of one of its kernels.
    """

    def __init__(self, load):
        self._load = load
        self._modules: dict = {}
        self._scratch: dict = {}

    def kernel(self, op: str, sfx: str = ""):
        """The kernel ``<op>_<sfx>`` (``<op>`` for one of :data:`UNTYPED`), its ``.cu`` file loaded on first use."""
        family = FAMILIES[op]
        if family not in self._modules:
            self._modules[family] = self._load(source(op))
        return self._modules[family].get_function(f"{op}_{sfx}" if sfx else op)

    def philox4x32_10(self, counter, key, out):
        if counter.dtype != np.uint32 or out.dtype != np.uint32 or counter.shape != out.shape or counter.shape[1:] != (4,):
            raise TypeError(f"philox4x32_10 takes (n, 4) uint32 counters and out, got {counter.dtype} {counter.shape}, "
                            f"{out.dtype} {out.shape}")
        n = counter.shape[0]
        self.kernel("philox4x32_10")((grid_for(n),), (THREADS,),
                                     (_contiguous(counter), *_key(key), out, np.int64(n)))

    def draw_normal(self, key, step, rows, out):
        sfx = suffix(out.dtype)
        B, (N, K) = rows.shape[0], out.shape
        self.kernel("draw_normal", sfx)(
            (grid_for(B * -(-(N // B * K) // 4)),), (THREADS,),
            (*_key(key), np.uint64(step), _rows(rows), np.int32(B), np.int32(N // B), np.int32(K), out,
             np.int64(row_stride(out))))

    def corrupt(self, x, key, step, rows, kind, noise, out):
        sfx = _check(x, out)
        B, D = x.shape
        words = self.scratch("corrupt", (B, 2 * D), array_module(x).empty(0, np.uint32))
        self.kernel("corrupt", sfx)(
            (B,), (THREADS,),
            (x, np.int64(row_stride(x)), *_key(key), np.uint64(step), _rows(rows),
             np.int32(CORRUPTION_CODES[kind]), _scalar(noise, sfx),
             np.int32(round(noise * D)), out, np.int64(row_stride(out)), words, np.int32(D)))

    def gather_pixels(self, pixels, rows, scale, out, next_rows=None, binarize=None):
        sfx = suffix(out.dtype)
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise TypeError(f"gather_pixels takes (N, D) uint8 pixels, got {pixels.dtype} {pixels.shape}")
        B, D = out.shape
        if (B, D) != (rows.shape[0], pixels.shape[1]):
            raise ValueError(f"out must have shape {(rows.shape[0], pixels.shape[1])}, got {out.shape}")
        self.kernel("gather_pixels", sfx)(
            (grid_for(B * D),), (THREADS,),
            (pixels, np.int64(pixels.shape[0]), np.int64(row_stride(pixels)), _rows(rows),
             np.float32(scale), out, np.int64(row_stride(out)), np.int64(B), np.int32(D),
             np.int32(binarize is not None), *_key(binarize[0] if binarize else (0, 0)),
             np.uint64(binarize[1] if binarize else 0)))

    def take_rows(self, a, rows, scale, out):
        sfx = _check(a, out) if scale is None else _check(a, scale, out)
        reference.check_take_rows(a, rows, scale, out)
        (N, D), n = a.shape, rows.shape[0]
        if N == 0 and n:
            raise IndexError("take_rows: row indices into an array of no rows")
        self.kernel("take_rows", sfx)(
            (grid_for(n * D),), (THREADS,),
            (a, np.int64(N), np.int64(row_stride(a)), _rows(rows), a if scale is None else scale,
             np.int32(scale is not None), out, np.int64(row_stride(out)), np.int64(n), np.int32(D)))

    def bce_with_logits(self, logits, x, scale, loss_out, dlogits_out):
        sfx = _check(logits, x, loss_out, dlogits_out)
        B, D = logits.shape
        self.kernel("bce_with_logits", sfx)(
            (B,), (THREADS,),
            (logits, np.int64(row_stride(logits)), *_targets(x, B), _scalar(scale, sfx), loss_out,
             dlogits_out, np.int64(row_stride(dlogits_out)), np.int32(D)))

    def gaussian_nll(self, mean, x, logvar, scale, loss_out, dmean_out, dlogvar_out):
        sfx = _check(mean, x, logvar, loss_out, dmean_out)
        B, D = mean.shape
        ld_m, targets = np.int64(row_stride(mean)), _targets(x, B)
        self.kernel("gaussian_nll", sfx)(
            (B,), (THREADS,),
            (mean, ld_m, *targets, logvar, _scalar(scale, sfx), loss_out, dmean_out,
             np.int64(row_stride(dmean_out)), np.int32(D)))
        if dlogvar_out is not None:
            self.kernel("gaussian_nll_dlogvar", sfx)(
                (math.ceil(D / COLUMNS),), (COLUMNS, COLUMN_ROWS),
                (mean, ld_m, *targets, logvar, _scalar(scale, sfx), dlogvar_out, np.int32(B), np.int32(D)))

    def importance_weights(self, nll, heads, eps, z, scale, weights_out, bound_out):
        sfx = _check(nll, heads, eps, z, weights_out, bound_out)
        check_draws(nll, heads, eps, z, weights_out, bound_out)
        (N, K), B = z.shape, bound_out.shape[0]
        self.kernel("importance_weights", sfx)(
            (math.ceil(B / THREADS),), (THREADS,),
            (nll, heads, np.int64(row_stride(heads)), eps, np.int64(row_stride(eps)), z, np.int64(row_stride(z)),
             _scalar(scale, sfx), _scalar(np.finfo(nll.dtype).eps, sfx), weights_out, bound_out, np.int32(B),
             np.int32(N // B), np.int32(K)))

    def importance_weights_backward(self, dz, weights, heads, eps, z, dheads_out):
        sfx = _check(dz, weights, heads, eps, z, dheads_out)
        check_draws_backward(dz, weights, heads, eps, z, dheads_out)
        (N, K), B = z.shape, dheads_out.shape[0]
        self.kernel("importance_weights_backward", sfx)(
            (grid_for(B * K),), (THREADS,),
            (dz, np.int64(row_stride(dz)), weights, heads, np.int64(row_stride(heads)), eps, np.int64(row_stride(eps)),
             z, np.int64(row_stride(z)), dheads_out, np.int64(row_stride(dheads_out)), np.int32(B), np.int32(N // B),
             np.int32(K)))

    def reparameterize_kl(self, heads, eps, z_out, kl_out):
        sfx = _check(heads, eps, z_out, kl_out)
        B, K = eps.shape
        self.kernel("reparameterize_kl", sfx)(
            (math.ceil(B / WARPS),), (THREADS,),
            (*_halves(heads, K), eps, np.int64(row_stride(eps)), z_out, np.int64(row_stride(z_out)), kl_out,
             np.int32(B), np.int32(K)))

    def reparameterize_kl_draw(self, heads, key, step, rows, eps_out, z_out, kl_out):
        sfx = _check(heads, eps_out, z_out, kl_out)
        N, K = eps_out.shape
        self.kernel("reparameterize_kl_draw", sfx)(
            (math.ceil(N / WARPS),), (THREADS,),
            (*_halves(heads, K), *_key(key), np.uint64(step), _rows(rows), np.int32(rows.shape[0]), eps_out,
             np.int64(row_stride(eps_out)), z_out, np.int64(row_stride(z_out)), kl_out, np.int32(N), np.int32(K)))

    def reparameterize_kl_backward(self, dz, heads, eps, kl_scale, dheads_out):
        sfx = _check(dz, heads, eps, dheads_out)
        B, K = eps.shape
        self.kernel("reparameterize_kl_backward", sfx)(
            (grid_for(B * K),), (THREADS,),
            (dz, np.int64(row_stride(dz)), *_halves(heads, K), eps, np.int64(row_stride(eps)),
             _scalar(kl_scale, sfx), *_halves(dheads_out, K), np.int32(B), np.int32(K)))

    def nearest_code(self, z, codebook, idx_out, dist_out):
        sfx = _check(z, codebook, dist_out)
        N, D = z.shape
        self.kernel("nearest_code", sfx)(
            (grid_for(N),), (THREADS,),
            (z, np.int64(row_stride(z)), codebook, np.int64(row_stride(codebook)), idx_out, dist_out, np.int64(N),
             np.int32(codebook.shape[0]), np.int32(D)))

    @staticmethod
    def matmul(a, b, out):
        """The reference op: cuBLAS through CuPy on the GPU, NumPy's BLAS in the simulator."""
        reference.matmul(a, b, out)

    @staticmethod
    def matmul_pair(a1, b1, out1, a2, b2, out2):
        """The reference op: two cuBLAS calls on the GPU, NumPy's BLAS in the simulator."""
        reference.matmul_pair(a1, b1, out1, a2, b2, out2)

    def bias_act(self, out, b, relu):
        sfx = _check(out, b)
        B, H = out.shape
        self.kernel("bias_act", sfx)(
            (grid_for(B * H),), (THREADS,),
            (out, np.int64(row_stride(out)), b, np.int32(B), np.int32(H), np.int32(bool(relu))))

    def bias_act_backward(self, dout, out, relu, db_out):
        sfx = _check(dout, out, db_out)
        B, H = dout.shape
        chunks = min(MAX_CHUNKS, math.ceil(B / CHUNK_ROWS))
        # One chunk writes db_out; more write their sums into a scratch buffer, added up by a second kernel.
        sums = db_out if chunks == 1 else self.scratch("bias_act_backward", (chunks * H,), dout)
        self.kernel("bias_act_backward", sfx)(
            (math.ceil(H / COLUMNS), chunks), (COLUMNS, COLUMN_ROWS),
            (dout, np.int64(row_stride(dout)), out, np.int64(row_stride(out)), np.int32(bool(relu)), sums,
             np.int32(B), np.int32(H), np.int32(math.ceil(B / chunks))))
        if chunks > 1:
            self.kernel("bias_act_backward_sum", sfx)(
                (grid_for(H),), (THREADS,), (sums, np.int32(chunks), np.int32(H), db_out))

    def scratch(self, name: str, shape: tuple, like):
        """A buffer of ``shape`` and ``like``'s dtype and array module, kept for the next call of ``name``."""
        key = (name, shape, like.dtype.str)
        if key not in self._scratch:
            self._scratch[key] = array_module(like).empty(shape, like.dtype)
        return self._scratch[key]

    def _window(self, op, src, dst, g, images):
        """Launch ``unfold`` or ``fold``: a grid-stride loop over the ``dst`` values of ``images`` images."""
        sfx = _check(src, dst)
        self.kernel(op, sfx)(
            (grid_for(dst.shape[0] * dst.shape[1]),), (THREADS,),
            (src, np.int64(row_stride(src)), dst, np.int64(row_stride(dst)), np.int64(images),
             *(np.int32(v) for v in (g.H, g.W, g.C, g.kh, g.kw, g.stride, g.padding, g.H_out, g.W_out))))

    def unfold(self, x, g, cols_out):
        self._window("unfold", x, cols_out, g, x.shape[0])

    def fold(self, cols, g, x_out):
        self._window("fold", cols, x_out, g, x_out.shape[0])

    def adam_step(self, p, g, m, v, lr, beta1, beta2, eps, step):
        sfx = _check(p, g, m, v)
        n = p.size
        step_size, bias2_sqrt = lr / (1 - beta1**step), (1 - beta2**step) ** 0.5
        self.kernel("adam_step", sfx)(
            (grid_for(n),), (THREADS,),
            (p, g, m, v, np.int64(n), *(_scalar(s, sfx) for s in (beta1, beta2, eps, step_size, bias2_sqrt))))

    def sgd_step(self, p, g, buf, lr, momentum, nesterov):
        sfx = _check(p, g, buf)
        n = p.size
        self.kernel("sgd_step", sfx)(
            (grid_for(n),), (THREADS,),
            (p, g, buf, np.int64(n), _scalar(lr, sfx), _scalar(momentum, sfx), np.int32(bool(nesterov))))
