"""Calibrated noise models for STEM (HAADF/BF) and HRTEM images on a 0–255 intensity scale.

STEM, as in the SFIN authors' published generator: ``noisy = Q(signal ± background + scan + pointwise)``:

* background — constant ``offset`` plus ``amplitude`` times a Perlin field ``(v + 1) / 2`` (6 octaves,
  persistence 0.5, lacunarity 2, coarsest cell ``scale_px`` = 100 px; about 0.3–0.7, std ≈ 0.07); added for
  HAADF, subtracted for BF (the background darkens a bright-field image);
* scan noise — per image row a cubic spline through knots (spacing ``knot_spacing_px`` ≈ 10.2 px, i.e. 26 knots
  on 256 px) with values N(0, std); two independent rows are drawn with ``std(0) = 4 (b + 0.6) − 16`` and
  ``std(80) = 4 (40 k + b + 0.6) − 16`` (both floored at 0; the k term is evaluated at 40, as published) and
  blended per pixel with weight ``r = clip(g / 80, 0, 1)``, g the Sobel gradient magnitude of the noise-free
  image (background included): ``scan = (1 − r) std(0) z0 + r std(80) z1``;
* pointwise noise — Tukey-lambda, shape ``lam``, scale ``max(k I + b, 0)`` with I the image *after* the scan
  noise, drawn through the quantile ``Q(p) = (p^lam − (1 − p)^lam) / lam`` (logistic at lam = 0);
* detector — the result is clipped to 0–255 and truncated to 8-bit integers (``detector.quantize``; set it to
  false for unclipped floats).

HRTEM (SCGN paper): optional Poisson shot noise at ``dose_e_per_A2`` (expected counts per pixel
``dose · pixel_size_A²`` at the mean clean intensity), a Gaussian detector MTF blur (σ ``mtf_sigma_px``), a
Gaussian offset per image column (σ ``column.sigma``) and pointwise Gaussian noise with
``σ = max(k I + b, 0)``, I the (MTF-blurred) clean intensity. HRTEM output is not clipped.

Generic options, both modes: ``jitter_px`` (scan-line jitter: each row shifted along x by N(0, jitter_px) px,
applied to the clean image first), ``read_sigma`` (additive Gaussian read noise), and for STEM also
``dose_e_per_A2`` (Poisson shot noise on the signal before the additive noises).

Everything is vectorized and drawn from the caller's ``numpy.random.Generator`` in a fixed order, so the same
seed gives the same noise.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from em_noise.errors import EMInputError
from em_noise.perlin import perlin_field

SCHEMA = "em-noise/noise-params"
VERSION = 1
MODES = ("haadf", "bf", "hrtem")
STEM_MODES = ("haadf", "bf")

POINTWISE_I_MAX = 300.0  # highest signal (clean + background) the pointwise-slope sanity clip protects
SCAN_G_MAX = 80.0  # Sobel magnitude at which the scan-noise std saturates (paper)
SCAN_K_AT_G_MAX = 40.0  # the published generator evaluates the k term of std(80) at 40
KNOT_SPACING_PX = 255.0 / 25.0  # 26 knots across 256 px

# Sane ranges the parameter draws are clipped to (documented in sample_noise_params).
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


# ----------------------------------------------------------------------------------------------------- helpers
def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude ``hypot(sobel_x, sobel_y)``, unnormalized 3×3 Sobel kernel and border (as cv2.Sobel)."""
    img = np.asarray(image, dtype=np.float64)
    return np.hypot(ndimage.sobel(img, axis=1, mode="mirror"), ndimage.sobel(img, axis=0, mode="mirror"))


def scan_std(g: np.ndarray | float, k: float, b: float) -> np.ndarray:
    """Scan-noise knot std at gradient magnitude ``g`` ∈ [0, 80] (Sobel units), the published line through
    ``std(0) = 4 (b + 0.6) − 16`` and ``std(80) = 4 (40 k + b + 0.6) − 16``, floored at 0."""
    g = np.asarray(g, dtype=np.float64)
    return np.maximum(4.0 * (k * g * (SCAN_K_AT_G_MAX / SCAN_G_MAX) + b + 0.6) - 16.0, 0.0)


def tukey_quantile(p: np.ndarray, lam: float) -> np.ndarray:
    """Standard Tukey-lambda quantile ``(p^lam − (1−p)^lam) / lam``; the logistic quantile when lam ≈ 0."""
    p = np.asarray(p, dtype=np.float64)
    if abs(lam) < 1e-6:
        return np.log(p) - np.log1p(-p)
    return (p**lam - (1.0 - p) ** lam) / lam


def tukey_std(lam: float) -> float:
    """Standard deviation of the standard (scale 1) Tukey-lambda distribution; inf for lam <= −0.5."""
    if lam <= -0.5:
        return math.inf
    if abs(lam) < 1e-4:
        return math.pi / math.sqrt(3.0)
    var = 2.0 / lam**2 * (1.0 / (1.0 + 2.0 * lam) - math.exp(2 * math.lgamma(lam + 1.0) - math.lgamma(2 * lam + 2.0)))
    return math.sqrt(var)


@functools.lru_cache(maxsize=32)
def spline_basis(width: int, knot_spacing_px: float = KNOT_SPACING_PX) -> np.ndarray:
    """(width, n_knots) matrix B such that ``B @ knot_values`` is the cubic spline through equally spaced knots."""
    n = max(4, int(round((width - 1) / knot_spacing_px)) + 1)
    xk = np.linspace(0.0, width - 1.0, n)
    basis = CubicSpline(xk, np.eye(n), axis=0, bc_type="not-a-knot")(np.arange(width, dtype=np.float64))
    basis.setflags(write=False)
    return basis


# ------------------------------------------------------------------------------------------------ noise models
class NoiseModel(Protocol):
    """A noise model maps an image to a new image; ``signal`` is the noise-free reference for
    signal-dependent parameters (gradient, intensity); it defaults to ``x``."""

    signal_rule: str  # how Compose updates the noise-free signal: "keep", "add" (the change) or "filter"

    def __call__(self, x: np.ndarray, rng: np.random.Generator, signal: np.ndarray | None = None) -> np.ndarray: ...


@dataclass
class BackgroundNoise:
    """Smooth background ``offset + amplitude · (v + 1) / 2`` (v Perlin noise, 0–255 units), added with ``sign``
    (+1 HAADF: brightens; −1 BF: darkens)."""

    offset: float
    amplitude: float
    scale_px: float = 100.0
    octaves: int = 6
    persistence: float = 0.5
    lacunarity: float = 2.0
    sign: float = 1.0
    signal_rule: str = field(default="add", repr=False)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        f = perlin_field(shape, rng, self.scale_px, self.octaves, self.persistence, self.lacunarity)
        return self.offset + self.amplitude * f

    def __call__(self, x, rng, signal=None):
        return x + self.sign * self.sample(x.shape, rng)


@dataclass
class ScanNoise:
    """Row-wise smooth scan noise whose knot std grows with the signal's Sobel gradient magnitude."""

    k: float
    b: float
    knot_spacing_px: float = KNOT_SPACING_PX
    g_max: float = SCAN_G_MAX
    signal_rule: str = field(default="keep", repr=False)

    def sample(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = signal.shape
        basis = spline_basis(w, self.knot_spacing_px)
        knots = rng.standard_normal((2, h, basis.shape[1]))
        rows = knots @ basis.T  # (2, h, w): unit-std splines, one pair per row
        r = np.clip(sobel_magnitude(signal) / self.g_max, 0.0, 1.0)
        s0, s1 = scan_std(0.0, self.k, self.b), scan_std(self.g_max, self.k, self.b)
        return (1.0 - r) * (s0 * rows[0]) + r * (s1 * rows[1])

    def __call__(self, x, rng, signal=None):
        return x + self.sample(x if signal is None else signal, rng)


@dataclass
class PointwiseNoise:
    """Independent Tukey-lambda noise per pixel, scale ``max(k I + b, 0)`` with I the image it is added to
    (STEM: after the scan noise, as published)."""

    k: float
    b: float
    lam: float
    signal_rule: str = field(default="keep", repr=False)

    def sample(self, intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = np.clip(rng.random(intensity.shape), 1e-12, 1.0 - 1e-12)
        return np.maximum(self.k * intensity + self.b, 0.0) * tukey_quantile(p, self.lam)

    def __call__(self, x, rng, signal=None):
        return x + self.sample(x, rng)


@dataclass
class Detector:
    """8-bit detector read-out: clip to [0, 255] and truncate to integers (as ``uint8`` conversion does)."""

    signal_rule: str = field(default="keep", repr=False)

    def __call__(self, x, rng, signal=None):
        return np.floor(np.clip(x, 0.0, 255.0))


@dataclass
class GaussianNoise:
    """Independent Gaussian noise per pixel, ``σ = max(k I + b, 0)`` (k = 0: plain read noise of σ = b)."""

    k: float
    b: float
    signal_rule: str = field(default="keep", repr=False)

    def sample(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.maximum(self.k * signal + self.b, 0.0) * rng.standard_normal(signal.shape)

    def __call__(self, x, rng, signal=None):
        return x + self.sample(x if signal is None else signal, rng)


@dataclass
class ColumnNoise:
    """A Gaussian offset N(0, sigma²) per image column (0–255 units)."""

    sigma: float
    signal_rule: str = field(default="keep", repr=False)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(self.sigma * rng.standard_normal((1, shape[1])), shape)

    def __call__(self, x, rng, signal=None):
        return x + self.sample(x.shape, rng)


@dataclass
class PoissonNoise:
    """Shot noise at ``dose_e_per_A2``: the mean of the signal maps to ``dose · pixel_size_A²`` counts."""

    dose_e_per_A2: float
    pixel_size_A: float
    signal_rule: str = field(default="keep", repr=False)

    def __call__(self, x, rng, signal=None):
        ref = x if signal is None else signal
        mean = float(np.mean(ref))
        mean = mean if mean > 1e-6 else 1.0
        counts_per_unit = self.dose_e_per_A2 * self.pixel_size_A**2 / mean
        return rng.poisson(np.maximum(x, 0.0) * counts_per_unit) / counts_per_unit


@dataclass
class MTFBlur:
    """Detector MTF as a Gaussian blur of ``sigma_px`` px (applied to the image and to the noise-free signal)."""

    sigma_px: float
    signal_rule: str = field(default="filter", repr=False)

    def filter(self, x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, self.sigma_px, mode="reflect") if self.sigma_px > 0.05 else x

    def __call__(self, x, rng, signal=None):
        return self.filter(x)


@dataclass
class ScanJitter:
    """Scan-line jitter: each row shifted along x by N(0, sigma_px²) px (linear interpolation, edge clamped)."""

    sigma_px: float
    signal_rule: str = field(default="add", repr=False)

    def __call__(self, x, rng, signal=None):
        h, w = x.shape
        shifts = self.sigma_px * rng.standard_normal((h, 1))
        src = np.clip(np.arange(w)[None, :] - shifts, 0.0, w - 1.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), w - 2) if w > 1 else np.zeros_like(src, dtype=np.int64)
        t = src - i0
        left = np.take_along_axis(x, i0, axis=1)
        right = np.take_along_axis(x, np.minimum(i0 + 1, w - 1), axis=1)
        return (1.0 - t) * left + t * right


@dataclass
class Compose:
    """Apply noise models in order, tracking the noise-free signal that signal-dependent models read."""

    models: list[Any]

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(clean, dtype=np.float64)
        signal = x
        for m in self.models:
            new = m(x, rng, signal=signal)
            if m.signal_rule == "add":
                signal = signal + (new - x)
            elif m.signal_rule == "filter":
                signal = m.filter(signal)
            x = new
        return x.astype(np.float32)


# ------------------------------------------------------------------------------------------- params and API
def _clip(name: str, value: float) -> float:
    lo, hi = LIMITS[name]
    return float(min(max(value, lo), hi))


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise EMInputError(None, f"unknown noise mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def default_params(mode: str) -> dict:
    """The central (mean) parameter set of ``mode`` in the params schema, without randomness."""
    _check_mode(mode)
    head = {"schema": SCHEMA, "version": VERSION, "mode": mode}
    if mode == "hrtem":
        return {**head, "column": {"sigma": 1.5}, "pointwise": {"k": 0.04, "b": 4.0},
                "dose_e_per_A2": None, "mtf_sigma_px": 0.5, "read_sigma": 0.0, "jitter_px": 0.0}
    scan, pw = _STEM_DRAWS[mode]
    return {**head,
            "background": {"offset": 25.0, "amplitude": 75.0, "scale_px": 100.0, "octaves": 6,
                           "persistence": 0.5, "lacunarity": 2.0},
            "scan": {"k": scan["k"][0], "b": scan["b"][0], "knot_spacing_px": KNOT_SPACING_PX, "g_max": SCAN_G_MAX},
            "pointwise": {"k": pw["k"][0], "b": pw["b"][0], "lam": pw["lam"][0]},
            "dose_e_per_A2": None, "read_sigma": 0.0, "jitter_px": 0.0, "detector": {"quantize": True}}


# (mean, sd) of the per-image draws of the SFIN paper
_STEM_DRAWS = {
    "haadf": ({"k": (0.0982, 0.1), "b": (4.4123, 0.1)},
              {"k": (0.05, 0.03), "b": (6.35, 4.04), "lam": (0.04, 0.01)}),
    "bf": ({"k": (0.04, 0.01), "b": (6.2, 1.0)},
           {"k": (-0.02, 0.02), "b": (17.03, 5.71), "lam": (0.38, 0.20)}),
}


def validate_params(params: dict, mode: str | None = None, source: Any = None) -> dict:
    """Check that ``params`` follows the schema (of ``mode`` if given); raise EMInputError naming the problem."""
    if not isinstance(params, dict):
        raise EMInputError(source, "noise params must be a JSON object")
    m = params.get("mode")
    if m not in MODES:
        raise EMInputError(source, f"noise params have no valid 'mode' (got {m!r})")
    if mode is not None and m != mode:
        raise EMInputError(source, f"noise params are for mode {m!r}, not {mode!r}")
    needed = (("column", "sigma"), ("pointwise", "k"), ("pointwise", "b")) if m == "hrtem" else (
        ("background", "offset"), ("background", "amplitude"), ("scan", "k"), ("scan", "b"),
        ("pointwise", "k"), ("pointwise", "b"), ("pointwise", "lam"))
    for group, key in needed:
        value = params.get(group, {}).get(key) if isinstance(params.get(group), dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise EMInputError(source, f"noise params lack a finite number at {group}.{key}")
    for key in ("dose_e_per_A2",):
        v = params.get(key)
        if v is not None and (not isinstance(v, (int, float)) or not v > 0):
            raise EMInputError(source, f"noise params: {key} must be null or a positive number")
    return params


def sample_noise_params(mode: str, rng: np.random.Generator, base: dict | None = None) -> dict:
    """Draw one image's noise parameters (JSON-able dict in the calibrate() schema).

    Without ``base``: the paper defaults. STEM (mean, sd), clipped to ``LIMITS``: background offset U(0, 50),
    amplitude U(50, 100); HAADF scan k N(0.0982, 0.1) ∈ [−0.2, 0.4], b N(4.4123, 0.1) ∈ [3.4, 10];
    pointwise k N(0.05, 0.03) ∈ [−0.1, 0.2], b N(6.35, 4.04) ∈ [0.5, 40], λ N(0.04, 0.01) ∈ [−0.2, 1];
    BF scan k N(0.04, 0.01), b N(6.2, 1); pointwise k N(−0.02, 0.02), b N(17.03, 5.71), λ N(0.38, 0.20).
    A negative pointwise k is further limited to ``k ≥ −b / 600`` so the scale at I = 300 stays ≥ b / 2
    (else bright BF regions would get no pointwise noise at all).
    HRTEM (our choice, covering clean-ish to very noisy): column σ U(0.5, 3); pointwise k U(0, 0.08),
    b U(0.5, 8); dose log-uniform in [20, 20000] e⁻/Å² with probability 0.8, else no shot noise (null);
    MTF σ U(0, 1) px.

    With ``base`` (a calibrated dict of the same mode): each value drawn around the calibrated one —
    scale-like values (offset, amplitude, b, σ, dose) × (1 + N(0, 0.1)), slopes k ± N(0, 0.1 |k| + 0.005),
    λ ± N(0, 0.01), MTF σ ± N(0, 0.05) — clipped to the same ranges; other keys are copied.
    """
    _check_mode(mode)
    if base is not None:
        return _sample_around(validate_params(base, mode), rng)
    if mode == "hrtem":
        p = default_params(mode)
        p["column"]["sigma"] = float(rng.uniform(0.5, 3.0))
        p["pointwise"]["k"] = float(rng.uniform(0.0, 0.08))
        p["pointwise"]["b"] = float(rng.uniform(0.5, 8.0))
        use_dose = rng.random() < 0.8
        dose = float(np.exp(rng.uniform(np.log(20.0), np.log(20000.0))))
        p["dose_e_per_A2"] = dose if use_dose else None
        p["mtf_sigma_px"] = float(rng.uniform(0.0, 1.0))
        return p
    p = default_params(mode)
    scan, pw = _STEM_DRAWS[mode]
    p["background"]["offset"] = float(rng.uniform(0.0, 50.0))
    p["background"]["amplitude"] = float(rng.uniform(50.0, 100.0))
    for key in ("k", "b"):
        p["scan"][key] = _clip(f"scan.{key}", rng.normal(*scan[key]))
    for key in ("k", "b", "lam"):
        p["pointwise"][key] = _clip(f"pointwise.{key}", rng.normal(*pw[key]))
    p["pointwise"]["k"] = _keep_scale_positive(p["pointwise"]["k"], p["pointwise"]["b"])
    return p


def _keep_scale_positive(k: float, b: float) -> float:
    """Sanity clip of a negative slope: the pointwise scale at I = 300 (bright BF + background) stays ≥ b / 2."""
    return float(max(k, -0.5 * b / POINTWISE_I_MAX))


def _sample_around(base: dict, rng: np.random.Generator) -> dict:
    p = copy.deepcopy(base)
    p["schema"], p["version"] = SCHEMA, VERSION

    def rel(v: float) -> float:
        return float(v) * (1.0 + 0.1 * rng.standard_normal())

    def slope(v: float) -> float:
        return float(v) + (0.1 * abs(float(v)) + 0.005) * rng.standard_normal()

    if p["mode"] == "hrtem":
        p["column"]["sigma"] = _clip("column.sigma", rel(p["column"]["sigma"]))
        p["pointwise"]["k"] = _clip("hrtem.pointwise.k", slope(p["pointwise"]["k"]))
        p["pointwise"]["b"] = _clip("hrtem.pointwise.b", rel(p["pointwise"]["b"]))
        p["mtf_sigma_px"] = _clip("mtf_sigma_px", float(p.get("mtf_sigma_px") or 0.0) + 0.05 * rng.standard_normal())
    else:
        p["background"]["offset"] = _clip("background.offset", rel(p["background"]["offset"]))
        p["background"]["amplitude"] = _clip("background.amplitude", rel(p["background"]["amplitude"]))
        p["scan"]["k"] = _clip("scan.k", slope(p["scan"]["k"]))
        p["scan"]["b"] = _clip("scan.b", p["scan"]["b"] + 0.05 * rng.standard_normal())
        p["pointwise"]["k"] = _clip("pointwise.k", slope(p["pointwise"]["k"]))
        p["pointwise"]["b"] = _clip("pointwise.b", rel(p["pointwise"]["b"]))
        p["pointwise"]["k"] = _keep_scale_positive(p["pointwise"]["k"], p["pointwise"]["b"])
        p["pointwise"]["lam"] = _clip("pointwise.lam", p["pointwise"]["lam"] + 0.01 * rng.standard_normal())
    if p.get("dose_e_per_A2") is not None:
        p["dose_e_per_A2"] = _clip("dose_e_per_A2", rel(p["dose_e_per_A2"]))
    return p


def build_noise(mode: str, params: dict, pixel_size_A: float | None = None) -> Compose:
    """Compose the model objects described by ``params`` (see the module docstring for the order)."""
    _check_mode(mode)
    validate_params(params, mode)
    models: list[Any] = []
    jitter = float(params.get("jitter_px") or 0.0)
    if jitter > 0:
        models.append(ScanJitter(jitter))
    dose = params.get("dose_e_per_A2")
    if dose is not None:
        if pixel_size_A is None or not pixel_size_A > 0:
            raise EMInputError(None, "noise params set dose_e_per_A2 but no positive pixel_size_A was given")
    if mode == "hrtem":
        if dose is not None:
            models.append(PoissonNoise(float(dose), float(pixel_size_A)))
        mtf = float(params.get("mtf_sigma_px") or 0.0)
        if mtf > 0:
            models.append(MTFBlur(mtf))
        models.append(ColumnNoise(float(params["column"]["sigma"])))
        models.append(GaussianNoise(float(params["pointwise"]["k"]), float(params["pointwise"]["b"])))
    else:
        bg, sc, pw = params["background"], params["scan"], params["pointwise"]
        models.append(BackgroundNoise(float(bg["offset"]), float(bg["amplitude"]), float(bg.get("scale_px", 100.0)),
                                      int(bg.get("octaves", 6)), float(bg.get("persistence", 0.5)),
                                      float(bg.get("lacunarity", 2.0)), sign=-1.0 if mode == "bf" else 1.0))
        if dose is not None:
            models.append(PoissonNoise(float(dose), float(pixel_size_A)))
        models.append(ScanNoise(float(sc["k"]), float(sc["b"]), float(sc.get("knot_spacing_px", KNOT_SPACING_PX)),
                                float(sc.get("g_max", SCAN_G_MAX))))
        models.append(PointwiseNoise(float(pw["k"]), float(pw["b"]), float(pw["lam"])))
    read = float(params.get("read_sigma") or 0.0)
    if read > 0:
        models.append(GaussianNoise(0.0, read))
    if mode != "hrtem" and (params.get("detector") or {}).get("quantize", True):
        models.append(Detector())
    return Compose(models)


def apply_noise(clean: np.ndarray, mode: str, params: dict, rng: np.random.Generator,
                pixel_size_A: float | None = None) -> np.ndarray:
    """Noisy float32 image from a clean (H, W) image on the 0–255 scale; ``pixel_size_A`` (Å) needed with a dose."""
    clean = np.asarray(clean)
    if clean.ndim != 2 or clean.shape[0] < 2 or clean.shape[1] < 2:
        raise EMInputError(None, f"apply_noise needs a 2-D image of at least 2×2 px, got shape {clean.shape}")
    return build_noise(mode, params, pixel_size_A)(clean, rng)
