"""Noise-free image formation from atomic columns: HAADF/BF STEM (incoherent Gaussian columns) and HRTEM
(weak-phase object through a contrast transfer function).  Positions in px, sampling in Å/px, intensities 0–255."""
from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy.special import ndtr


def render_gaussians(xy: np.ndarray, weights: np.ndarray, shape: tuple[int, int], sigma_px: float,
                     truncate: float = 3.5) -> np.ndarray:
    """Sum of pixel-integrated isotropic Gaussians, peak ``weights`` (a centred spot's pixel value), float32 (H, W).

    Each spot is splatted into a ``(2r+1)²`` window (separable erf profiles, one ``bincount``), so the cost is
    O(N r²), independent of the image size.  ``xy`` is (N, 2) x/y in px with pixel centres at integer coordinates
    (x = column index, y = row index), pixel (i, j) covering [j-0.5, j+0.5) x [i-0.5, i+0.5).
    """
    h, w = shape
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    sigma = float(sigma_px)
    r = int(np.ceil(truncate * sigma + 0.5))  # window half-width (px) around the nearest pixel
    ix = np.floor(xy[:, 0] + 0.5).astype(np.int64)  # nearest pixel
    iy = np.floor(xy[:, 1] + 0.5).astype(np.int64)
    keep = (ix + r >= 0) & (ix - r < w) & (iy + r >= 0) & (iy - r < h) & (weights != 0)
    if not keep.any():
        return np.zeros(shape, np.float32)
    xy, weights, ix, iy = xy[keep], weights[keep], ix[keep], iy[keep]
    edges = np.arange(-r, r + 2) - 0.5  # pixel edges relative to the nearest pixel's centre
    norm = 1.0 / (ndtr(0.5 / sigma) - ndtr(-0.5 / sigma)) ** 2  # a spot centred on a pixel peaks at its weight
    # separable pixel-integrated profiles: differences of the normal CDF at the pixel edges, (N, 2r+1)
    gx = np.diff(ndtr((ix[:, None] + edges[None, :] - xy[:, :1]) / sigma), axis=1)
    gy = np.diff(ndtr((iy[:, None] + edges[None, :] - xy[:, 1:]) / sigma), axis=1) * (weights * norm)[:, None]
    vals = gy.astype(np.float32)[:, :, None] * gx.astype(np.float32)[:, None, :]
    pad = 2 * r + 1
    wp = w + 2 * pad
    d = np.arange(-r, r + 1)
    offsets = (d[:, None] * wp + d[None, :]).ravel()
    base = (iy + pad) * wp + (ix + pad)
    idx = base[:, None] + offsets[None, :]
    canvas = np.bincount(idx.ravel(), vals.ravel(), minlength=(h + 2 * pad) * wp)
    return canvas.reshape(h + 2 * pad, wp)[pad:pad + h, pad:pad + w].astype(np.float32)


def electron_wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength (Å) at accelerating voltage ``voltage_kV``."""
    v = voltage_kV * 1e3
    return float(12.2643 / np.sqrt(v * (1.0 + 0.97845e-6 * v)))


def ctf(shape: tuple[int, int], pixel_size_A: float, *, defocus_A: float, cs_mm: float, voltage_kV: float,
        aperture_inv_A: float, focal_spread_A: float, convergence_mrad: float) -> np.ndarray:
    """Coherent wave transfer function (complex, FFT layout) with aperture and partial-coherence envelopes.

    Aberration phase chi(k) = pi λ Δf k² + (pi/2) Cs λ³ k⁴ (Δf < 0 = underfocus; Scherzer Δf = -1.2 sqrt(Cs λ)).
    Temporal envelope exp(-(pi λ Δ k²)²/2) with focal spread Δ; spatial exp(-(pi α/λ)² (Δf λ k + Cs λ³ k³)²)
    for illumination semi-angle α; hard objective aperture at ``aperture_inv_A`` (1/Å).
    """
    lam = electron_wavelength_A(voltage_kV)
    cs = cs_mm * 1e7
    ky = sfft.fftfreq(shape[0], d=pixel_size_A)[:, None]
    kx = sfft.fftfreq(shape[1], d=pixel_size_A)[None, :]
    k2 = kx ** 2 + ky ** 2
    chi = np.pi * lam * defocus_A * k2 + 0.5 * np.pi * cs * lam ** 3 * k2 ** 2
    e_t = np.exp(-0.5 * (np.pi * lam * focal_spread_A) ** 2 * k2 ** 2)
    k = np.sqrt(k2)
    grad = defocus_A * lam * k + cs * lam ** 3 * k2 * k  # |∇chi| / (2 pi), Å
    alpha = convergence_mrad * 1e-3
    e_s = np.exp(-((np.pi * alpha / lam) ** 2) * grad ** 2)
    aperture = k2 <= aperture_inv_A ** 2
    return (aperture * e_t * e_s) * np.exp(-1j * chi)


def hrtem_intensity(potential: np.ndarray, phase_max_rad: float, transfer: np.ndarray) -> np.ndarray:
    """Intensity |IFFT(FFT(exp(i φ)) · H)|² of a phase object, φ = phase_max · potential (potential peak 1)."""
    wave = np.exp(1j * phase_max_rad * potential.astype(np.float64))
    img = sfft.ifft2(sfft.fft2(wave, workers=1) * transfer, workers=1)
    return (img.real ** 2 + img.imag ** 2).astype(np.float32)


def render_point_gaussians(xy: np.ndarray, weights: np.ndarray, sigmas_px: np.ndarray, shape: tuple[int, int],
                           truncate: float = 5.0) -> np.ndarray:
    """Sum of point-sampled Gaussians ``w · exp(−r² / 2σ²)``, one σ (px) per spot, float64 (H, W).

    The published SFIN generator draws atoms this way (Gaussian evaluated at pixel centres, not integrated over
    the pixel). Spots are grouped by σ and splatted into windows of ``truncate``·σ (the tail beyond is < 4e-6).
    Positions as in :func:`render_gaussians` (x = column, y = row, pixel centres at integers).
    """
    h, w = shape
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    sigmas = np.broadcast_to(np.asarray(sigmas_px, dtype=np.float64), weights.shape)
    canvas = np.zeros(h * w)
    for s in np.unique(sigmas):
        sel = (sigmas == s) & (weights != 0)
        if not sel.any() or not s > 0:
            continue
        r = int(np.ceil(truncate * s))
        d = np.arange(-r, r + 1)
        ix = np.round(xy[sel, 0]).astype(np.int64)
        iy = np.round(xy[sel, 1]).astype(np.int64)
        px = ix[:, None] + d[None, :]
        py = iy[:, None] + d[None, :]
        gx = np.exp(-((px - xy[sel, :1]) ** 2) / (2.0 * s * s)) * ((px >= 0) & (px < w))
        gy = np.exp(-((py - xy[sel, 1:]) ** 2) / (2.0 * s * s)) * ((py >= 0) & (py < h)) * weights[sel, None]
        idx = np.clip(py, 0, h - 1)[:, :, None] * w + np.clip(px, 0, w - 1)[:, None, :]
        canvas += np.bincount(idx.ravel(), (gy[:, :, None] * gx[:, None, :]).ravel(), minlength=h * w)
    return canvas.reshape(h, w)
