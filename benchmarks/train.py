"""Samples per second over one Fashion-MNIST epoch: numpy, numba, PyTorch CPU, and two floors.

    python -m benchmarks.train [--batch-size 128] [--threads 2] [--repeats 3]

Same model (784-400-20), batch, data and thread count for all; PyTorch 2.13 (CPU) runs its example
VAE with Adam, when it is installed. Each contender runs in its own child process (:func:`in_child`
says why). The contenders take turns, one epoch each, for ``--repeats`` rounds; each one's median
epoch and its best are reported, with the ratios of each (see :func:`rounds` for why both). The
GEMM-only floor times the step's eleven BLAS calls alone (4 forward; 4 weight-gradient and 3 input-
gradient GEMMs backward), with tinyvae's buffers and layouts; the GEMM + Adam floor adds numba's
Adam update of the flat buffers to each step, the one part of the step bound by memory bandwidth.
Writes ``train_<vendor>-<kernels>.json`` into ``--out`` (``benchmarks/results`` with ``--publish``),
named after the CPU's maker (``intel``, ``amd``) and the kernels NumPy's OpenBLAS runs (``haswell``:
AVX2, ``skylakex``: AVX-512; ``OPENBLAS_CORETYPE`` picks them, see docs/performance.md), so each
machine's record stands beside the others'.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import math
import multiprocessing
import os
import statistics
import time

import numpy as np

from benchmarks.common import add_output_args, cpu_vendor, out_dir, report
from tinyvae.backends.blas import numpy_blas
from tinyvae.io.datasets import PIXEL_SCALE, Dataset, Split, load_dataset, pixels_to_unit
from tinyvae.models import VAE, VAEConfig
from tinyvae.models.build import model_for
from tinyvae.nn.optim import Adam


def tinyvae_epoch(data, backend, batch_size, seed=1, config=VAEConfig()):
    """A function running one training epoch of tinyvae's model of ``config`` (the class the training command
    builds for it: :func:`tinyvae.models.build.model_for`) on ``backend`` (compiled and warmed), its batches
    gathered as the trainer does (the ``gather_pixels`` op on the uint8 pixels)."""
    model = model_for(config, backend, seed)
    opt = Adam(model.params, model.backend)
    X = data.train.data
    model.train_step(pixels_to_unit(X[:batch_size]), opt)  # compile (numba) and make buffers outside the clock
    perm = np.random.default_rng(seed).permutation(len(X))
    x = np.empty((batch_size, X.shape[1]), np.float32)
    model.backend.gather_pixels(X, perm[:batch_size], PIXEL_SCALE, x)  # compile it too

    def epoch():
        for i in range(0, len(X) - batch_size + 1, batch_size):
            rows = perm[i:i + batch_size]
            model.backend.gather_pixels(X, rows, PIXEL_SCALE, x, perm[i + batch_size:i + 2 * batch_size])
            model.train_step(x, opt, step=i // batch_size, rows=rows)  # eps drawn for these examples

    epoch.model = model  # what it trains, for the tests
    return epoch


def gemm_floor_epoch(data, batch_size, adam=False):
    """A function running the same number of steps doing only the step's GEMMs
    (tinyvae's buffers and layouts), and with ``adam`` numba's Adam update too.
    The GEMMs are the numpy backend's (``numpy.matmul``, OpenBLAS's own threads), or with ``adam`` the
    numba backend's (:func:`tinyvae.backends.numba_gemm.matmul`: a slab per Numba thread; a layer's weight
    and input gradients side by side, :func:`~tinyvae.backends.numba_gemm.matmul_pair`, as the layers call it).

    One real forward and backward first, so every buffer holds the values of a
    training step (uninitialised memory may hold NaNs or subnormals, which
    slow some GEMM kernels down). Adam applies that one gradient again and
    again, so every epoch starts from the same weights.
    """
    model = VAE(backend="numba" if adam else "numpy", seed=1)
    opt = Adam(model.params, model.backend) if adam else None
    x = pixels_to_unit(data.train.data[:batch_size])
    ws = model.forward(x)
    model.backward(ws, x, 1.0)
    start = model.params.data.copy()
    enc, dec = model.encoder.layers, model.decoder.layers
    mm, pair = model.backend.matmul, model.backend.matmul_pair

    def epoch():
        model.params.data[...] = start
        for _ in range(len(data.train.data) // batch_size):
            mm(x, enc[0].W.T, ws.enc_outs[0])
            mm(ws.enc_outs[0], enc[1].W.T, ws.enc_outs[1])
            mm(ws.z, dec[0].W.T, ws.dec_outs[0])
            mm(ws.dec_outs[0], dec[1].W.T, ws.dec_outs[1])
            pair(ws.decoder_dout.T, ws.dec_outs[0], dec[1].gW, ws.decoder_dout, dec[1].W, ws.dec_douts[0])
            pair(ws.dec_douts[0].T, ws.z, dec[0].gW, ws.dec_douts[0], dec[0].W, ws.dz)
            pair(ws.enc_douts[1].T, ws.enc_outs[0], enc[1].gW, ws.enc_douts[1], enc[1].W, ws.enc_douts[0])
            mm(ws.enc_douts[0].T, x, enc[0].gW)
            if opt is not None:
                opt.step(model.grad)

    return epoch


def torch_epoch_here(data, batch_size, threads, seed=1, conv=None, iwae_k=None, flush_denormal=False):
    """A function running one epoch of PyTorch's example VAE (or, with ``conv`` = ``(channels,
    latent_dim)``, tinyvae's conv VAE as :class:`TorchConvVAE`, on its images channels-first; with ``iwae_k``,
    the example's networks on the importance-weighted bound of that many draws) with Adam, in this process;
    with ``flush_denormal``, PyTorch flushes subnormal floats to zero (``torch.set_flush_denormal``)."""
    import torch

    from benchmarks.torch_reference import (TorchConvVAE, TorchVAE, channels_first, iwae_loss, loss_of,
                                            loss_of_logits)

    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    torch.manual_seed(seed)
    model = TorchConvVAE(data.shape, *conv) if conv else TorchVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    X = torch.from_numpy(np.ascontiguousarray(channels_first(data.train.x, data.shape)))
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(X)))

    def step(x):
        opt.zero_grad()
        loss = iwae_loss(model, x, iwae_k) if iwae_k else loss_of_logits(model, x) if conv else loss_of(model, x)
        loss.backward()
        opt.step()

    step(X[:batch_size])

    def epoch():
        for i in range(0, len(X) - batch_size + 1, batch_size):
            step(X[perm[i:i + batch_size]])

    return epoch


def fashion_mnist(contender, *args, **kwargs):
    """``contender(data, *args, **kwargs)`` with Fashion-MNIST loaded (for :func:`in_child`)."""
    return contender(load_dataset("fashion-mnist"), *args, **kwargs)


def binarized_fashion_mnist(contender, *args, **kwargs):
    """:func:`fashion_mnist` with each training pixel drawn once to 0 or 255 with probability its value / 255 (a
    static binarisation, the same for every contender; seeded)."""
    data = load_dataset("fashion-mnist")
    pixels = data.train.data
    drawn = np.random.default_rng(0).random(pixels.shape, dtype=np.float32) * 255 < pixels
    data = Dataset(name=data.name, shape=data.shape, source=f"{data.source}, binarised",
                   test=data.test, train=Split(np.where(drawn, 255, 0).astype(np.uint8)))
    return contender(data, *args, **kwargs)


def random_images(shape: tuple[int, int, int], n: int, contender, *args, **kwargs):
    """``contender(data, *args, **kwargs)`` with ``n`` images of ``shape`` (C, H, W) of random uint8 pixels (for
    :func:`in_child`: what an epoch costs does not depend on what the pixels show)."""
    pixels = np.random.default_rng(0).integers(0, 256, (n, math.prod(shape)), dtype=np.uint8)
    data = Dataset(name="random", shape=tuple(shape), source="random pixels", test=Split(pixels[:1]),
                   train=Split(pixels))
    return contender(data, *args, **kwargs)


def _child(conn, make, args, kwargs):
    """Child process: ``epoch = make(*args, **kwargs)``, then one timed epoch per request."""
    epoch = make(*args, **kwargs)
    conn.send("ready")
    while conn.recv() == "epoch":
        t0 = time.perf_counter()
        epoch()
        conn.send(time.perf_counter() - t0)


def in_child(make, *args, **kwargs):
    """A function asking a child process for one timed epoch of ``make(*args, **kwargs)``'s epoch function.

    Each contender runs in its own process, waiting on a pipe while the others run, so no thread pool
    of one is left spinning on the cores of the next: NumPy's OpenBLAS threads slowed PyTorch's epoch
    from 2.2 to 11.1 s in one process, and Numba's threads slowed OpenBLAS's own two-thread GEMMs by
    about half (the GEMM floor 1.57 against 0.96 s an epoch).
    """
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=_child, args=(child_conn, make, args, kwargs), daemon=True)
    child.start()
    child_conn.close()  # the child's end: a child that dies then ends recv() with EOFError, not a hang
    if conn.recv() != "ready":
        raise RuntimeError(f"the benchmark's child process for {make.__name__} did not start")
    atexit.register(lambda: (conn.send("stop"), child.join()))

    def epoch():
        conn.send("epoch")
        return conn.recv()

    return epoch


def torch_epoch(batch_size, threads, seed=1, conv=None, data=(fashion_mnist,), iwae_k=None, flush_denormal=False):
    """:func:`torch_epoch_here` in a child process (:func:`in_child`) on ``data`` (a loader of this module and
    its first arguments: ``(fashion_mnist,)``, or ``(random_images, shape, n)``), or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    return in_child(*data, torch_epoch_here, batch_size, threads, seed, conv, iwae_k, flush_denormal)


def rounds(contenders: dict, repeats: int) -> dict[str, list[float]]:
    """Epoch times of each contender, run in turn, one epoch each, ``repeats`` rounds.

    Round-robin rather than one contender's repeats after another's: this
    machine is shared and runs through slow phases of seconds to minutes (the
    same numba epoch took 1.05 s and 1.45 s minutes apart), which then fall on
    every contender alike instead of on one. They do not fall alike on all
    work: a slow phase stretched the numba epoch by 35 %, its GEMMs by 20 % and
    its small L2-resident kernels 2.5x (bias + ReLU: 10 ms per epoch against
    25 ms). The median describes the run as it was; the best epoch (as
    ``timeit`` reports) describes the machine when nobody else loads it.
    """
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, epoch in contenders.items():
            t0 = time.perf_counter()
            took = epoch()
            times[name].append(took if took is not None else time.perf_counter() - t0)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3, help="rounds; each contender runs one epoch per round")
    add_output_args(p)
    args = p.parse_args(argv)
    data = load_dataset("fashion-mnist")
    n = (len(data.train.data) // args.batch_size) * args.batch_size
    contenders = {"pytorch": torch_epoch(args.batch_size, args.threads),
                  "numpy": in_child(fashion_mnist, tinyvae_epoch, "numpy", args.batch_size),
                  "numba": in_child(fashion_mnist, tinyvae_epoch, "numba", args.batch_size),
                  "gemm_adam_floor": in_child(fashion_mnist, gemm_floor_epoch, args.batch_size, adam=True),
                  "gemm_floor": in_child(fashion_mnist, gemm_floor_epoch, args.batch_size)}
    runs = rounds({k: f for k, f in contenders.items() if f is not None}, args.repeats)

    def ratios(secs: dict, k: str, prefix: str) -> dict:
        v = secs[k]
        return {f"{prefix}epoch_s": v, f"{prefix}vs_pytorch": v / secs["pytorch"] if "pytorch" in secs else None,
                f"{prefix}vs_gemm_floor": v / secs["gemm_floor"]}

    median = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    rows = [{"what": k, **ratios(median, k, ""), "samples_per_s": n / median[k], **ratios(best, k, "best_"),
             "epochs_s": runs[k]} for k in runs]
    kernels = (numpy_blas() or {}).get("architecture")
    name = f"train_{cpu_vendor()}" + (f"-{kernels.lower()}" if kernels else "")
    report(name, rows, [("what", "<"), ("epoch_s", ".2f"), ("samples_per_s", ",.0f"),
                        ("vs_pytorch", ".2f"), ("vs_gemm_floor", ".2f"), ("best_epoch_s", ".2f"),
                        ("best_vs_pytorch", ".2f"), ("best_vs_gemm_floor", ".2f")],
           {"batch_size": args.batch_size, "threads": args.threads, "samples": n, "repeats": args.repeats},
           out_dir(args))


if __name__ == "__main__":
    main()
