"""The CPU simulator of the CUDA execution model (tinyvae/backends/cudasim.h and .py), on kernels of
its own: indices, barriers, warp shuffles, atomics, math overloads, argument passing, the launches a
GPU refuses, the faults it reports, the build cache; and the planted faults in our kernels that the
``cudasim`` tests must catch (tests/planted_faults.py).

Our kernels against the NumPy reference under the simulator are in test_backend_ops.py,
test_backends_train.py, test_cuda.py and test_autoencoders.py (backend ``cuda-sim``).
"""

import os
import time

import numpy as np
import pytest

from tinyvae.backends import BackendUnavailable, cudasim, get_backend
from tinyvae.errors import KernelBuildError


# A C++20 compiler is the test set-up's (README's test command installs g++): without it these tests fail.
pytestmark = pytest.mark.cudasim

KERNELS = r"""
extern "C" __global__ void where_am_i(int* out) {
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int* o = out + (long(b) * blockDim.x * blockDim.y * blockDim.z + t) * 9;
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    o[6] = blockDim.x * 10000 + blockDim.y * 100 + blockDim.z; o[7] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
    o[8] = warpSize;
}

// Threads at or past `live` return at once; the others meet at a barrier and read a neighbour's slot.
extern "C" __global__ void rotate(int* out, int live) {
    __shared__ int slot[1024];
    const int t = threadIdx.x;
    if (t >= live) {
        return;
    }
    slot[t] = t + 1000 * blockIdx.x;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = slot[(t + 1) % live];
}

extern "C" __global__ void divergent_barrier(int* out) {
    if (threadIdx.x < 64) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

extern "C" __global__ void shuffle_meets_barrier(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) {
        v = __shfl_sync(0xffffffffu, v, 0);
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = v;
}

extern "C" __global__ void mask_without_me(float* out) {
    out[threadIdx.x] = __shfl_sync(0x1u, float(threadIdx.x), 0);
}

// Lanes outside `mask` return; the others write the four shuffles of in[t], one after another.
extern "C" __global__ void shuffles(const float* in, float* out, int width, int arg, unsigned int mask) {
    const int t = threadIdx.x, n = blockDim.x;
    if (!(mask >> (t & 31) & 1u)) {
        return;
    }
    const float v = in[t];
    out[t] = __shfl_sync(mask, v, arg, width);
    out[n + t] = __shfl_up_sync(mask, v, unsigned(arg), width);
    out[2 * n + t] = __shfl_down_sync(mask, v, unsigned(arg), width);
    out[3 * n + t] = __shfl_xor_sync(mask, v, arg, width);
    __syncwarp(mask);
}

extern "C" __global__ void atomics(float* fsum, double* dsum, int* isum, unsigned long long* usum, int* imax,
                                   int* imin) {
    const int t = threadIdx.x + blockIdx.x * blockDim.x;
    atomicAdd(fsum, 1.0f);
    atomicAdd(dsum, 0.5);
    atomicAdd(isum, t);
    atomicAdd(usum, 1ull);
    atomicMax(imax, t);
    atomicMin(imin, -t);
}

extern "C" __global__ void overload_sizes(int* sizes, const float* x, const double* y) {
    sizes[0] = sizeof(exp(x[0]));
    sizes[1] = sizeof(log1p(x[0]));
    sizes[2] = sizeof(fabs(x[0]));
    sizes[3] = sizeof(fmax(x[0], 0.0f));
    sizes[4] = sizeof(sqrt(x[0]));
    sizes[5] = sizeof(exp(y[0]));
    sizes[6] = sizeof(rsqrtf(x[0]));
    sizes[7] = sizeof(min(x[0], 1.0f));
}

extern "C" __global__ void scalars(double* out, int a, long b, float c, double d, unsigned char e) {
    out[0] = a;
    out[1] = double(b);
    out[2] = c;
    out[3] = d;
    out[4] = e;
}

// a[0] and a[ld]: the first element of a view and the one a row stride further.
extern "C" __global__ void first_elements(const double* a, long ld, double* out) {
    out[0] = a[0];
    out[1] = a[ld];
}
"""

BIG_SHARED = r"""
extern "C" __global__ void big_shared(float* out) {
    __shared__ float big[12289];  // 49,156 bytes
    big[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "sim_tests.cu").write_text(KERNELS)
    return cudasim.module(folder / "sim_tests.cu")


def test_every_thread_sees_its_indices_and_the_launch_shape(sim):
    grid, block = (2, 3, 2), (4, 2, 5)
    out = np.full(12 * 40 * 9, -1, np.int32)
    sim.get_function("where_am_i")(grid, block, (out,))
    got = out.reshape(12, 40, 9)
    bz, by, bx, tz, ty, tx = np.meshgrid(*(np.arange(n) for n in (2, 3, 2, 5, 2, 4)), indexing="ij")
    want = np.stack([tx, ty, tz, bx, by, bz], -1).reshape(12, 40, 6)
    np.testing.assert_array_equal(got[..., :6], want)
    assert (got[..., 6] == 40205).all() and (got[..., 7] == 20302).all() and (got[..., 8] == 32).all()


@pytest.mark.parametrize("threads,live", [(256, 256), (256, 200), (1024, 1024), (33, 33), (96, 40)])
def test_syncthreads_waits_for_the_live_threads_of_each_block(sim, threads, live):
    """Threads that return drop out of the barrier; each block has its own shared slots, in turn."""
    out = np.full(5 * threads, -1, np.int32)
    sim.get_function("rotate")(5, threads, (out, np.int32(live)))
    got = out.reshape(5, threads)
    t = np.arange(live)
    np.testing.assert_array_equal(got[:, :live], (t + 1) % live + 1000 * np.arange(5)[:, None])
    assert (got[:, live:] == -1).all()


def test_threads_at_different_barriers_end_the_launch_at_once(sim):
    start = time.perf_counter()
    with pytest.raises(cudasim.LaunchError, match=r"divergent_barrier, block \(0, 0, 0\).*different __syncthreads"
                                                  r".*sim_tests\.cu:\d+.*sim_tests\.cu:\d+"):
        sim.get_function("divergent_barrier")(1, 128, (np.zeros(128, np.int32),))
    assert time.perf_counter() - start < 5


def test_a_shuffle_its_lanes_cannot_reach_is_an_error(sim):
    with pytest.raises(cudasim.LaunchError, match=r"shuffle_meets_barrier.*warp 0.*cannot reach.*__syncthreads"):
        sim.get_function("shuffle_meets_barrier")(1, 64, (np.zeros(64, np.float32),))
    with pytest.raises(cudasim.LaunchError, match="leaves out the calling lane 1"):
        sim.get_function("mask_without_me")(1, 32, (np.zeros(32, np.float32),))


def _shuffles_model(values, width, arg, mask):
    """What CUDA's __shfl_*_sync return lane by lane (CUDA C++ Programming Guide, warp shuffle functions):
    lanes in groups of ``width``; up/down keep their own value past the group's edge, xor past its end;
    a source lane outside ``mask`` reads undefined, NaN here."""
    n = len(values)
    out = np.full((4, n), np.nan, np.float32)
    for t in range(n):
        warp, lane = divmod(t, 32)
        if not mask >> lane & 1:
            continue
        first = lane - lane % width
        sources = [first + arg % width,
                   lane - arg if lane - arg >= first else lane,
                   lane + arg if lane + arg < first + width else lane,
                   lane ^ arg if (lane ^ arg) < first + width else lane]
        for k, src in enumerate(sources):
            out[k, t] = values[warp * 32 + src] if mask >> src & 1 else np.nan
    return out


@pytest.mark.parametrize("width,arg,mask", [(32, 1, 0xFFFFFFFF), (32, 16, 0xFFFFFFFF), (32, 5, 0xFFFFFFFF),
                                            (8, 3, 0xFFFFFFFF), (4, 6, 0xFFFFFFFF), (16, 9, 0xFFFFFFFF),
                                            (32, 1, 0x0000FFFF), (8, 2, 0xF0F0F0F0), (1, 3, 0xFFFFFFFF)])
def test_warp_shuffles_match_cuda(sim, width, arg, mask):
    values = np.arange(64, dtype=np.float32) * 1.5
    out = np.full(4 * 64, -7, np.float32)
    sim.get_function("shuffles")(1, 64, (values, out, np.int32(width), np.int32(arg), np.uint32(mask)))
    want = _shuffles_model(values, width, arg, mask)
    lanes_in_mask = np.array([mask >> (t % 32) & 1 for t in range(64)], bool)
    np.testing.assert_array_equal(out.reshape(4, 64)[:, lanes_in_mask], want[:, lanes_in_mask])
    assert (out.reshape(4, 64)[:, ~lanes_in_mask] == -7).all()


def test_atomics_count_every_thread(sim):
    arrays = [np.zeros(1, np.float32), np.zeros(1, np.float64), np.zeros(1, np.int32), np.zeros(1, np.uint64),
              np.full(1, -1, np.int32), np.zeros(1, np.int32)]
    sim.get_function("atomics")(7, 256, tuple(arrays))
    n = 7 * 256
    assert [a[0] for a in arrays] == [n, n / 2, n * (n - 1) // 2, n, n - 1, -(n - 1)]


def test_math_keeps_cudas_overloads(sim):
    """exp(float) is float, exp(double) double, as with CUDA's math API (not C's double exp)."""
    sizes = np.zeros(8, np.int32)
    sim.get_function("overload_sizes")(1, 1, (sizes, np.ones(1, np.float32), np.ones(1)))
    assert list(sizes) == [4, 4, 4, 4, 4, 8, 4, 4]


def test_scalars_arrive_as_their_dtypes_c_type(sim):
    out = np.zeros(5)
    args = (out, np.int32(-7), np.int64(2**40 + 1), np.float32(0.1), np.float64(0.1), np.uint8(200))
    sim.get_function("scalars")(1, 1, args)
    assert list(out) == [-7, 2**40 + 1, float(np.float32(0.1)), 0.1, 200]


def test_a_view_is_passed_as_its_first_element(sim):
    heads = np.arange(24, dtype=np.float64).reshape(4, 6)
    out = np.zeros(2)
    logvar = heads[1:, 3:]
    sim.get_function("first_elements")(1, 1, (logvar, np.int64(6), out))
    assert list(out) == [heads[1, 3], heads[2, 3]]


@pytest.mark.parametrize("args,match", [
    ((np.zeros(5), 3, np.int64(0), np.float32(0), np.float64(0), np.uint8(0)), "argument 1 .*Python int"),
    ((np.zeros(5), np.int32(0), np.int64(0), 0.5, np.float64(0), np.uint8(0)), "argument 3 .*Python float"),
    ((np.zeros(5), np.int32(0), np.int32(0), np.float32(0), np.float64(0), np.uint8(0)), "int64 scalar, got int32"),
    ((np.zeros(5), np.int32(0), np.int64(0), np.float64(0), np.float64(0), np.uint8(0)), "float32 scalar, got float64"),
    ((np.zeros(5, np.float32), np.int32(0), np.int64(0), np.float32(0), np.float64(0), np.uint8(0)),
     "float64 array, got float32"),
    ((np.zeros(5).tolist(), np.int32(0), np.int64(0), np.float32(0), np.float64(0), np.uint8(0)), "NumPy array"),
    ((np.zeros(5), np.int32(0)), "takes 6 arguments"),
])
def test_arguments_are_checked_against_the_kernels_parameters(sim, args, match):
    with pytest.raises(TypeError, match=match):
        sim.get_function("scalars")(1, 1, args)


def test_a_read_only_array_is_refused_for_a_pointer_the_kernel_writes(sim):
    out = np.zeros(5)
    out.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        sim.get_function("scalars")(1, 1, (out, np.int32(0), np.int64(0), np.float32(0), np.float64(0), np.uint8(0)))
    a = np.zeros((2, 6))
    a.flags.writeable = False  # a const pointer takes it
    sim.get_function("first_elements")(1, 1, (a, np.int64(6), np.zeros(2)))


@pytest.mark.parametrize("grid,block,shared,match", [
    (1, 1025, 0, r"rotate: block\.x = 1025"),
    (1, (512, 4), 0, "2048 threads"),
    (1, (1, 1, 65), 0, r"block\.z = 65"),
    (0, 32, 0, r"grid\.x = 0"),
    ((1, 0), 32, 0, r"grid\.y = 0"),
    (1, (32, 0), 0, r"block\.y = 0"),
    ((1, 65536), 32, 0, r"grid\.y = 65536"),
    (1, 32, 48 * 1024 + 1, "shared memory exceed"),
    (1, 32.0, 0, "tuple of 1 to 3 ints"),
])
def test_launches_a_gpu_refuses_are_refused(sim, grid, block, shared, match):
    with pytest.raises(cudasim.LaunchError, match=match):
        sim.get_function("rotate")(grid, block, (np.zeros(4096, np.int32), np.int32(1)), shared_mem=shared)


def test_static_shared_memory_counts_against_the_limit(tmp_path):
    (tmp_path / "big.cu").write_text(BIG_SHARED)
    module = cudasim.module(tmp_path / "big.cu")
    assert module.shared_bytes == 12289 * 4
    with pytest.raises(cudasim.LaunchError, match="49156 of static shared memory"):
        module.get_function("big_shared")(1, 32, (np.zeros(32, np.float32),))


def test_a_kernel_the_compiler_refuses_says_why(tmp_path):
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(float* out) { out[0] = undeclared; }\n')
    with pytest.raises(KernelBuildError, match="undeclared"):
        cudasim.module(tmp_path / "broken.cu")


def test_a_missing_kernel_is_named(sim):
    with pytest.raises(AttributeError, match="sim_tests.cu has no kernel 'missing'"):
        sim.get_function("missing")


def test_the_build_is_cached_by_the_hash_of_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVAE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "k" / "one.cu"
    src.parent.mkdir()
    src.write_text('extern "C" __global__ void one(float* out) { out[threadIdx.x] = 1.0f; }\n')
    first = cudasim.build(src)
    stamp = first.stat().st_mtime_ns
    assert cudasim.build(src) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    (src.parent / "other.cu").write_text('extern "C" __global__ void other(float* out) { out[0] = 2.0f; }\n')
    assert cudasim.build(src) == first and first.stat().st_mtime_ns == stamp  # another kernel file is not
    (src.parent / "helper.cuh").write_text("// an include the kernel might use\n")
    second = cudasim.build(src)
    assert second != first and second.is_file()  # a header of the kernel folder is part of the key
    src.write_text('extern "C" __global__ void one(float* out) { out[threadIdx.x] = 3.0f; }\n')
    third = cudasim.build(src)
    assert third not in (first, second) and third.is_file()  # and so is the kernel file


def test_an_unwritable_cache_says_where_to_build(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("TINYVAE_CACHE", str(tmp_path / "file"))
    (tmp_path / "two.cu").write_text('extern "C" __global__ void two(float* out) { out[0] = 2.0f; }\n')
    with pytest.raises(KernelBuildError, match="set TINYVAE_CACHE to a writable folder"):
        cudasim.build(tmp_path / "two.cu")


def test_a_compiler_that_fails_is_one_error_line_naming_it_and_the_file(tmp_path, tiny_data_dir):
    import subprocess
    import sys

    env = {**os.environ, "CXX": "/bin/false", "TINYVAE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "tinyvae.train", "--backend", "cuda-sim", "--dataset", "mnist",
                           "--data-dir", str(tiny_data_dir), "--epochs", "1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: /bin/false could not preprocess "), lines
    assert ".cu for the CUDA simulator (exit status 1)" in lines[0]
    assert not (tmp_path / "run").exists()


def test_without_a_compiler_the_backend_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(BackendUnavailable, match="cuda-sim.*C\\+\\+20 compiler.*no-such-compiler-here"):
        get_backend("cuda-sim")


@pytest.mark.parametrize("fault,catches", [
    ("block_sum without __syncthreads()", "test_bce_with_logits"),
    ("BCE rows addressed by their length, not their stride", "test_bce_with_logits"),
    ("BCE loop bound one short", "test_bce_with_logits"),
    ("exp(lv) for exp(0.5 lv) in the reparameterization backward", "test_reparameterize_kl_backward"),
    ("bias gradient chunks all written to the first chunk's sums", "test_bias_act_backward"),
    ("fold's window rows start at 0, not at the pixel's phase of the stride", "test_unfold_and_fold"),
])
def test_a_planted_fault_fails_the_tests(fault, catches):
    """The whole ``-m cudasim`` run on each fault is tests/planted_faults.py's; here the test that should catch it."""
    import planted_faults

    code, failed = planted_faults.run(fault, ["-m", "cudasim", "tests/backends/test_backend_ops.py", "-k", catches])
    assert code == 1 and f"tests/backends/test_backend_ops.py::{catches}[cuda-sim]" in failed
