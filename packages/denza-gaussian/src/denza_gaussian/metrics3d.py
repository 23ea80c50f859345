"""Volume quality metrics (3-D PSNR and SSIM) for the tomography benchmark."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def psnr3d(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR (dB) of a volume against a reference."""
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(ref, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim3d(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean 3-D SSIM with an isotropic Gaussian window (σ voxels, truncated at 3.5σ), K1 = 0.01, K2 = 0.03."""
    a, b = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = lambda v: ndimage.gaussian_filter(v, sigma, truncate=3.5, mode="reflect")  # noqa: E731
    ma, mb = f(a), f(b)
    va, vb, cov = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def normalized(volume: np.ndarray) -> np.ndarray:
    """Clip a reconstruction to the [0, 1] range of the phantoms (negative FBP ripples and overshoot count as 0/1)."""
    return np.clip(np.asarray(volume, np.float32), 0.0, 1.0)
