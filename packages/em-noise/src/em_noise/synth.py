"""Synthetic training pairs: random atomic structures -> clean STEM/HRTEM image -> calibrated noise, with targets.

``synthesize(cfg, seed)`` makes one sample; ``PairDataset`` serves (input, target) tensors on the fly, deterministic
in (seed, index); ``write_samples`` writes samples as TIFF + JSON for ``em-noise synth``.
Positions are in px (x = column index, y = row index, pixel centres at integers); sampling in Å/px; images 0–255.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.spatial import cKDTree

from em_noise.errors import EMInputError
from em_noise.imaging import ctf, hrtem_intensity, render_gaussians
from em_noise.lattices import (
    LATTICES,
    Columns,
    ProjectedLattice,
    lattice_columns,
    min_distance_points,
    sample_field,
    smooth_field,
)
from em_noise.noise import apply_noise
from em_noise.params import parse_params
from em_noise.priors import prior_for
from em_noise.scaling import normalize, robust_range

Mode = Literal["haadf", "bf", "hrtem"]
Range = tuple[float, float]
STRUCTURE_KINDS = ("regular", "disordered", "random", "nucleation")
RECIPES = ("em-noise", "sfin-paper")
RANDOM_Z = (6, 8, 13, 14, 22, 26, 29, 31, 38, 42, 47, 58, 74, 79)
AMORPHOUS_Z = (6, 8, 14)


class SynthConfig(BaseModel):
    """Settings of the synthetic data generator (validated once; ranges are (low, high), drawn uniformly per image)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "haadf"
    size: int = Field(256, ge=16, le=8192, description="image side (px)")
    recipe: str | dict[str, float] = Field(
        "em-noise", description="'em-noise' (this module's structures), 'sfin-paper' (the SFIN authors' published "
        "STEM distribution, em_noise.sfin_paper) or a weighted mix such as {'sfin-paper': 0.6, 'em-noise': 0.4}")
    cell_px: Range = Field((10.0, 35.0), description="projected unit-cell size (sqrt of cell area) in px")
    pixel_size_A: Range | None = Field(None, description="sampling (Å/px); if set, replaces cell_px")
    lattices: tuple[str, ...] | None = Field(None, description="subset of em_noise.lattices.LATTICES; None = all")
    structures: dict[str, float] = Field(
        default_factory=lambda: {"regular": 0.4, "disordered": 0.25, "random": 0.15, "nucleation": 0.2},
        description="relative weights of the structure kinds")
    # STEM
    column_sigma_A: Range = Field((0.3, 0.6), description="probe + column blur, Gaussian sigma (Å)")
    min_sigma_px: float = Field(1.0, ge=0.3, le=10.0, description="lower bound of the imaging blur (px)")
    z_exponent: float = Field(1.7, ge=0.5, le=2.5, description="HAADF column intensity ∝ Z**z_exponent")
    peak_range: Range = Field((50.0, 160.0), description="STEM column peak height before background (0–255 scale)")
    bf_background: Range = Field((235.0, 255.0), description="BF vacuum level before the background darkens it "
                                 "(0–255 scale)")
    intensity_scatter: float = Field(0.05, ge=0.0, le=0.5, description="relative std of per-column strength")
    # structure
    jitter_A: Range = Field((0.0, 0.05), description="std of per-column random displacement (Å), regular lattices")
    displacement_frac: float = Field(0.10, ge=0.0, le=0.5,
                                     description="disordered: max displacement std as fraction of column spacing")
    vacancy_frac: Range = Field((0.0, 0.10), description="disordered: fraction of columns removed")
    random_min_dist_A: Range = Field((1.2, 3.0), description="random arrangements: minimum column distance (Å)")
    random_columns: bool = Field(True, description="random arrangements: their atoms are atomic columns (listed, "
                                 "in the atom map); False = amorphous, imaged but not listed, like a nucleation "
                                 "matrix (for a localiser that marks only lattice columns)")
    nuclei: tuple[int, int] = Field((1, 4), description="nucleation: number of crystalline nuclei")
    nucleus_radius_frac: Range = Field((0.08, 0.35), description="nucleation: nucleus radius / image size")
    # HRTEM
    voltage_kV: float = Field(300.0, ge=40.0, le=1000.0)
    defocus_nm: Range = Field((-80.0, 20.0), description="HRTEM defocus (nm, negative = underfocus)")
    cs_mm: Range = Field((0.0, 1.2), description="spherical aberration (mm)")
    aperture_inv_A: Range = Field((0.5, 1.0), description="objective aperture radius (1/Å), capped at 0.9 Nyquist")
    focal_spread_nm: Range = Field((2.0, 5.0), description="temporal coherence: focal spread (nm)")
    convergence_mrad: Range = Field((0.05, 0.4), description="spatial coherence: illumination semi-angle (mrad)")
    phase_max_rad: Range = Field((0.15, 0.6), description="phase shift of the strongest column (rad)")
    potential_sigma_A: Range = Field((0.25, 0.4), description="projected-potential width per column (Å)")
    hrtem_contrast: Range = Field((12.0, 40.0), description="std of the clean HRTEM image (0–255 scale, mean 128)")
    dose_e_per_A2: Range | None = Field(None, description="HRTEM dose range (e/Å²), log-uniform, replaces the noise "
                                        "model's dose; None = the noise model's own draw (em_noise.priors)")
    noise: dict[str, Any] | None = Field(None, description="calibrated noise params (em_noise.calibrate) as base: "
                                         "draws around them (em_noise.priors.CalibratedPrior), images in the "
                                         "calibrated image's units when they carry an intensity map")

    @field_validator("noise", mode="before")
    @classmethod
    def _params_as_dict(cls, v: Any) -> Any:
        return v.to_dict() if hasattr(v, "to_dict") else v

    @field_validator("lattices")
    @classmethod
    def _known_lattices(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            bad = [n for n in v if n not in LATTICES]
            if bad or not v:
                raise ValueError(f"unknown lattices {bad}; choose from {sorted(LATTICES)}")
        return v

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        weights = {v: 1.0} if isinstance(v, str) else dict(v)
        bad = [k for k in weights if k not in RECIPES]
        if bad or not weights:
            raise ValueError(f"unknown recipe {bad or v}; choose from {list(RECIPES)}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("recipe weights must be >= 0 with a positive sum")
        return v

    @field_validator("structures")
    @classmethod
    def _structure_weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in STRUCTURE_KINDS]
        if bad:
            raise ValueError(f"unknown structure kinds {bad}; choose from {list(STRUCTURE_KINDS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("structure weights must be >= 0 with a positive sum")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        bounds = {"cell_px": (3.0, 500.0), "pixel_size_A": (0.005, 20.0), "column_sigma_A": (0.01, 5.0),
                  "peak_range": (1.0, 255.0), "bf_background": (1.0, 255.0), "jitter_A": (0.0, 1.0),
                  "vacancy_frac": (0.0, 0.9), "random_min_dist_A": (0.5, 20.0), "nuclei": (1, 50),
                  "nucleus_radius_frac": (0.01, 1.0), "defocus_nm": (-2000.0, 2000.0), "cs_mm": (-5.0, 10.0),
                  "aperture_inv_A": (0.05, 10.0), "focal_spread_nm": (0.0, 50.0), "convergence_mrad": (0.0, 10.0),
                  "phase_max_rad": (0.0, 3.0), "potential_sigma_A": (0.05, 2.0), "hrtem_contrast": (0.5, 120.0),
                  "dose_e_per_A2": (0.01, 1e7)}
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if v is None:
                continue
            if not (lo <= v[0] <= v[1] <= hi):
                raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {tuple(v)}")
        if self.noise is not None:
            parse_params(self.noise, self.mode)  # calibrated params of the wrong mode, schema or range
        if self.mode == "hrtem" and "sfin-paper" in self.recipe_weights():
            raise ValueError("the sfin-paper recipe is for STEM (haadf or bf), not hrtem")
        return self

    def recipe_weights(self) -> dict[str, float]:
        """The recipe mix as {name: probability} (names with weight 0 dropped)."""
        weights = {self.recipe: 1.0} if isinstance(self.recipe, str) else dict(self.recipe)
        total = sum(weights.values())
        return {k: w / total for k, w in weights.items() if w > 0}


# ---------------------------------------------------------------- structures

def _lattice_names(cfg: SynthConfig) -> list[str]:
    return list(cfg.lattices) if cfg.lattices is not None else sorted(LATTICES)


def _pick_lattice(cfg: SynthConfig, rng: np.random.Generator) -> ProjectedLattice:
    names = _lattice_names(cfg)
    return LATTICES[names[int(rng.integers(len(names)))]]


def _uniform(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _jitter(cols: Columns, std_px: float, rng: np.random.Generator) -> Columns:
    if std_px > 0 and len(cols):
        cols.xy = cols.xy + rng.normal(0.0, std_px, cols.xy.shape)
    return cols


def _regular(cfg, rng, shape, margin, pix, ref) -> tuple[Columns, dict]:
    rot = _uniform(rng, (0.0, 360.0))
    cols = lattice_columns(ref, pix, rot, shape, margin, rng)
    cols = _jitter(cols, _uniform(rng, cfg.jitter_A) / pix, rng)
    return cols, {"lattices": [ref.name], "rotation_deg": [rot]}


def _disordered(cfg, rng, shape, margin, pix, ref) -> tuple[Columns, dict]:
    """Two lattices (or two grains of one) mixed through a smooth random mask, displacements and vacancies."""
    other = ref if rng.random() < 0.3 else _pick_lattice(cfg, rng)
    rots = [_uniform(rng, (0.0, 360.0)), _uniform(rng, (0.0, 360.0))]
    a = lattice_columns(ref, pix, rots[0], shape, margin, rng)
    b = lattice_columns(other, pix, rots[1], shape, margin, rng)
    full = (shape[0] + 2 * int(np.ceil(margin)), shape[1] + 2 * int(np.ceil(margin)))
    f = smooth_field(full, rng, corr_px=_uniform(rng, (0.15, 0.5)) * max(shape))
    t = _uniform(rng, (-0.8, 0.8))
    a = a.subset(sample_field(f, a.xy, margin) > t)
    b = b.subset(sample_field(f, b.xy, margin) <= t)
    spacing = min(ref.min_spacing_A(), other.min_spacing_A()) / pix
    if len(a) and len(b):  # no two columns closer than ~0.6 spacing across the interface
        d, _ = cKDTree(a.xy).query(b.xy, k=1, distance_upper_bound=0.6 * spacing)
        b = b.subset(~np.isfinite(d))
    cols = Columns.concat([a, b])
    cols = _jitter(cols, _uniform(rng, (0.0, cfg.displacement_frac)) * spacing, rng)
    if len(cols):
        keep = rng.random(len(cols)) >= _uniform(rng, cfg.vacancy_frac)
        cols = cols.subset(keep)
        partial = rng.random(len(cols)) < 0.5 * _uniform(rng, cfg.vacancy_frac)  # partly emptied columns
        cols.occupancy = np.where(partial, rng.uniform(0.3, 0.9, len(cols)), cols.occupancy)
    return cols, {"lattices": [ref.name, other.name], "rotation_deg": rots, "mask_threshold": t}


def _random(cfg, rng, shape, margin, pix, ref) -> tuple[Columns, dict]:
    """Fully random arrangement with a minimum column distance and 1–3 species."""
    dmin = _uniform(rng, cfg.random_min_dist_A) / pix
    xy = min_distance_points(shape, margin, dmin, _uniform(rng, (0.3, 1.0)), rng)
    species = rng.choice(np.array(RANDOM_Z), size=int(rng.integers(1, 4)), replace=False)
    zs = rng.choice(species, size=len(xy))[:, None].astype(np.int16)
    amorphous = np.full(len(xy), not cfg.random_columns)
    return Columns(xy, zs, amorphous), {"lattices": [], "species_Z": species.tolist(), "min_dist_px": dmin}


def _inside_blob(xy: np.ndarray, centre: np.ndarray, radius: float, harm: np.ndarray, phases: np.ndarray,
                 grow: float = 0.0) -> np.ndarray:
    """Points inside a blob r(θ) = radius (1 + Σ harm_i cos((i + 2) θ + phase_i)), grown by ``grow`` px."""
    d = xy - centre
    th = np.arctan2(d[:, 1], d[:, 0])
    r = radius * (1 + sum(harm[i] * np.cos((i + 2) * th + phases[i]) for i in range(len(harm))))
    return np.hypot(d[:, 0], d[:, 1]) < r + grow


def _nucleation(cfg, rng, shape, margin, pix, ref) -> tuple[Columns, dict]:
    """Amorphous matrix with crystalline nuclei of random size, shape, orientation and lattice."""
    dmin = _uniform(rng, (1.3, 2.2)) / pix
    xy = min_distance_points(shape, margin, dmin, _uniform(rng, (0.5, 1.0)), rng)
    zs = rng.choice(np.array(AMORPHOUS_Z), size=len(xy))[:, None].astype(np.int16)
    matrix = Columns(xy, zs, np.ones(len(xy), bool), rng.uniform(0.15, 0.45) * np.ones(len(xy)))
    parts: list[Columns] = []
    names, rots = [], []
    size = max(shape)
    for k in range(int(rng.integers(cfg.nuclei[0], cfg.nuclei[1] + 1))):
        lat = ref if k == 0 else _pick_lattice(cfg, rng)
        rot = _uniform(rng, (0.0, 360.0))
        centre = np.array([rng.uniform(0, shape[1]), rng.uniform(0, shape[0])])
        radius = _uniform(rng, cfg.nucleus_radius_frac) * size
        blob = (centre, radius, rng.normal(0.0, 0.12, 3), rng.uniform(0, 2 * np.pi, 3))
        cols = lattice_columns(lat, pix, rot, shape, margin, rng)
        cols = _jitter(cols.subset(_inside_blob(cols.xy, *blob)), _uniform(rng, cfg.jitter_A) / pix, rng)
        matrix = matrix.subset(~_inside_blob(matrix.xy, *blob, grow=0.5 * dmin))
        parts = [p.subset(~_inside_blob(p.xy, *blob, grow=0.5 * dmin)) for p in parts] + [cols]
        names.append(lat.name)
        rots.append(rot)
    return Columns.concat([matrix] + parts), {"lattices": names, "rotation_deg": rots, "amorphous_min_dist_px": dmin}


_BUILDERS = {"regular": _regular, "disordered": _disordered, "random": _random, "nucleation": _nucleation}


def make_structure(cfg: SynthConfig, rng: np.random.Generator, margin_px: float = 0.0) -> tuple[Columns, float, dict]:
    """Draw a structure kind, sampling and columns for ``cfg``; returns (columns, pixel_size_A, meta)."""
    kinds = [k for k in STRUCTURE_KINDS if cfg.structures.get(k, 0.0) > 0]
    p = np.array([cfg.structures[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    ref = _pick_lattice(cfg, rng)
    if cfg.pixel_size_A is not None:
        pix = _uniform(rng, cfg.pixel_size_A)
    else:
        pix = ref.cell_A / _uniform(rng, cfg.cell_px)
    shape = (cfg.size, cfg.size)
    cols, meta = _BUILDERS[kind](cfg, rng, shape, margin_px, pix, ref)
    if len(cols) and cfg.intensity_scatter > 0:
        cols.occupancy = cols.occupancy * np.clip(1 + rng.normal(0, cfg.intensity_scatter, len(cols)), 0.3, 2.0)
    meta = {"structure": kind, "cell_px": ref.cell_A / pix, **meta}
    return cols, pix, meta


# ---------------------------------------------------------------- image formation

def _log_uniform(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(np.exp(rng.uniform(np.log(r[0]), np.log(r[1])))) if r[1] > r[0] else float(r[0])


def _stem_images(cfg, cols, pix, rng, shape) -> tuple[np.ndarray, np.ndarray, dict]:
    sigma = max(_uniform(rng, cfg.column_sigma_A) / pix, cfg.min_sigma_px)
    w = cols.weights(cfg.z_exponent)
    w = w / max(float(w.max()), 1e-12) if len(w) else w
    img = render_gaussians(cols.xy, w, shape, sigma)
    sharp = render_gaussians(cols.xy, w, shape, sigma / 2)
    peak = _uniform(rng, cfg.peak_range)
    top = max(float(img.max()), 1e-6)
    target = np.clip(sharp / max(float(sharp.max()), 1e-6), 0.0, 1.0)
    meta = {"sigma_px": sigma, "target_sigma_px": sigma / 2, "peak": peak}
    if cfg.mode == "haadf":
        clean = img * (peak / top)
    else:  # BF: inverted contrast on a bright vacuum level; target keeps the input's polarity
        bg = _uniform(rng, cfg.bf_background)
        depth = min(peak, bg - 5.0)
        clean = bg - img * (depth / top)
        target = 1.0 - target
        meta.update(background=bg, depth=depth)
    return clean.astype(np.float32), target.astype(np.float32), meta


def hrtem_optics(cfg, cols, pix, rng, full, m) -> tuple[np.ndarray, np.ndarray, dict]:
    """Projected potential (peak 1) on the padded ``full`` field, the transfer function and the imaging draws."""
    sig_v = max(_uniform(rng, cfg.potential_sigma_A) / pix, 0.5)
    pot = render_gaussians(cols.xy + m, cols.weights(0.75), full, sig_v)  # potential per column ~Z^0.75
    pot /= max(float(pot.max()), 1e-6)
    p = {"defocus_nm": _uniform(rng, cfg.defocus_nm), "cs_mm": _uniform(rng, cfg.cs_mm),
         "aperture_inv_A": min(_uniform(rng, cfg.aperture_inv_A), 0.9 * (0.5 / pix)),  # 0.9 Nyquist at most
         "focal_spread_nm": _uniform(rng, cfg.focal_spread_nm), "convergence_mrad": _uniform(rng, cfg.convergence_mrad),
         "phase_max_rad": _uniform(rng, cfg.phase_max_rad), "potential_sigma_px": sig_v, "voltage_kV": cfg.voltage_kV}
    h = ctf(full, pix, defocus_A=p["defocus_nm"] * 10, cs_mm=p["cs_mm"], voltage_kV=cfg.voltage_kV,
            aperture_inv_A=p["aperture_inv_A"], focal_spread_A=p["focal_spread_nm"] * 10,
            convergence_mrad=p["convergence_mrad"])
    return pot, h, p


def _hrtem_image(cfg, cols, pix, rng, shape, margin) -> tuple[np.ndarray, dict]:
    """Projected potential -> weak-phase exit wave -> CTF -> intensity, on a padded field (no wrap-around)."""
    m = int(margin)
    pot, h, p = hrtem_optics(cfg, cols, pix, rng, (shape[0] + 2 * m, shape[1] + 2 * m), m)
    inten = hrtem_intensity(pot, p["phase_max_rad"], h)[m:m + shape[0], m:m + shape[1]]
    std = float(inten.std())
    p["contrast"] = _uniform(rng, cfg.hrtem_contrast)
    clean = 128.0 + (inten - float(inten.mean())) * (p["contrast"] / max(std, 1e-9))
    return np.clip(clean, 0.0, 255.0).astype(np.float32), p


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _pick_recipe(cfg: SynthConfig, seed: int | Sequence[int]) -> str:
    weights = cfg.recipe_weights()
    if len(weights) == 1:
        return next(iter(weights))
    u = np.random.default_rng([*np.atleast_1d(seed).tolist(), 7]).random()
    i = np.searchsorted(np.cumsum(list(weights.values())), u, side="right")
    return list(weights)[int(np.clip(i, 0, len(weights) - 1))]


def draw_structure(cfg: SynthConfig, seed: int | Sequence[int]) -> tuple:
    """(image rng, noise rng, shape, margin px, columns, pixel size Å, meta) of sample ``seed`` as synthesize draws."""
    rng_struct, rng_img, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    margin = 8.0 if cfg.mode != "hrtem" else float(max(16, cfg.size // 8))
    return rng_img, rng_noise, (cfg.size, cfg.size), margin, *make_structure(cfg, rng_struct, margin)


def synthesize(cfg: SynthConfig, seed: int | Sequence[int]) -> dict[str, Any]:
    """One synthetic sample, deterministic in ``seed`` (an int or a sequence such as ``[seed, index]``).

    Returns ``noisy``/``clean`` (H, W) float32 on the 0–255 scale, ``target`` (STEM: enhancement target in [0, 1],
    the columns at half the imaging blur on a flat background, bright on 0 for HAADF and dark on 1 for BF, i.e.
    the input's polarity; HRTEM: ``clean`` normalized with the noisy image's robust range), ``atoms`` (σ = 1 px
    spots in [0, 1]), ``positions`` ((N, 2) float32 x, y px of the atomic columns inside the image; atoms of an
    amorphous matrix are imaged but not listed), ``noise_params`` (dict), ``pixel_size_A`` (Å/px) and ``meta``
    (JSON-able structure and imaging parameters).
    """
    recipe = _pick_recipe(cfg, seed)
    if recipe == "sfin-paper":
        from em_noise import sfin_paper  # noqa: PLC0415

        return sfin_paper.synthesize(cfg.mode, cfg.size, [*np.atleast_1d(seed).tolist(), 1])
    rng_img, rng_noise, shape, margin, cols, pix, meta = draw_structure(cfg, seed)
    if cfg.mode == "hrtem":
        clean, imaging = _hrtem_image(cfg, cols, pix, rng_img, shape, margin)
        target = None
    else:
        clean, target, imaging = _stem_images(cfg, cols, pix, rng_img, shape)
    atoms = np.clip(render_gaussians(cols.xy, (~cols.matrix).astype(np.float64), shape, 1.0), 0.0, 1.0)
    params = prior_for(cfg.mode, cfg.noise).sample(rng_noise)
    if cfg.mode == "hrtem" and cfg.dose_e_per_A2 is not None:
        params = params.replace(dose_e_per_A2=_log_uniform(rng_noise, cfg.dose_e_per_A2))
    noisy = np.asarray(apply_noise(clean, cfg.mode, params, rng_noise, pixel_size_A=pix), dtype=np.float32)
    if params.intensity is not None:  # calibrated on another scale: the image's own units
        noisy, clean = (params.intensity.to_image(a).astype(np.float32) for a in (noisy, clean))
    if target is None:
        target = normalize(clean, *robust_range(noisy))
    inside = ((cols.xy[:, 0] >= -0.5) & (cols.xy[:, 0] < shape[1] - 0.5)
              & (cols.xy[:, 1] >= -0.5) & (cols.xy[:, 1] < shape[0] - 0.5))
    meta.update(recipe="em-noise", mode=cfg.mode, imaging=imaging, n_columns=int((inside & ~cols.matrix).sum()),
                n_matrix_atoms=int((inside & cols.matrix).sum()))
    return {"noisy": noisy, "clean": clean, "target": target.astype(np.float32), "atoms": atoms.astype(np.float32),
            "positions": cols.xy[inside & ~cols.matrix].astype(np.float32), "noise_params": params.to_dict(),
            "pixel_size_A": float(pix), "meta": _to_jsonable(meta)}


# ---------------------------------------------------------------- dataset and writer

Target = Literal["enhance", "denoise", "localize", "denoise+localize"]
TARGETS = ("enhance", "denoise", "localize", "denoise+localize")


def make_pair(sample: dict[str, Any], target: str) -> tuple[np.ndarray, np.ndarray]:
    """Network (input, target) arrays from a :func:`synthesize` sample: input = noisy normalized by its robust range."""
    lo, hi = robust_range(sample["noisy"])
    x = normalize(sample["noisy"], lo, hi)
    if target == "enhance":
        if sample["meta"]["mode"] == "hrtem":
            raise EMInputError(None, "target 'enhance' needs a STEM mode (haadf or bf); use 'denoise' for hrtem")
        y = sample["target"]
    elif target == "denoise":
        y = normalize(sample["clean"], lo, hi)
    elif target == "localize":
        y = sample["atoms"]
    elif target == "denoise+localize":  # two channels: the clean image (input scale) and the atom map
        y = np.stack([normalize(sample["clean"], lo, hi), sample["atoms"]])
    else:
        raise EMInputError(None, f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return x, np.asarray(y, dtype=np.float32)


class PairDataset(torch.utils.data.Dataset):
    """On-the-fly (input, target) pairs, float32 tensors (1, H, W) (target (2, H, W) for 'denoise+localize');
    item ``i`` depends only on (seed, i).

    The pair is formed on the whole ``cfg.size`` image (input normalized by the whole image's robust range, as
    ``em_noise.restore`` does before tiling); ``patch`` then cuts a random ``patch``² crop (origin drawn from the
    item's own seed).  Holds no random state, so any number of DataLoader workers yields the same items as the
    main process.
    """

    def __init__(self, cfg: SynthConfig, length: int, seed: int = 0, target: Target = "enhance",
                 patch: int | None = None):
        if target not in TARGETS:
            raise EMInputError(None, f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if target == "enhance" and cfg.mode == "hrtem":
            raise EMInputError(None, "target 'enhance' needs a STEM mode (haadf or bf); use 'denoise' for hrtem")
        if length < 1:
            raise EMInputError(None, f"dataset length must be >= 1, got {length}")
        if patch is not None and not 8 <= patch <= cfg.size:
            raise EMInputError(None, f"patch must be between 8 and the image size {cfg.size} px, got {patch}")
        self.cfg, self.length, self.seed, self.target = cfg, int(length), int(seed), target
        self.patch = None if patch is None else int(patch)

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> dict[str, Any]:
        """The full :func:`synthesize` output behind item ``index`` (whole image, before cropping)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        return synthesize(self.cfg, [self.seed, int(index)])

    def patch_origin(self, index: int) -> tuple[int, int]:
        """(row, column) of item ``index``'s crop in the whole image ((0, 0) without ``patch``)."""
        if self.patch is None:
            return 0, 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]).spawn(4)[3])
        y0, x0 = rng.integers(0, self.cfg.size - self.patch + 1, 2)
        return int(y0), int(x0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = make_pair(self.sample(index), self.target)
        if self.patch is not None:
            y0, x0 = self.patch_origin(index)
            x = x[y0:y0 + self.patch, x0:x0 + self.patch]
            y = y[..., y0:y0 + self.patch, x0:x0 + self.patch]
        y = y[None] if y.ndim == 2 else y
        return torch.from_numpy(np.ascontiguousarray(x)[None]), torch.from_numpy(np.ascontiguousarray(y))


SAMPLE_FILES = ("_noisy.tif", "_clean.tif", "_target.tif", "_atoms.tif", ".json")


def sample_paths(out_dir: str | Path, count: int) -> list[Path]:
    """The files :func:`write_samples` writes for ``count`` samples."""
    digits = max(4, len(str(count - 1)))
    return [Path(out_dir) / f"{i:0{digits}d}{suf}" for i in range(count) for suf in SAMPLE_FILES]


def write_samples(out_dir: str | Path, cfg: SynthConfig, count: int, seed: int = 0, overwrite: bool = False,
                  progress: bool = False, inputs: Sequence[str | Path | None] = ()) -> list[Path]:
    """Write ``count`` samples as ``NNNN_{noisy,clean,target,atoms}.tif`` + ``NNNN.json`` (sample i = PairDataset
    item i of the same seed); the JSON holds the true noise parameters, column positions (px) and metadata.
    Files in ``inputs`` (a noise-parameter file) are never written; every output is checked before the first
    sample is drawn."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    from em_noise.io import write_image, write_text  # noqa: PLC0415 (io imports nothing from synth)

    if count < 1:
        raise EMInputError(None, f"count must be >= 1, got {count}")
    from em_noise.outputs import check_outputs  # noqa: PLC0415

    out = Path(out_dir)
    digits = max(4, len(str(count - 1)))
    check_outputs(sample_paths(out, count), overwrite=overwrite, inputs=inputs)
    written: list[Path] = []
    for i in tqdm(range(count), desc="synth", unit="img", disable=not progress):
        s = synthesize(cfg, [int(seed), i])
        stem = f"{i:0{digits}d}"
        for key in ("noisy", "clean", "target", "atoms"):
            written.append(write_image(out / f"{stem}_{key}.tif", s[key], pixel_size_A=s["pixel_size_A"],
                                       overwrite=overwrite))
        js = out / f"{stem}.json"
        record = {"index": i, "seed": int(seed), "pixel_size_A": s["pixel_size_A"],
                  "positions_xy_px": s["positions"].tolist(), "noise_params": s["noise_params"],
                  "meta": s["meta"], "config": cfg.model_dump(mode="json")}
        write_text(js, json.dumps(record, indent=1), overwrite=overwrite)
        written.append(js)
    return written
