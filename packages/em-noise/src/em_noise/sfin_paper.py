"""The SFIN authors' STEM training-data distribution (``recipe="sfin-paper"``), drawn with em-noise's own code.

One image (256² in the paper): one of the published structures (``data/sfin_paper_<mode>.json``: the 46 projected
crystal structures of the authors' ``haadf_structures`` / ``bf_structures`` lists in HeasonLee/SFFN ``haadf.py`` /
``bf.py`` — 46, not 48: their numbering runs to 50 but entries 22, 23 and 31 are commented out and 27 is absent;
the two lists differ in two structures' brightnesses and widths; each row an atom of the unit cell ``[x0, y0, a1,
b1x, b1y, brightness, width]`` in units where 100 ≈ one perovskite lattice constant) is tiled over the field at a
random scale ``U(0.1, 0.35)`` px/unit and rotation ``U(0, 2π)``; in 90 % of images a second structure is mixed in
through a Perlin mask (the first where the mask is < 0.5, the second elsewhere; in the other 10 % the second half
of the field stays empty); 10 % of the atoms move to uniform random positions. Each atom has brightness ``U(0.2,
0.6) × row brightness`` and width ``scale × row width`` (px).

* input: a constant ``U{0..50}`` plus the atoms drawn as point-sampled Gaussians of σ = 2 × width, plus the
  background and noise of :mod:`em_noise.noise` with the published priors (HAADF adds, BF subtracts from 255);
* enhancement target: the same atoms at σ = width, scaled so that the brightest pixel is 255 (BF: 255 minus
  that), 8-bit;
* localisation target: σ = 1 px spots of height 255 at every atom, summed and clipped to 8 bit.

Noise priors are drawn unclipped, as published (the formulas floor each std at 0): :class:`SfinPaperPrior`.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from em_noise.imaging import render_point_gaussians
from em_noise.noise import apply_noise
from em_noise.params import StemParams, default_params, parse_params
from em_noise.perlin import perlin_field

NOMINAL_UNIT_A = 0.039  # Å per structure unit (100 units ≈ 3.9 Å, the perovskite / fcc-metal lattice constant)


@functools.lru_cache(maxsize=2)
def structures(mode: str) -> tuple[list[dict[str, Any]], tuple[float, ...]]:
    """(structures, priors) of the published generator for 'haadf' or 'bf'; each structure has 'name', 'rows'."""
    text = (resources.files("em_noise") / "data" / f"sfin_paper_{mode}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    out = [{"name": s["name"], "rows": np.asarray(s["rows"], dtype=np.float64)} for s in data["structures"]]
    return out, tuple(float(v) for v in data["params"])


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return x * c - y * s, x * s + y * c


def pattern(rows: np.ndarray, shape: tuple[int, int], scale: float, rotation: float,
            brightness: float) -> np.ndarray:
    """Atoms (N, 4) ``x, y, brightness, width`` (px) of a structure tiled over an (H, W) field.

    The lattice vectors are row 0's ``(a1, 0)`` and ``(b1x, b1y)`` times ``scale``, rotated by ``rotation`` (rad);
    every cell whose origin can reach the field is visited and atoms inside ``[0, W) × [0, H)`` are kept.
    """
    h, w = shape
    a = np.array(_rotate(np.array(rows[0, 2] * scale), np.array(0.0), rotation), dtype=np.float64)
    b = np.array(_rotate(np.array(rows[0, 3] * scale), np.array(rows[0, 4] * scale), rotation), dtype=np.float64)
    basis = np.array([[a[0], b[0]], [a[1], b[1]]])
    corners = np.linalg.solve(basis, np.array([[0.0, w, 0.0, w], [0.0, 0.0, h, h]]))
    i0, i1 = int(corners[0].min()) - 1, int(corners[0].max()) + 1
    j0, j1 = int(corners[1].min()) - 1, int(corners[1].max()) + 1
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
    cx = (ii * a[0] + jj * b[0]).ravel()
    cy = (ii * a[1] + jj * b[1]).ravel()
    ox, oy = _rotate(rows[:, 0] * scale, rows[:, 1] * scale, rotation)
    x = (cx[:, None] + ox[None, :]).ravel()
    y = (cy[:, None] + oy[None, :]).ravel()
    bright = np.broadcast_to(rows[:, 5] * brightness, (cx.size, len(rows))).ravel()
    width = np.broadcast_to(rows[:, 6] * scale, (cx.size, len(rows))).ravel()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return np.stack([x[inside], y[inside], bright[inside], width[inside]], axis=1)


def _mix(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Atoms of ``first`` where ``mask`` < 0.5 and of ``second`` where it is ≥ 0.5 (mask read at the atom's pixel)."""
    def at(atoms: np.ndarray) -> np.ndarray:
        return mask[atoms[:, 1].astype(np.int64), atoms[:, 0].astype(np.int64)]

    keep1 = first[at(first) < 0.5] if len(first) else first
    keep2 = second[at(second) >= 0.5] if len(second) else second
    return np.concatenate([keep1, keep2], axis=0)


@dataclass(frozen=True)
class SfinPaperPrior:
    """The published per-image noise draws (normal, unclipped) of ``generate_haadf.py`` / ``generate_bf.py``:
    scan k, b and pointwise k, b, λ from the ``*_params`` list (entries 4–13: mean, sd pairs), background
    constant ``U{0..50}`` and Perlin amplitude ``U{50..100}`` (integers)."""

    mode: str

    def sample(self, rng: np.random.Generator) -> StemParams:
        _, pri = structures(self.mode)
        p = default_params(self.mode).to_dict()
        p["background"].update(offset=float(rng.integers(0, 51)), amplitude=float(rng.integers(50, 101)))
        p["scan"].update(k=float(rng.normal(pri[4], pri[5])), b=float(rng.normal(pri[6], pri[7])))
        p["pointwise"].update(k=float(rng.normal(pri[8], pri[9])), b=float(rng.normal(pri[10], pri[11])),
                              lam=float(rng.normal(pri[12], pri[13])))
        return parse_params(p)


def draw_noise_params(mode: str, rng: np.random.Generator) -> dict[str, Any]:
    """One image's noise parameters from the published priors, as a JSON-able dict (``SfinPaperPrior``)."""
    return SfinPaperPrior(mode).sample(rng).to_dict()


def synthesize(mode: str, size: int, seed: int | list[int]) -> dict[str, Any]:
    """One sample of the published distribution, in the layout of :func:`em_noise.synth.synthesize`.

    ``noisy``/``clean`` on 0–255 (``noisy`` 8-bit valued), ``target`` the enhancement target / 255 (input
    polarity), ``atoms`` the localisation target / 255, ``positions`` (N, 2) x, y px of every atom,
    ``pixel_size_A`` a nominal sampling (``NOMINAL_UNIT_A`` / scale).
    """
    if mode not in ("haadf", "bf"):
        raise ValueError(f"the sfin-paper recipe is for STEM (haadf or bf), not {mode!r}")
    ss = np.random.SeedSequence(seed)
    rng_struct, rng_noise = (np.random.default_rng(s) for s in ss.spawn(2))
    shape = (int(size), int(size))
    table, _ = structures(mode)
    scale = 0.1 + 0.25 * rng_struct.random()
    brightness = 0.2 + 0.4 * rng_struct.random()
    params = SfinPaperPrior(mode).sample(rng_noise)
    offset, amplitude = params.background.offset, params.background.amplitude
    picks = [int(rng_struct.integers(len(table))), int(rng_struct.integers(len(table)))]
    first = pattern(table[picks[0]]["rows"], shape, scale, 2 * math.pi * rng_struct.random(), brightness)
    rot2 = 2 * math.pi * rng_struct.random()
    two = rng_struct.random() > 0.1
    second = pattern(table[picks[1]]["rows"], shape, scale, rot2, brightness) if two else np.zeros((0, 4))
    atoms = _mix(first, second, perlin_field(shape, rng_struct))
    moved = rng_struct.random(len(atoms)) < 0.1
    atoms[moved, 0] = rng_struct.uniform(0, shape[1] - 1, int(moved.sum()))
    atoms[moved, 1] = rng_struct.uniform(0, shape[0] - 1, int(moved.sum()))

    xy, bright, width = atoms[:, :2], atoms[:, 2], atoms[:, 3]
    blurred = render_point_gaussians(xy, bright, 2.0 * width, shape)
    sharp = render_point_gaussians(xy, bright, width, shape)
    top = float(sharp.max()) if sharp.size and sharp.max() > 0 else 1.0
    target = np.floor(np.clip(sharp * (255.0 / top), 0.0, 255.0))
    spots = np.floor(np.clip(render_point_gaussians(xy, np.full(len(xy), 255.0), 1.0, shape), 0.0, 255.0))
    if mode == "haadf":
        clean = offset + blurred
    else:
        clean = 255.0 - offset - blurred
        target = np.floor(np.clip(255.0 - sharp * (255.0 / top), 0.0, 255.0))
    noisy = apply_noise(clean, mode, params.replace(**{"background.offset": 0.0}), rng_noise)
    names = [table[i]["name"] for i in (picks if two else picks[:1])]
    meta = {"recipe": "sfin-paper", "mode": mode, "structures": names,
            "scale_px_per_unit": scale, "brightness": brightness, "offset": offset, "background_amplitude": amplitude,
            "n_columns": int(len(atoms)), "moved": int(moved.sum())}
    return {"noisy": noisy.astype(np.float32), "clean": clean.astype(np.float32),
            "target": (target / 255.0).astype(np.float32), "atoms": (spots / 255.0).astype(np.float32),
            "positions": xy.astype(np.float32), "noise_params": params.to_dict(),
            "pixel_size_A": NOMINAL_UNIT_A / scale, "meta": meta}
