// The data movement of a convolution (tinyvae/layers.py: Conv2d, ConvTranspose2d); the GEMMs are cuBLAS.
// Images are channels-last rows: pixel (y, x), channel c of image b at x[b * ld_x + (y * W + x) * C + c].
// A window of kh x kw moves by stride s over the image padded with p zeros; it takes Ho x Wo positions.
//   unfold (im2col): cols[(b * Ho + oy) * Wo + ox, (i * kw + j) * C + c]
//                      = x_b[oy * s - p + i, ox * s - p + j, c], 0 in the padding;
//   fold (col2im), its adjoint: x_b[y, x, c] = the sum of cols[(b, oy, ox), (i, j, c)] over the window
//                      positions with oy * s - p + i = y and ox * s - p + j = x.
// unfold: a thread per entry of cols. fold: a thread per pixel value, which gathers its own sum (at most
// ceil(kh / s) * ceil(kw / s) terms), so no two threads write one value and no atomics are needed.
// The numpy reference of each is in tinyvae/backends/reference.py.
#include "common.cuh"

template <typename T>
__device__ void unfold_elems(const T* x, long ld_x, T* cols, long ld_cols, long B, int H, int W, int C, int kh,
                             int kw, int s, int p, int Ho, int Wo) {
    const long patch = (long)C * kh * kw;
    const long n = B * Ho * Wo * patch;
    for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (long)gridDim.x * blockDim.x) {
        const long row = k / patch;
        const int q = (int)(k - row * patch);
        const int c = q % C, j = q / C % kw, i = q / (C * kw);
        const long b = row / ((long)Ho * Wo);
        const int oy = (int)(row / Wo % Ho), ox = (int)(row % Wo);
        const int y = oy * s - p + i, xx = ox * s - p + j;
        cols[row * ld_cols + q] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[b * ld_x + ((long)y * W + xx) * C + c]
                                                                           : T(0);
    }
}

template <typename T>
__device__ void fold_elems(const T* cols, long ld_cols, T* x, long ld_x, long B, int H, int W, int C, int kh, int kw,
                           int s, int p, int Ho, int Wo) {
    const long n = B * H * W * C;
    for (long k = (long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (long)gridDim.x * blockDim.x) {
        const int c = (int)(k % C);
        const long pixel = k / C;
        const int xx = (int)(pixel % W), y = (int)(pixel / W % H);
        const long b = pixel / ((long)W * H);
        T acc = 0;
        for (int i = (y + p) % s; i < kh; i += s) {  // the window rows i with (y + p - i) a multiple of s
            const int oy = (y + p - i) / s;
            if (oy >= Ho) {
                continue;
            }
            if (oy < 0) {
                break;
            }
            for (int j = (xx + p) % s; j < kw; j += s) {
                const int ox = (xx + p - j) / s;
                if (ox >= Wo) {
                    continue;
                }
                if (ox < 0) {
                    break;
                }
                acc += cols[((b * Ho + oy) * Wo + ox) * ld_cols + ((long)i * kw + j) * C + c];
            }
        }
        x[b * ld_x + pixel % ((long)H * W) * C + c] = acc;
    }
}

#define TINYVAE_CONV(T, SUFFIX)                                                                                \
    extern "C" __global__ void unfold_##SUFFIX(const T* x, long ld_x, T* cols, long ld_cols, long B, int H, int W, \
                                               int C, int kh, int kw, int s, int p, int Ho, int Wo) {          \
        unfold_elems<T>(x, ld_x, cols, ld_cols, B, H, W, C, kh, kw, s, p, Ho, Wo);                              \
    }                                                                                                          \
    extern "C" __global__ void fold_##SUFFIX(const T* cols, long ld_cols, T* x, long ld_x, long B, int H, int W,   \
                                             int C, int kh, int kw, int s, int p, int Ho, int Wo) {            \
        fold_elems<T>(cols, ld_cols, x, ld_x, B, H, W, C, kh, kw, s, p, Ho, Wo);                                \
    }

TINYVAE_CONV(float, f32)
TINYVAE_CONV(double, f64)
