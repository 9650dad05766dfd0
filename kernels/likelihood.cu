// The decoder's likelihoods, each fused into one pass over (B, D):
//   bce_with_logits: Bernoulli NLL from logits (K&W 2014 Appendix C.1) in the stable form
//       bce(l, x) = max(l, 0) - l x + log1p(exp(-|l|)),  d bce / d l = sigmoid(l) - x;
//   gaussian_nll: N(mean, exp(logvar)) NLL with a per-pixel log-variance (K&W Appendix C.2)
//       nll = 0.5 ((x - m)^2 exp(-lv) + lv + log 2 pi),  d/dm = (m - x) exp(-lv),
//       d/dlv = 0.5 (1 - (x - m)^2 exp(-lv)), the last summed over the batch by a second kernel;
//   importance_weights: the IWAE's bound of each example and its draws' normalised weights (Burda et al.
//       2015, eq. 8 and 14): log w = -nll - |z|^2 / 2 + |eps|^2 / 2 + sum(logvar) / 2 of each draw, the
//       bound -log (1/k) sum_j w_j after the largest log w, the weights scale w_j / sum w, 0 below `cut`;
//   importance_weights_backward: the gradient at each example's [mu | logvar] from its k draws, with
//       g = dz + w z: dmu = sum_j g, dlogvar = 0.5 (exp(logvar / 2) sum_j g eps - sum_j w).
// The targets x have B rows for the N = L B rows of L draws: output row i reads x row i % B.
// The numpy reference of each is in tinyvae/backends/reference.py.
// One block per row for the likelihoods, the per-row loss a block reduction; importance_weights one thread
// per example (its k draws of K values are few), importance_weights_backward one per latent element of an
// example (it writes that element's mu and logvar gradients).
#include "common.cuh"

template <typename T>
__device__ void bce_with_logits_row(const T* logits, long ld_l, const T* x, long ld_x, int x_rows, T scale,
                                    T* loss, T* dlogits, long ld_d, int D) {
    const long row = blockIdx.x;
    const T* l = logits + row * ld_l;
    const T* t = x + (row % x_rows) * ld_x;
    T* d = dlogits + row * ld_d;
    T acc = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const T v = l[j], target = t[j];
        const T e = exp(-fabs(v));
        acc += fmax(v, T(0)) - v * target + log1p(e);
        const T sig = v >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
        d[j] = scale * (sig - target);
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        loss[row] = acc;
    }
}

template <typename T>
__device__ void gaussian_nll_row(const T* mean, long ld_m, const T* x, long ld_x, int x_rows, const T* logvar,
                                 T scale, T* loss, T* dmean, long ld_d, int D) {
    const long row = blockIdx.x;
    const T* m = mean + row * ld_m;
    const T* t = x + (row % x_rows) * ld_x;
    T* d = dmean + row * ld_d;
    const T log_2pi = T(1.8378770664093454836);
    T acc = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const T lv = logvar[j], inv_var = exp(-lv), r = t[j] - m[j];
        acc += T(0.5) * (r * r * inv_var + lv + log_2pi);
        d[j] = -scale * r * inv_var;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        loss[row] = acc;
    }
}

// dlogvar[j] = scale * sum_b 0.5 (1 - (x - m)^2 exp(-lv_j)); block (32, TINYVAE_COLUMN_ROWS), grid ceil(D / 32).
template <typename T>
__device__ void gaussian_nll_dlogvar_cols(const T* mean, long ld_m, const T* x, long ld_x, int x_rows,
                                          const T* logvar, T scale, T* dlogvar, int B, int D) {
    const int j = blockIdx.x * 32 + threadIdx.x;
    T acc = 0;
    if (j < D) {
        const T inv_var = exp(-logvar[j]);
        for (int b = threadIdx.y; b < B; b += TINYVAE_COLUMN_ROWS) {
            const T r = x[(b % x_rows) * ld_x + j] - mean[b * ld_m + j];
            acc += T(0.5) * (T(1) - r * r * inv_var);
        }
    }
    acc = column_sum(acc);
    if (threadIdx.y == 0 && j < D) {
        dlogvar[j] = scale * acc;
    }
}

// Draw j of example b is row j B + b. The log weights wait in `weights` until the largest is known.
template <typename T>
__device__ void importance_weights_examples(const T* nll, const T* heads, long ld_h, const T* eps, long ld_e,
                                            const T* z, long ld_z, T scale, T cut, T* weights, T* bound, int B,
                                            int k, int K) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) {
        return;
    }
    T top = 0;
    for (int j = 0; j < k; ++j) {
        const long n = (long)j * B + b;
        T s = 0;
        for (int i = 0; i < K; ++i) {
            const T e = eps[n * ld_e + i], v = z[n * ld_z + i];
            s += e * e - v * v + heads[n * ld_h + K + i];
        }
        const T log_w = T(0.5) * s - nll[n];
        weights[n] = log_w;
        top = (j == 0 || log_w > top) ? log_w : top;
    }
    T total = 0;
    for (int j = 0; j < k; ++j) {
        const long n = (long)j * B + b;
        weights[n] = exp(weights[n] - top);
        total += weights[n];
    }
    bound[b] = -(top + log(total) - log(T(k)));
    for (int j = 0; j < k; ++j) {
        const long n = (long)j * B + b;
        const T w = weights[n] / total;
        weights[n] = w < cut ? T(0) : w * scale;
    }
}

// Element t of a grid-stride loop: example b = t / K, latent element i = t % K, its k draws in rows j B + b.
template <typename T>
__device__ void importance_weights_backward_elems(const T* dz, long ld_dz, const T* weights, const T* heads,
                                                  long ld_h, const T* eps, long ld_e, const T* z, long ld_z,
                                                  T* dheads, long ld_d, int B, int k, int K) {
    const long elems = (long)B * K;
    for (long t = (long)blockIdx.x * blockDim.x + threadIdx.x; t < elems; t += (long)gridDim.x * blockDim.x) {
        const long b = t / K, i = t % K;
        T dmu = 0, path = 0, total = 0;
        for (int j = 0; j < k; ++j) {
            const long n = (long)j * B + b;
            const T w = weights[n];
            const T g = dz[n * ld_dz + i] + w * z[n * ld_z + i];
            dmu += g;
            path += g * eps[n * ld_e + i];
            total += w;
        }
        dheads[b * ld_d + i] = dmu;
        dheads[b * ld_d + K + i] = T(0.5) * (exp(T(0.5) * heads[b * ld_h + K + i]) * path - total);
    }
}

#define TINYVAE_LIKELIHOOD(T, SUFFIX)                                                                         \
    extern "C" __global__ void bce_with_logits_##SUFFIX(const T* logits, long ld_l, const T* x, long ld_x,    \
                                                        int x_rows, T scale, T* loss, T* dlogits, long ld_d,  \
                                                        int D) {                                              \
        bce_with_logits_row<T>(logits, ld_l, x, ld_x, x_rows, scale, loss, dlogits, ld_d, D);                  \
    }                                                                                                         \
    extern "C" __global__ void gaussian_nll_##SUFFIX(const T* mean, long ld_m, const T* x, long ld_x,          \
                                                     int x_rows, const T* logvar, T scale, T* loss, T* dmean, \
                                                     long ld_d, int D) {                                      \
        gaussian_nll_row<T>(mean, ld_m, x, ld_x, x_rows, logvar, scale, loss, dmean, ld_d, D);                 \
    }                                                                                                         \
    extern "C" __global__ void gaussian_nll_dlogvar_##SUFFIX(const T* mean, long ld_m, const T* x, long ld_x,  \
                                                             int x_rows, const T* logvar, T scale,            \
                                                             T* dlogvar, int B, int D) {                      \
        gaussian_nll_dlogvar_cols<T>(mean, ld_m, x, ld_x, x_rows, logvar, scale, dlogvar, B, D);               \
    }                                                                                                         \
    extern "C" __global__ void importance_weights_##SUFFIX(const T* nll, const T* heads, long ld_h,            \
                                                           const T* eps, long ld_e, const T* z, long ld_z,    \
                                                           T scale, T cut, T* weights, T* bound, int B,       \
                                                           int k, int K) {                                    \
        importance_weights_examples<T>(nll, heads, ld_h, eps, ld_e, z, ld_z, scale, cut, weights, bound, B, k, \
                                       K);                                                                    \
    }                                                                                                         \
    extern "C" __global__ void importance_weights_backward_##SUFFIX(                                          \
        const T* dz, long ld_dz, const T* weights, const T* heads, long ld_h, const T* eps, long ld_e,        \
        const T* z, long ld_z, T* dheads, long ld_d, int B, int k, int K) {                                   \
        importance_weights_backward_elems<T>(dz, ld_dz, weights, heads, ld_h, eps, ld_e, z, ld_z, dheads, ld_d, \
                                             B, k, K);                                                        \
    }

TINYVAE_LIKELIHOOD(float, f32)
TINYVAE_LIKELIHOOD(double, f64)
