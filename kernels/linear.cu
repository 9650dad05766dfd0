// The elementwise ends of a Linear layer (tinyvae/layers.py); the GEMMs are cuBLAS.
//   bias_act:           out = act(out + b), act = ReLU or identity, in place;
//   bias_act_backward:  da = dout * (out > 0) for ReLU (da = dout for the identity) in place,
//                       and db = sum over the rows of da, in one pass: a block of
//                       (32, TINYVAE_COLUMN_ROWS) threads per 32 columns and per chunk of rows
//                       (blockIdx.y), writing its chunk's column sums to db[blockIdx.y * H + j];
//   bias_act_backward_sum: with more than one chunk, db[j] = the chunks' sums added in chunk order
//                       (deterministic; no atomics). A convolution's bias gradient sums over every
//                       window position of the batch, 100,352 rows at 128 28x28 images: one block
//                       per 32 columns would loop over all of them.
// The numpy reference of each is in tinyvae/backends/reference.py.
#include "common.cuh"

template <typename T>
__device__ void bias_act_elems(T* out, long ld, const T* b, int B, int H, int relu) {
    const long n = (long)B * H;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long r = i / H, j = i % H;
        const T v = out[r * ld + j] + b[j];
        out[r * ld + j] = (relu && v < T(0)) ? T(0) : v;
    }
}

template <typename T>
__device__ void bias_act_backward_cols(T* dout, long ld_dout, const T* out, long ld_out, int relu, T* db, int B,
                                       int H, int chunk_rows) {
    const int j = blockIdx.x * 32 + threadIdx.x;
    const long first = (long)blockIdx.y * chunk_rows, end = first + chunk_rows, last = end < B ? end : (long)B;
    T acc = 0;
    if (j < H) {
        for (long r = first + threadIdx.y; r < last; r += TINYVAE_COLUMN_ROWS) {
            const T g = (!relu || out[r * ld_out + j] > T(0)) ? dout[r * ld_dout + j] : T(0);
            dout[r * ld_dout + j] = g;
            acc += g;
        }
    }
    acc = column_sum(acc);
    if (threadIdx.y == 0 && j < H) {
        db[(long)blockIdx.y * H + j] = acc;
    }
}

template <typename T>
__device__ void sum_chunks(const T* partial, int chunks, int H, T* db) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < H; j += gridDim.x * blockDim.x) {
        T acc = 0;
        for (int c = 0; c < chunks; ++c) {
            acc += partial[(long)c * H + j];
        }
        db[j] = acc;
    }
}

#define TINYVAE_LINEAR(T, SUFFIX)                                                                             \
    extern "C" __global__ void bias_act_##SUFFIX(T* out, long ld, const T* b, int B, int H, int relu) {         \
        bias_act_elems<T>(out, ld, b, B, H, relu);                                                             \
    }                                                                                                         \
    extern "C" __global__ void bias_act_backward_##SUFFIX(T* dout, long ld_dout, const T* out, long ld_out,     \
                                                          int relu, T* db, int B, int H, int chunk_rows) {    \
        bias_act_backward_cols<T>(dout, ld_dout, out, ld_out, relu, db, B, H, chunk_rows);                     \
    }                                                                                                         \
    extern "C" __global__ void bias_act_backward_sum_##SUFFIX(const T* partial, int chunks, int H, T* db) {     \
        sum_chunks<T>(partial, chunks, H, db);                                                                 \
    }

TINYVAE_LINEAR(float, f32)
TINYVAE_LINEAR(double, f64)
