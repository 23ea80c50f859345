"""Robust intensity scaling between arbitrary detector data and the networks' [0, 1] range."""
from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 0.1
HIGH_PERCENTILE = 99.9


def robust_range(x: np.ndarray, lo_pct: float = LOW_PERCENTILE, hi_pct: float = HIGH_PERCENTILE) -> tuple[float, float]:
    """Return (lo, hi) intensity percentiles of ``x``; ``hi > lo`` always (constant images get a unit span)."""
    lo, hi = np.percentile(np.asarray(x, dtype=np.float64), [lo_pct, hi_pct])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        lo, hi = float(np.min(x)), float(np.min(x)) + 1.0
    return float(lo), float(hi)


def normalize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Affinely map intensities so that ``lo -> 0`` and ``hi -> 1`` (no clipping), float32."""
    return ((np.asarray(x, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def denormalize(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalize`."""
    return (np.asarray(y, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(np.float32)
