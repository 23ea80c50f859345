"""The internal scale a calibration fits on, and what an image's values say about its read-out.

The noise models live on a 0–255 scale (their constants — the scan std's saturation at a Sobel gradient of 80,
the 8-bit detector — are in those units).  An image already on it is fitted as it is; any other is mapped
affinely onto it first and the map is reported (``params.intensity``: ``image = offset + scale · model``), so
that the same frame at any gain and offset gives the same internal image and the same noise in its own units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from em_noise.params import Intensity

STEM_TARGET = (8.0, 247.0)  # a STEM image's 0.1st / 99.9th percentiles are mapped here (an 8-bit frame's span)
HRTEM_MEAN = 128.0  # an HRTEM image's mean is mapped here, zero kept (shot noise counts from zero intensity)
PERCENTILES = (0.1, 99.9)
MIN_SPAN = 32.0  # an image on 0–255 spanning less than this is mapped too


@dataclass(frozen=True)
class Readout:
    """Saturation levels (None: none seen) and quantization step (0: continuous), in the image's units."""

    low: float | None
    high: float | None
    step: float

    def on_model_scale(self, intensity: Intensity) -> Readout:
        def conv(v: float | None) -> float | None:
            return None if v is None else float(intensity.to_model(v))
        return Readout(conv(self.low), conv(self.high), self.step / intensity.scale)


def readout(x: np.ndarray) -> Readout:
    """Saturation: the extreme value is held by ≥ 3 pixels and ≥ twice as many as the next value present.
    Quantization: every value is a multiple of the smallest gap between distinct values (from the minimum)."""
    values, counts = np.unique(x, return_counts=True)
    if len(values) < 3:
        return Readout(None, None, 0.0)

    def saturated(c_ext: int, c_next: int) -> bool:
        return c_ext >= 3 and c_ext >= 2 * c_next

    low = float(values[0]) if saturated(counts[0], counts[1]) else None
    high = float(values[-1]) if saturated(counts[-1], counts[-2]) else None
    step = 0.0
    if len(values) <= x.size // 4:
        gap = float(np.diff(values).min())
        k = (values - values[0]) / gap
        if gap > 0 and np.all(np.abs(k - np.round(k)) < 1e-3):
            step = gap
    return Readout(low, high, step)


def choose_scale(x: np.ndarray, mode: str) -> tuple[Intensity, str]:
    """(map from the model scale to the image's units, the rule used)."""
    lo, hi = (float(v) for v in np.percentile(x, PERCENTILES))
    if mode == "hrtem":
        mean = float(x.mean())
        if 64.0 <= mean <= 192.0:
            return Intensity(scale=1.0, offset=0.0), "as is (image mean on the model's 0–255 scale)"
        if mean > 0:
            return Intensity(scale=mean / HRTEM_MEAN), f"mean mapped to {HRTEM_MEAN:g}, zero kept"
        sd = float(x.std())
        return (Intensity(scale=sd / 32.0, offset=mean - HRTEM_MEAN * sd / 32.0),
                f"mean mapped to {HRTEM_MEAN:g}, std to 32 (mean not positive)")
    if x.min() >= 0.0 and x.max() <= 255.0 and hi - lo >= MIN_SPAN:
        return Intensity(scale=1.0, offset=0.0), "as is (image on the model's 0–255 scale)"
    if hi - lo <= 0:
        lo, hi = float(x.min()), float(x.max())
    t_lo, t_hi = STEM_TARGET
    scale = (hi - lo) / (t_hi - t_lo)
    return (Intensity(scale=scale, offset=lo - scale * t_lo),
            f"{PERCENTILES[0]:g}th–{PERCENTILES[1]:g}th percentiles mapped to {t_lo:g}–{t_hi:g}")
