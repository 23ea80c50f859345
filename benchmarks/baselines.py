"""Baselines of the benchmarks (benchmarks/*.py import it as ``baselines``): a U-Net of configurable width, its
training module, and classical filters.

Classical filters act on images in the networks' [0, 1] input scale (see :mod:`em_noise.scaling`). Their
free parameters (Gaussian σ, Wiener window, BM3D noise level) and an optional affine intensity map
(``gain * y + offset``, needed when the target has another intensity scale than the input, e.g. STEM
enhancement targets) are chosen on a validation set with :func:`fit_on_validation`, never on the test set.
``bm3d`` (a dev dependency) is imported only when :func:`bm3d_denoise` is called.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from em_noise.errors import EMInputError
from em_noise.training import RestorationModule
from scipy import ndimage, signal
from torch import nn

# ----------------------------------------------------------------------------------------------- U-Net


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Plain U-Net (Ronneberger et al. 2015): ``depth`` 2× down/up-samplings, ``width`` channels at full
    resolution doubling per level, skip concatenations, a 1×1 output conv; optional global input residual.

    Works on any H×W: the input is reflect-padded to a multiple of ``2**depth`` and the output cropped back.
    (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 32, depth: int = 3,
                 residual: bool = False):
        super().__init__()
        if width < 1 or depth < 0:
            raise ValueError("UNet needs width >= 1 and depth >= 0")
        if residual and in_channels != out_channels:
            raise ValueError("residual UNet needs in_channels == out_channels")
        self.depth, self.residual = depth, residual
        ch = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([_DoubleConv(in_channels, ch[0])]
                                 + [_DoubleConv(ch[i - 1], ch[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2) for i in range(depth, 0, -1))
        self.dec = nn.ModuleList(_DoubleConv(2 * ch[i - 1], ch[i - 1]) for i in range(depth, 0, -1))
        self.out = nn.Conv2d(ch[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        y = x
        if ph or pw:
            # reflect padding needs pad < size; fall back to replicate for tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            y = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, enc in enumerate(self.enc):
            y = enc(y if i == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            y = dec(torch.cat([up(y), skip], dim=1))
        y = self.out(y)[..., :h, :w]
        return y + x if self.residual else y


# ----------------------------------------------------------------------------------------------- classical filters


def gaussian_filter(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass, σ in px (reflect boundary); float32."""
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), float(sigma_px), mode="reflect")


def wiener(image: np.ndarray, size: int = 5, noise: float | None = None) -> np.ndarray:
    """Adaptive (local-statistics) Wiener filter with a ``size``×``size`` px window (scipy.signal.wiener); float32.

    ``noise``: noise variance; None -> the mean local variance (scipy's estimate).
    """
    img = np.asarray(image, dtype=np.float64)
    return signal.wiener(img, mysize=int(size), noise=noise).astype(np.float32)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Std of additive white noise by Immerkær's Laplacian-difference estimator (same units as ``image``)."""
    img = np.asarray(image, dtype=np.float64)
    if min(img.shape) < 3:
        return float(img.std())
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    conv = signal.convolve2d(img, k, mode="valid")
    h, w = img.shape
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def bm3d_denoise(image: np.ndarray, sigma: float | None = None, *, fast: bool = True) -> np.ndarray:
    """BM3D (the ``bm3d`` package, imported lazily); ``sigma``: noise std in image units, None -> estimated.

    ``fast``: hard-thresholding stage only (about twice as fast as the full two-stage BM3D).
    """
    try:
        import bm3d
    except ImportError:
        raise EMInputError(None, "BM3D baseline needs the 'bm3d' package (pip install bm3d)") from None
    img = np.asarray(image, dtype=np.float64)
    s = estimate_noise_sigma(img) if sigma is None else float(sigma)
    stage = bm3d.BM3DStages.HARD_THRESHOLDING if fast else bm3d.BM3DStages.ALL_STAGES
    return np.asarray(bm3d.bm3d(img, sigma_psd=max(s, 1e-6), stage_arg=stage), dtype=np.float32)


def bm3d_scaled(image: np.ndarray, factor: float) -> np.ndarray:
    """BM3D at ``factor`` times the estimated noise std (the level the benchmarks choose on their tuning sets)."""
    return bm3d_denoise(image, factor * estimate_noise_sigma(image))


# ----------------------------------------------------------------------------------------------- parameter choice


def fit_affine(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> tuple[float, float]:
    """Least-squares (gain, offset) with ``gain * pred + offset ≈ target`` pooled over all pixels."""
    p = np.concatenate([np.ravel(a) for a in preds]).astype(np.float64)
    t = np.concatenate([np.ravel(a) for a in targets]).astype(np.float64)
    var = p.var()
    gain = float(((p - p.mean()) * (t - t.mean())).mean() / var) if var > 0 else 0.0
    return gain, float(t.mean() - gain * p.mean())


def _psnr(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(ref, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def fit_on_validation(method: Callable[..., np.ndarray], grid: Sequence[dict], inputs: Sequence[np.ndarray],
                      targets: Sequence[np.ndarray], *, affine: bool = True, data_range: float = 1.0) -> dict:
    """Pick the keyword arguments in ``grid`` (and, if ``affine``, a gain/offset) maximising mean PSNR on a
    validation set. Returns ``{'kwargs', 'gain', 'offset', 'val_psnr'}``; apply with :func:`apply_fitted`."""
    if not grid:
        raise ValueError("empty parameter grid")
    best: dict | None = None
    for kw in grid:
        outs = [method(x, **kw) for x in inputs]
        gain, offset = fit_affine(outs, targets) if affine else (1.0, 0.0)
        score = float(np.mean([_psnr(gain * o + offset, t, data_range) for o, t in zip(outs, targets)]))
        if best is None or score > best["val_psnr"]:
            best = {"kwargs": dict(kw), "gain": gain, "offset": offset, "val_psnr": score}
    return best


def apply_fitted(method: Callable[..., np.ndarray], fitted: dict, image: np.ndarray) -> np.ndarray:
    """Apply ``method`` with the parameters chosen by :func:`fit_on_validation`; float32."""
    return (fitted["gain"] * method(image, **fitted["kwargs"]) + fitted["offset"]).astype(np.float32)


def gaussian_filter_best(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                         sigmas_px: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
                         affine: bool = True, data_range: float = 1.0) -> dict:
    """Gaussian σ (px) and intensity map with the best mean validation PSNR (see :func:`fit_on_validation`)."""
    return fit_on_validation(gaussian_filter, [{"sigma_px": s} for s in sigmas_px], inputs, targets,
                             affine=affine, data_range=data_range)


# ----------------------------------------------------------------------------------------------- trainable U-Net


class UNetModule(RestorationModule):
    """The U-Net baseline under the shared training recipe (:class:`em_noise.training.RestorationModule`)."""

    def __init__(self, width: int = 8, depth: int = 3, residual: bool = False, lr: float = 2e-4,
                 milestones: list[int] | None = None, gamma: float = 0.5, init_from: str | None = None):
        super().__init__(lr=lr, milestones=milestones, gamma=gamma, init_from=init_from)

    def build_net(self) -> nn.Module:
        h = self.hparams
        return UNet(width=h.width, depth=h.depth, residual=h.residual)
