"""Noise models for STEM (HAADF/BF) and HRTEM images on a 0–255 intensity scale, and their composition.

STEM, as in the SFIN authors' published generator: ``noisy = Q(signal ± background + scan + pointwise)``:

* background — constant ``offset`` plus ``amplitude`` times a Perlin field ``(v + 1) / 2`` (6 octaves,
  persistence 0.5, lacunarity 2, coarsest cell ``scale_px`` = 100 px; about 0.3–0.7, std ≈ 0.07); added for
  HAADF, subtracted for BF (the background darkens a bright-field image);
* scan noise — per image row a cubic spline (not-a-knot) through ``int(W / 10 + 1)`` knots spread evenly over
  the W pixels (26 on 256 px), knot values N(0, std); two independent rows are drawn with
  ``std(0) = 4 (b + 0.6) − 16`` and ``std(80) = 4 (40 k + b + 0.6) − 16`` (both floored at 0; the k term is
  evaluated at 40, as published) and blended per pixel with weight ``r = clip(g / 80, 0, 1)``, g the Sobel
  gradient magnitude (3×3, mirrored border as OpenCV's default) of the noise-free image, background included:
  ``scan = (1 − r) std(0) z0 + r std(80) z1``;
* pointwise noise — Tukey-lambda, shape ``lam``, scale ``max(k I + b, 0)`` with I the image *after* the scan
  noise, drawn through the quantile ``Q(p) = (p^lam − (1 − p)^lam) / lam`` (logistic at lam = 0);
* detector — the result is clipped to 0–255 and truncated to 8-bit integers (``detector.quantize``; false gives
  unclipped floats).

HRTEM (SCGN paper): optional Poisson shot noise at ``dose_e_per_A2`` (expected counts per pixel
``dose · pixel_size_A²`` at the mean clean intensity), a Gaussian detector MTF blur (σ ``mtf_sigma_px``), a
Gaussian offset per image column (σ ``column.sigma``) and pointwise Gaussian noise with
``σ = max(k I + b, 0)``, I the (MTF-blurred) clean intensity. HRTEM output is not clipped.

Generic options, both modes: ``jitter_px`` (scan-line jitter: each row shifted along x by N(0, jitter_px) px,
applied to the clean image first), ``read_sigma`` (additive Gaussian read noise), and for STEM also
``dose_e_per_A2`` (Poisson shot noise on the signal before the additive noises).

Parameters are :mod:`em_noise.params` models (dicts in that layout are accepted); their prior draws live in
:mod:`em_noise.priors`.  Everything is vectorized and drawn from the caller's ``numpy.random.Generator`` in a
fixed order, so the same seed gives the same noise.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from em_noise.errors import EMInputError
from em_noise.params import KNOT_SPACING_PX, SCAN_G_MAX, HrtemParams, StemParams, check_mode, parse_params
from em_noise.perlin import perlin_field

SCAN_K_AT_G_MAX = 40.0  # the published generator evaluates the k term of std(80) at 40


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


def knot_count(width: int, knot_spacing_px: float = KNOT_SPACING_PX) -> int:
    """Knots of a scan-noise row of ``width`` px: ``int(width / knot_spacing_px + 1)`` as published (at least 2)."""
    return max(2, int(width / knot_spacing_px + 1))


@functools.lru_cache(maxsize=32)
def spline_basis(width: int, knot_spacing_px: float = KNOT_SPACING_PX) -> np.ndarray:
    """(width, n_knots) matrix B such that ``B @ knot_values`` is the scan-noise row: the not-a-knot cubic spline
    through knots at 0, 1, …, n − 1 evaluated at ``linspace(0, n − 1, width)`` (first and last pixel on a knot)."""
    n = knot_count(width, knot_spacing_px)
    spline = CubicSpline(np.arange(n, dtype=np.float64), np.eye(n), axis=0, bc_type="not-a-knot")
    basis = spline(np.linspace(0.0, n - 1.0, width))
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




# ------------------------------------------------------------------------------------------------ assembly
def build_noise(mode: str, params: Any, pixel_size_A: float | None = None) -> Compose:
    """Compose the model objects described by ``params`` (see the module docstring for the order)."""
    p = parse_params(params, mode=check_mode(mode))
    models: list[Any] = []
    if p.jitter_px > 0:
        models.append(ScanJitter(p.jitter_px))
    if p.dose_e_per_A2 is not None and not (pixel_size_A is not None and pixel_size_A > 0):
        raise EMInputError(None, "noise params set dose_e_per_A2 but no positive pixel_size_A was given")
    models += _hrtem_models(p, pixel_size_A) if isinstance(p, HrtemParams) else _stem_models(p, pixel_size_A)
    if p.read_sigma > 0:
        models.append(GaussianNoise(0.0, p.read_sigma))
    if isinstance(p, StemParams) and p.detector.quantize:
        models.append(Detector())
    return Compose(models)


def _stem_models(p: StemParams, pixel_size_A: float | None) -> list[Any]:
    bg, sc, pw = p.background, p.scan, p.pointwise
    models: list[Any] = [BackgroundNoise(bg.offset, bg.amplitude, bg.scale_px, bg.octaves, bg.persistence,
                                         bg.lacunarity, sign=-1.0 if p.mode == "bf" else 1.0)]
    if p.dose_e_per_A2 is not None:
        models.append(PoissonNoise(p.dose_e_per_A2, float(pixel_size_A)))
    return models + [ScanNoise(sc.k, sc.b, sc.knot_spacing_px, sc.g_max), PointwiseNoise(pw.k, pw.b, pw.lam)]


def _hrtem_models(p: HrtemParams, pixel_size_A: float | None) -> list[Any]:
    models: list[Any] = []
    if p.dose_e_per_A2 is not None:
        models.append(PoissonNoise(p.dose_e_per_A2, float(pixel_size_A)))
    if p.mtf_sigma_px > 0:
        models.append(MTFBlur(p.mtf_sigma_px))
    return models + [ColumnNoise(p.column.sigma), GaussianNoise(p.pointwise.k, p.pointwise.b)]


def apply_noise(clean: np.ndarray, mode: str, params: Any, rng: np.random.Generator,
                pixel_size_A: float | None = None) -> np.ndarray:
    """Noisy float32 image from a clean (H, W) image on the 0–255 scale; ``pixel_size_A`` (Å) needed with a dose.

    The result is on the model's 0–255 scale; ``params.intensity`` (from a calibration) maps it to the calibrated
    image's units (:func:`em_noise.synth.synthesize` applies it)."""
    clean = np.asarray(clean)
    if clean.ndim != 2 or clean.shape[0] < 2 or clean.shape[1] < 2:
        raise EMInputError(None, f"apply_noise needs a 2-D image of at least 2×2 px, got shape {clean.shape}")
    return build_noise(mode, params, pixel_size_A)(clean, rng)
