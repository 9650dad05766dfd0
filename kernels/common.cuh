// Helpers shared by tinyvae's kernels: block and warp reductions.
//
// Every kernel file defines its op once as a template over the element type T
// (float for training, double for the gradient checks) and exports one
// extern "C" entry point per type, named <op>_f32 and <op>_f64, which is what
// tinyvae/backends/cuda_ops.py loads with cupy.RawModule.
//
// Arrays are row-major; a 2-D argument comes with its row stride in elements
// (ld), so column views such as mu = heads[:, :K] are read in place.
#pragma once

#define TINYVAE_FULL_MASK 0xffffffffu

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(TINYVAE_FULL_MASK, v, offset);
    }
    return v;
}

// Sum of v over the threads of a 1-D block (blockDim.x a multiple of 32, at most 1024).
// The result is valid in thread 0.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) {
        partial[warp] = v;
    }
    __syncthreads();
    const int n_warps = blockDim.x >> 5;
    v = (threadIdx.x < n_warps) ? partial[threadIdx.x] : T(0);
    if (warp == 0) {
        v = warp_sum(v);
    }
    return v;
}

// Column sums of a (rows, cols) quantity with a 2-D block of (32, ROWS_PER_BLOCK)
// threads: thread (tx, ty) has accumulated the rows ty, ty + ROWS_PER_BLOCK, ...
// of column blockIdx.x * 32 + tx in `v`; returns the column's total in the threads
// with ty == 0.
#define TINYVAE_COLUMN_ROWS 8

template <typename T>
__device__ T column_sum(T v) {
    __shared__ T partial[TINYVAE_COLUMN_ROWS][32];
    partial[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.y == 0) {
        for (int r = 1; r < TINYVAE_COLUMN_ROWS; ++r) {
            v += partial[r][threadIdx.x];
        }
    }
    return v;
}
