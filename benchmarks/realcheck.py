"""Checks of a restoration on a real frame without ground truth, shared by real_stem.py and real_hrtem.py.

All positions are px; images are 2-D float arrays of the same shape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from em_noise import metrics
from em_noise.scaling import robust_range
from em_noise.tiling import balanced_tile, tile_starts
from scipy.ndimage import gaussian_filter

LOW_K = 6  # periodogram bins around k = 0 always left out (background, scan drift)
MAX_PERIOD_PX = 64  # longer periods are not lattice (particle shapes, thickness)


def seam_lines(length: int, tile: int, overlap: int) -> list[int]:
    """Centres of the blended overlaps along one axis, as ``em_noise.tiling.predict_tiled`` places its tiles."""
    t = balanced_tile(length, tile, overlap)
    s = tile_starts(length, t, overlap)
    return [(a + t + b) // 2 for a, b in zip(s[:-1], s[1:])]


def seam_ratio(image: np.ndarray, tile: int, overlap: int, band: int | None = None) -> float:
    """Step of ``image`` across the tile-overlap centre lines over its typical step elsewhere (1 = no seam).

    The step at a line is the mean over the line of |mean of the ``band`` px after it − mean of the ``band`` px
    before it| (``band`` defaults to half the overlap, the width of the blend), so a smooth jump in level between
    two blended tiles counts as well as a sharp one; elsewhere is the median of the same over all other lines of
    that axis. NaN when the frame fits one tile.
    """
    band = max(1, overlap // 2) if band is None else int(band)
    num, den = [], []
    for axis in (0, 1):
        lines = [c for c in seam_lines(image.shape[axis], tile, overlap) if band <= c <= image.shape[axis] - band]
        if not lines:
            continue
        v = np.moveaxis(np.asarray(image, np.float64), axis, 0)
        cs = np.concatenate([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
        c = np.arange(band, v.shape[0] - band + 1)
        step = np.abs((cs[c + band] - cs[c]) - (cs[c] - cs[c - band])).mean(axis=1) / band
        at = np.isin(c, lines)
        num.append(step[at].mean())
        den.append(np.median(step[~at]))
    return float(np.mean(num) / np.mean(den)) if num else float("nan")


def gain_matched_residual(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x − (a y + c) with a, c the least-squares fit of y to x."""
    a, c = np.polyfit(y.ravel().astype(np.float64), x.ravel().astype(np.float64), 1)
    return (x - (a * y + c)).astype(np.float32)


def blur_matched_residual(x: np.ndarray, y: np.ndarray,
                          sigmas: tuple[float, ...] = tuple(np.arange(0.0, 4.01, 0.25))) -> tuple[float, np.ndarray]:
    """(σ px, x − (a G_σ∗y + c)): the output blurred by the Gaussian σ (of ``sigmas``) and gain that fit the input
    best (least squares). For a restoration whose target is sharper than the input (SFIN's σ-wide columns from
    2σ-wide ones) this residual, unlike the plain gain-matched one, holds no lattice when the output is right."""
    best = (np.inf, 0.0, x)
    for s in sigmas:
        r = gain_matched_residual(x, gaussian_filter(y, s) if s > 0 else y)
        e = float(np.mean(np.square(r, dtype=np.float64)))
        if e < best[0]:
            best = (e, float(s), r)
    return best[1], best[2]


def bragg_bins(image: np.ndarray, n: int = 20) -> np.ndarray:
    """(n, 2) row, column indices (fftshift order) of the strongest periodogram peaks outside the lowest bins (periods
    longer than ``MAX_PERIOD_PX``)."""
    v = image - gaussian_filter(image, MAX_PERIOD_PX / 4)  # the slow variations leak into the lowest lattice bins
    p = np.abs(np.fft.fftshift(np.fft.fft2(v))) ** 2
    h, w = p.shape
    yy, xx = np.mgrid[:h, :w]
    logp = np.log(p + 1e-12)
    low = max(LOW_K, min(h, w) / MAX_PERIOD_PX)
    logp[(yy - h // 2) ** 2 + (xx - w // 2) ** 2 < low**2] = logp.min()
    xy = metrics.find_peaks(logp, min_distance_px=3, threshold_rel=0.0, refine=False)[:n]
    return np.round(np.asarray(xy)[:, ::-1]).astype(int)


def strongest_period_px(image: np.ndarray) -> float:
    """Real-space period (px) of the strongest lattice reflection."""
    r, c = bragg_bins(image, 1)[0]
    h, w = image.shape
    return float(1.0 / np.hypot((r - h // 2) / h, (c - w // 2) / w))


def _bragg_mask(shape: tuple[int, int], bins: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, bool)
    h, w = shape
    for r, c in bins:
        mask[max(r - 1, 0):min(r + 2, h), max(c - 1, 0):min(c + 2, w)] = True
    return mask


def bragg_power_fraction(x: np.ndarray, residual: np.ndarray, bins: np.ndarray) -> float:
    """Power of ``residual`` over that of ``x`` at the 3 × 3 neighbourhoods of ``bins`` (the input's reflections)."""
    mask = _bragg_mask(x.shape, bins)
    fx = np.fft.fftshift(np.fft.fft2(x - x.mean()))
    fr = np.fft.fftshift(np.fft.fft2(residual - residual.mean()))
    return float(np.sum(np.abs(fr[mask]) ** 2) / np.sum(np.abs(fx[mask]) ** 2))


def blob_moments(image: np.ndarray, xy: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position (x, y px): the intensity-weighted centroid (x, y px) of the blob in a disc of ``radius`` px
    (intensity above the disc's 20th percentile) and the square root of the ratio of its principal second moments
    (1 for a round column, > 1 elongated); NaN for positions too close to the edge."""
    h, w = image.shape
    oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = oy**2 + ox**2 <= radius**2
    cen = np.full((len(xy), 2), np.nan)
    ratio = np.full(len(xy), np.nan)
    for i, (x, y) in enumerate(np.asarray(xy)):
        cy, cx = int(round(y)), int(round(x))
        if cy - radius < 0 or cx - radius < 0 or cy + radius >= h or cx + radius >= w:
            continue
        win = image[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        v = np.where(disc, win - np.percentile(win[disc], 20), 0.0).clip(0)
        s = v.sum()
        if s <= 0:
            continue
        my, mx = (v * oy).sum() / s, (v * ox).sum() / s
        cov = np.array([[(v * (oy - my) ** 2).sum(), (v * (oy - my) * (ox - mx)).sum()],
                        [(v * (oy - my) * (ox - mx)).sum(), (v * (ox - mx) ** 2).sum()]]) / s
        lo, hi = np.linalg.eigvalsh(cov)
        cen[i] = cx + mx, cy + my
        ratio[i] = np.sqrt(hi / lo) if lo > 0 else np.inf
    return cen, ratio


def montage(path: Path, panels: list[np.ndarray], crop: int = 512, zoom: int = 1) -> None:
    """8-bit PNG of the panels side by side (each its own 0.5–99.5 % range), the central ``crop`` px of each."""
    from em_noise.io import write_image

    tiles = []
    for p in panels:
        h, w = p.shape
        y0, x0 = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        c = p[y0:y0 + crop, x0:x0 + crop]
        lo, hi = robust_range(c, 0.5, 99.5)
        tiles.append(np.clip((c - lo) / max(hi - lo, 1e-12), 0, 1) * 255)
        tiles.append(np.full((c.shape[0], 4), 255.0))
    grid = np.concatenate(tiles[:-1], axis=1)
    if zoom > 1:
        grid = np.kron(grid, np.ones((zoom, zoom)))
    write_image(path, grid.astype(np.uint8), overwrite=True)
