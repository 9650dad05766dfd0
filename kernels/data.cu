// Row gathers, each in one pass:
//   gather_pixels: the batch gather of the training loop (tinyvae/training/loop.py):
//   out[i, d] = float(pixels[rows[i], d]) * scale for a (B, D) batch of uint8
//   rows; the product is taken in float (tinyvae.io.datasets.pixels_to_unit's rule) and widened for
//   double. With `binarize`, a Bernoulli draw of that intensity instead: out = u < p, u the uniform of
//   element d of example r at `step` under the key (k0, k1) (philox.cuh), compared in double.
//   A row index r < 0 counts from the end (r + N);
//   take_rows: out[i, d] = a[rows[i], d] * scale[rows[i]] (a copy unless `scaled`): the IWAE's backward
//   pass over its draws of nonzero weight (Burda et al. 2015, eq. 14; tinyvae/models/iwae.py).
// Indices are not checked here: a check would cost a device-to-host copy per batch. An index outside
// [-N, N) is taken modulo N, as cupy.take does. The numpy reference is in tinyvae/backends/reference.py.
#include "common.cuh"
#include "philox.cuh"

// Row rows[i] of an array of n_rows rows, taken modulo n_rows (a negative index counting from the end).
__device__ inline long wrapped_row(const long* rows, long i, long n_rows) {
    const long r = rows[i] % n_rows;
    return r < 0 ? r + n_rows : r;
}

template <typename T>
__device__ void gather_elems(const unsigned char* pixels, long n_rows, long ld_pixels, const long* rows, float scale,
                             T* out, long ld_out, long B, int D, int binarize, unsigned int k0, unsigned int k1,
                             unsigned long long step) {
    for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < B * D; k += (long)gridDim.x * blockDim.x) {
        const long i = k / D;
        const int d = (int)(k - i * D);
        const long r = wrapped_row(rows, i, n_rows);
        const float p = (float)pixels[r * ld_pixels + d] * scale;
        if (binarize) {
            const PhiloxBlock block = philox_at(d / 4, r, step, k0, k1);
            out[i * ld_out + d] = T(philox_uniform(block.w[d % 4]) < (double)p ? 1 : 0);
        } else {
            out[i * ld_out + d] = T(p);
        }
    }
}

template <typename T>
__device__ void take_rows_elems(const T* a, long n_rows, long ld_a, const long* rows, const T* scale, int scaled,
                                T* out, long ld_out, long n, int D) {
    for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n * D; k += (long)gridDim.x * blockDim.x) {
        const long i = k / D;
        const int d = (int)(k - i * D);
        const long r = wrapped_row(rows, i, n_rows);
        const T v = a[r * ld_a + d];
        out[i * ld_out + d] = scaled ? v * scale[r] : v;
    }
}

#define TINYVAE_DATA(T, SUFFIX)                                                                               \
    extern "C" __global__ void gather_pixels_##SUFFIX(const unsigned char* pixels, long n_rows, long ld_pixels,  \
                                                      const long* rows, float scale, T* out, long ld_out, long B, \
                                                      int D, int binarize, unsigned int k0, unsigned int k1,  \
                                                      unsigned long long step) {                              \
        gather_elems<T>(pixels, n_rows, ld_pixels, rows, scale, out, ld_out, B, D, binarize, k0, k1, step);  \
    }                                                                                                         \
    extern "C" __global__ void take_rows_##SUFFIX(const T* a, long n_rows, long ld_a, const long* rows,        \
                                                  const T* scale, int scaled, T* out, long ld_out, long n,    \
                                                  int D) {                                                    \
        take_rows_elems<T>(a, n_rows, ld_a, rows, scale, scaled, out, ld_out, n, D);                          \
    }

TINYVAE_DATA(float, f32)
TINYVAE_DATA(double, f64)
