"""Launch every kernel of ``kernels/*.cu`` once, through a backend's ops, in float32 and float64.

    python -m benchmarks.each_kernel [--backend cuda]

This is what ``compute-sanitizer`` (memcheck, racecheck) runs under in
:mod:`benchmarks.gpu_check`: shapes that are not multiples of the block sizes,
and the column views with a row stride that the model passes (``z`` the first
K columns of the decoder's input, ``dz`` of its input gradient). With
``--backend cuda-sim`` it runs the same launches in the CPU simulator.
"""

from __future__ import annotations

import argparse

import numpy as np

from tinyvae import rng as streams
from tinyvae.backends import get_backend
from tinyvae.backends.reference import ConvGeometry


def launch_each_kernel(be, B: int = 37, D: int = 45, K: int = 5, H: int = 33, P: int = 1000) -> None:
    """Every op once per dtype, so every ``<op>_f32`` and ``<op>_f64`` kernel runs (both Gaussian kernels; each
    corruption), and the one Philox kernel that the dtype does not concern."""
    xp = be.xp
    rng = np.random.default_rng(0)
    key = streams.stream_key(1, "eps")
    counters = xp.asarray(rng.integers(0, 2**32, (P, 4), dtype=np.uint32))
    be.philox4x32_10(counters, key, xp.empty_like(counters))
    for dtype in (np.float32, np.float64):
        def normal(*shape):
            return xp.asarray(rng.standard_normal(shape).astype(dtype))

        pixels = xp.asarray(rng.integers(0, 256, (50, D), dtype=np.uint8))
        rows = xp.asarray(rng.integers(0, 50, B))
        be.gather_pixels(pixels, rows, 1 / 255, xp.empty((B, D), dtype))
        be.gather_pixels(pixels, rows, 1 / 255, xp.empty((B, D), dtype), binarize=(key, 3))
        x = xp.asarray(rng.random((B, D)).astype(dtype))
        for kind in ("gaussian", "mask", "salt-and-pepper"):
            be.corrupt(x, key, 3, rows, kind, 0.3, xp.empty((B, D), dtype))
        be.draw_normal(key, 3, rows, xp.empty((2 * B, K), dtype))
        be.bce_with_logits(normal(B, D), x, 1 / B, xp.empty(B, dtype), xp.empty((B, D), dtype))
        be.gaussian_nll(normal(B, D), x, normal(D), 1 / B, xp.empty(B, dtype), xp.empty((B, D), dtype),
                        xp.empty(D, dtype))
        kept = xp.asarray(np.arange(0, B, 2))  # an IWAE's draws of nonzero weight, scaled and copied
        be.take_rows(normal(B, D), kept, normal(B), xp.empty((kept.shape[0], D), dtype))
        be.take_rows(normal(B, D), kept, None, xp.empty((kept.shape[0], D), dtype))
        # Three draws of each example: the targets read once for all three, the draws' importance weights.
        be.bce_with_logits(normal(3 * B, D), x, 1 / B, xp.empty(3 * B, dtype), xp.empty((3 * B, D), dtype))
        be.importance_weights(normal(3 * B) ** 2 * 50, normal(3 * B, 2 * K), normal(3 * B, K), normal(3 * B, K), 1 / B,
                              xp.empty(3 * B, dtype), xp.empty(B, dtype))
        be.importance_weights_backward(normal(3 * B, K + 3)[:, :K], normal(3 * B) ** 2, normal(B, 2 * K),
                                       normal(3 * B, K), normal(3 * B, K), xp.empty((B, 2 * K), dtype))
        heads, eps, zin = normal(B, 2 * K), normal(B, K), xp.zeros((B, K + 3), dtype)
        be.reparameterize_kl(heads, eps, zin[:, :K], xp.empty(B, dtype))
        be.reparameterize_kl_draw(heads, key, 3, rows, xp.empty((B, K), dtype), zin[:, :K], xp.empty(B, dtype))
        be.reparameterize_kl_backward(normal(B, K + 3)[:, :K], heads, eps, 0.1, xp.empty((B, 2 * K), dtype))
        be.nearest_code(normal(B, K), normal(H, K), xp.empty(B, np.int64), xp.empty(B, dtype))
        h = normal(B, H)
        be.bias_act(h, normal(H), True)
        be.bias_act_backward(normal(B, H), h, True, xp.empty(H, dtype))
        tall = normal(300, H)  # more rows than one chunk: the chunks' sums, and the kernel adding them
        be.bias_act_backward(normal(300, H), tall, True, xp.empty(H, dtype))
        g = ConvGeometry(H=7, W=5, C=3, kh=3, kw=2, stride=2, padding=1)  # odd sizes, a window not square
        images, cols = normal(4, g.H * g.W * g.C), xp.empty((4 * g.H_out * g.W_out, g.patch), dtype)
        be.unfold(images, g, cols)
        be.fold(cols, g, images)
        be.adam_step(normal(P), normal(P), normal(P), xp.abs(normal(P)), 1e-3, 0.9, 0.999, 1e-8, 1)
        be.sgd_step(normal(P), normal(P), normal(P), 0.1, 0.9, True)
    if hasattr(xp, "cuda"):
        xp.cuda.Device().synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="cuda", choices=("cuda", "cuda-sim"))
    args = p.parse_args(argv)
    launch_each_kernel(get_backend(args.backend))
    print(f"each kernel launched once ({args.backend})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
