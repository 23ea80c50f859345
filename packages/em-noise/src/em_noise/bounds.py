"""Cramér–Rao bounds of the HRTEM noise parameters: how well one image can pin them at best.

The HRTEM model of :mod:`em_noise.noise` (Poisson shot noise at a dose → MTF blur → column noise → white
Gaussian of σ = k I + b → read noise) gives, for a known clean image, zero-mean noise whose covariance is

    Σ = G diag(u I₀) Gᵀ + diag((k I + b)² + r²) + σ_c² C

with ``I₀`` the clean image before the MTF, ``I = G I₀`` after it, ``G`` the MTF blur, ``u = mean(I₀) /
(dose · pixel_size_A²)`` the shot variance per unit intensity (0–255 units²), ``r`` the read-noise σ and ``C`` the
same-column indicator.  With the noise treated as Gaussian, the Fisher information is
``F_ij = ½ tr(Σ⁻¹ ∂_i Σ Σ⁻¹ ∂_j Σ)`` and no unbiased estimator has a standard error below
``sqrt((F⁻¹)_ii)`` — even one handed the clean image and the MTF, as here (:func:`em_noise.calibrate.calibrate`
has neither).  Two approximations: the Gaussian one (at a few counts per pixel the Poisson skew carries some
extra information on the dose; given the dose, the white part is Gaussian and its bound is exact), and Σ is
summed over full-height strips of at least ``MIN_STRIP_COLS`` columns (exact within a strip; the blur's coupling
across strip edges is reflected instead: a few per cent on k, up to ~10 % on σ_c for a 1 px MTF at 9-column
strips).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg, ndimage

from em_noise.params import parse_params

PARAMS = ("dose_e_per_A2", "pointwise.k", "pointwise.b", "column.sigma")
MIN_STRIP_COLS = 8
MAX_STRIP_PX = 4096  # largest strip (dense Σ of 4096² float64 = 134 MB)


def _blur_matrix(h: int, w: int, sigma_px: float) -> np.ndarray:
    """Dense matrix of the MTF blur (Gaussian, reflect edges) on an h × w strip, row-major pixels."""
    if sigma_px <= 0.05:  # as noise.MTFBlur: no blur up to 0.05 px
        return np.eye(h * w)
    eye = np.eye(h * w).reshape(h * w, h, w)
    cols = ndimage.gaussian_filter(eye, (0, sigma_px, sigma_px), mode="reflect")
    return cols.reshape(h * w, h * w).T


def _model(clean: np.ndarray, params: Any, pixel_size_A: float | None):
    """(k, b, σ_c, read σ, u, dose, MTF σ) of HRTEM ``params`` (model or dict), checked for what the bound models."""
    p = parse_params(params, mode="hrtem")
    if p.jitter_px > 0:
        raise ValueError("scan-line jitter (jitter_px > 0) is not modelled by the bound")
    dose = p.dose_e_per_A2
    if dose is not None and not (pixel_size_A and pixel_size_A > 0):
        raise ValueError("a dose needs a positive pixel_size_A")
    u = float(np.mean(clean)) / (float(dose) * pixel_size_A**2) if dose is not None else 0.0
    return p.pointwise.k, p.pointwise.b, p.column.sigma, p.read_sigma, u, dose, p.mtf_sigma_px


def _strip_terms(i0: np.ndarray, i1: np.ndarray, g: np.ndarray, same_col: np.ndarray, model) -> tuple:
    """Σ of one strip (flattened pixels) and its derivatives: shot part per unit u, white σ, column indicator."""
    k, b, sigma_c, read, u, _, _ = model
    shot_unit = (g * np.maximum(i0, 0.0)) @ g.T
    sd = np.maximum(k * i1 + b, 0.0)
    cov = u * shot_unit + np.diag(sd**2 + read**2) + sigma_c**2 * same_col
    return cov, shot_unit, sd


def noise_covariance(clean: np.ndarray, params: Any, pixel_size_A: float | None = None) -> np.ndarray:
    """Σ of the HRTEM noise of a small ``clean`` image (h·w ≤ ~4000 px; row-major pixels, 0–255 units²)."""
    img = np.asarray(clean, dtype=np.float64)
    model = _model(img, params, pixel_size_A)
    mtf = model[-1]
    h, w = img.shape
    blurred = ndimage.gaussian_filter(img, mtf, mode="reflect") if mtf > 0.05 else img
    col = np.tile(np.arange(w), h)
    return _strip_terms(img.ravel(), blurred.ravel(), _blur_matrix(h, w, mtf),
                        np.equal.outer(col, col).astype(np.float64), model)[0]


def hrtem_cramer_rao(clean: np.ndarray, params: Any, pixel_size_A: float | None = None, strip_px: int = 2304,
                     known: tuple[str, ...] = ()) -> dict[str, float]:
    """Cramér–Rao standard errors of the HRTEM noise parameters for one image of ``clean`` (0–255 units).

    ``clean``: the noise-free image before the MTF (``em_noise.synth`` sample ``"clean"``); ``params``: HRTEM noise
    params (:class:`em_noise.params.HrtemParams` or its dict; read noise is included as known, scan-line jitter
    is not modelled);
    ``pixel_size_A`` (Å) is needed when ``params`` has a dose. ``known``: names from ``PARAMS`` treated as known
    (left out of the fit). Returns {name: SE} for the free parameters in their own units (dose in e⁻/Å², σ_c in
    0–255 units; NaN for σ_c at σ_c = 0, where it is fitted as the variance σ_c²); the dose is free only when
    shot noise is present. ``strip_px``: pixels per full-height strip (at least ``MIN_STRIP_COLS`` columns; the
    columns are split evenly into strips; cost ∝ strip pixels³).
    """
    img = np.asarray(clean, dtype=np.float64)
    unknown = set(known) - set(PARAMS)
    if unknown:
        raise ValueError(f"unknown parameter names in known: {sorted(unknown)} (choose from {PARAMS})")
    if img.ndim != 2 or min(img.shape) < MIN_STRIP_COLS:
        raise ValueError(f"clean must be a 2-D image of at least {MIN_STRIP_COLS} × {MIN_STRIP_COLS} px, "
                         f"got shape {img.shape}")
    if img.shape[0] * MIN_STRIP_COLS > MAX_STRIP_PX:
        raise ValueError(f"clean has {img.shape[0]} rows: crop it to at most {MAX_STRIP_PX // MIN_STRIP_COLS} rows "
                         "(the strips' dense covariance grows with the cube of their pixel count)")
    model = _model(img, params, pixel_size_A)
    k, b, sigma_c, read, u, dose, mtf = model
    free = [p for p in PARAMS if p not in known and not (p == "dose_e_per_A2" and dose is None)]
    blurred = ndimage.gaussian_filter(img, mtf, mode="reflect") if mtf > 0.05 else img
    h, w = img.shape
    n_strips = max(1, w // max(MIN_STRIP_COLS, strip_px // h))
    fisher = np.zeros((len(free), len(free)))
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for cols in np.array_split(np.arange(w), n_strips):
        sw = len(cols)
        if sw not in cache:
            col = np.tile(np.arange(sw), h)
            cache[sw] = (_blur_matrix(h, sw, mtf), np.equal.outer(col, col).astype(np.float64))
        g, same_col = cache[sw]
        i0, i1 = img[:, cols].ravel(), blurred[:, cols].ravel()
        cov, shot_unit, sd = _strip_terms(i0, i1, g, same_col, model)
        prec = linalg.cho_solve(linalg.cho_factor(cov), np.eye(len(i0)))
        # Σ⁻¹ ∂Σ for each free parameter (a diagonal ∂Σ scales the columns of Σ⁻¹)
        solved = {"dose_e_per_A2": (prec @ shot_unit) * (-u / float(dose)) if dose is not None else None,
                  "pointwise.k": prec * (2.0 * sd * i1)[None, :], "pointwise.b": prec * (2.0 * sd)[None, :],
                  "column.sigma": prec @ same_col}  # with respect to σ_c², converted below
        mats = [solved[p] for p in free]
        for i in range(len(free)):
            for j in range(i, len(free)):
                fisher[i, j] += 0.5 * float(np.sum(mats[i] * mats[j].T))
                fisher[j, i] = fisher[i, j]
    se = np.sqrt(np.diag(np.linalg.inv(fisher)))
    out = {p: float(v) for p, v in zip(free, se)}
    if "column.sigma" in out:  # SE(σ_c) = SE(σ_c²) / (2 σ_c); undefined at σ_c = 0
        out["column.sigma"] = out["column.sigma"] / (2.0 * sigma_c) if sigma_c > 0 else float("nan")
    return out
