"""Differentiable losses on projections (L1, SSIM, Fourier amplitude), 3-D TV and the scattering normalization γ."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _gauss_kernel(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim2d(pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor | float) -> torch.Tensor:
    """Mean SSIM (Gaussian window 11 px, σ 1.5 px, Wang et al. constants) of image batches ``(B, H, W)``.

    ``data_range`` is a scalar or a per-image tensor ``(B,)``.
    """
    g = _gauss_kernel(device=pred.device, dtype=pred.dtype)
    kx, ky = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx), ky)

    x, y = pred[:, None], ref[:, None]
    dr = torch.as_tensor(data_range, dtype=pred.dtype, device=pred.device).reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def fourier_amplitude_loss(pred: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``mean | |FFT2(pred)| - |FFT2(ref)| |`` over frequencies and images (orthonormal FFT, so on the pixel scale).

    The amplitude spectrum ignores where a feature is and penalises the streaks and the anisotropic blur of the
    missing wedge, which change the power at high frequency; ``eps`` keeps the gradient finite at zero amplitude.
    """
    fp = torch.fft.rfft2(pred, norm="ortho")
    fr = torch.fft.rfft2(ref, norm="ortho")
    ap = torch.sqrt(fp.real**2 + fp.imag**2 + eps)
    ar = torch.sqrt(fr.real**2 + fr.imag**2 + eps)
    return (ap - ar).abs().mean()


def tv3d(volume: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute finite difference) of a volume ``(Z, Y, X)``."""
    return (
        (volume[1:] - volume[:-1]).abs().mean()
        + (volume[:, 1:] - volume[:, :-1]).abs().mean()
        + (volume[:, :, 1:] - volume[:, :, :-1]).abs().mean()
    )


def closed_form_gamma(tilts: torch.Tensor) -> torch.Tensor:
    """Scattering view normalization γ ``(C,)`` from the projection totals of tilts ``(C, H, W)`` (background removed).

    For a parallel beam every projection integrates to ``∫ρ dV``, so the total ``T_v = Σ_pixels I_v`` must be the same
    for every view; ``γ_v = T_v / exp(mean_v log T_v)`` is the factor by which view ``v`` is brighter than the
    geometric mean of the series (thickness-dependent channeling, detector gain drift). The model predicts
    ``I_v ≈ γ_v · P_v(ρ)``, so ρ is fitted to the gain-free, mutually consistent projections. ``Π γ_v = 1``.
    """
    totals = tilts.flatten(1).sum(1).clamp_min(1e-12)
    logt = torch.log(totals)
    return torch.exp(logt - logt.mean())
