"""Prior distributions of the noise parameters: sampler objects, apart from the noise models they feed.

A prior has a ``mode`` and ``sample(rng) -> params`` (an :mod:`em_noise.params` model); :func:`em_noise.noise.
apply_noise` then draws the noise itself.  ``EmNoisePrior`` is em-noise's default (the SFIN paper's means and
sds, clipped to ``LIMITS``; HRTEM our own choice), ``CalibratedPrior`` draws around a calibrated parameter set,
and :class:`em_noise.sfin_paper.SfinPaperPrior` is the authors' published, unclipped distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from em_noise.params import StemParams, check_mode, default_params, parse_params

# (mean, sd) of the per-image draws of the SFIN paper: scan (k, b), pointwise (k, b, lam)
STEM_DRAWS = {
    "haadf": ({"k": (0.0982, 0.1), "b": (4.4123, 0.1)},
              {"k": (0.05, 0.03), "b": (6.35, 4.04), "lam": (0.04, 0.01)}),
    "bf": ({"k": (0.04, 0.01), "b": (6.2, 1.0)},
           {"k": (-0.02, 0.02), "b": (17.03, 5.71), "lam": (0.38, 0.20)}),
}
# Ranges em-noise's own draws are clipped to (0–255 units)
LIMITS: dict[str, tuple[float, float]] = {
    "background.offset": (0.0, 100.0),
    "background.amplitude": (0.0, 200.0),
    "scan.k": (-0.2, 0.4),
    "scan.b": (3.4, 10.0),  # std(0) = 4 (b + 0.6) − 16 >= 0 needs b >= 3.4
    "pointwise.k": (-0.1, 0.2),
    "pointwise.b": (0.5, 40.0),
    "pointwise.lam": (-0.2, 1.0),
    "column.sigma": (0.0, 20.0),
    "hrtem.pointwise.k": (0.0, 0.2),
    "hrtem.pointwise.b": (0.0, 40.0),
    "mtf_sigma_px": (0.0, 3.0),
    "dose_e_per_A2": (1e-3, 1e7),
}
POINTWISE_I_MAX = 300.0  # highest signal (clean + background) the negative-slope guard protects


class NoisePrior(Protocol):
    """Draws one image's noise parameters."""

    mode: str

    def sample(self, rng: np.random.Generator) -> Any: ...


def clip(name: str, value: float) -> float:
    lo, hi = LIMITS[name]
    return float(min(max(value, lo), hi))


def keep_scale_positive(k: float, b: float) -> float:
    """Guard of a negative pointwise slope: the scale at I = 300 (bright BF + background) stays ≥ b / 2."""
    return float(max(k, -0.5 * b / POINTWISE_I_MAX))


@dataclass(frozen=True)
class EmNoisePrior:
    """em-noise's default draws.

    STEM (mean, sd), clipped to ``LIMITS``: background offset U(0, 50), amplitude U(50, 100); HAADF scan k
    N(0.0982, 0.1) ∈ [−0.2, 0.4], b N(4.4123, 0.1) ∈ [3.4, 10]; pointwise k N(0.05, 0.03) ∈ [−0.1, 0.2],
    b N(6.35, 4.04) ∈ [0.5, 40], λ N(0.04, 0.01) ∈ [−0.2, 1]; BF scan k N(0.04, 0.01), b N(6.2, 1); pointwise
    k N(−0.02, 0.02), b N(17.03, 5.71), λ N(0.38, 0.20); a negative pointwise k is further limited to
    ``k ≥ −b / 600`` (:func:`keep_scale_positive`).  HRTEM (covering clean-ish to very noisy): column σ U(0.5, 3);
    pointwise k U(0, 0.08), b U(0.5, 8); dose log-uniform in [20, 20000] e⁻/Å² with probability 0.8, else no shot
    noise (null); MTF σ U(0, 1) px.
    """

    mode: str

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def sample(self, rng: np.random.Generator) -> Any:
        base = default_params(self.mode).to_dict()
        return parse_params(self._hrtem(base, rng) if self.mode == "hrtem" else self._stem(base, rng))

    def _stem(self, p: dict, rng: np.random.Generator) -> dict:
        scan, pw = STEM_DRAWS[self.mode]
        p["background"]["offset"] = float(rng.uniform(0.0, 50.0))
        p["background"]["amplitude"] = float(rng.uniform(50.0, 100.0))
        for key in ("k", "b"):
            p["scan"][key] = clip(f"scan.{key}", rng.normal(*scan[key]))
        for key in ("k", "b", "lam"):
            p["pointwise"][key] = clip(f"pointwise.{key}", rng.normal(*pw[key]))
        p["pointwise"]["k"] = keep_scale_positive(p["pointwise"]["k"], p["pointwise"]["b"])
        return p

    @staticmethod
    def _hrtem(p: dict, rng: np.random.Generator) -> dict:
        p["column"]["sigma"] = float(rng.uniform(0.5, 3.0))
        p["pointwise"]["k"] = float(rng.uniform(0.0, 0.08))
        p["pointwise"]["b"] = float(rng.uniform(0.5, 8.0))
        use_dose = rng.random() < 0.8
        dose = float(np.exp(rng.uniform(np.log(20.0), np.log(20000.0))))
        p["dose_e_per_A2"] = dose if use_dose else None
        p["mtf_sigma_px"] = float(rng.uniform(0.0, 1.0))
        return p


@dataclass(frozen=True)
class CalibratedPrior:
    """Draws around a calibrated parameter set ``base``: scale-like values (offset, amplitude, b, σ, dose)
    × (1 + N(0, 0.1)), slopes k ± N(0, 0.1 |k| + 0.005), λ ± N(0, 0.01), scan b ± N(0, 0.05), MTF σ ± N(0, 0.05),
    clipped to ``LIMITS``; other entries (intensity map, detector, fixed settings) are copied."""

    base: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", parse_params(self.base))

    @property
    def mode(self) -> str:
        return self.base.mode

    def sample(self, rng: np.random.Generator) -> Any:
        p = self.base.to_dict()
        p.pop("calibration", None)
        self._stem(p, rng) if isinstance(self.base, StemParams) else self._hrtem(p, rng)
        if p.get("dose_e_per_A2") is not None:
            p["dose_e_per_A2"] = clip("dose_e_per_A2", _rel(p["dose_e_per_A2"], rng))
        return parse_params(p)

    @staticmethod
    def _stem(p: dict, rng: np.random.Generator) -> None:
        bg, sc, pw = p["background"], p["scan"], p["pointwise"]
        bg["offset"] = clip("background.offset", _rel(bg["offset"], rng))
        bg["amplitude"] = clip("background.amplitude", _rel(bg["amplitude"], rng))
        sc["k"] = clip("scan.k", _slope(sc["k"], rng))
        sc["b"] = clip("scan.b", sc["b"] + 0.05 * rng.standard_normal())
        pw["k"] = clip("pointwise.k", _slope(pw["k"], rng))
        pw["b"] = clip("pointwise.b", _rel(pw["b"], rng))
        pw["k"] = keep_scale_positive(pw["k"], pw["b"])
        pw["lam"] = clip("pointwise.lam", pw["lam"] + 0.01 * rng.standard_normal())

    @staticmethod
    def _hrtem(p: dict, rng: np.random.Generator) -> None:
        p["column"]["sigma"] = clip("column.sigma", _rel(p["column"]["sigma"], rng))
        p["pointwise"]["k"] = clip("hrtem.pointwise.k", _slope(p["pointwise"]["k"], rng))
        p["pointwise"]["b"] = clip("hrtem.pointwise.b", _rel(p["pointwise"]["b"], rng))
        p["mtf_sigma_px"] = clip("mtf_sigma_px", p["mtf_sigma_px"] + 0.05 * rng.standard_normal())


def _rel(v: float, rng: np.random.Generator) -> float:
    return float(v) * (1.0 + 0.1 * rng.standard_normal())


def _slope(v: float, rng: np.random.Generator) -> float:
    return float(v) + (0.1 * abs(float(v)) + 0.005) * rng.standard_normal()


def prior_for(mode: str, base: Any = None) -> NoisePrior:
    """``CalibratedPrior(base)`` when a calibrated ``base`` of ``mode`` is given, else ``EmNoisePrior(mode)``."""
    check_mode(mode)
    return CalibratedPrior(parse_params(base, mode=mode)) if base is not None else EmNoisePrior(mode)


def sample_noise_params(mode: str, rng: np.random.Generator, base: Any = None) -> dict:
    """One image's noise parameters as a JSON-able dict: ``prior_for(mode, base).sample(rng)``."""
    return prior_for(mode, base).sample(rng).to_dict()
