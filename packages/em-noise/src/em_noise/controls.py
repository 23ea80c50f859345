"""Control frames for HRTEM column detectors: lattice-free frames (negative controls), on which a detector should
find (almost) nothing, and a resolvable lattice (positive control), on which it should find every column.

``lattice_free_frame(kind, dose, seed)`` gives a noisy frame (0–255 scale) of

* ``vacuum``: a flat field;
* ``amorphous``: a nucleation frame whose only nucleus is a few atoms wide (amorphous film);
* ``fringes``: biprism interference fringes of 9 px period with a slight chirp (one periodicity, no lattice);

with HRTEM noise of the given dose (e/Å²) at 0.15 Å/px, deterministic in ``seed``. ``resolvable_lattice(seed)``
is a synthetic sample of W [110] whose columns the optics resolve and image dark.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from em_noise.errors import EMInputError

KINDS = ("vacuum", "amorphous", "fringes")
PIXEL_SIZE_A = 0.15


def lattice_free_frame(kind: str, dose_e_per_A2: float, seed: int | Sequence[int], size: int = 256) -> np.ndarray:
    """(size, size) float32 noisy frame of ``kind`` (see the module docstring) at ``dose_e_per_A2``."""
    from em_noise.noise import apply_noise
    from em_noise.priors import sample_noise_params
    from em_noise.synth import SynthConfig, synthesize

    if kind not in KINDS:
        raise EMInputError(None, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "amorphous":
        cfg = SynthConfig(mode="hrtem", size=size, structures={"nucleation": 1.0}, nuclei=(1, 1),
                          nucleus_radius_frac=(0.01, 0.01), dose_e_per_A2=(dose_e_per_A2, dose_e_per_A2))
        return synthesize(cfg, [*np.atleast_1d(seed).tolist(), 200])["noisy"]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    clean = np.full((size, size), 128.0)
    if kind == "fringes":
        clean += 40.0 * np.cos(2 * np.pi * (0.8 * xx + 0.6 * yy + 0.0001 * (xx - size / 2) ** 2) / 9.0)
    p = sample_noise_params("hrtem", rng)
    p["dose_e_per_A2"] = float(dose_e_per_A2)
    return np.asarray(apply_noise(clean.astype(np.float32), "hrtem", p, rng, pixel_size_A=PIXEL_SIZE_A))


def resolvable_lattice(seed: int | Sequence[int], size: int = 256) -> dict:
    """:func:`em_noise.synth.synthesize` sample of W [110] (column spacing ≥ 2.74 Å) at 0.15 Å/px, Cs = 0, 20 nm
    underfocus, objective aperture 0.5 Å⁻¹ (resolution 2 Å, no CTF zero inside the aperture, so every passed
    frequency has the same sign: dark columns); its ``clean`` frame is the noise-free positive control."""
    from em_noise.synth import SynthConfig, synthesize

    cfg = SynthConfig(mode="hrtem", size=size, structures={"regular": 1.0}, lattices=("bcc_w_110",),
                      pixel_size_A=(PIXEL_SIZE_A, PIXEL_SIZE_A), cs_mm=(0.0, 0.0), defocus_nm=(-20.0, -20.0),
                      aperture_inv_A=(0.5, 0.5))
    return synthesize(cfg, seed)
