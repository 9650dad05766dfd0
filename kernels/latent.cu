// The reparameterization and the analytic KL to N(0, I), forward and backward
// (Kingma & Welling 2014, Sec. 2.4 and Appendix B):
//   z  = mu + exp(0.5 logvar) eps,   kl = -0.5 sum_k (1 + logvar - mu^2 - exp(logvar))   (nats)
//   dmu     = dz + kl_scale mu
//   dlogvar = 0.5 dz eps exp(0.5 logvar) + 0.5 kl_scale (exp(logvar) - 1)
// The numpy reference is in tinyvae/backends/reference.py.
// Forward: one warp per row (lanes over K, a warp reduction for the row's KL).
// reparameterize_kl_draw: the forward drawing its own eps (philox.cuh): row n = l B + b of the L draws
// takes element l K + k of example rows[b] at `step`, which each lane computes from its Philox block, and
// writes it to eps for the backward pass.
// Backward: one thread per element.
#include "common.cuh"
#include "philox.cuh"

template <typename T>
__device__ void reparameterize_kl_rows(const T* mu, long ld_mu, const T* logvar, long ld_lv, const T* eps,
                                       long ld_eps, T* z, long ld_z, T* kl, int B, int K) {
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= B) {
        return;  // a whole warp leaves together, so the shuffles below see full warps
    }
    T acc = 0;
    for (int k = lane; k < K; k += 32) {
        const T m = mu[row * ld_mu + k], lv = logvar[row * ld_lv + k];
        z[row * ld_z + k] = m + exp(T(0.5) * lv) * eps[row * ld_eps + k];
        acc += T(1) + lv - m * m - exp(lv);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        kl[row] = T(-0.5) * acc;
    }
}

template <typename T>
__device__ void reparameterize_kl_draw_rows(const T* mu, long ld_mu, const T* logvar, long ld_lv, unsigned int k0,
                                            unsigned int k1, unsigned long long step, const long* rows, int B,
                                            T* eps, long ld_eps, T* z, long ld_z, T* kl, int N, int K) {
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) {
        return;  // a whole warp leaves together, so the shuffles below see full warps
    }
    const long l = row / B, b = row % B;
    T acc = 0;
    for (int k = lane; k < K; k += 32) {
        const long e = l * K + k;
        const T draw = T(philox_normal(philox_at(e / 4, rows[b], step, k0, k1), (int)(e % 4)));
        const T m = mu[row * ld_mu + k], lv = logvar[row * ld_lv + k];
        eps[row * ld_eps + k] = draw;
        z[row * ld_z + k] = m + exp(T(0.5) * lv) * draw;
        acc += T(1) + lv - m * m - exp(lv);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        kl[row] = T(-0.5) * acc;
    }
}

template <typename T>
__device__ void reparameterize_kl_backward_elems(const T* dz, long ld_dz, const T* mu, long ld_mu,
                                                 const T* logvar, long ld_lv, const T* eps, long ld_eps,
                                                 T kl_scale, T* dmu, long ld_dmu, T* dlogvar, long ld_dlv,
                                                 int B, int K) {
    const long n = (long)B * K;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long b = i / K, k = i % K;
        const T g = dz[b * ld_dz + k], lv = logvar[b * ld_lv + k];
        dmu[b * ld_dmu + k] = g + kl_scale * mu[b * ld_mu + k];
        dlogvar[b * ld_dlv + k] =
            T(0.5) * g * eps[b * ld_eps + k] * exp(T(0.5) * lv) + T(0.5) * kl_scale * (exp(lv) - T(1));
    }
}

#define TINYVAE_LATENT(T, SUFFIX)                                                                              \
    extern "C" __global__ void reparameterize_kl_##SUFFIX(const T* mu, long ld_mu, const T* logvar, long ld_lv,  \
                                                          const T* eps, long ld_eps, T* z, long ld_z, T* kl,     \
                                                          int B, int K) {                                        \
        reparameterize_kl_rows<T>(mu, ld_mu, logvar, ld_lv, eps, ld_eps, z, ld_z, kl, B, K);                      \
    }                                                                                                            \
    extern "C" __global__ void reparameterize_kl_draw_##SUFFIX(                                                  \
        const T* mu, long ld_mu, const T* logvar, long ld_lv, unsigned int k0, unsigned int k1,                  \
        unsigned long long step, const long* rows, int B, T* eps, long ld_eps, T* z, long ld_z, T* kl, int N,    \
        int K) {                                                                                                 \
        reparameterize_kl_draw_rows<T>(mu, ld_mu, logvar, ld_lv, k0, k1, step, rows, B, eps, ld_eps, z, ld_z, kl, \
                                       N, K);                                                                    \
    }                                                                                                            \
    extern "C" __global__ void reparameterize_kl_backward_##SUFFIX(                                              \
        const T* dz, long ld_dz, const T* mu, long ld_mu, const T* logvar, long ld_lv, const T* eps,             \
        long ld_eps, T kl_scale, T* dmu, long ld_dmu, T* dlogvar, long ld_dlv, int B, int K) {                   \
        reparameterize_kl_backward_elems<T>(dz, ld_dz, mu, ld_mu, logvar, ld_lv, eps, ld_eps, kl_scale, dmu,      \
                                            ld_dmu, dlogvar, ld_dlv, B, K);                                      \
    }

TINYVAE_LATENT(float, f32)
TINYVAE_LATENT(double, f64)
