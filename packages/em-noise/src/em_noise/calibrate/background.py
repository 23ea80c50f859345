"""STEM background level and range from the image's smooth envelope.

HAADF adds the background to a clean image whose dark level is taken as 0, so its lower envelope is
``offset + amplitude · E(f)``; BF subtracts it from a vacuum level taken as ``BF_VACUUM_LEVEL``, so its upper
envelope is ``V − offset − amplitude · E(f)`` (``E`` the envelope's own smoothing of the Perlin field ``f``).
The envelope's percentile range is divided by the range ``E`` keeps of a unit field drawn from the synthesis
model, and the offset follows from its low (HAADF) or high (BF) percentile.  BF offset and vacuum level cannot
be told apart from one image.  One realization of the field has its own range (on 256² px its coarsest octave
holds only a few cells), which scatters around the mean: that scatter over reference fields of the image's shape
is the standard error reported (a lower bound: the envelope's own noise comes on top).
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


def estimate(x: np.ndarray, mode: str, usable: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """(values, standard errors) of ``background.offset`` and ``background.amplitude`` of a STEM image on the model
    scale."""
    smooth = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    env = envelope(smooth, mode)
    mask = usable if usable.mean() > 0.25 else interior(x.shape)
    lo, hi = np.percentile(env[mask], PERCENTILES)
    ref = envelope_factors(x.shape)
    amplitude = (hi - lo) / ref["range"]
    offset = lo - ref["low"] * amplitude if mode == "haadf" else BF_VACUUM_LEVEL - hi - ref["low"] * amplitude
    values = {"background.offset": float(offset), "background.amplitude": float(amplitude)}
    errors = {"background.offset": float(ref["offset_sd"] * amplitude),
              "background.amplitude": float(ref["range_cv"] * amplitude)}
    return values, errors


def envelope(smooth: np.ndarray, mode: str, size_px: int = ENVELOPE_PX) -> np.ndarray:
    """Smooth lower (HAADF) or upper (BF) envelope of the image: the background plus the clean dark/bright level."""
    morph = ndimage.grey_opening if mode == "haadf" else ndimage.grey_closing
    return ndimage.gaussian_filter(morph(smooth, size=(size_px, size_px), mode="reflect"), size_px / 2, mode="reflect")


@functools.lru_cache(maxsize=8)
def envelope_factors(shape: tuple[int, int], n: int | None = None) -> dict[str, float]:
    """Over unit-amplitude background fields of ``shape`` (the synthesis model, fixed seed): the mean low
    percentile and percentile range of their lower envelope, the range's coefficient of variation and the sd of
    the offset the estimator would read from them (the field's own scatter: the envelope smooths away the finest
    octaves, and one field's range is not the mean range)."""
    if n is None:  # 48 fields up to 512² px, fewer (at least 8) for larger images
        n = int(np.clip(48 * 512**2 / (shape[0] * shape[1]), 8, 48))
    rng = np.random.default_rng(20240613)
    model = BackgroundNoise(offset=0.0, amplitude=1.0)
    inner = interior(shape)
    lows, ranges = [], []
    for _ in range(n):
        field = ndimage.gaussian_filter(model.sample(shape, rng), 2.0, mode="reflect")
        lo, hi = np.percentile(envelope(field, "haadf")[inner], PERCENTILES)
        lows.append(lo)
        ranges.append(hi - lo)
    lows, ranges = np.array(lows), np.array(ranges)
    offsets = lows - lows.mean() * ranges / ranges.mean()  # the offset read from each field (true offset 0)
    return {"low": float(lows.mean()), "range": float(ranges.mean()),
            "range_cv": float(ranges.std(ddof=1) / ranges.mean()), "offset_sd": float(offsets.std(ddof=1))}
