"""STEM background level and range from the image's smooth envelope.

HAADF adds the background to a clean image whose dark level is taken as 0, so its lower envelope is
``offset + amplitude · E(f)``; BF subtracts it from a vacuum level taken as ``BF_VACUUM_LEVEL``, so its upper
envelope is ``V − offset − amplitude · E(f)`` (``E`` the envelope's own smoothing of the Perlin field ``f``).
The envelope's percentile range is divided by the range ``E`` keeps of a unit field drawn from the synthesis
model, and the offset follows from its low (HAADF) or high (BF) percentile.  BF offset and vacuum level cannot
be told apart from one image.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from em_noise.calibrate.common import interior
from em_noise.noise import BackgroundNoise

BF_VACUUM_LEVEL = 245.0  # assumed clean BF vacuum level (em_noise.synth draws 235–255; the published 255)
ENVELOPE_PX = 21
PERCENTILES = (0.5, 99.5)


def estimate(x: np.ndarray, mode: str, usable: np.ndarray) -> dict[str, float]:
    """``{"background.offset", "background.amplitude"}`` of a STEM image on the model scale."""
    smooth = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    env = envelope(smooth, mode)
    mask = usable if usable.mean() > 0.25 else interior(x.shape)
    lo, hi = np.percentile(env[mask], PERCENTILES)
    lo_frac, range_frac = envelope_factors(x.shape)
    amplitude = (hi - lo) / range_frac
    offset = lo - lo_frac * amplitude if mode == "haadf" else BF_VACUUM_LEVEL - hi - lo_frac * amplitude
    return {"background.offset": float(offset), "background.amplitude": float(amplitude)}


def envelope(smooth: np.ndarray, mode: str, size_px: int = ENVELOPE_PX) -> np.ndarray:
    """Smooth lower (HAADF) or upper (BF) envelope of the image: the background plus the clean dark/bright level."""
    morph = ndimage.grey_opening if mode == "haadf" else ndimage.grey_closing
    return ndimage.gaussian_filter(morph(smooth, size=(size_px, size_px), mode="reflect"), size_px / 2, mode="reflect")


@functools.lru_cache(maxsize=8)
def envelope_factors(shape: tuple[int, int], n: int = 8) -> tuple[float, float]:
    """Mean (low percentile, percentile range) of the lower envelope of a unit-amplitude background field
    (fields of the synthesis model, fixed seed): the envelope smooths away the finest octaves."""
    rng = np.random.default_rng(20240613)
    model = BackgroundNoise(offset=0.0, amplitude=1.0)
    inner = interior(shape)
    lows, ranges = [], []
    for _ in range(n):
        field = ndimage.gaussian_filter(model.sample(shape, rng), 2.0, mode="reflect")
        lo, hi = np.percentile(envelope(field, "haadf")[inner], PERCENTILES)
        lows.append(lo)
        ranges.append(hi - lo)
    return float(np.mean(lows)), float(np.mean(ranges))
