"""Aberration-free reference images of synthetic HRTEM samples, for ceilings of column localisation.

:func:`hrtem_reference` gives, for the sample that :func:`em_noise.synth.synthesize` makes from the same config and
seed, the projected potential seen through the magnitude of that sample's transfer function (aperture and
coherence envelopes, the CTF's oscillation removed): a noise-free image as a perfect aberration corrector would
record it. Its peaks are where the information that reaches the detector places the columns; how well a
detector does on it bounds what any restoration of the recorded frame can be expected to localise.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft

from em_noise.errors import EMInputError
from em_noise.synth import SynthConfig, draw_structure, hrtem_optics


def hrtem_reference(cfg: SynthConfig, seed: int | Sequence[int]) -> np.ndarray:
    """(H, W) float32 aberration-free image (bright columns, potential units) of sample ``seed`` of ``cfg``."""
    if cfg.mode != "hrtem":  # (HRTEM samples are always of the em-noise recipe)
        raise EMInputError(None, f"hrtem_reference needs mode 'hrtem', got {cfg.mode!r}")
    rng_img, _, shape, margin, cols, pix, _ = draw_structure(cfg, seed)
    m = int(margin)
    pot, h, _ = hrtem_optics(cfg, cols, pix, rng_img, (shape[0] + 2 * m, shape[1] + 2 * m), m)
    img = sfft.ifft2(sfft.fft2(pot, workers=1) * np.abs(h), workers=1).real
    return img[m:m + shape[0], m:m + shape[1]].astype(np.float32)
