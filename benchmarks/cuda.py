"""The cuda backend on its GPU: each fused kernel against the naive CuPy and the naive
NumPy expression it replaces, and one Fashion-MNIST epoch against PyTorch CUDA eager.

    python -m benchmarks.cuda [--batches 128,1024,8192,65536] [--repeats 50] [--epochs 3]

Kernels: D = 784, K = 20, H = 400 and the 652,824 parameters of the 784-400-20 VAE
(the cases of :mod:`benchmarks.kernels`); median time over ``--repeats`` with CUDA
events around each call, the bytes each op must read and write once over that time
(GB/s), and that as a share of the card's peak memory bandwidth (from the device's
memory clock and bus width, or ``--peak-gbs``). Epochs: the same model, batch, data
(already on the GPU), Adam; each contender runs ``--epochs`` epochs and its median counts.
Writes ``benchmarks/results/kernels_cuda.json`` and ``train_cuda.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import median_time, report
from benchmarks.kernels import cases, optimizer_cases
from tinyvae.backends import get_backend
from tinyvae.data import PIXEL_SCALE, load_dataset
from tinyvae.model import VAE
from tinyvae.optim import Adam


def peak_bandwidth_gbs(cupy) -> float:
    """Peak memory bandwidth of device 0 in GB/s: 2 (double data rate) x memory clock x bus width."""
    rt = cupy.cuda.runtime
    try:  # cudaDevAttrMemoryClockRate = 36 (kHz), cudaDevAttrGlobalMemoryBusWidth = 37 (bits)
        clock_khz, bus_bits = rt.deviceGetAttribute(36, 0), rt.deviceGetAttribute(37, 0)
    except Exception as e:
        raise SystemExit(f"cannot read the memory clock and bus width ({e}); pass --peak-gbs") from e
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def kernels(cuda, args, peak):
    cupy, ref = cuda.xp, get_backend("numpy")
    rng = np.random.default_rng(0)
    todo = [c for B in map(int, args.batches.split(",")) for c in cases(B, rng)] + optimizer_cases(rng)
    sync = cupy.cuda.Device().synchronize
    rows = []
    for op, size, make, nbytes in todo:
        host = make()
        dev = lambda: tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in make())
        t_fused = median_time(lambda a=dev(): getattr(cuda, op)(*a), args.repeats, sync=sync)
        t_cupy = median_time(lambda a=dev(): getattr(ref, op)(*a), args.repeats, sync=sync)  # reference on CuPy
        t_numpy = median_time(lambda: getattr(ref, op)(*host), max(3, args.repeats // 10))
        rows.append({"op": op, "size": size, "numpy_us": 1e6 * t_numpy, "cupy_naive_us": 1e6 * t_cupy,
                     "cuda_us": 1e6 * t_fused, "vs_cupy": t_cupy / t_fused, "vs_numpy": t_numpy / t_fused,
                     "GB/s": nbytes / t_fused / 1e9, "of_peak": nbytes / t_fused / 1e9 / peak})
    report("kernels_cuda", rows, [("op", "<28"), ("size", ""), ("numpy_us", ".1f"), ("cupy_naive_us", ".1f"),
                                  ("cuda_us", ".1f"), ("vs_cupy", ".1f"), ("vs_numpy", ".1f"), ("GB/s", ".0f"),
                                  ("of_peak", ".2f")],
           {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "peak_GB/s": peak})


def epoch_times(step, n_steps, sync, epochs) -> list[float]:
    step(0)  # compile and allocate outside the clock
    sync()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for i in range(n_steps):
            step(i)
        sync()
        times.append(time.perf_counter() - t0)
    return times


def train(cuda, args):
    cupy = cuda.xp
    data = load_dataset("fashion-mnist")
    B = args.batch_size
    n_steps = len(data.train_pixels) // B
    X = cupy.asarray(data.train_pixels)  # uint8 rows, scaled batch by batch, as the trainer does
    perm = cupy.asarray(np.random.default_rng(1).permutation(len(data.train_pixels)))
    sync = cupy.cuda.Device().synchronize
    model = VAE(backend=cuda, seed=1)
    opt = Adam(model.params, model.backend)
    x = cupy.empty((B, X.shape[1]), cupy.float32)

    def ours(i):
        model.backend.gather_pixels(X, perm[i * B:(i + 1) * B], PIXEL_SCALE, x)
        model.train_step(x, opt)

    runs = {"tinyvae cuda": epoch_times(ours, n_steps, sync, args.epochs)}
    try:
        import torch

        from benchmarks.torch_reference import TorchVAE, loss_of
    except ImportError:
        runs["pytorch eager"] = None
    else:
        torch.manual_seed(1)
        net = TorchVAE().cuda()
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        TX, tperm = torch.from_numpy(data.train_x).cuda(), torch.as_tensor(cupy.asnumpy(perm)).cuda()

        def theirs(i):
            topt.zero_grad()
            loss_of(net, TX[tperm[i * B:(i + 1) * B]]).backward()
            topt.step()

        runs["pytorch eager"] = epoch_times(theirs, n_steps, torch.cuda.synchronize, args.epochs)
    secs = {k: statistics.median(v) if v else None for k, v in runs.items()}
    base = secs["pytorch eager"]
    rows = [{"what": k, "epoch_s": v, "samples_per_s": n_steps * B / v if v else None,
             "vs_pytorch": v / base if v and base else None, "epochs_s": runs[k]} for k, v in secs.items()]
    report("train_cuda", rows, [("what", "<14"), ("epoch_s", ".3f"), ("samples_per_s", ",.0f"), ("vs_pytorch", ".2f")],
           {"batch_size": B, "steps": n_steps, "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="128,1024,8192,65536")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--peak-gbs", type=float, default=None, help="the card's memory bandwidth, if not read from it")
    args = p.parse_args(argv)
    cuda = get_backend("cuda")
    kernels(cuda, args, args.peak_gbs or peak_bandwidth_gbs(cuda.xp))
    train(cuda, args)


if __name__ == "__main__":
    main()
