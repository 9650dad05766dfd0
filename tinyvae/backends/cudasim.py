"""Our CUDA kernels on the CPU: the simulator behind the ``cuda-sim`` backend.

Each ``kernels/<family>.cu`` is compiled, unmodified, by the host C++ compiler
(``$CXX``, else ``g++``; C++20, as Debian's g++ 12) with ``cudasim.h`` (beside this
file) in front of it. The header supplies the CUDA execution model on CPU threads
(``threadIdx``, ``__syncthreads()``, the warp shuffles, ``__shared__``, atomics,
CUDA's math overloads); its opening comment says what is modelled and what is
not. The built library is cached under ``$TINYVAE_CACHE`` (default
``~/.cache/tinyvae``) in a folder named by a hash of the header, the kernel file,
every other file of its folder but the ``.cu`` files (the ``.cuh`` it may
include), the compiler's version and the flags, so an edited kernel is rebuilt
and an unchanged one is not, even beside an edited one.

:class:`Module` stands in for ``cupy.RawModule`` and :class:`Kernel` for
``cupy.RawKernel``: ``kernel(grid, block, args, shared_mem=0)``. Arguments are
checked against the kernel's parameter types, which the build reads from the C++
declaration: a NumPy array is passed as the address of the view's first element
(so ``heads[:, K:]`` reaches the kernel as on the GPU) and must have the pointer's
element type (and be writeable where the pointer is not ``const``); a NumPy
scalar is passed as its dtype's C type and must match the parameter; a Python
``int`` or ``float`` is refused, since CuPy would pass it as a 64-bit integer or
a double whatever the parameter is. A launch refuses what a GPU refuses: a block
of more than 1024 threads (or over 1024 x 1024 x 64), a zero grid or block
dimension, a grid over 2^31 - 1 x 65535 x 65535, and more than 48 KiB of shared
memory (the library's static ``__shared__`` variables, an upper bound for each
kernel, plus ``shared_mem``).

Raises (from :func:`module` and :class:`Kernel`): :class:`CompilerMissing` where
no C++ compiler exists, :class:`tinyvae.errors.KernelBuildError` naming the compiler,
the file and the compiler's message when a kernel file does not compile, ``TypeError`` for an argument the kernel does not
take, :class:`LaunchError` for a launch a GPU would refuse and for a fault found
while the kernel runs (threads waiting at different ``__syncthreads()``, a warp
operation some lanes cannot reach), naming the kernel, the block and the source
line.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, KernelBuildError

HEADER = Path(__file__).with_name("cudasim.h")
FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fno-gnu-unique", "-fvisibility=hidden", "-w")
MAX_THREADS, MAX_BLOCK, MAX_GRID = 1024, (1024, 1024, 64), (2**31 - 1, 65535, 65535)
MAX_SHARED_BYTES = 48 * 1024
WORKERS = len(os.sched_getaffinity(0))  # OS threads a block's warps are dealt out over (cudasim.h)

_modules: dict = {}


class CompilerMissing(BackendUnavailable):
    """No C++ compiler to build the simulator with: the cuda-sim backend cannot run here."""


class LaunchError(RuntimeError):
    """A launch a GPU would refuse, or a fault the simulator found while the kernel ran."""


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else ``g++`` on the PATH; :class:`CompilerMissing` if neither exists."""
    cxx = os.environ.get("CXX") or "g++"
    found = shutil.which(cxx)
    if found is None:
        raise CompilerMissing(f"the cuda-sim backend needs a C++20 compiler and {cxx!r} was not found "
                              "(apt-get install g++, or set CXX)")
    return found


def _cache_root() -> Path:
    return Path(os.environ.get("TINYVAE_CACHE", Path.home() / ".cache" / "tinyvae")) / "cudasim"


def _build_key(source: Path, cxx: str) -> str:
    h = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    for part in (HEADER.read_bytes(), version.encode(), " ".join(FLAGS).encode()):
        h.update(part)
    for f in sorted(source.parent.iterdir()):
        if f.is_file() and (f.suffix != ".cu" or f == source):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:20]


def _refused(cxx: str, what: str, source: Path, done: subprocess.CompletedProcess) -> KernelBuildError:
    """The error for a compiler run that failed: the compiler, the file, and what the compiler printed."""
    said = done.stderr.strip() or done.stdout.strip() or "it printed nothing"
    return KernelBuildError(f"{cxx} could not {what} {source} for the CUDA simulator (exit status "
                            f"{done.returncode}): {said}")


def kernel_names(source: Path, cxx: str) -> list[str]:
    """The ``extern "C" __global__`` kernels a ``.cu`` file defines, found in its preprocessed text."""
    text = subprocess.run([cxx, "-E", "-P", "-x", "c++", "-std=c++20", f"-I{source.parent}", str(source)],
                          capture_output=True, text=True)
    if text.returncode:
        raise _refused(cxx, "preprocess", source, text)
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', text.stdout)


def build(source: Path) -> Path:
    """The shared library of one kernel file, built on first use and cached (see the module docstring)."""
    cxx = compiler()
    source = source.resolve()
    if not source.is_file():
        raise BackendUnavailable(f"the CUDA kernel source {source} is missing; set TINYVAE_KERNELS to the kernels folder")
    out_dir = _cache_root() / _build_key(source, cxx)
    library = out_dir / f"{source.stem}.so"
    if library.is_file():
        return library
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelBuildError(f"cannot make the simulator's build cache {out_dir} ({e.strerror or e}); "
                               "set TINYVAE_CACHE to a writable folder") from e
    names = kernel_names(source, cxx)
    if not names:
        raise KernelBuildError(f'{source} defines no extern "C" __global__ kernel')
    unit = "".join([f'#include "{HEADER}"\n#include "{source}"\n', *(f"TINYVAE_SIM_EXPORT({n})\n" for n in names)])
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        cpp, so = Path(tmp) / f"{source.stem}.cpp", Path(tmp) / f"{source.stem}.so"
        cpp.write_text(unit)
        done = subprocess.run([cxx, *FLAGS, f"-I{source.parent}", str(cpp), "-o", str(so)],
                              capture_output=True, text=True)
        if done.returncode:
            raise _refused(cxx, "compile", source, done)
        os.replace(so, library)  # atomic: a concurrent build of the same key writes the same bytes
    return library


def static_shared_bytes(library: Path) -> int:
    """Bytes of the library's ``__shared__`` variables: its function-local statics outside the header's namespace.

    Device code has no other function-local statics, so this bounds every kernel's static shared memory.
    """
    listing = subprocess.run(["nm", "-S", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    total = 0
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].startswith("_ZZ") and "11tinyvae_sim" not in parts[3] \
                and not parts[3].startswith(("_ZZNSt", "_ZZSt")):
            total += int(parts[1], 16)
    return total


class Module:
    """One kernel file built for the simulator; :meth:`get_function` as ``cupy.RawModule``'s."""

    def __init__(self, source: Path):
        self.path = build(source)
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.tinyvae_sim_launch.restype = ctypes.c_int
        self.lib.tinyvae_sim_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                                ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        self.shared_bytes = static_shared_bytes(self.path)

    def get_function(self, name: str) -> "Kernel":
        return Kernel(self, name)


def module(source: Path) -> Module:
    """The :class:`Module` of ``source``, built and loaded once per process."""
    key = Path(source).resolve()
    if key not in _modules:
        _modules[key] = Module(key)
    return _modules[key]


def _dims(kernel: str, what: str, value, limits) -> tuple[int, int, int]:
    """``value`` (an int or 1 to 3 ints) as ``(x, y, z)``; :class:`LaunchError` outside a GPU's ``limits``."""
    dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise LaunchError(f"{kernel}: {what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    for axis, d, limit in zip("xyz", dims, limits):
        if not 1 <= d <= limit:
            raise LaunchError(f"{kernel}: {what}.{axis} = {d}; a GPU takes 1 to {limit}")
    return dims


class Kernel:
    """A kernel of a :class:`Module`, called as ``cupy.RawKernel``: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, module: Module, name: str):
        try:
            self._entry = ctypes.cast(getattr(module.lib, f"tinyvae_sim_entry_{name}"), ctypes.c_void_p)
            signature = getattr(module.lib, f"tinyvae_sim_signature_{name}")
        except AttributeError:
            raise AttributeError(f"{module.path.stem}.cu has no kernel {name!r}") from None
        signature.restype = ctypes.c_char_p
        text = signature().decode()
        self.name, self.module = name, module
        self.params = text.split(",") if text else []

    def _arg(self, i: int, param: str, a):
        """The value of argument ``i`` as a NumPy array the launch passes the address of."""
        where = f"argument {i} of {self.name} ({param})"
        if isinstance(a, (bool, int, float)) and not isinstance(a, np.generic):
            raise TypeError(f"{where} is a Python {type(a).__name__}; pass a NumPy scalar of the parameter's type "
                            "(CuPy would pass it as a 64-bit integer or a double whatever the parameter is)")
        if param.endswith("*"):
            dtype = param.removeprefix("const ").removesuffix("*")
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where} takes a NumPy array, got {type(a).__name__}")
            if a.dtype.name != dtype:
                raise TypeError(f"{where} takes a {dtype} array, got {a.dtype}")
            if not param.startswith("const ") and not a.flags.writeable:
                raise TypeError(f"{where} writes through its pointer; the array is read-only")
            return np.array(a.ctypes.data, np.uintp)
        if not isinstance(a, np.generic) or a.dtype.name != param:
            got = a.dtype if isinstance(a, np.generic) else type(a).__name__
            raise TypeError(f"{where} takes a {param} scalar, got {got}")
        return np.array(a)

    def __call__(self, grid, block, args, shared_mem: int = 0):
        grid, block = _dims(self.name, "grid", grid, MAX_GRID), _dims(self.name, "block", block, MAX_BLOCK)
        if block[0] * block[1] * block[2] > MAX_THREADS:
            raise LaunchError(f"{self.name}: a block of {block} is {block[0] * block[1] * block[2]} threads; "
                              f"a GPU takes at most {MAX_THREADS}")
        if shared_mem + self.module.shared_bytes > MAX_SHARED_BYTES:
            raise LaunchError(f"{self.name}: {shared_mem} bytes of dynamic and {self.module.shared_bytes} of static "
                              f"shared memory exceed the {MAX_SHARED_BYTES} bytes a block may have")
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments ({', '.join(self.params)}), "
                            f"got {len(args)}")
        values = [self._arg(i, p, a) for i, (p, a) in enumerate(zip(self.params, args))]
        argv = (ctypes.c_void_p * max(1, len(values)))(*(v.ctypes.data for v in values))
        error = ctypes.create_string_buffer(4096)
        dims = (ctypes.c_uint * 6)(*grid, *block)
        failed = self.module.lib.tinyvae_sim_launch(
            self._entry, argv, self.name.encode(), ctypes.addressof(dims), ctypes.addressof(dims) + 3 * 4,
            WORKERS, error, len(error))
        if failed:
            raise LaunchError(error.value.decode(errors="replace"))
