"""FLOPs per pixel of a network and this machine's measured fp32 throughput: the floor a speed is compared to.

``flops_per_pixel(net)`` counts, with forward hooks on one (1, 1, S, S) pass, 2 FLOPs per multiply–add of every
convolution (``2 · Cin/groups · k² · Cout`` per output pixel), and ``5 N log₂ N`` real FLOPs per complex FFT of N
points (real FFTs counted as half); element-wise work (BN, ReLU, sigmoid, additions) is left out, so the floor is a
lower bound on the work. ``machine_gflops(threads)`` times a large fp32 matrix product (the best case for this CPU).
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn


def flops_per_pixel(net: nn.Module, size: int = 256, in_channels: int = 1) -> float:
    """Convolution + FFT FLOPs of one forward pass per input pixel (see module docstring)."""
    total = 0.0
    hooks = []

    def conv_hook(mod: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2.0 * (mod.in_channels // mod.groups) * k * out.shape[1] * out.shape[-2] * out.shape[-1] * out.shape[0]

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(m.register_forward_hook(conv_hook))
    fft_flops = 0.0
    orig = {name: getattr(torch.fft, name) for name in ("rfft2", "irfft2", "fft2", "ifft2", "rfftn", "irfftn")}

    def counted(name):
        fn = orig[name]

        def wrapper(x, *args, **kwargs):
            nonlocal fft_flops
            y = fn(x, *args, **kwargs)
            shape = (y if name.startswith("i") else x).shape
            n = shape[-1] * shape[-2]
            batch = math.prod(shape[:-2])
            fft_flops += batch * 5.0 * n * math.log2(max(n, 2)) * (0.5 if "r" in name else 1.0)
            return y

        return wrapper

    try:
        for name in orig:
            setattr(torch.fft, name, counted(name))
        with torch.no_grad():
            net.eval()(torch.zeros(1, in_channels, size, size))
    finally:
        for name, fn in orig.items():
            setattr(torch.fft, name, fn)
        for h in hooks:
            h.remove()
    return (total + fft_flops) / float(size * size)


def machine_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best-of ``repeats`` fp32 GFLOP/s of an n×n matrix product with ``threads`` torch threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return 2.0 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(old)
