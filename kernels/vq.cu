// The nearest code of a VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, Sec. 3.1), distances and argmin
// in one pass:
//   nearest_code: for each row z_n of z (N, D), the index k of the codebook row (K, D) nearest it by squared
//                 Euclidean distance sum_d (z_nd - e_kd)^2, the lowest index among equals, into idx[n], and
//                 that distance into dist[n]. One thread per row; the codebook is read by every thread
//                 (K D values: 8,192 at K = 512, D = 16, from the cache).
// The numpy reference is in tinyvae/backends/reference.py.
#include "common.cuh"

template <typename T>
__device__ void nearest_rows(const T* z, long ld_z, const T* codebook, long ld_c, long* idx, T* dist, long N, int K,
                             int D) {
    for (long n = (long)blockIdx.x * blockDim.x + threadIdx.x; n < N; n += (long)gridDim.x * blockDim.x) {
        T best = T(0);
        long arg = -1;
        for (int k = 0; k < K; ++k) {
            T d2 = T(0);
            for (int d = 0; d < D; ++d) {
                const T diff = z[n * ld_z + d] - codebook[k * ld_c + d];
                d2 += diff * diff;
            }
            if (arg < 0 || d2 < best) {
                best = d2;
                arg = k;
            }
        }
        idx[n] = arg;
        dist[n] = best;
    }
}

#define TINYVAE_VQ(T, SUFFIX)                                                                                 \
    extern "C" __global__ void nearest_code_##SUFFIX(const T* z, long ld_z, const T* codebook, long ld_c,      \
                                                     long* idx, T* dist, long N, int K, int D) {               \
        nearest_rows<T>(z, ld_z, codebook, ld_c, idx, dist, N, K, D);                                          \
    }

TINYVAE_VQ(float, f32)
TINYVAE_VQ(double, f64)
