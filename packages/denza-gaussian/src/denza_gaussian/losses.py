"""Differentiable losses on projections (SSIM, Fourier amplitude) and the 3-D total variation of a volume."""
from __future__ import annotations

import functools

import torch


def _gauss_kernel(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, device: torch.device, dtype: torch.dtype, size: int = 11) -> torch.Tensor:
    """``(n - size + 1, n)`` banded matrix applying the SSIM window along one axis ('valid' convolution)."""
    g = _gauss_kernel(size, device=device, dtype=dtype)
    m = torch.zeros(n - size + 1, n, device=device, dtype=dtype)
    for i in range(size):
        m.diagonal(i).copy_(g[i].expand(n - size + 1))
    return m


def ssim_ref_stats(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and variance of fixed reference images ``(B, H, W)`` (computed once per fit for :func:`ssim2d`)."""
    with torch.no_grad():
        b, h, w = ref.shape
        gh, gw = _blur_matrix(h, ref.device, ref.dtype), _blur_matrix(w, ref.device, ref.dtype)
        my = gh @ ref @ gw.T
        return my, gh @ (ref * ref) @ gw.T - my * my


def ssim2d(pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor | float,
           ref_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean SSIM (Gaussian window 11 px, σ 1.5 px, 'valid' borders, Wang et al. constants) of image batches
    ``(B, H, W)``; ``data_range`` is a scalar or a per-image tensor ``(B,)``; ``ref_stats``: :func:`ssim_ref_stats`
    of ``ref`` when it is reused. The separable window is applied as two banded matrix products (much faster than a
    1-channel convolution on the CPU, backward included)."""
    b, h, w = pred.shape
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 px, got {h} x {w}")
    with torch.no_grad():
        gh, gw = _blur_matrix(h, pred.device, pred.dtype), _blur_matrix(w, pred.device, pred.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return gh @ t @ gw.T

    x, y = pred, ref
    dr = torch.as_tensor(data_range, dtype=pred.dtype, device=pred.device).reshape(-1, 1, 1)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    my, syy = ssim_ref_stats(y) if ref_stats is None else ref_stats
    mx = blur(x)
    sxx = blur(x * x) - mx * mx
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def fourier_amplitude(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``sqrt(|FFT2(images)|² + eps)`` (orthonormal real FFT over the last two axes)."""
    f = torch.fft.rfft2(images, norm="ortho")
    return torch.sqrt(f.real**2 + f.imag**2 + eps)


def fourier_amplitude_loss(pred: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8,
                           ref_amplitude: torch.Tensor | None = None) -> torch.Tensor:
    """``mean | |FFT2(pred)| - |FFT2(ref)| |`` over frequencies and images (orthonormal FFT, so on the pixel scale);
    ``ref_amplitude``: :func:`fourier_amplitude` of ``ref`` when it is reused.

    The amplitude spectrum ignores where a feature is and penalises the streaks and the anisotropic blur of the
    missing wedge, which change the power at high frequency; ``eps`` keeps the gradient finite at zero amplitude.
    """
    ar = fourier_amplitude(ref, eps) if ref_amplitude is None else ref_amplitude
    return (fourier_amplitude(pred, eps) - ar).abs().mean()


def tv3d(volume: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute finite difference) of a volume ``(Z, Y, X)``."""
    return (
        (volume[1:] - volume[:-1]).abs().mean()
        + (volume[:, 1:] - volume[:, :-1]).abs().mean()
        + (volume[:, :, 1:] - volume[:, :, :-1]).abs().mean()
    )

