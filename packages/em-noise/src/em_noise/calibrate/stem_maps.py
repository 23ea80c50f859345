"""Model maps of the STEM estimator: filtered scan-noise variances, and the noise-free signal's gradient."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from em_noise import noise as nz


def scan_maps(r: np.ndarray, row_kernel: np.ndarray | None, col_weights: np.ndarray | None,
              chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Variance per unit knot variance, at every pixel, of the scan noise's two components after filtering.

    The scan noise is ``(1 − r) s0 z0 + r s80 z1`` with ``z0, z1`` independent unit-knot splines per row; after
    ``row_kernel`` along x (None: no filter) and (optionally) a column filter with squared weights ``col_weights``
    along y, its variance is ``s0² V0 + s80² V1``.  Exact (rows are independent), through the spline basis.
    """
    h, w = r.shape
    basis = nz.spline_basis(w)
    maps = []
    for weight in (1.0 - r, r):
        out = np.empty((h, w))
        for y0 in range(0, h, chunk):
            f = weight[y0:y0 + chunk, :, None] * basis[None, :, :]
            if row_kernel is not None:
                f = ndimage.correlate1d(f, row_kernel, axis=1, mode="reflect")
            out[y0:y0 + chunk] = (f**2).sum(-1)
        if col_weights is not None:
            out = ndimage.correlate1d(out, col_weights, axis=0, mode="reflect")
        maps.append(out)
    return maps[0], maps[1]


def blend_weight(g: np.ndarray) -> np.ndarray:
    """The synthesis' scan blend weight ``r = clip(g / 80, 0, 1)``."""
    return np.clip(g / nz.SCAN_G_MAX, 0.0, 1.0)


def smooth_gradient(x: np.ndarray) -> np.ndarray:
    """Sobel magnitude of the image blurred by σ 2 px (the first pass' gradient: robust, flattens sharp columns)."""
    return nz.sobel_magnitude(ndimage.gaussian_filter(x, 2.0, mode="reflect"))


def wiener_gradient(x: np.ndarray, sd_line: tuple[float, float], scan_sd: tuple[float, float], r: np.ndarray,
                    extra_var: float = 0.0, smooth_bins: float = 2.0) -> np.ndarray:
    """Sobel magnitude of the noise-free signal (clean + background), estimated by a Wiener filter.

    The filter's noise power spectrum is that of the fitted model: flat for the pointwise part (sd
    ``K I + B`` = ``sd_line``, plus ``extra_var``), the spline spectrum along x (flat along y) for the scan part
    (knot sds ``scan_sd`` = (s0, s80) blended by ``r``); the signal power is the smoothed periodogram minus it.
    Lattice reflections stand far above that floor and stay sharp, unlike with a Gaussian blur.  The noise the
    filter lets through adds a known mean to g² (its filtered Sobel power times its variance: local for the
    pointwise part, the image mean for the scan part), which is subtracted so that flat regions keep g ≈ 0.
    """
    h, w = x.shape
    mean = float(x.mean())
    spec = np.fft.fft2(x - mean)
    power = ndimage.gaussian_filter(np.abs(spec) ** 2 / (h * w), smooth_bins, mode="wrap")
    sig = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    var_pw_map = np.maximum(sd_line[0] * sig + sd_line[1], 0.0) ** 2 + extra_var
    s0, s80 = scan_sd
    var_pw, var_scan = float(var_pw_map.mean()), float(np.mean((1.0 - r) ** 2 * s0**2 + r**2 * s80**2))
    spline_psd = (np.abs(np.fft.fft(nz.spline_basis(w), axis=0)) ** 2).sum(axis=1) / w  # per unit knot variance
    gain = np.maximum(power - (var_pw + var_scan * spline_psd[None, :]), 0.0) / np.maximum(power, 1e-12)
    g2_noise = (sobel_noise_power(gain**2 * np.ones_like(power)) * var_pw_map
                + sobel_noise_power(gain**2 * spline_psd[None, :]) * var_scan)
    clean = np.real(np.fft.ifft2(gain * spec)) + mean
    return np.sqrt(np.maximum(nz.sobel_magnitude(clean) ** 2 - g2_noise, 0.0))


def sobel_noise_power(psd: np.ndarray) -> float:
    """Mean squared Sobel magnitude (``sobel_x² + sobel_y²``) of stationary noise with power spectrum ``psd``
    (per-pixel variance = mean of ``psd``): what the noise left in an estimate adds to g² on average."""
    h, w = psd.shape
    delta = np.zeros((h, w))
    delta[0, 0] = 1.0
    tx = np.abs(np.fft.fft2(ndimage.sobel(delta, axis=1, mode="wrap"))) ** 2
    ty = np.abs(np.fft.fft2(ndimage.sobel(delta, axis=0, mode="wrap"))) ** 2
    return float(np.mean(psd * (tx + ty)))
