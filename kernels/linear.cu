// The elementwise ends of a Linear layer (tinyvae/layers.py); the GEMMs are cuBLAS.
//   bias_act:           out = act(out + b), act = ReLU or identity, in place;
//   bias_act_backward:  da = dout * (out > 0) for ReLU (da = dout for the identity) in place,
//                       and db = sum over the batch of da, in one pass: block
//                       (32, TINYVAE_COLUMN_ROWS) per 32 columns.
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
                                       int H) {
    const int j = blockIdx.x * 32 + threadIdx.x;
    T acc = 0;
    if (j < H) {
        for (int r = threadIdx.y; r < B; r += TINYVAE_COLUMN_ROWS) {
            const T g = (!relu || out[r * ld_out + j] > T(0)) ? dout[r * ld_dout + j] : T(0);
            dout[r * ld_dout + j] = g;
            acc += g;
        }
    }
    acc = column_sum(acc);
    if (threadIdx.y == 0 && j < H) {
        db[j] = acc;
    }
}

#define TINYVAE_LINEAR(T, SUFFIX)                                                                             \
    extern "C" __global__ void bias_act_##SUFFIX(T* out, long ld, const T* b, int B, int H, int relu) {         \
        bias_act_elems<T>(out, ld, b, B, H, relu);                                                             \
    }                                                                                                         \
    extern "C" __global__ void bias_act_backward_##SUFFIX(T* dout, long ld_dout, const T* out, long ld_out,     \
                                                          int relu, T* db, int B, int H) {                    \
        bias_act_backward_cols<T>(dout, ld_dout, out, ld_out, relu, db, B, H);                                 \
    }

TINYVAE_LINEAR(float, f32)
TINYVAE_LINEAR(double, f64)
