"""Image-quality and atom-localization metrics (pure functions; numpy arrays or torch tensors in, floats out).

Images may be (H, W) or carry leading axes ((N, H, W), (B, 1, H, W)); PSNR and SSIM then average over the
leading axes (per-image values).  Positions are (N, 2) x, y in px (x = column index, y = row index).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_TRUNCATE = 3.5  # 11 x 11 window at sigma 1.5, as Wang et al. (2004)


def _np(x: Any) -> np.ndarray:
    """float64 numpy view of an array or (CPU/GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _images(x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    x, ref = _np(x), _np(ref)
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {ref.shape}")
    if x.ndim < 2:
        raise ValueError(f"images must be at least 2-D, got shape {x.shape}")
    return x.reshape((-1,) + x.shape[-2:]), ref.reshape((-1,) + ref.shape[-2:])


def mse(x: Any, ref: Any) -> float:
    """Mean squared error."""
    x, ref = _images(x, ref)
    return float(np.mean((x - ref) ** 2))


def psnr(x: Any, ref: Any, data_range: float) -> float:
    """Peak signal-to-noise ratio (dB) with explicit ``data_range``; mean over leading axes; inf if identical."""
    x, ref = _images(x, ref)
    m = np.mean((x - ref) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        vals = 10.0 * np.log10(float(data_range) ** 2 / m)
    return float(np.mean(vals))


def ssim(x: Any, ref: Any, data_range: float) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window σ = 1.5 px (11 x 11), K1 = 0.01, K2 = 0.03,
    population covariances, mean over the map without the 5-px border; mean over leading axes."""
    x, ref = _images(x, ref)
    c1 = (SSIM_K1 * float(data_range)) ** 2
    c2 = (SSIM_K2 * float(data_range)) ** 2
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    out = []
    for a, b in zip(x, ref):
        def filt(v: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(v, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

        mu_a, mu_b = filt(a), filt(b)
        va = filt(a * a) - mu_a ** 2
        vb = filt(b * b) - mu_b ** 2
        cov = filt(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
        if s.shape[0] > 2 * pad and s.shape[1] > 2 * pad:
            s = s[pad:-pad, pad:-pad]
        out.append(float(s.mean()))
    return float(np.mean(out))


def find_peaks(image: Any, min_distance_px: int = 3, threshold_rel: float = 0.2, threshold_abs: float | None = None,
               refine: bool = True, exclude_border_px: int = 0) -> np.ndarray:
    """Local maxima as (N, 2) float x, y px, strongest first.

    A peak is the maximum of its (2 ``min_distance_px`` + 1)² neighbourhood and above ``threshold_abs`` if given,
    else above ``min + threshold_rel · (max − min)``; flat-topped maxima give one peak (their centre).
    ``refine``: sub-pixel centroid of the 3 x 3 neighbourhood above its local minimum.
    """
    img = _np(image)
    if img.ndim != 2:
        raise ValueError(f"find_peaks needs a 2-D image, got shape {img.shape}")
    md = max(int(min_distance_px), 1)
    lo, hi = float(img.min()), float(img.max())
    thr = float(threshold_abs) if threshold_abs is not None else lo + float(threshold_rel) * (hi - lo)
    if hi <= lo:
        return np.zeros((0, 2))
    mx = ndimage.maximum_filter(img, size=2 * md + 1, mode="nearest")
    mask = (img == mx) & (img > thr)
    if exclude_border_px > 0:
        b = int(exclude_border_px)
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = False, False, False, False
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    yx = np.array(ndimage.center_of_mass(mask, lab, np.arange(1, n + 1)), dtype=np.float64).reshape(-1, 2)
    if refine:
        iy, ix = np.round(yx[:, 0]).astype(int), np.round(yx[:, 1]).astype(int)
        p = np.pad(img, 1, mode="edge")
        off = np.arange(-1, 2)
        win = p[(iy[:, None, None] + 1 + off[None, :, None]), (ix[:, None, None] + 1 + off[None, None, :])]
        w = win - win.min(axis=(1, 2), keepdims=True)
        tot = w.sum(axis=(1, 2))
        ok = tot > 0
        dy = (w.sum(2) * off).sum(1) / np.where(ok, tot, 1)
        dx = (w.sum(1) * off).sum(1) / np.where(ok, tot, 1)
        yx = np.where(ok[:, None], np.column_stack([iy + dy, ix + dx]), yx)
    order = np.argsort(-ndimage.map_coordinates(img, yx.T, order=1, mode="nearest"), kind="stable")
    return yx[order][:, ::-1].copy()


def match_positions(pred_xy: Any, true_xy: Any, max_dist_px: float) -> dict[str, float]:
    """One-to-one matching of predicted to true positions within ``max_dist_px`` (optimal assignment).

    Returns precision, recall, f1, rms_px (RMS distance of matched pairs, nan without matches), tp, fp, fn.
    With no predictions precision is 1; with no true positions recall is 1.
    """
    p = _np(pred_xy).reshape(-1, 2)
    t = _np(true_xy).reshape(-1, 2)
    dists: list[float] = []
    if len(p) and len(t):
        sd = cKDTree(p).sparse_distance_matrix(cKDTree(t), float(max_dist_px), output_type="ndarray")
        rows, cols, d = sd["i"].astype(np.int64), sd["j"].astype(np.int64), sd["v"]
        if len(d):
            n_p = len(p)
            graph = coo_matrix((np.ones(len(d)), (rows, cols + n_p)), shape=(n_p + len(t),) * 2)
            _, comp = connected_components(graph, directed=False)
            edge_comp = comp[rows]
            order = np.argsort(edge_comp, kind="stable")
            rows, cols, d, edge_comp = rows[order], cols[order], d[order], edge_comp[order]
            starts = np.flatnonzero(np.r_[True, edge_comp[1:] != edge_comp[:-1]])
            ends = np.r_[starts[1:], len(d)]
            for s, e in zip(starts, ends):
                if e - s == 1:
                    dists.append(float(d[s]))
                    continue
                ur, ri = np.unique(rows[s:e], return_inverse=True)
                uc, ci = np.unique(cols[s:e], return_inverse=True)
                big = 1e6 * (float(max_dist_px) + 1.0)
                cost = np.full((len(ur), len(uc)), big)
                cost[ri, ci] = d[s:e]
                a, b = linear_sum_assignment(cost)
                dists.extend(float(c) for c in cost[a, b] if c < big)
    tp = len(dists)
    fp, fn = len(p) - tp, len(t) - tp
    precision = tp / len(p) if len(p) else 1.0
    recall = tp / len(t) if len(t) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    rms = float(np.sqrt(np.mean(np.square(dists)))) if tp else float("nan")
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "rms_px": rms,
            "tp": int(tp), "fp": int(fp), "fn": int(fn)}


def binarized_iou(pred: Any, target: Any, threshold: float | None = None, clip_percent: float = 0.0) -> float:
    """IoU of the two maps binarized at half their range (``lo + 0.5 (hi − lo)`` per map, or ``threshold``).

    ``lo, hi`` are the map's min and max (the papers' metric) or, with ``clip_percent`` p > 0, its p-th and
    (100 − p)-th percentiles: a few extreme pixels (an overshoot, a bright outlier) then do not set the threshold
    of the whole map.  Both masks empty gives 1.0.
    """
    a, b = _np(pred), _np(target)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if not 0.0 <= clip_percent < 50.0:
        raise ValueError(f"clip_percent must be in [0, 50), got {clip_percent}")

    def binarize(v: np.ndarray) -> np.ndarray:
        if threshold is not None:
            return v > threshold
        lo, hi = (float(v.min()), float(v.max())) if clip_percent == 0 else \
            (float(x) for x in np.percentile(v, [clip_percent, 100.0 - clip_percent]))
        return v > lo + 0.5 * (hi - lo) if hi > lo else np.zeros(v.shape, bool)

    ma, mb = binarize(a), binarize(b)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 1.0
