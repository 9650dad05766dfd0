"""The cuda backend on its GPU: each fused kernel against the naive CuPy and the naive
NumPy expression it replaces, and one Fashion-MNIST epoch of the MLP and of the conv VAE
against PyTorch CUDA eager.

    python -m benchmarks.cuda [--batches 128,1024,8192,65536] [--repeats 50] [--epochs 3] [--out DIR]

Kernels: D = 784, K = 20, H = 400 and the 652,824 parameters of the 784-400-20 VAE
(the cases of :mod:`benchmarks.kernels`); median time over ``--repeats`` calls, each
timed to the device's synchronisation, the bytes each op must read and write once
over that time (GB/s), and that as a share of the card's device-to-device copy
bandwidth, measured in the same run (``of_copy``: a 1 GiB copy, read plus write
bytes over its median time). Epochs: the same model (the 784-400-20 VAE, then the
conv VAE of ``--arch conv`` as :class:`benchmarks.torch_reference.TorchConvVAE`),
batch, data (already on the GPU), Adam; the contenders take turns epoch by epoch,
and each one's median counts.
Writes ``kernels_cuda.json`` and ``train_cuda.json`` into ``--out``
(``benchmarks/results`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from benchmarks.common import add_output_args, median_time, out_dir, report
from benchmarks.kernels import cases, optimizer_cases
from benchmarks.train import rounds
from tinyvae.backends import get_backend
from tinyvae.io.datasets import PIXEL_SCALE, load_dataset
from tinyvae.models import VAE, VAEConfig
from tinyvae.nn.optim import Adam


def copy_bandwidth_gbs(cupy, nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """The card's device-to-device copy bandwidth in GB/s: ``nbytes`` read plus ``nbytes`` written by one
    copy, over the median time of ``repeats`` copies."""
    src = cupy.ones(nbytes // 4, cupy.float32)
    dst = cupy.empty_like(src)
    t = median_time(lambda: cupy.copyto(dst, src), repeats, sync=cupy.cuda.Device().synchronize)
    return 2 * nbytes / t / 1e9


def kernels(cuda, args, copy_gbs):
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
                     "GBps": nbytes / t_fused / 1e9, "of_copy": nbytes / t_fused / 1e9 / copy_gbs})
    report("kernels_cuda", rows, [("op", "<"), ("size", "<"), ("numpy_us", ".1f"), ("cupy_naive_us", ".1f"),
                                  ("cuda_us", ".1f"), ("vs_cupy", ".1f"), ("vs_numpy", ".1f"), ("GBps", ".0f"),
                                  ("of_copy", ".2f")],
           {"device": device_name(cupy), "copy_GBps": copy_gbs}, out_dir(args))


def device_name(cupy) -> str:
    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def epoch_of(step, n_steps, sync):
    """An epoch of ``n_steps`` calls of ``step(i)`` ending in ``sync()``, after one warm-up step outside the clock."""
    step(0)
    sync()

    def epoch():
        for i in range(n_steps):
            step(i)
        sync()

    return epoch


ARCHS = {  # what the epochs compare: tinyvae's name, its VAE config, PyTorch's name
    "mlp": ("tinyvae cuda", lambda image: VAEConfig(input_dim=image[0] * image[1]), "pytorch eager"),
    "conv": ("tinyvae cuda conv", lambda image: VAEConfig(input_dim=image[0] * image[1], hidden=(), arch="conv",
                                                          channels=(32, 64), data_shape=(1, *image)),
             "pytorch eager conv"),
}


def train(cuda, args):
    """An epoch at ``--batch-size`` of the MLP VAE and of the conv VAE, each against the same model in
    PyTorch CUDA eager, in turns."""
    cupy = cuda.xp
    data = load_dataset("fashion-mnist", args.data_dir)
    B = args.batch_size
    n_steps = len(data.train.data) // B
    X = cupy.asarray(data.train.data)  # uint8 rows, scaled batch by batch, as the trainer does
    perm = cupy.asarray(np.random.default_rng(1).permutation(len(data.train.data)))
    x = cupy.empty((B, X.shape[1]), cupy.float32)
    try:
        import torch

        from benchmarks.torch_reference import TorchConvVAE, TorchVAE, loss_of, loss_of_logits
    except ImportError:
        torch = None
    rows = []
    for arch, (ours_name, config, theirs_name) in ARCHS.items():
        model = VAE(config(data.image_shape), backend=cuda, seed=1)
        opt = Adam(model.params, model.backend)

        def ours(i, model=model, opt=opt):
            model.backend.gather_pixels(X, perm[i * B:(i + 1) * B], PIXEL_SCALE, x)
            model.train_step(x, opt, step=i, rows=perm[i * B:(i + 1) * B])  # eps drawn on the device

        contenders = {ours_name: epoch_of(ours, n_steps, cupy.cuda.Device().synchronize)}
        if torch is not None:
            torch.manual_seed(1)
            D = data.train.data.shape[1]
            net = (TorchConvVAE(data.shape) if arch == "conv" else TorchVAE(input_dim=D)).cuda()
            loss = loss_of_logits if arch == "conv" else loss_of
            topt = torch.optim.Adam(net.parameters(), lr=1e-3)
            TX, tperm = torch.from_numpy(data.train.x).cuda(), torch.as_tensor(cupy.asnumpy(perm)).cuda()

            def theirs(i, net=net, topt=topt, loss=loss):
                topt.zero_grad()
                loss(net, TX[tperm[i * B:(i + 1) * B]]).backward()
                topt.step()

            contenders[theirs_name] = epoch_of(theirs, n_steps, torch.cuda.synchronize)
        runs = rounds(contenders, args.epochs)
        secs = {k: statistics.median(v) for k, v in runs.items()}
        base = secs.get(theirs_name)
        rows += [{"what": k, "epoch_s": v, "samples_per_s": n_steps * B / v, "vs_pytorch": v / base if base else None,
                  "epochs_s": runs[k]} for k, v in secs.items()]
    report("train_cuda", rows, [("what", "<"), ("epoch_s", ".3f"), ("samples_per_s", ",.0f"), ("vs_pytorch", ".2f")],
           {"batch_size": B, "steps": n_steps, "device": device_name(cupy),
            "pytorch": "not installed" if torch is None else "eager, same data on the GPU"}, out_dir(args))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="128,1024,8192,65536", help="batch sizes of the kernel cases")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per kernel case")
    p.add_argument("--batch-size", type=int, default=128, help="batch of the training epochs")
    p.add_argument("--epochs", type=int, default=3, help="rounds; each contender runs one epoch per round")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: as the trainer)")
    add_output_args(p)
    args = p.parse_args(argv)
    cuda = get_backend("cuda")
    kernels(cuda, args, copy_bandwidth_gbs(cuda.xp))
    train(cuda, args)


if __name__ == "__main__":
    main()
