// Optimiser updates over the flat (P,) parameter buffer, one pass each (tinyvae/optim.py):
//   adam_step (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam):
//       m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//       p -= step_size m / (sqrt(v) / bias2_sqrt + eps),
//       step_size = lr / (1 - beta1^t), bias2_sqrt = sqrt(1 - beta2^t), computed on the host;
//   sgd_step (torch.optim.SGD, dampening 0):
//       buf = momentum buf + g;  p -= lr (nesterov ? g + momentum buf : buf).
// The numpy reference of each is in tinyvae/backends/reference.py.

template <typename T>
__device__ void adam_elems(T* p, const T* g, T* m, T* v, long n, T beta1, T beta2, T eps, T step_size,
                           T bias2_sqrt) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const T gi = g[i];
        const T mi = beta1 * m[i] + (T(1) - beta1) * gi;
        const T vi = beta2 * v[i] + (T(1) - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrt(vi) / bias2_sqrt + eps);
    }
}

template <typename T>
__device__ void sgd_elems(T* p, const T* g, T* buf, long n, T lr, T momentum, int nesterov) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const T gi = g[i];
        const T b = momentum * buf[i] + gi;
        buf[i] = b;
        p[i] -= lr * (nesterov ? gi + momentum * b : b);
    }
}

#define TINYVAE_OPTIM(T, SUFFIX)                                                                              \
    extern "C" __global__ void adam_step_##SUFFIX(T* p, const T* g, T* m, T* v, long n, T beta1, T beta2,      \
                                                  T eps, T step_size, T bias2_sqrt) {                         \
        adam_elems<T>(p, g, m, v, n, beta1, beta2, eps, step_size, bias2_sqrt);                                \
    }                                                                                                         \
    extern "C" __global__ void sgd_step_##SUFFIX(T* p, const T* g, T* buf, long n, T lr, T momentum,           \
                                                 int nesterov) {                                              \
        sgd_elems<T>(p, g, buf, n, lr, momentum, nesterov);                                                    \
    }

TINYVAE_OPTIM(float, f32)
TINYVAE_OPTIM(double, f64)
