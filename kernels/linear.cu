// The elementwise ends of a Linear layer (tinyvae/layers.py); the GEMMs are cuBLAS.
//   bias_act:           out = act(out + b), act = ReLU or identity, in place;
//   relu_backward_bias: da = dh * (h > 0) in place, and db = sum over the batch of da,
//                       in one pass: block (32, TINYVAE_COLUMN_ROWS) per 32 columns.
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
__device__ void relu_backward_bias_cols(T* dh, long ld_dh, const T* h, long ld_h, T* db, int B, int H) {
    const int j = blockIdx.x * 32 + threadIdx.x;
    T acc = 0;
    if (j < H) {
        for (int r = threadIdx.y; r < B; r += TINYVAE_COLUMN_ROWS) {
            const T g = h[r * ld_h + j] > T(0) ? dh[r * ld_dh + j] : T(0);
            dh[r * ld_dh + j] = g;
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
    extern "C" __global__ void relu_backward_bias_##SUFFIX(T* dh, long ld_dh, const T* h, long ld_h, T* db,    \
                                                           int B, int H) {                                    \
        relu_backward_bias_cols<T>(dh, ld_dh, h, ld_h, db, B, H);                                              \
    }

TINYVAE_LINEAR(float, f32)
TINYVAE_LINEAR(double, f64)
