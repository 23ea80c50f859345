"""Estimate the noise parameters of :mod:`em_noise.noise` from one image, so synthesis can imitate an instrument.

``calibrate(image, mode)`` returns a JSON-able dict in the params schema of :mod:`em_noise.noise`
(``"schema": "em-noise/noise-params", "version": 1``, same nested keys as ``sample_noise_params``) plus a
``"calibration"`` entry of diagnostics; ``save_params`` / ``load_params`` write and read it as JSON.

STEM (haadf/bf), intensities on the image's own scale (0–255 expected):

* pointwise: ``P = X − R``, ``R`` a Savitzky–Golay smoothing along rows (window 7, degree 5: keeps atom tops
  and the piecewise-cubic scan splines), so ``P`` is the white noise high-passed by the known kernel
  ``a = δ − h``.  Pixels are grouped by a guide image built from *other* rows only (its noise is independent
  of ``P``) and per group the regressor is the mean of ``X`` itself — an unbiased mean of the true intensity,
  so neither regression dilution nor smoothing bias enters the slope.  Per group
  ``E[P²] = Σa² sd² + (scan noise left in P)``; the scan part is modelled exactly (below) and subtracted, and
  ``sd = max(K I + B, 0)`` is fitted.  λ: the excess kurtosis of the pointwise noise from the 4th cumulant
  of ``P`` (``E[P⁴] = 3 v² + κ Σ a⁴ sd⁴``, self-normalized per group), inverted through the Tukey-lambda
  kurtosis; ``k = K / std_Tukey(λ)``, ``b = B / std_Tukey(λ)`` (the synthesis scale convention).  When the
  pointwise noise is under ``MIN_POINTWISE_SHARE`` of the residual, or κ is outside the Tukey range, λ is
  not identifiable and the paper's mean (0.04 HAADF, 0.38 BF) is returned (``lam_identifiable: false``).
  The groups use only pixels whose r (below) is constant along the row filter's reach (``PW_R_SPAN``), where
  the scan blend is a pure spline and leaks least, and from the second round of the fit on only those whose
  modelled scan leak is under ``LOW_LEAK`` (5 %) of their pointwise part (row windows inside one spline piece):
  the leak's model error, which goes through the estimated r and which the jackknife does not see, then hardly
  enters.  This matters most for λ: a Gaussian leak whose spread within a group the model gets wrong shifts
  ``m4/m2²`` by ``3 Δ(⟨v²⟩/⟨v⟩²)``, of the size of the whole platykurtic range of κ·Σa⁴/(Σa²)² (BF λ read
  0.78–1 for true 0.46–0.76 in em_noise.synth images when all steady pixels were used).  The pointwise share
  of the ``MIN_POINTWISE_SHARE`` criterion is still measured over all steady pixels (the guard against a wrong
  r); fewer than ``LOW_LEAK_MIN_PX`` low-leak pixels also leave λ unidentified.
  Near λ = 1 the Tukey kurtosis is flat (−1.08 at 0.7, −1.2 at 1), so a platykurtic λ is coarse from one
  image whatever the pixels: benchmarks/calibration_roundtrip.py measures the spread over noise draws.
* scan: ``S = W − colSG(W)``, ``W`` a Gaussian row blur (σ 2 px, keeps the splines), ``colSG`` a cubic
  Savitzky–Golay (window 5) along columns: structure is smooth along y and cancels, scan noise is white across
  rows and stays.  With ``r = clip(g / 80, 0, 1)``, ``E[S²] = s₀² V₀ + s₈₀² V₁ + leak``: ``V₀, V₁`` are the
  exact variances of the two filtered scan components for this ``r`` map (through the spline basis), the leak
  is the pointwise noise passed by the filters.  ``s₀², s₈₀² ≥ 0`` come from a least-squares fit over groups
  of g, alternated 3× with the pointwise fit.  This is the synthesis model itself (the paper fits std linearly
  for g ≤ 80; the synthesis saturates at 80, so pixels above carry s₈₀ directly and are used).  Inverting
  ``std(g) = 4 (k g + b + 0.6) − 16``: ``b = (s₀ + 13.6) / 4``, ``k = (s₈₀ − s₀) / 320``.
* the gradient map g: the synthesis takes the Sobel magnitude of the noise-free signal (clean + background).
  A σ 2 px blur of the image (first pass, on a central ``FIRST_PASS_PX`` crop) flattens sharp columns
  (σ ≥ 1 px in em_noise.synth) and so underestimates g near them (HAADF scan k was then read too low and
  s₀ too high).  The second pass estimates the signal with a Wiener filter whose noise spectrum is the
  first pass's model (flat pointwise part + spline spectrum of the scan part along x) and signal power the
  smoothed periodogram minus it: lattice reflections stand far above the noise floor and stay sharp.  The
  noise the filter lets through adds a known mean to g² (its spectrum times the Sobel response, scaled by
  the local pointwise variance and the mean scan variance), which is subtracted before ``r`` is formed.
* background: the smooth lower (HAADF, clean dark level taken as 0) or upper (BF, vacuum level taken as
  ``BF_VACUUM_LEVEL``) envelope of the image; its range is divided by the range the same envelope keeps of a
  pure unit background field drawn from the synthesis model (the envelope smooths away the finest octaves).
  BF offset and vacuum level cannot be told apart from one image.

HRTEM: residual ``P`` as above minus its column means (the column noise is constant down a column).
Column σ: ``mean(colmean²) = Σa² σ_c² + (residual noise variance) / rows``.  Pointwise: per group,
lag-0 products ``E[P²] = Σa² (k I + b)² + A R₀ I / c`` and lag-d products along y ``A R_d I / c``: shot noise
behind a Gaussian MTF is correlated between rows, the white noise is not; ``A, R`` follow from the MTF σ,
searched on a grid that includes 0 (white shot noise, then told from the white part only by its linear
rather than quadratic growth with I).  The intensity guide skips the rows within ``HRTEM_GUIDE_SKIP_PX`` of the
centre row (MTF-correlated shot noise there would make the groups select noise).  Shot noise is reported when
``1/c`` exceeds ``SHOT_MIN_Z`` jackknife standard errors (σ held; the standard errors of k, b and the dose let
σ vary by ±0.05 px, as the dose of a wide MTF depends steeply on it):
``dose_e_per_A2 = c · mean(I) / pixel_size_A²`` if ``pixel_size_A`` is given, else the shot noise is folded into
the linear σ.  Without resolved shot noise:
``dose_e_per_A2`` null and declared unidentified (no dose and a dose too high to see look alike; the output
gives ``dose_e_per_A2_lower_bound``), ``mtf_sigma_px`` 0 (the MTF of the clean image alone is not identified).

Identifiability (``calibration.unidentified``, ``calibration.standard_error``).  Standard errors come from a
delete-one-block jackknife over ``JACKKNIFE_BLOCKS`` blocks of rows of the final group fits (the r map and the
modelled scan leak held).  A parameter is declared unidentified — and the round-trip checks skip it — when

* its standard error exceeds ``IDENT_SE_FRACTION`` (½) of its tolerance half-width evaluated at the estimate:
  one image cannot pin it to the stated precision (pointwise k, b include λ's error through std_Tukey(λ),
  with the prior sd of λ when λ falls back to the prior mean);
* STEM pointwise k, b (and λ): the pointwise part is under ``MIN_POINTWISE_SHARE`` of the residual — it is
  then the difference of ``P²`` and a modelled scan leak whose error, through the estimated r, is of its own
  size and is not seen by the jackknife (BF with weak pointwise next to strong scan noise; HAADF with large
  scan k);
* STEM scan b: by the standard-error criterion; when ``s₀`` sits at its bound 0 (the jackknife replicates sit
  there too), its error is taken as ``sqrt(SE(s₀²))`` of the unbounded least-squares ``s₀²``;
* STEM scan k: ``s₈₀`` is within 2 standard errors of 0 — ``std(80)`` is then 0 for every k ≤ −s₀/320 and
  only an upper bound of k is known;
* HRTEM white k, b: shot noise is resolved and carries over ``WHITE_MAX_SHOT_SHARE`` of the residual
  variance at the mean intensity — the white part is then a small difference of two fitted terms whose model
  errors (MTF shape, Poisson skew at a few counts per pixel, intensity grouping) exceed the jackknife error.
  With em_noise.synth's HRTEM draws (dose log-uniform 20–20000 e⁻/Å² in 80 % of images) this is most images:
  at a few e⁻ per pixel the shot variance is 10–100× the white one.  For a small slope k the 20 % tolerance is
  out of reach of one 256² image whatever the estimator: :func:`em_noise.bounds.hrtem_cramer_rao` gives the
  Cramér–Rao bound of an estimator handed the clean image and the MTF.  For the issue's example (seed 1 sample
  0, k 0.0038, b 3.7, ~90 e⁻ per pixel) it is 5·10⁻⁴ with white and column noise alone (⅔ of the half-width
  0.2 k), 2.5·10⁻³ with the image's shot noise at a known dose and 3.1·10⁻³ with the dose unknown — 4× the
  half-width (benchmarks/calibration_roundtrip.py reports it with the spread of the estimate over noise draws);
* HRTEM column σ: by the same standard-error criterion, its error from a delete-one-block jackknife over
  blocks of neighbouring columns (at tens of e⁻/Å² the shot noise averaged down a column drowns the offsets);
* HRTEM dose: see above; when the resolved dose is declared unidentified by its standard error, so are the
  white k, b (the white part is the total minus the shot part).

None of these criteria looks at the true parameters.  Measured by benchmarks/calibration_roundtrip.py.

Round-trip tolerances held in tests/em_noise/test_calibrate.py (256² lattices of σ 2.5 px columns, the papers'
mean parameters; ``TOLERANCE``, |error| ≤ rel·|true| + abs): pointwise k 20 % + 0.005, b 20 % + 0.5 (BF: 20 %,
the issue's aim, met since the low-leak pointwise fit), λ 0.05 (HAADF) and 0.15 (BF: platykurtic shapes differ
little in kurtosis); scan k 0.03 absolute; scan b 1.2 absolute
(s₀ ≈ 4 is small next to the pointwise leak: poorly determined); background offset 12 (BF: 30, as the
vacuum level is unknown), amplitude 20 %;
HRTEM column σ and pointwise slope 20 %, b 20 % + 1, dose 30 % (null only against null).
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, optimize, special
from scipy.signal import savgol_coeffs

from em_noise import noise as nz
from em_noise.errors import EMInputError
from em_noise.io import write_text

SG5 = savgol_coeffs(5, 3)  # column smoother that keeps local cubics
SG7 = savgol_coeffs(7, 5)  # row smoother for the pointwise residual: keeps local quintics (atom tops)
SCAN_ROW_SIGMA_PX = 2.0
N_GROUPS = 24
MIN_GROUP_PX = 120
BORDER_PX = 4
MIN_SIZE_PX = 32
MIN_POINTWISE_SHARE = 0.7  # below this share of the residual variance, λ is not identifiable: paper mean used
PW_R_SPAN = 0.1  # pointwise fit: pixels whose scan blend weight r varies less than this along the row filter
PW_MIN_STEADY = 0.25  # ... if at least this share of the image qualifies (else all pixels)
LOW_LEAK = 0.05  # pointwise fit and λ: pixels whose modelled scan leak is under this share of their pointwise part
LOW_LEAK_MIN_PX = 0.1  # ... if at least this share of the image qualifies (else the steady pixels, λ unidentified)
FIRST_PASS_PX = 256  # STEM first pass (noise level for the Wiener filter) on a central crop of this size
SHOT_MIN_Z = 3.0  # HRTEM: shot noise is reported when its variance exceeds this many jackknife standard errors
MTF_GRID_PX = (0.0, *np.round(np.arange(0.1, 1.51, 0.05), 2))  # HRTEM MTF σ search grid (px)
HRTEM_GUIDE_SIGMA_PX = 2.0  # HRTEM intensity guide: Gaussian along y over the SG7-smoothed rows ...
HRTEM_GUIDE_SKIP_PX = 2  # ... skipping the rows within this distance (MTF σ ≤ 1.5 px: correlation ≤ 0.14 at 4 px)
WHITE_MAX_SHOT_SHARE = 0.25  # HRTEM: above this shot share of the residual variance, white k, b are unidentified
JACKKNIFE_BLOCKS = 8  # row blocks of the delete-one-block jackknife that gives the standard errors
IDENT_SE_FRACTION = 0.5  # a parameter is unidentified when its standard error exceeds this share of its tolerance
MAX_BIRGE_RATIO = 2.0  # combining frames: scatter beyond this many standard errors -> median instead of weighted mean
BF_VACUUM_LEVEL = 207.5  # assumed clean BF vacuum level (middle of em_noise.synth's range): BF offset is relative

TOLERANCE = {  # (relative, absolute): the round trip holds |estimate − true| <= rel·|true| + abs
    "haadf": {"pointwise.k": (0.2, 0.005), "pointwise.b": (0.2, 0.5), "pointwise.lam": (0.0, 0.05),
              "scan.k": (0.0, 0.03), "scan.b": (0.0, 1.2), "background.offset": (0.0, 12.0),
              "background.amplitude": (0.2, 0.0)},
    "bf": {"pointwise.k": (0.2, 0.005), "pointwise.b": (0.2, 0.0), "pointwise.lam": (0.0, 0.15),
           "scan.k": (0.0, 0.03), "scan.b": (0.0, 1.2), "background.offset": (0.0, 30.0),
           "background.amplitude": (0.2, 0.0)},
    "hrtem": {"column.sigma": (0.2, 0.0), "pointwise.k": (0.2, 0.0), "pointwise.b": (0.2, 1.0),
              "dose_e_per_A2": (0.3, 0.0)},
}


def param_value(params: dict, key: str) -> float | None:
    """The value at ``key`` of a params dict: ``"group.name"`` or a top-level name such as ``dose_e_per_A2``."""
    if "." in key:
        group, name = key.split(".")
        return params[group][name]
    return params.get(key)


def within_tolerance(mode: str, key: str, true: float | None, estimate: float | None) -> bool:
    """|estimate − true| ≤ rel·|true| + abs (``TOLERANCE``); for the dose, null (no shot noise) matches only null."""
    if true is None or estimate is None:
        return true is None and estimate is None
    rel, ab = TOLERANCE[mode][key]
    return abs(estimate - true) <= rel * abs(true) + ab


# ------------------------------------------------------------------------------------------------ small tools
def _tolerance_width(mode: str, key: str, estimate: float) -> float:
    """Half-width ``rel·|estimate| + abs`` of the stated tolerance, evaluated at the estimate (not the truth)."""
    rel, ab = TOLERANCE[mode][key]
    return rel * abs(estimate) + ab


def _gauss_kernel(sigma: float, exclude_centre: bool = False, exclude_px: int = 0) -> np.ndarray:
    """Normalized Gaussian taps; ``exclude_centre`` zeroes the centre tap and ``exclude_px`` the taps up to that
    distance (so a guide built with it is independent of noise correlated over that many rows)."""
    r = int(math.ceil(3.5 * sigma)) + exclude_px
    d = np.arange(-r, r + 1)
    w = np.exp(-(d**2) / (2 * sigma**2))
    if exclude_centre:
        w[r] = 0.0
    if exclude_px > 0:
        w[np.abs(d) <= exclude_px] = 0.0
    return w / w.sum()


def tukey_excess_kurtosis(lam: float) -> float:
    """Excess kurtosis of the Tukey-lambda distribution (λ > −1/4), from its moments
    ``E[Q^n] = λ^−n Σ_j C(n, j) (−1)^j B(λ(n − j) + 1, λ j + 1)``; the logistic 1.2 at λ = 0."""
    if abs(lam) < 1e-9:
        return 1.2

    def moment(n: int) -> float:
        return sum(math.comb(n, j) * (-1) ** j * math.exp(special.betaln(lam * (n - j) + 1, lam * j + 1))
                   for j in range(n + 1)) / lam**n
    return moment(4) / moment(2) ** 2 - 3.0


@functools.lru_cache(maxsize=1)
def _tukey_kurtosis_table() -> tuple[np.ndarray, np.ndarray]:
    lams = np.linspace(nz.LIMITS["pointwise.lam"][0], nz.LIMITS["pointwise.lam"][1], 241)
    return lams, np.array([tukey_excess_kurtosis(float(lm)) for lm in lams])


def lam_from_kurtosis(excess_kurtosis: float) -> float:
    """Tukey λ in the allowed range whose excess kurtosis is ``excess_kurtosis`` (monotone on [−0.2, 1])."""
    lams, kurt = _tukey_kurtosis_table()
    return float(np.interp(excess_kurtosis, kurt[::-1], lams[::-1]))


def _groups(guide: np.ndarray, mask: np.ndarray, n: int = N_GROUPS) -> tuple[np.ndarray, int]:
    """Label masked pixels by quantile group of ``guide`` (−1 outside the mask); small images get fewer groups
    so that each keeps ``MIN_GROUP_PX`` pixels (a jackknife replicate then still has > 50 per group)."""
    vals = guide[mask]
    n = max(2, min(n, len(vals) // MIN_GROUP_PX))
    edges = np.unique(np.quantile(vals, np.linspace(0, 1, n + 1)))
    lab = np.full(guide.shape, -1, dtype=np.int64)
    lab[mask] = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, len(edges) - 2)
    return lab, len(edges) - 1


def _group_means(lab: np.ndarray, n: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    sel = lab >= 0
    idx = lab[sel]
    cnt = np.bincount(idx, minlength=n).astype(np.float64)
    out = [cnt]
    for a in arrays:
        out.append(np.bincount(idx, a[sel], minlength=n) / np.maximum(cnt, 1))
    return tuple(out)


def _fit_hinge(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares fit of ``y ≈ max(K x + B, 0)``; returns (K, B)."""
    ok = w > 0
    x, y, w = x[ok], y[ok], w[ok]
    A = np.vstack([x, np.ones_like(x)]).T * np.sqrt(w)[:, None]
    (k0, b0), *_ = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)
    res = optimize.least_squares(lambda p: np.sqrt(w) * (np.maximum(p[0] * x + p[1], 0.0) - y), [k0, b0],
                                 method="lm" if len(x) > 2 else "trf")
    return float(res.x[0]), float(res.x[1])


def _check_image(image: Any) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise EMInputError(None, f"calibration needs one 2-D image, got shape {x.shape}")
    if min(x.shape) < MIN_SIZE_PX:
        raise EMInputError(None, f"image of {x.shape[1]}×{x.shape[0]} px is too small to calibrate (need ≥ {MIN_SIZE_PX} px)")
    if not np.all(np.isfinite(x)):
        raise EMInputError(None, "image contains NaN or infinite values")
    if np.ptp(x) <= 0:
        raise EMInputError(None, "image is constant: no noise to calibrate")
    return x


def _interior(shape: tuple[int, int], border: int = BORDER_PX) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[border:-border, border:-border] = True
    return m


# ------------------------------------------------------------------------------------------------- STEM
def _highpass(h: np.ndarray) -> np.ndarray:
    a = -np.asarray(h, dtype=np.float64)
    a[len(a) // 2] += 1.0
    return a


def _scan_maps(r: np.ndarray, row_kernel: np.ndarray, col_weights: np.ndarray | None,
               knot_spacing_px: float = nz.KNOT_SPACING_PX, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Variance per unit knot variance, at every pixel, of the scan noise's two components after filtering.

    The scan noise is ``(1 − r) s0 z0 + r s80 z1`` with ``z0, z1`` independent unit-knot splines per row; after
    ``row_kernel`` along x and (optionally) a column filter with squared weights ``col_weights`` along y, its
    variance is ``s0² V0 + s80² V1``.  Exact (rows are independent), computed through the spline basis.
    """
    h, w = r.shape
    basis = nz.spline_basis(w, knot_spacing_px)
    maps = []
    for weight in (1.0 - r, r):
        out = np.empty((h, w))
        for y0 in range(0, h, chunk):
            f = weight[y0:y0 + chunk, :, None] * basis[None, :, :]
            out[y0:y0 + chunk] = (ndimage.correlate1d(f, row_kernel, axis=1, mode="reflect") ** 2).sum(-1)
        if col_weights is not None:
            out = ndimage.correlate1d(out, col_weights, axis=0, mode="reflect")
        maps.append(out)
    return maps[0], maps[1]


def _excess_kurtosis(p: np.ndarray, v: np.ndarray, q: np.ndarray, lab: np.ndarray, n: int) -> float:
    """Excess kurtosis κ of the pointwise noise from the residual ``p`` (self-normalized within groups).

    Per pixel ``E[p²] = v`` and ``E[p⁴] = 3 v² + κ q`` (``v``, ``q`` model maps, the scan part Gaussian), so per
    group ``m4 / m2² = 3 ⟨v²⟩/⟨v⟩² + κ ⟨q⟩/⟨v⟩²``: only the *relative* spread of the model maps enters, not
    their scale, which keeps κ insensitive to small errors of the fitted variance.
    """
    return _kurtosis_from_means(*_group_means(lab, n, p**2, p**4, v, v**2, q))


def _kurtosis_from_means(cnt: np.ndarray, m2: np.ndarray, m4: np.ndarray, v1: np.ndarray, v2: np.ndarray,
                         q1: np.ndarray) -> float:
    ok = cnt > 50
    if not ok.any():
        return math.nan
    kappa = (m4[ok] / m2[ok] ** 2 - 3.0 * v2[ok] / v1[ok] ** 2) / (q1[ok] / v1[ok] ** 2)
    return float(np.sum(cnt[ok] * kappa) / np.sum(cnt[ok]))


def _kurtosis_jackknife(p: np.ndarray, v: np.ndarray, q: np.ndarray, lab: np.ndarray, n: int,
                        blocks: np.ndarray, n_blocks: int) -> np.ndarray:
    """Delete-one-block replicates of :func:`_excess_kurtosis` (one per block of rows)."""
    sums = _block_sums(lab, n, blocks, n_blocks, p**2, p**4, v, v**2, q)
    tot = sums.sum(axis=1)
    out = []
    for j in range(n_blocks):
        s = tot - sums[:, j]
        cnt = s[0]
        out.append(_kurtosis_from_means(cnt, *(s[1:] / np.maximum(cnt, 1))))
    return np.array(out)


def _wiener_clean(x: np.ndarray, params: dict, r: np.ndarray, smooth_bins: float = 2.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Estimate of the noise-free signal (clean + background) by a Wiener filter whose noise power spectrum is
    that of the fitted STEM model: flat for the pointwise part, the spline spectrum along x (flat along y) for
    the scan part; the signal power is the periodogram (smoothed over ``smooth_bins`` frequency bins) minus it.
    Lattice reflections stand far above that noise floor and are kept sharp, unlike with a Gaussian blur.

    Returns (estimate, map of the mean g² the noise passed by the filter adds at each pixel): each noise part's
    filtered Sobel power times its variance — local for the pointwise part (from the intensity), the image mean
    for the scan part (its local level depends on r, the very map being estimated)."""
    h, w = x.shape
    mean = float(x.mean())
    spec = np.fft.fft2(x - mean)
    power = ndimage.gaussian_filter(np.abs(spec) ** 2 / (h * w), smooth_bins, mode="wrap")
    sc, pw = params["scan"], params["pointwise"]
    sig = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    var_pw_map = (np.maximum(pw["k"] * sig + pw["b"], 0.0) * nz.tukey_std(pw["lam"])) ** 2
    s0, s80 = float(nz.scan_std(0.0, sc["k"], sc["b"])), float(nz.scan_std(nz.SCAN_G_MAX, sc["k"], sc["b"]))
    var_pw, var_scan = float(var_pw_map.mean()), float(np.mean((1.0 - r) ** 2 * s0**2 + r**2 * s80**2))
    spline_psd = (np.abs(np.fft.fft(nz.spline_basis(w), axis=0)) ** 2).sum(axis=1) / w  # per unit knot variance
    noise_psd = var_pw + var_scan * spline_psd[None, :]
    gain = np.maximum(power - noise_psd, 0.0) / np.maximum(power, 1e-12)
    g2_noise = (_sobel_noise_power(gain**2 * np.ones_like(power)) * var_pw_map
                + _sobel_noise_power(gain**2 * spline_psd[None, :]) * var_scan)
    return np.real(np.fft.ifft2(gain * spec)) + mean, g2_noise


def _sobel_noise_power(psd: np.ndarray) -> float:
    """Mean squared Sobel magnitude (``sobel_x² + sobel_y²``) of stationary noise with power spectrum ``psd``
    (per-pixel variance = mean of ``psd``): what the noise left in an estimate adds to g² on average."""
    h, w = psd.shape
    delta = np.zeros((h, w))
    delta[0, 0] = 1.0
    tx = np.abs(np.fft.fft2(ndimage.sobel(delta, axis=1, mode="wrap"))) ** 2
    ty = np.abs(np.fft.fft2(ndimage.sobel(delta, axis=0, mode="wrap"))) ** 2
    return float(np.mean(psd * (tx + ty)))


def _stem_estimate(x: np.ndarray, mode: str, r: np.ndarray | None = None, n_iter: int = 3) -> tuple[dict, dict]:
    """STEM estimator: (params, diagnostics).  ``r`` overrides the estimated scan blend weight.

    Two passes: the first takes g from the image blurred by σ 2 px (robust, but it flattens sharp columns and
    so underestimates g); the second from the Wiener estimate of the signal built with the first pass's noise
    model (:func:`_wiener_clean`), as the synthesis computes g on the noise-free signal."""
    if r is not None:
        return _stem_pass(x, mode, r, n_iter)
    h, w = x.shape  # the first pass only sets the Wiener filter's noise level: a central crop is enough
    y0, x0 = max(0, (h - FIRST_PASS_PX) // 2), max(0, (w - FIRST_PASS_PX) // 2)
    crop = (slice(y0, y0 + FIRST_PASS_PX), slice(x0, x0 + FIRST_PASS_PX))
    params, _ = _stem_pass(x[crop], mode, None, n_iter)
    g0 = nz.sobel_magnitude(ndimage.gaussian_filter(x, 2.0, mode="reflect"))
    r = np.clip(g0 / nz.SCAN_G_MAX, 0.0, 1.0)
    clean, g2_noise = _wiener_clean(x, params, r)
    # the noise the filter lets through adds g2_noise to E[g²]: removed so that flat regions keep r ≈ 0
    g = np.sqrt(np.maximum(nz.sobel_magnitude(clean) ** 2 - g2_noise, 0.0))
    return _stem_pass(x, mode, np.clip(g / nz.SCAN_G_MAX, 0.0, 1.0), n_iter)


def _stem_pass(x: np.ndarray, mode: str, r: np.ndarray | None = None, n_iter: int = 3) -> tuple[dict, dict]:
    """One pass of the STEM estimator with the scan blend weight ``r`` (None: from the σ 2 px blurred image)."""
    interior = _interior(x.shape)
    a = _highpass(SG7)
    cp = float((a**2).sum())
    row = ndimage.correlate1d(x, SG7, axis=1, mode="reflect")
    p = x - row
    guide = ndimage.correlate1d(row, _gauss_kernel(2.0, exclude_centre=True), axis=0, mode="reflect")

    wk = _gauss_kernel(SCAN_ROW_SIGMA_PX)
    c = _highpass(SG5)
    wrow = ndimage.correlate1d(x, wk, axis=1, mode="reflect")
    s = ndimage.correlate1d(wrow, c, axis=0, mode="reflect")
    smooth = ndimage.gaussian_filter(x, 2.0, mode="reflect")
    g = nz.sobel_magnitude(smooth)
    if r is None:
        r = np.clip(g / nz.SCAN_G_MAX, 0.0, 1.0)
    # where r changes within the row filter's reach, the blend (1 − r) s0 z0 + r s80 z1 is no longer a smooth
    # spline and leaks into P in proportion to s80²: an error of r there biases the pointwise fit, so the
    # pointwise groups use the pixels whose r is locally constant (if enough remain)
    half = len(a) // 2
    r_span = (ndimage.maximum_filter1d(r, 2 * half + 1, axis=1, mode="nearest")
              - ndimage.minimum_filter1d(r, 2 * half + 1, axis=1, mode="nearest"))
    steady = interior & (r_span < PW_R_SPAN)
    base = steady if steady.sum() >= PW_MIN_STEADY * interior.sum() else interior
    lab_i, n_i = _groups(guide, base)
    u0, u1 = _scan_maps(r, a, None)  # scan noise left in the pointwise residual P
    v0, v1 = _scan_maps(r, wk, c**2)  # scan noise in S
    lab_g, n_g = _groups(g, interior)

    s02 = s802 = 0.0
    low_px = float(base.sum() / interior.sum())  # share of the image in the pointwise groups
    for it in range(n_iter):
        if it > 0:
            # from the second round on, the pointwise groups keep the pixels whose modelled scan leak is under
            # LOW_LEAK of their pointwise part (row windows inside one spline piece, r near-polynomial): the
            # leak's model error — through r, not seen by the jackknife — then hardly enters
            v_pw = ndimage.correlate1d(var_pw, a**2, axis=1, mode="reflect")
            low = base & (s02 * u0 + s802 * u1 <= LOW_LEAK * v_pw)
            low_px = float(low.sum() / interior.sum())
            lab_i, n_i = _groups(guide, low if low_px >= LOW_LEAK_MIN_PX else base)
        cnt, i_mean, m2 = _group_means(lab_i, n_i, x, p**2 - s02 * u0 - s802 * u1)
        ok = cnt > 50
        sd = np.sqrt(np.maximum(m2[ok], 1e-12) / cp)
        K, B = _fit_hinge(i_mean[ok], sd, cnt[ok] / np.maximum(sd, 1e-3) ** 2)
        var_pw = np.maximum(K * guide + B, 0.0) ** 2
        leak = ndimage.correlate1d(ndimage.correlate1d(var_pw, wk**2, axis=1, mode="reflect"), c**2, axis=0,
                                   mode="reflect")
        cnt_g, zm, a0, a1 = _group_means(lab_g, n_g, s**2 - leak, v0, v1)
        okg = cnt_g > 50
        wt = np.sqrt(cnt_g[okg])[:, None]
        (s02, s802), _ = optimize.nnls(np.vstack([a0[okg], a1[okg]]).T * wt, zm[okg] * wt[:, 0])

    # standard errors: delete-one-block jackknife of the final group fits (scan leak and pointwise model held)
    nb = JACKKNIFE_BLOCKS
    blk = _row_blocks(x.shape, nb)
    si = _block_sums(lab_i, n_i, blk, nb, x, p**2 - s02 * u0 - s802 * u1)
    sg = _block_sums(lab_g, n_g, blk, nb, s**2 - leak, v0, v1)

    def fits(si_: np.ndarray, sg_: np.ndarray) -> tuple[float, float, float, float, float]:
        ok = si_[0] > 50
        i_m, m2_ = si_[1][ok] / si_[0][ok], si_[2][ok] / si_[0][ok]
        sd_ = np.sqrt(np.maximum(m2_, 1e-12) / cp)
        k_, b_ = _fit_hinge(i_m, sd_, si_[0][ok] / np.maximum(sd_, 1e-3) ** 2)
        okg_ = sg_[0] > 50
        wt_ = np.sqrt(sg_[0][okg_])
        cols = np.vstack([sg_[2][okg_], sg_[3][okg_]]).T / sg_[0][okg_][:, None]
        rhs = sg_[1][okg_] / sg_[0][okg_] * wt_
        (a_, c_), _ = optimize.nnls(cols * wt_[:, None], rhs)
        a_free = float(np.linalg.lstsq(cols * wt_[:, None], rhs, rcond=None)[0][0])  # s₀² without the bound
        return k_, b_, math.sqrt(a_), math.sqrt(c_), a_free

    si_tot, sg_tot = si.sum(axis=1), sg.sum(axis=1)
    reps = np.array([fits(si_tot - si[:, j], sg_tot - sg[:, j]) for j in range(nb)])
    se_K, se_B, se_s0, se_s80 = _jackknife_se(np.array([K, B, math.sqrt(s02), math.sqrt(s802)]), reps[:, :4])
    if s02 <= 0.0:
        # s₀ at its bound 0: the replicates sit there too and their spread says nothing; s₀ is then only known to
        # be below about the standard error of the unbounded s₀² taken as a scale (SE(s₀) ≈ sqrt(SE(s₀²)))
        se_s0 = math.sqrt(float(_jackknife_se(np.zeros(1), reps[:, 4:5])[0]))
    rep_scan_k = (reps[:, 3] - reps[:, 2]) / (4.0 * nz.SCAN_K_AT_G_MAX)
    se_scan_k = float(_jackknife_se(np.zeros(1), rep_scan_k[:, None])[0])

    # shape: fourth cumulant of P per pixel = kappa * sum_j a_j^4 var_j^2 (scan part Gaussian)
    v = ndimage.correlate1d(var_pw, a**2, axis=1, mode="reflect") + s02 * u0 + s802 * u1
    q = ndimage.correlate1d(var_pw**2, a**4, axis=1, mode="reflect")
    # (on the low-leak pixels of the pointwise fit: there the Gaussian leak neither dilutes κ nor, through an error
    # of the leak model's spread within a group, biases the 3⟨v²⟩/⟨v⟩² term)
    kurt = _excess_kurtosis(p, v, q, lab_i, n_i)
    v_pw = ndimage.correlate1d(var_pw, a**2, axis=1, mode="reflect")
    # pointwise share of the modelled residual over all the steady pixels (not only the low-leak ones chosen for
    # being low): the guard against a leak the r map gets wrong
    pw_share = float(np.mean(v_pw[base]) / np.mean(v[base]))
    kurt_range = _tukey_kurtosis_table()[1]
    lam_ok = (pw_share >= MIN_POINTWISE_SHARE and low_px >= LOW_LEAK_MIN_PX
              and kurt_range.min() - 0.3 <= kurt <= kurt_range.max())
    lam = lam_from_kurtosis(kurt) if lam_ok else nz._STEM_DRAWS[mode][1]["lam"][0]
    rep_lam = np.array([lam_from_kurtosis(kr) for kr in _kurtosis_jackknife(p, v, q, lab_i, n_i, blk, nb)])
    se_lam = float(_jackknife_se(np.zeros(1), rep_lam[:, None])[0]) if lam_ok else float("nan")
    T = nz.tukey_std(lam)
    s0, s80 = math.sqrt(s02), math.sqrt(s802)

    offset, amplitude = _background_level(smooth, mode, interior)
    params = nz.default_params(mode)
    params["background"].update(offset=offset, amplitude=amplitude)
    params["scan"].update(k=float((s80 - s0) / (4.0 * nz.SCAN_K_AT_G_MAX)), b=float((s0 + 13.6) / 4.0))
    params["pointwise"].update(k=K / T, b=B / T, lam=lam)
    # k = K / T(λ), b = B / T(λ): λ's uncertainty (its jackknife error, or the prior sd when λ falls back to the
    # prior mean) enters through T
    lam_sd = se_lam if lam_ok else nz._STEM_DRAWS[mode][1]["lam"][1]
    lo, hi = nz.LIMITS["pointwise.lam"]
    dlog_t = (math.log(nz.tukey_std(min(lam + 0.01, hi))) - math.log(nz.tukey_std(max(lam - 0.01, lo)))) / (
        min(lam + 0.01, hi) - max(lam - 0.01, lo))
    rel_t = abs(dlog_t) * lam_sd
    se = {"pointwise.k": float(math.hypot(se_K / T, abs(K / T) * rel_t)),
          "pointwise.b": float(math.hypot(se_B / T, abs(B / T) * rel_t)),
          "scan.k": se_scan_k, "scan.b": float(se_s0 / 4.0), "pointwise.lam": se_lam}
    unidentified = [key for key, val in se.items()  # (a NaN error, from too few pixels, counts as too large)
                    if not val <= IDENT_SE_FRACTION * _tolerance_width(mode, key, param_value(params, key))]
    se = {key: (val if math.isfinite(val) else None) for key, val in se.items()}  # JSON has no NaN
    if s80 <= 2.0 * se_s80 and "scan.k" not in unidentified:
        # std(80) = max(4 (80 k + b + 0.6) − 16, 0) is 0 for every k ≤ −s0/320: only an upper bound of k is known
        unidentified.append("scan.k")
    if pw_share < MIN_POINTWISE_SHARE:
        # the pointwise part is then the difference of P² and a modelled scan leak whose error (through r, not
        # seen by the jackknife) is of its own size; λ, and k, b in λ's scale convention, are not identified
        unidentified += [key for key in ("pointwise.k", "pointwise.b") if key not in unidentified]
    if not lam_ok and "pointwise.lam" not in unidentified:
        unidentified.append("pointwise.lam")

    diag = {"scan_std_g0": s0, "scan_std_g80": s80, "pointwise_excess_kurtosis": kurt,
            "pointwise_sd_fit": [K, B], "pointwise_variance_share": pw_share, "low_leak_pixel_share": low_px,
            "lam_identifiable": bool(lam_ok),
            "standard_error": se, "unidentified": unidentified}
    return params, diag


def _row_blocks(shape: tuple[int, int], n_blocks: int) -> np.ndarray:
    """(H, W) index of the block of rows each pixel belongs to (``n_blocks`` equal blocks)."""
    return np.broadcast_to((np.arange(shape[0]) * n_blocks // shape[0])[:, None], shape)


def _block_sums(lab: np.ndarray, n: int, blocks: np.ndarray, n_blocks: int, *arrays: np.ndarray) -> np.ndarray:
    """(1 + len(arrays), n_blocks, n) per block and group: pixel counts, then the sums of each array."""
    sel = lab >= 0
    idx = blocks[sel] * n + lab[sel]
    out = [np.bincount(idx, minlength=n_blocks * n).astype(np.float64)]
    out += [np.bincount(idx, a[sel], minlength=n_blocks * n) for a in arrays]
    return np.stack(out).reshape(len(out), n_blocks, n)


def _background_level(smooth: np.ndarray, mode: str, interior: np.ndarray) -> tuple[float, float]:
    """(offset, amplitude) of the background from the image's smooth envelope, corrected for the envelope's
    known loss on the fractal field (see :func:`_envelope_factors`)."""
    env = _background_envelope(smooth, mode)
    lo, hi = np.percentile(env[interior], [0.5, 99.5])
    lo_frac, range_frac = _envelope_factors(smooth.shape)
    amplitude = (hi - lo) / range_frac
    level = lo - lo_frac * amplitude
    offset = level if mode == "haadf" else level - BF_VACUUM_LEVEL
    return float(offset), float(amplitude)


@functools.lru_cache(maxsize=8)
def _envelope_factors(shape: tuple[int, int], n: int = 8) -> tuple[float, float]:
    """Mean (low percentile, percentile range) of the envelope of a pure unit-amplitude background field.

    The envelope smooths away the finest octaves, so its range is smaller than the field's [0, 1]; these
    factors, from fields drawn with the synthesis model (fixed seed), undo that loss.
    """
    rng = np.random.default_rng(20240613)
    model = nz.BackgroundNoise(offset=0.0, amplitude=1.0)
    interior = _interior(shape)
    lows, ranges = [], []
    for _ in range(n):
        field = ndimage.gaussian_filter(model.sample(shape, rng), 2.0, mode="reflect")
        lo, hi = np.percentile(_background_envelope(field, "haadf")[interior], [0.5, 99.5])
        lows.append(lo)
        ranges.append(hi - lo)
    return float(np.mean(lows)), float(np.mean(ranges))


def _background_envelope(smooth: np.ndarray, mode: str, size_px: int = 21) -> np.ndarray:
    """Smooth lower (HAADF) or upper (BF) envelope of the image: the background plus the clean dark/bright level."""
    morph = ndimage.grey_opening if mode == "haadf" else ndimage.grey_closing
    return ndimage.gaussian_filter(morph(smooth, size=(size_px, size_px), mode="reflect"), size_px / 2, mode="reflect")


# ------------------------------------------------------------------------------------------------ HRTEM
def _gauss_taps(sigma: float) -> np.ndarray:
    """The discrete kernel ``scipy.ndimage.gaussian_filter1d`` applies (truncate 4), as taps."""
    r = max(int(4.0 * sigma + 0.5), 1)
    d = np.zeros(2 * r + 1)
    d[r] = 1.0
    return ndimage.gaussian_filter1d(d, sigma, mode="constant")


def _mtf_factors(sigma: float, a: np.ndarray, max_lag: int = 2) -> tuple[float, np.ndarray]:
    """For shot noise blurred by a Gaussian MTF (σ px): ``A = Σ (a * m)²`` along x and ``R(d) = Σ m(j) m(j+d)``."""
    if sigma < 0.05:
        m = np.array([1.0])
    else:
        m = _gauss_taps(sigma)
    am = np.convolve(a, m)
    acorr = np.correlate(m, m, mode="full")[len(m) - 1:]
    lags = np.zeros(max_lag + 1)
    lags[: min(len(acorr), max_lag + 1)] = acorr[: max_lag + 1]
    return float((am**2).sum()), lags


def _fit_white_plus_shot(i: np.ndarray, m: np.ndarray, cnt: np.ndarray, cp: float, a: np.ndarray,
                         sigmas: Any = None) -> tuple[float, float, float, float, float]:
    """Fit the residual's lag-0/1/2 group covariances (rows of ``m``) with white + MTF-blurred shot noise.

    ``m[0] = cp (k I + b)² + A R0 inv_c I``, ``m[d] = A Rd inv_c I`` (d = 1, 2) with ``A, R`` from the MTF σ,
    searched on ``sigmas`` (default ``MTF_GRID_PX``: 0 and 0.1–1.5 px; σ = 0 is white shot noise, told from the
    white part only by its linear instead of quadratic growth with I); returns (k, b, inv_c, sigma_mtf, cost).
    The row high-pass passes a steeply σ-dependent share ``A`` of a wide MTF's shot noise, so the dose of a
    wide MTF is coarse (a 0.05 px step moves it by tens of %).  A continuous refinement of σ was tried and
    found less stable (the cost has several minima); the caller refines the whole-image fit on 0.01 px nodes
    within ±0.04 px of the best grid node (on seed 1 sample 0 re-noised 12×: dose bias +6.6 % → +2 %, sd 6.6 % →
    5 %), and the jackknife replicates search σ ± 0.05 px in 0.025 px steps, so the dose's standard error
    carries that spread.
    """
    sd = np.sqrt(np.maximum(m[0] / cp, 1e-12))
    k0, b0 = _fit_hinge(i, sd, cnt / np.maximum(sd, 1e-3) ** 2)
    wts = np.sqrt(cnt) / np.maximum(m[0], 1e-9)  # sd of a group mean of lagged products ≈ m0 / sqrt(n)
    best = None
    for sigma in (MTF_GRID_PX if sigmas is None else sigmas):
        A, R = _mtf_factors(float(sigma), a)

        def resid(q: np.ndarray) -> np.ndarray:
            shot = A * q[2] * i
            white = cp * np.maximum(q[0] * i + q[1], 0.0) ** 2
            return np.concatenate([wts * (white + R[0] * shot - m[0]), wts * (R[1] * shot - m[1]),
                                   wts * (R[2] * shot - m[2])])

        res = optimize.least_squares(resid, [k0, max(b0, 0.0), 0.0],
                                     bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, np.inf]))
        if best is None or res.cost < best[4]:
            best = (float(res.x[0]), float(res.x[1]), float(res.x[2]), float(sigma), float(res.cost))
    return best


def _fit_white(i: np.ndarray, m: np.ndarray, cnt: np.ndarray, cp: float) -> tuple[float, float]:
    """White noise only: ``m[0] = cp (k I + b)²``; returns (k, b)."""
    sd = np.sqrt(np.maximum(m[0] / cp, 1e-12))
    return _fit_hinge(i, sd, cnt / np.maximum(sd, 1e-3) ** 2)


def _jackknife_se(full: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Delete-one-block jackknife standard error from the replicate estimates ``reps`` (n_blocks, n_params)."""
    nb = len(reps)
    return np.sqrt((nb - 1) / nb * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))


def _hrtem_estimate(x: np.ndarray, pixel_size_A: float | None) -> tuple[dict, dict]:
    h, w = x.shape
    interior = _interior(x.shape)
    rows = slice(BORDER_PX, h - BORDER_PX)
    n_rows = h - 2 * BORDER_PX
    a = _highpass(SG7)
    cp = float((a**2).sum())
    row = ndimage.correlate1d(x, SG7, axis=1, mode="reflect")
    p = x - row
    colmean = p[rows].mean(axis=0)
    pc = p - colmean[None, :]  # column noise is constant down a column: gone from pc
    # MTF-blurred shot noise is correlated between rows, white noise is not: lag-1/lag-2 products along y
    l1 = np.zeros_like(pc)
    l2 = np.zeros_like(pc)
    l1[:-1] = pc[:-1] * pc[1:]
    l2[:-2] = pc[:-2] * pc[2:]
    inner = interior.copy()
    inner[-BORDER_PX - 2:] = False
    # the guide skips the rows an MTF-blurred shot noise correlates with the centre row (else it selects noise)
    guide = ndimage.correlate1d(row, _gauss_kernel(HRTEM_GUIDE_SIGMA_PX, exclude_px=HRTEM_GUIDE_SKIP_PX), axis=0,
                                mode="reflect")
    lab, n = _groups(guide, inner)
    # group sums per block of rows: the full-image statistics and the delete-one-block jackknife replicates
    nb = JACKKNIFE_BLOCKS
    sums = _block_sums(lab, n, _row_blocks(x.shape, nb), nb, x, pc**2, l1, l2)  # (5, nb, n)
    scale = n_rows / (n_rows - 1)  # column-mean removal took 1/n of the variance

    def stats(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cnt = s[0]
        ok = cnt > 50
        return cnt[ok], s[1][ok] / cnt[ok], s[2:][:, ok] / cnt[ok] * scale

    total = sums.sum(axis=1)
    cnt, i_mean, m = stats(total)
    reps = [stats(total - sums[:, j]) for j in range(nb)]
    t1 = float(l1[inner].mean() / (l1[inner].std() / math.sqrt(inner.sum()) + 1e-30))
    mean_i = float(x[interior].mean())

    # white + shot; the jackknife replicates refit the MTF σ on the grid nodes next to the whole image's value
    k, b, inv_c, sigma_mtf, _ = _fit_white_plus_shot(i_mean, m, cnt, cp, a)
    if sigma_mtf > 0:  # refine σ between the neighbouring grid nodes (the dose of the shot part depends on it steeply)
        fine = [round(sigma_mtf + d, 3) for d in np.arange(-0.04, 0.041, 0.01) if sigma_mtf + d >= 0.1 - 1e-9]
        k, b, inv_c, sigma_mtf, _ = _fit_white_plus_shot(i_mean, m, cnt, cp, a, sigmas=fine)
    # detection: is 1/c > 0 at this σ (jackknife with σ held); precision: σ refitted on its neighbouring nodes
    held = np.array([_fit_white_plus_shot(ri, rm, rc, cp, a, sigmas=(sigma_mtf,))[2] for rc, ri, rm in reps])
    shot = inv_c > SHOT_MIN_Z * float(_jackknife_se(np.zeros(1), held[:, None])[0])
    near = sorted({round(max(sigma_mtf + d, 0.0), 3) for d in (-0.05, -0.025, 0.0, 0.025, 0.05)})
    rep = np.array([_fit_white_plus_shot(ri, rm, rc, cp, a, sigmas=near)[:3] for rc, ri, rm in reps])
    se_k, se_b, se_inv_c = _jackknife_se(np.array([k, b, inv_c]), rep)
    A, R = _mtf_factors(sigma_mtf, a)
    shot_share = A * R[0] * inv_c * mean_i / max(float(np.interp(mean_i, i_mean, m[0])), 1e-12)
    if not shot:  # no shot noise resolved: the white model alone fits k, b more precisely
        k, b = _fit_white(i_mean, m, cnt, cp)
        inv_c, sigma_mtf = 0.0, 0.0
        A, R = _mtf_factors(0.0, a)

    var_white = np.maximum(k * guide + b, 0.0) ** 2
    # (the shot part summed over all row lags: Σ_d R(d) = (Σ m)² = 1)
    noise_mean_var = float(np.mean((cp * var_white + A * inv_c * np.maximum(guide, 0.0))[interior]))
    inner_cols = slice(BORDER_PX, w - BORDER_PX)
    # column means of the residual: a·(column offsets) + the residual noise averaged over n_rows rows
    cm2 = colmean[inner_cols] ** 2
    sigma_c2 = (float(cm2.mean()) - noise_mean_var / n_rows) / cp
    # its standard error: delete-one-block jackknife over blocks of neighbouring columns (the row filter and the
    # MTF correlate neighbouring columns' means)
    col_blocks = np.array_split(np.arange(cm2.size), JACKKNIFE_BLOCKS)
    rep_c2 = np.array([[np.delete(cm2, blk).mean()] for blk in col_blocks])
    se_sigma_c2 = float(_jackknife_se(np.zeros(1), rep_c2)[0]) / cp
    sigma_c = math.sqrt(max(sigma_c2, 0.0))
    se_sigma_c = se_sigma_c2 / (2.0 * sigma_c) if sigma_c > 0 else math.sqrt(se_sigma_c2)

    counts = mean_i / inv_c if inv_c > 0 else None  # expected e⁻ per pixel at the mean intensity
    params = nz.default_params("hrtem")
    params["column"]["sigma"] = float(sigma_c)
    params["mtf_sigma_px"] = float(sigma_mtf)
    params["dose_e_per_A2"] = None
    diag: dict[str, Any] = {"shot_lag1_t": t1, "shot_variance_share": float(shot_share),
                            "counts_per_px_at_mean": counts,
                            "standard_error": {"column.sigma": float(se_sigma_c), "pointwise.k": float(se_k),
                                               "pointwise.b": float(se_b)}}
    # white k, b: unidentified when their jackknife error is too large, or when the shot noise carries a large
    # share of the residual variance (the white part is then a small difference of two fitted terms whose model
    # errors — MTF shape, Poisson skew at few counts, intensity grouping — exceed the jackknife error)
    unidentified = [key for key, est, se in (("pointwise.k", k, se_k), ("pointwise.b", b, se_b))
                    if not se <= IDENT_SE_FRACTION * _tolerance_width("hrtem", key, est)
                    or (shot and shot_share > WHITE_MAX_SHOT_SHARE)]
    if not se_sigma_c <= IDENT_SE_FRACTION * _tolerance_width("hrtem", "column.sigma", sigma_c):
        unidentified.insert(0, "column.sigma")  # column offsets drowned in the residual noise averaged down columns
    if counts is not None and pixel_size_A:
        dose = float(counts / pixel_size_A**2)
        params["dose_e_per_A2"] = dose
        diag["standard_error"]["dose_e_per_A2"] = se_dose = float(dose * se_inv_c / inv_c)
        if not se_dose <= IDENT_SE_FRACTION * _tolerance_width("hrtem", "dose_e_per_A2", dose):
            # the white part is the total minus the shot part: an unpinned shot term unpins k, b as well
            unidentified += [key for key in ("pointwise.k", "pointwise.b", "dose_e_per_A2") if key not in unidentified]
    elif pixel_size_A and se_inv_c > 0:
        # no shot noise resolved: "no dose" and "a dose too high to see" look alike; only a lower bound is known
        unidentified.append("dose_e_per_A2")
        diag["dose_e_per_A2_lower_bound"] = float(mean_i / (SHOT_MIN_Z * se_inv_c) / pixel_size_A**2)
    elif counts is not None:
        # no pixel size: the shot noise cannot be expressed as a dose; fold it into the linear σ model instead
        k, b = _fit_white(i_mean, m, cnt, cp)
        params["mtf_sigma_px"] = 0.0
        unidentified = ["pointwise.k", "pointwise.b"]  # an effective σ of shot + white noise, not the white part
        diag["note"] = "shot noise folded into the pointwise sigma (no pixel_size_A given)"
    params["pointwise"].update(k=float(k), b=float(b))
    diag["unidentified"] = unidentified
    return params, diag


# --------------------------------------------------------------------------------------------------- API
def calibrate(image: np.ndarray, mode: str, pixel_size_A: float | None = None) -> dict:
    """Noise parameters of ``image`` (2-D, 0–255 scale) for ``mode`` 'haadf' | 'bf' | 'hrtem' (schema of noise.py).

    ``pixel_size_A`` (Å/px) lets HRTEM shot noise be reported as ``dose_e_per_A2``; without it the shot noise is
    folded into the linear pointwise σ.  ``calibration.unidentified`` lists the parameters one image does not
    determine to the stated tolerance (criteria in the module docstring; their values are then a best guess),
    ``calibration.standard_error`` the jackknife standard errors.
    """
    nz._check_mode(mode)
    x = _check_image(image)
    if mode == "hrtem":
        params, diag = _hrtem_estimate(x, pixel_size_A)
    else:
        params, diag = _stem_estimate(x, mode)
    params = _clip_params(params)
    params["calibration"] = _finite_or_none({"method": "em_noise.calibrate", "image_shape": list(x.shape), **diag})
    return params


def _combined_keys(mode: str, estimates: list[dict]) -> list[str]:
    """The parameters a calibration estimates (the round-trip ones, those with a standard error, dose and MTF);
    the rest (fixed settings such as octaves or read noise) are copied from the first frame."""
    keys = list(TOLERANCE[mode])
    for e in estimates:
        keys += [k for k in (e.get("calibration") or {}).get("standard_error", {}) if k not in keys]
    if mode == "hrtem":
        keys += [k for k in ("dose_e_per_A2", "mtf_sigma_px") if k not in keys]
    return keys


def _set_param(params: dict, key: str, value: float | None) -> None:
    if "." in key:
        group, name = key.split(".")
        params[group][name] = value
    else:
        params[key] = value


def _get_param(params: dict, key: str) -> float | None:
    """``param_value`` that gives None for a missing key or a non-finite value."""
    try:
        v = param_value(params, key)
    except (KeyError, TypeError):
        return None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _combine_one(vals: list[float], ses: list[float | None]) -> tuple[float, float | None]:
    """(value, standard error) from per-frame values and errors (see :func:`combine_calibrations`)."""
    v = np.array(vals)
    se = np.array([s if s is not None and math.isfinite(s) else np.nan for s in ses])
    have_se = bool(np.all(np.isfinite(se) & (se > 0)))
    if len(v) == 1:
        return float(v[0]), (float(se[0]) if have_se else None)
    if have_se:
        w = 1.0 / se**2
        mean = float((w * v).sum() / w.sum())
        birge = float((w * (v - mean) ** 2).sum()) / (len(v) - 1)  # ~1 when the frames agree within their errors
        if birge <= MAX_BIRGE_RATIO**2:
            return mean, float(max(1.0, math.sqrt(birge)) / math.sqrt(w.sum()))
    # no errors, or frames far apart beyond them (an error estimate at a fit bound is too small): the median
    spread = 1.2533 * float(v.std(ddof=1)) / math.sqrt(len(v))
    if len(v) == 2:  # two values: half their difference, or their own errors if larger
        spread = max(abs(float(v[1] - v[0])) / 2.0, float(np.sqrt(np.nansum(se**2)) / 2.0))
    return float(np.median(v)), spread


def combine_calibrations(estimates: list[dict]) -> dict:
    """One params dict from the calibrations of several frames of one instrument (a movie, a tilt series).

    Per estimated parameter: the inverse-variance weighted mean over the frames that declare it identified
    (combined error ``1 / sqrt(Σ 1/SE²)``, times the Birge ratio ``sqrt(χ² / (n − 1))`` when that exceeds 1), or
    the median when the frames scatter more than ``MAX_BIRGE_RATIO`` times their errors or give none (error from
    the spread over frames).  When no frame identifies it: the median over all frames, with the median of the
    frames' own errors.  A null (e.g. no shot noise resolved) when most frames give null.  A parameter is
    declared unidentified when most frames declare it so — a majority vote, which drops a declaration made by a
    minority of frames and keeps one made by most even when the combined error would pass (averaging shrinks the
    noise of an estimate, not the model errors behind several criteria, see the module docstring).  The errors
    are statistical: a bias of the estimator (benchmarks/calibration_roundtrip.py measures it) does not average
    away.  For HRTEM the dose, MTF and white k, b are combined one by one, so when they are unidentified in most
    frames they may not form one consistent fit: they are best guesses, as the declaration says.
    ``calibration.frame_sd`` gives the spread over frames, ``calibration.frames`` their number.
    """
    if not estimates:
        raise ValueError("no calibrations to combine")
    mode = estimates[0].get("mode")
    if any(e.get("mode") != mode for e in estimates):
        raise ValueError("calibrations of different modes cannot be combined")
    if len(estimates) == 1:
        return json.loads(json.dumps(estimates[0]))  # a copy: callers may add keys
    n = len(estimates)
    out = json.loads(json.dumps({k: v for k, v in estimates[0].items() if k != "calibration"}))
    calib = [e.get("calibration") or {} for e in estimates]
    votes: dict[str, int] = {}
    for c in calib:
        for key in c.get("unidentified", []):
            votes[key] = votes.get(key, 0) + 1
    se_out: dict[str, float] = {}
    frame_sd: dict[str, float] = {}
    keys = _combined_keys(mode, estimates)
    for key in keys:
        per = [(_get_param(e, key), c.get("standard_error", {}).get(key), key in c.get("unidentified", []))
               for e, c in zip(estimates, calib)]
        known = [t for t in per if t[0] is not None]
        if 2 * len(known) < n:  # most frames: null
            _set_param(out, key, None)
            continue
        use = [t for t in known if not t[2]]  # frames that identify it
        if use:
            value, se = _combine_one([t[0] for t in use], [t[1] for t in use])
        else:  # none does: the median as a best guess, with a typical frame's own error (not shrunk by averaging)
            value = float(np.median([t[0] for t in known]))
            own = [float(t[1]) for t in known if t[1] is not None and math.isfinite(t[1])]
            se = float(np.median(own)) if own else None
        _set_param(out, key, value)
        if se is not None:
            se_out[key] = se
        if len(known) > 1:
            frame_sd[key] = float(np.std([t[0] for t in known], ddof=1))
    unidentified = [key for key in keys if 2 * votes.get(key, 0) > n]
    out = _clip_params(out)
    out["calibration"] = _finite_or_none({
        "method": "em_noise.calibrate.combine_calibrations", "frames": n,
        "image_shape": calib[0].get("image_shape"), "standard_error": se_out, "frame_sd": frame_sd,
        "unidentified_in_frames": votes, "unidentified": unidentified})
    return out


def calibrate_frames(frames: Any, mode: str, pixel_size_A: float | None = None,
                     numbers: Any = None) -> dict:
    """Calibrate each 2-D frame of ``frames`` (an iterable, e.g. a 3-D stack or a tqdm over it) and combine the
    estimates with :func:`combine_calibrations`.  An unusable frame raises EMInputError naming its number (its
    index, or the matching entry of ``numbers``: the frames' numbers in the file; None: no number)."""
    estimates = []
    for i, frame in zip(numbers if numbers is not None else itertools.count(), frames):
        try:
            estimates.append(calibrate(frame, mode, pixel_size_A=pixel_size_A))
        except EMInputError as err:
            raise EMInputError(err.path, err.problem if i is None else f"frame {i}: {err.problem}") from None
    return combine_calibrations(estimates)


def _finite_or_none(obj: Any) -> Any:
    """Diagnostics as strict JSON: NaN / inf floats become None."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _clip_params(params: dict) -> dict:
    if params["mode"] == "hrtem":
        params["column"]["sigma"] = nz._clip("column.sigma", params["column"]["sigma"])
        params["pointwise"]["k"] = nz._clip("hrtem.pointwise.k", params["pointwise"]["k"])
        params["pointwise"]["b"] = nz._clip("hrtem.pointwise.b", params["pointwise"]["b"])
        return params
    for g, key in (("background", "offset"), ("background", "amplitude"), ("scan", "k"), ("scan", "b"),
                   ("pointwise", "k"), ("pointwise", "b"), ("pointwise", "lam")):
        params[g][key] = nz._clip(f"{g}.{key}", params[g][key])
    return params


def save_params(path: str | os.PathLike, params: dict, *, overwrite: bool = False) -> Path:
    """Write ``params`` as JSON atomically (temp file + rename); an existing file only with ``overwrite``."""
    path = Path(path)
    nz.validate_params(params, source=path)
    return write_text(path, json.dumps(params, indent=2) + "\n", overwrite=overwrite)


def load_params(path: str | os.PathLike) -> dict:
    """Read a params JSON written by :func:`save_params`; EMInputError naming the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EMInputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EMInputError(path, f"cannot read noise parameters ({err.__class__.__name__})") from None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as err:
        raise EMInputError(path, f"not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(params, dict) or params.get("schema") != nz.SCHEMA:
        raise EMInputError(path, f"not an em-noise parameter file (expected \"schema\": \"{nz.SCHEMA}\")")
    if params.get("version") != nz.VERSION:
        raise EMInputError(path, f"unsupported parameter file version {params.get('version')!r} (expected {nz.VERSION})")
    return nz.validate_params(params, source=path)
