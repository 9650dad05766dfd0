// tinyvae's CPU simulator of the CUDA execution model.
//
// tinyvae/backends/cudasim.py compiles each kernels/<family>.cu, unmodified, with the host
// C++ compiler (g++ >= 12, -std=c++20) and this header in front of it, and launches its
// kernels from Python with CuPy's RawKernel call signature. What a kernel sees:
//
//   * dim3 and uint3; threadIdx per thread; blockIdx per block; blockDim and gridDim per
//     launch; warpSize; __global__, __device__, __host__, __forceinline__, __restrict__.
//   * Blocks run one after another. Each thread of a block is a fiber with a stack of its
//     own; the block's warps are dealt out round robin over a pool of OS threads (at most
//     one per core), which run concurrently. A worker runs its fibers in thread order, each
//     from one synchronisation point to the next, so a run is reproducible within a worker.
//   * __syncthreads(): a barrier over the block's live threads (a thread that has returned
//     drops out, as on the GPU). All live threads must wait at the same __syncthreads()
//     call; threads waiting at different ones, or a barrier that a thread stuck in a warp
//     operation can never reach, end the launch with an error naming the kernel, the block
//     and the source lines, at once instead of hanging.
//   * __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync (width 1 to 32, a
//     power of 2) and __syncwarp: an exchange among the lanes of a warp named in the mask.
//     Every lane in the mask must arrive with the same mask and operation, or the launch
//     ends with an error; a lane that reads a lane outside the mask gets all-ones bits
//     (NaN for float and double), the GPU's "undefined".
//   * __shared__ variables: static storage, one copy that the blocks use one after another.
//     Dynamic shared memory (extern __shared__) is not supported.
//   * atomicAdd, atomicMax, atomicMin, atomicExch, atomicCAS on int, unsigned int,
//     unsigned long long, and atomicAdd on float and double, as real atomics
//     (std::atomic_ref), since a block's warps run on several OS threads.
//   * Math: <cmath>'s overloads in the global namespace, so exp(float) stays float as with
//     CUDA's math API, and CUDA's own rsqrt, rsqrtf, __expf, __logf, __fdividef, __saturatef,
//     min and max. Results differ from the GPU's by the last bits of the libraries' rounding
//     and by nvcc's contraction of a * b + c into FMA; tinyvae's tests compare with the
//     NumPy reference within float32 tolerances for that reason.
//
// Not modelled: a data race between warps on different workers shows up only by chance;
// a thread that spins forever without a synchronisation point hangs the launch; memory
// outside the arrays passed is not guarded (the tests surround every array with NaN).
#pragma once

#include <cmath>
#include <math.h>  // after <cmath>: brings std's float and double overloads into the global namespace

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <source_location>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

namespace tinyvae_sim {

constexpr int kWarpSize = 32;
constexpr std::size_t kStackBytes = 256 * 1024;  // per simulated thread; a guard page below it
constexpr int kMaxThreads = 1024;

enum class State { runnable, at_barrier, at_warp_op, done, failed };
enum class WarpOp { shfl, up, down, bxor, sync };

struct Worker;

struct Fiber {
    ucontext_t* context;  // its start: the thread's stack and fiber_main (see start_fibers)
    void* jump[5];        // where it waits, for __builtin_longjmp
    bool started;
    uint3 thread_idx;
    int linear;  // x + y * blockDim.x + z * blockDim.x * blockDim.y
    State state;
    Worker* worker;
    std::source_location site;  // where it waits
    std::uint64_t value, result;  // a warp exchange's operand and result, as bits
};

struct Warp {
    unsigned int lanes;    // the lanes that exist (a block's last warp may be partial)
    unsigned int arrived;  // lanes waiting at the pending warp operation
    unsigned int mask;     // that operation's mask
    WarpOp op;
    std::source_location site;
};

struct Worker {
    void* jump[5];  // where run_fibers waits while a fiber runs
    std::vector<int> warps;  // the block's warps this worker runs
    // written by the worker before it arrives at the block barrier, read by the completion
    int at_barrier = 0;
    const Fiber* first_waiter = nullptr;
};

struct Launch;
inline Launch* launch = nullptr;
inline thread_local Fiber* current = nullptr;
inline uint3 block_idx;
inline dim3 block_dim, grid_dim;

struct Completion {
    void operator()() noexcept;
};

struct Launch {
    void (*entry)(void**);
    void** args;
    const char* kernel;
    long n_blocks, block = 0;
    int n_threads, n_warps;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<Worker> workers;
    std::barrier<Completion> barrier;
    std::atomic<bool> failed{false};
    bool stop = false, new_block = true;
    std::mutex error_lock;
    std::string error;

    Launch(int n_workers) : workers(n_workers), barrier(n_workers, Completion{}) {}

    // The first error wins; later ones (other workers meeting the same fault) are dropped.
    void fail(const std::string& message) {
        std::lock_guard<std::mutex> hold(error_lock);
        if (!failed.load()) {
            error = std::string(kernel) + ", block (" + std::to_string(block_idx.x) + ", " +
                    std::to_string(block_idx.y) + ", " + std::to_string(block_idx.z) + "): " + message;
            failed.store(true);
        }
    }
};

inline std::string where(const std::source_location& s) {
    return std::string(s.file_name()) + ":" + std::to_string(s.line());
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
    return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

inline std::string thread_name(const Fiber& f) {
    return "thread (" + std::to_string(f.thread_idx.x) + ", " + std::to_string(f.thread_idx.y) + ", " +
           std::to_string(f.thread_idx.z) + ")";
}

// Stacks of the simulated threads, one per thread index, made once and reused by every launch
// (launches of one library run one at a time).
inline char* stack_for(int linear) {
    static char* stacks[kMaxThreads] = {};
    if (!stacks[linear]) {
        const std::size_t page = 4096;
        void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            return nullptr;
        }
        mprotect(p, page, PROT_NONE);  // a stack overflow faults instead of writing over a neighbour
        stacks[linear] = static_cast<char*>(p) + page;
    }
    return stacks[linear];
}

// A context is entered once, by setcontext, at its thread's start; every other switch between a fiber and
// its worker's scheduler is a __builtin_setjmp / __builtin_longjmp pair, which saves no signal mask:
// swapcontext's mask syscalls, one each way, would be most of a short thread's cost.
[[gnu::noinline]] inline void jump_to(void** where) {
    __builtin_longjmp(where, 1);
}

inline void yield_to_scheduler() {
    Fiber* f = current;
    if (__builtin_setjmp(f->jump) == 0) {
        jump_to(f->worker->jump);
    }
}

// The start of each thread index's fiber, made by getcontext once and aimed at its stack by makecontext at
// each start.
inline ucontext_t* context_for(int linear) {
    static ucontext_t contexts[kMaxThreads];
    static bool made[kMaxThreads] = {};
    if (!made[linear]) {
        getcontext(&contexts[linear]);
        made[linear] = true;
    }
    return &contexts[linear];
}

// Ends the calling thread's part in the launch: the error is recorded and the thread never resumes.
[[noreturn]] inline void fail_here(const std::string& message) {
    Fiber* f = current;
    launch->fail(thread_name(*f) + ": " + message);
    f->state = State::failed;
    yield_to_scheduler();
    __builtin_unreachable();
}

inline void fiber_main() {
    Fiber* f = current;
    launch->entry(launch->args);
    f = current;
    f->state = State::done;
    jump_to(f->worker->jump);
}

inline void start_fibers(Worker& w, const dim3& block) {
    for (int warp : w.warps) {
        for (int linear = warp * kWarpSize; linear < std::min(launch->n_threads, (warp + 1) * kWarpSize); ++linear) {
            Fiber& f = launch->fibers[linear];
            f.linear = linear;
            f.thread_idx = uint3{linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
            f.state = State::runnable;
            f.worker = &w;
            f.started = false;
            f.context = context_for(linear);
            f.context->uc_stack.ss_sp = stack_for(linear);
            f.context->uc_stack.ss_size = kStackBytes;
            f.context->uc_link = nullptr;  // fiber_main never returns: it jumps back to the scheduler
            makecontext(f.context, fiber_main, 0);
        }
        launch->warps[warp].arrived = 0;
    }
}

// Runs the worker's fibers until none can go on; then every one of them has returned, waits at
// __syncthreads() or waits at a warp operation that can no longer complete (an error).
inline void run_fibers(Worker& w) {
    bool ran = true;
    while (ran && !launch->failed.load(std::memory_order_relaxed)) {
        ran = false;
        for (int warp : w.warps) {
            for (int linear = warp * kWarpSize; linear < std::min(launch->n_threads, (warp + 1) * kWarpSize);
                 ++linear) {
                Fiber& f = launch->fibers[linear];
                if (f.state == State::runnable) {
                    current = &f;
                    if (__builtin_setjmp(w.jump) == 0) {
                        if (f.started) {
                            jump_to(f.jump);
                        }
                        f.started = true;
                        setcontext(f.context);
                    }
                    current = nullptr;
                    ran = true;
                }
            }
        }
    }
    w.at_barrier = 0;
    w.first_waiter = nullptr;
    for (int warp : w.warps) {
        const Warp& wp = launch->warps[warp];
        if (wp.arrived && !launch->failed.load()) {
            std::string missing;
            for (int lane = 0; lane < kWarpSize; ++lane) {
                if ((wp.mask >> lane & 1u) && !(wp.arrived >> lane & 1u)) {
                    const Fiber& f = launch->fibers[warp * kWarpSize + lane];
                    missing += " " + std::to_string(lane) +
                               (f.state == State::done ? " (returned)" : " (waits at __syncthreads() at " + where(f.site) + ")");
                }
            }
            launch->fail("warp " + std::to_string(warp) + " waits at the warp operation at " + where(wp.site) +
                         " for lanes that cannot reach it:" + missing);
        }
        for (int linear = warp * kWarpSize; linear < std::min(launch->n_threads, (warp + 1) * kWarpSize); ++linear) {
            const Fiber& f = launch->fibers[linear];
            if (f.state == State::at_barrier) {
                ++w.at_barrier;
                if (!w.first_waiter) {
                    w.first_waiter = &f;
                }
            }
        }
    }
}

// Runs when every worker has arrived at the block barrier: releases a __syncthreads(), moves on to
// the next block, or stops the launch.
inline void Completion::operator()() noexcept {
    Launch& l = *launch;
    l.new_block = false;
    if (l.failed.load()) {
        l.stop = true;
        return;
    }
    const Fiber* first = nullptr;
    int waiting = 0;
    for (const Worker& w : l.workers) {
        waiting += w.at_barrier;
        if (w.first_waiter && !first) {
            first = w.first_waiter;
        }
    }
    if (waiting > 0) {  // every live thread is at a __syncthreads(): all at the same one?
        for (const Fiber& f : l.fibers) {
            if (f.state == State::at_barrier && !same_site(f.site, first->site)) {
                l.fail("threads wait at different __syncthreads(): " + thread_name(*first) + " at " +
                       where(first->site) + ", " + thread_name(f) + " at " + where(f.site));
                l.stop = true;
                return;
            }
        }
        return;
    }
    if (++l.block == l.n_blocks) {  // the block has finished
        l.stop = true;
        return;
    }
    block_idx = uint3{unsigned(l.block % grid_dim.x), unsigned(l.block / grid_dim.x % grid_dim.y),
                      unsigned(l.block / (long(grid_dim.x) * grid_dim.y))};
    l.new_block = true;
}

inline void run_worker(Worker& w) {
    while (true) {
        if (launch->new_block) {
            start_fibers(w, block_dim);
        } else {
            for (int warp : w.warps) {
                for (int linear = warp * kWarpSize; linear < std::min(launch->n_threads, (warp + 1) * kWarpSize);
                     ++linear) {
                    Fiber& f = launch->fibers[linear];
                    if (f.state == State::at_barrier) {
                        f.state = State::runnable;
                    }
                }
            }
        }
        run_fibers(w);
        launch->barrier.arrive_and_wait();
        if (launch->stop) {
            return;
        }
    }
}

// -- what the kernels call ------------------------------------------------------------------
inline void syncthreads(const std::source_location& site) {
    Fiber* f = current;
    f->state = State::at_barrier;
    f->site = site;
    yield_to_scheduler();
}

inline int source_lane(WarpOp op, int lane, int arg, int width) {
    const int group = lane & ~(width - 1);
    switch (op) {
        case WarpOp::shfl:
            return group + (arg & (width - 1));
        case WarpOp::up:
            return lane - arg >= group ? lane - arg : lane;
        case WarpOp::down:
            return lane + arg < group + width ? lane + arg : lane;
        case WarpOp::bxor: {
            const int src = lane ^ arg;
            return src < group + width ? src : lane;
        }
        case WarpOp::sync:
            break;
    }
    return lane;
}

inline const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::shfl:
            return "__shfl_sync";
        case WarpOp::up:
            return "__shfl_up_sync";
        case WarpOp::down:
            return "__shfl_down_sync";
        case WarpOp::bxor:
            return "__shfl_xor_sync";
        case WarpOp::sync:
            break;
    }
    return "__syncwarp";
}

// The lanes in `mask` meet; each gets the bits of the lane that source_lane() names for it.
inline std::uint64_t warp_exchange(WarpOp op, unsigned int mask, std::uint64_t bits, int arg, int width,
                                   const std::source_location& site) {
    Fiber* f = current;
    const int warp = f->linear / kWarpSize, lane = f->linear % kWarpSize;
    Warp& w = launch->warps[warp];
    if (!(mask >> lane & 1u)) {
        fail_here(std::string(op_name(op)) + " at " + where(site) + " with mask " + std::to_string(mask) +
                  ", which leaves out the calling lane " + std::to_string(lane));
    }
    if (mask & ~w.lanes) {
        fail_here(std::string(op_name(op)) + " at " + where(site) + ": the mask names lanes past the end of the block");
    }
    if (width < 1 || width > kWarpSize || (width & (width - 1))) {
        fail_here(std::string(op_name(op)) + " at " + where(site) + ": width " + std::to_string(width) +
                  " is not a power of 2 from 1 to 32");
    }
    if (w.arrived && (w.mask != mask || w.op != op)) {
        fail_here("lanes of warp " + std::to_string(warp) + " meet at different warp operations: " +
                  op_name(w.op) + " at " + where(w.site) + " and " + op_name(op) + " at " + where(site) +
                  " (or with different masks)");
    }
    w.arrived |= 1u << lane;
    w.mask = mask;
    w.op = op;
    w.site = site;
    f->value = bits;
    if (w.arrived != mask) {
        f->state = State::at_warp_op;
        f->site = site;
        yield_to_scheduler();
        return f->result;
    }
    Fiber* lanes = &launch->fibers[warp * kWarpSize];
    for (int l = 0; l < kWarpSize; ++l) {
        if (mask >> l & 1u) {
            const int src = source_lane(op, l, arg, width);
            lanes[l].result = (mask >> src & 1u) ? lanes[src].value : ~std::uint64_t(0);
            if (l != lane) {
                lanes[l].state = State::runnable;
            }
        }
    }
    w.arrived = 0;
    return f->result;
}

template <typename T>
T shuffle(WarpOp op, unsigned int mask, T var, int arg, int width, const std::source_location& site) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move up to 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = warp_exchange(op, mask, bits, arg, width, site);
    std::memcpy(&var, &bits, sizeof(T));
    return var;
}

// -- the launch, called from Python ---------------------------------------------------------
inline int run_launch(void (*entry)(void**), void** args, const char* kernel, const unsigned int* grid,
                      const unsigned int* block, int n_workers, char* error, std::size_t error_size) {
    static std::mutex one_at_a_time;
    std::lock_guard<std::mutex> hold(one_at_a_time);
    const int n_threads = int(block[0] * block[1] * block[2]);
    const int n_warps = (n_threads + kWarpSize - 1) / kWarpSize;
    n_workers = std::max(1, std::min(n_workers, n_warps));
    Launch l(n_workers);
    l.entry = entry;
    l.args = args;
    l.kernel = kernel;
    l.n_blocks = long(grid[0]) * grid[1] * grid[2];
    l.n_threads = n_threads;
    l.n_warps = n_warps;
    l.fibers.resize(n_threads);
    l.warps.resize(n_warps);
    for (int w = 0; w < n_warps; ++w) {
        const int lanes = std::min(kWarpSize, n_threads - w * kWarpSize);
        l.warps[w].lanes = lanes == kWarpSize ? ~0u : (1u << lanes) - 1u;
        l.workers[w % n_workers].warps.push_back(w);
    }
    for (int t = 0; t < n_threads; ++t) {
        if (!stack_for(t)) {
            std::snprintf(error, error_size, "%s: no memory for the stack of simulated thread %d", kernel, t);
            return 1;
        }
    }
    launch = &l;
    block_dim = dim3(block[0], block[1], block[2]);
    grid_dim = dim3(grid[0], grid[1], grid[2]);
    block_idx = uint3{0, 0, 0};
    std::vector<std::thread> others;
    for (int w = 1; w < n_workers; ++w) {
        others.emplace_back(run_worker, std::ref(l.workers[w]));
    }
    run_worker(l.workers[0]);
    for (std::thread& t : others) {
        t.join();
    }
    launch = nullptr;
    if (l.failed.load()) {
        std::snprintf(error, error_size, "%s", l.error.c_str());
        return 1;
    }
    return 0;
}

// -- a kernel's parameter types, as NumPy names the launcher checks the arguments against ----
template <typename T>
std::string dtype_name() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, bool>) {
        return "bool";
    } else if constexpr (std::is_floating_point_v<U>) {
        return "float" + std::to_string(8 * sizeof(U));
    } else if constexpr (std::is_integral_v<U>) {
        return (std::is_signed_v<U> ? "int" : "uint") + std::to_string(8 * sizeof(U));
    } else {
        return "unsupported";
    }
}

template <typename T>
std::string param_name() {
    if constexpr (std::is_pointer_v<T>) {
        using P = std::remove_pointer_t<T>;
        return (std::is_const_v<P> ? "const " : "") + dtype_name<P>() + "*";
    } else {
        return dtype_name<T>();
    }
}

template <typename... A>
const char* signature(void (*)(A...)) {
    static const std::string names = [] {
        std::string out;
        ((out += (out.empty() ? "" : ",") + param_name<A>()), ...);
        return out;
    }();
    return names.c_str();
}

template <typename... A, std::size_t... I>
void invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
void invoke(void (*kernel)(A...), void** args) {
    invoke(kernel, args, std::index_sequence_for<A...>{});
}

}  // namespace tinyvae_sim

#define threadIdx (::tinyvae_sim::current->thread_idx)
#define blockIdx (::tinyvae_sim::block_idx)
#define blockDim (::tinyvae_sim::block_dim)
#define gridDim (::tinyvae_sim::grid_dim)
#define warpSize 32

inline void __syncthreads(std::source_location site = std::source_location::current()) {
    ::tinyvae_sim::syncthreads(site);
}

inline void __syncwarp(unsigned int mask = 0xffffffffu, std::source_location site = std::source_location::current()) {
    ::tinyvae_sim::warp_exchange(::tinyvae_sim::WarpOp::sync, mask, 0, 0, 32, site);
}

template <typename T>
T __shfl_sync(unsigned int mask, T var, int src_lane, int width = 32,
              std::source_location site = std::source_location::current()) {
    return ::tinyvae_sim::shuffle(::tinyvae_sim::WarpOp::shfl, mask, var, src_lane, width, site);
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = 32,
                 std::source_location site = std::source_location::current()) {
    return ::tinyvae_sim::shuffle(::tinyvae_sim::WarpOp::up, mask, var, int(delta), width, site);
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = 32,
                   std::source_location site = std::source_location::current()) {
    return ::tinyvae_sim::shuffle(::tinyvae_sim::WarpOp::down, mask, var, int(delta), width, site);
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = 32,
                  std::source_location site = std::source_location::current()) {
    return ::tinyvae_sim::shuffle(::tinyvae_sim::WarpOp::bxor, mask, var, lane_mask, width, site);
}

// Atomics: each returns the old value, as CUDA's do.
template <typename T>
T atomicAdd(T* address, T val) {
    return std::atomic_ref<T>(*address).fetch_add(val);
}

template <typename T>
T atomicExch(T* address, T val) {
    return std::atomic_ref<T>(*address).exchange(val);
}

template <typename T>
T atomicCAS(T* address, T compare, T val) {
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val);
    return compare;
}

template <typename T>
T atomicMax(T* address, T val) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old < val && !a.compare_exchange_weak(old, val)) {
    }
    return old;
}

template <typename T>
T atomicMin(T* address, T val) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old > val && !a.compare_exchange_weak(old, val)) {
    }
    return old;
}

// CUDA math functions that the C++ library lacks.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <typename T>
T min(T a, T b) { return b < a ? b : a; }
template <typename T>
T max(T a, T b) { return a < b ? b : a; }

// One line per kernel, written by cudasim.py after the kernel file: the entry point that
// calls the kernel with the launcher's arguments, and its parameter types.
#define TINYVAE_SIM_EXPORT(name)                                                                      \
    extern "C" __attribute__((visibility("default"))) void tinyvae_sim_entry_##name(void** args) {    \
        ::tinyvae_sim::invoke(name, args);                                                            \
    }                                                                                                 \
    extern "C" __attribute__((visibility("default"))) const char* tinyvae_sim_signature_##name() {    \
        return ::tinyvae_sim::signature(name);                                                        \
    }

extern "C" __attribute__((visibility("default"))) int tinyvae_sim_launch(
    void (*entry)(void**), void** args, const char* kernel, const unsigned int* grid, const unsigned int* block,
    int n_workers, char* error, std::size_t error_size) {
    return ::tinyvae_sim::run_launch(entry, args, kernel, grid, block, n_workers, error, error_size);
}
