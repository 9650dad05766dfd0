// Random draws made on the device, each a pure function of (key, step, example, element)
// (philox.cuh; the numpy reference is tinyvae/rng.py and tinyvae/backends/reference.py):
//   philox4x32_10: the words of n counters, one thread per counter;
//   draw_normal:   out[l B + b, k] = the normal of element l K + k of example rows[b], one thread per block
//                  of four elements;
//   corrupt:       a denoising autoencoder's corruption of a (B, D) batch (Vincent et al. 2008, Sec. 2.3;
//                  2010, Sec. 4.2), one block per row: gaussian, x + noise z_d; mask, the m pixels of
//                  smallest (word, index) set to 0; salt-and-pepper, the same m pixels set to 1 where the
//                  word of element D + d is below 2^31, else 0. For the last two the row's 2 D words go to
//                  `words` (B, 2 D) first, then each thread ranks its pixels against the row's first D words
//                  (D compares a pixel: a row of Fashion-MNIST is 784^2 / 256 per thread, microseconds).
#include "philox.cuh"

extern "C" __global__ void philox4x32_10(const unsigned int* counter, unsigned int k0, unsigned int k1,
                                         unsigned int* out, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const PhiloxBlock b = philox4x32_10_block(counter[4 * i], counter[4 * i + 1], counter[4 * i + 2],
                                                  counter[4 * i + 3], k0, k1);
        for (int j = 0; j < 4; ++j) {
            out[4 * i + j] = b.w[j];
        }
    }
}

template <typename T>
__device__ void draw_normal_blocks(unsigned int k0, unsigned int k1, unsigned long long step, const long* rows,
                                   int B, int L, int K, T* out, long ld_out) {
    const long per_row = ((long)L * K + 3) / 4, n = per_row * B;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long b = i / per_row, q = i % per_row;
        const PhiloxBlock block = philox_at(q, rows[b], step, k0, k1);
        for (int j = 0; j < 4; ++j) {
            const long e = 4 * q + j;
            if (e < (long)L * K) {
                out[(e / K * B + b) * ld_out + e % K] = T(philox_normal(block, j));
            }
        }
    }
}

template <typename T>
__device__ void corrupt_row(const T* x, long ld_x, unsigned int k0, unsigned int k1, unsigned long long step,
                            const long* rows, int kind, T noise, int m, T* out, long ld_out, unsigned int* words,
                            int D) {
    const long b = blockIdx.x;
    if (kind == 0) {  // gaussian: element d's normal, from its own Philox block
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            const PhiloxBlock block = philox_at(d / 4, rows[b], step, k0, k1);
            out[b * ld_out + d] = x[b * ld_x + d] + noise * T(philox_normal(block, d % 4));
        }
        return;
    }
    unsigned int* w = words + b * 2 * (long)D;
    const int n = kind == 2 ? 2 * D : D;  // salt-and-pepper's coins are the words of elements D to 2 D - 1
    for (int q = threadIdx.x; q < (n + 3) / 4; q += blockDim.x) {
        const PhiloxBlock block = philox_at(q, rows[b], step, k0, k1);
        for (int j = 0; j < 4 && 4 * q + j < n; ++j) {
            w[4 * q + j] = block.w[j];
        }
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        int rank = 0;  // pixels of smaller (word, index)
        const unsigned int wd = w[d];
        for (int j = 0; j < D; ++j) {
            rank += (w[j] < wd) || (w[j] == wd && j < d);
        }
        const T v = x[b * ld_x + d];
        out[b * ld_out + d] = rank >= m ? v : (kind == 1 ? T(0) : T(w[D + d] < 0x80000000u ? 1 : 0));
    }
}

#define TINYVAE_RANDOM(T, SUFFIX)                                                                             \
    extern "C" __global__ void draw_normal_##SUFFIX(unsigned int k0, unsigned int k1, unsigned long long step,  \
                                                    const long* rows, int B, int L, int K, T* out,             \
                                                    long ld_out) {                                             \
        draw_normal_blocks<T>(k0, k1, step, rows, B, L, K, out, ld_out);                                       \
    }                                                                                                         \
    extern "C" __global__ void corrupt_##SUFFIX(const T* x, long ld_x, unsigned int k0, unsigned int k1,       \
                                                unsigned long long step, const long* rows, int kind, T noise,  \
                                                int m, T* out, long ld_out, unsigned int* words, int D) {      \
        corrupt_row<T>(x, ld_x, k0, k1, step, rows, kind, noise, m, out, ld_out, words, D);                    \
    }

TINYVAE_RANDOM(float, f32)
TINYVAE_RANDOM(double, f64)
