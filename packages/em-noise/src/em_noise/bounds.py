"""Cramér–Rao bounds of the HRTEM noise parameters: how well one image can pin them at best.

The HRTEM model of :mod:`em_noise.noise` (Poisson shot noise at a dose → MTF blur → column noise → white
Gaussian of σ = k I + b) gives, for a known clean image, zero-mean noise whose covariance is

    Σ = G diag(u I₀) Gᵀ + diag((k I + b)²) + σ_c² C

with ``I₀`` the clean image before the MTF, ``I = G I₀`` after it, ``G`` the MTF blur, ``u = mean(I₀) /
(dose · pixel_size_A²)`` the shot variance per unit intensity (0–255 units²) and ``C`` the same-column indicator.
Treating the noise as Gaussian (the Poisson counts are ≳ 10 per pixel at the doses where this matters), the
Fisher information is ``F_ij = ½ tr(Σ⁻¹ ∂_i Σ Σ⁻¹ ∂_j Σ)`` and no unbiased estimator has a standard error below
``sqrt((F⁻¹)_ii)`` — even one handed the clean image and the MTF, as here (:func:`calibrate` has neither).

Σ couples pixels within the blur reach and down whole columns, so F is summed over full-height strips a few
columns wide (exact within a strip; the blur's coupling across strip edges is dropped, and reflected instead,
which changes the bounds by a few per cent).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg, ndimage

PARAMS = ("dose_e_per_A2", "pointwise.k", "pointwise.b", "column.sigma")


def _blur_matrix(h: int, w: int, sigma_px: float) -> np.ndarray:
    """Dense matrix of the MTF blur (Gaussian, reflect edges) on an h × w strip, row-major pixels."""
    if sigma_px <= 0.05:  # as noise.MTFBlur: no blur below 0.05 px
        return np.eye(h * w)
    eye = np.eye(h * w).reshape(h * w, h, w)
    cols = ndimage.gaussian_filter(eye, (0, sigma_px, sigma_px), mode="reflect")
    return cols.reshape(h * w, h * w).T


def hrtem_cramer_rao(clean: np.ndarray, params: dict, pixel_size_A: float | None = None, strip_px: int = 2304,
                     known: tuple[str, ...] = ()) -> dict[str, float]:
    """Cramér–Rao standard errors of the HRTEM noise parameters for one image of ``clean`` (0–255 units).

    ``clean``: the noise-free image before the MTF (``em_noise.synth`` sample ``"clean"``); ``params``: HRTEM noise
    params (``noise.validate_params`` schema); ``pixel_size_A`` (Å) is needed when ``params`` has a dose.
    ``known``: names from ``PARAMS`` treated as known (left out of the fit). Returns {name: SE} for the free
    parameters in their own units (dose in e⁻/Å², σ_c in 0–255 units; NaN for σ_c at σ_c = 0, where it is
    fitted as the variance σ_c²); the dose is free only when shot noise is present. ``strip_px``: pixels per
    full-height strip F is summed over (cost ∝ strip_px³ per strip; the columns beyond a whole number of strips
    are left out).
    """
    img = np.asarray(clean, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] > strip_px or min(img.shape) < 8:
        raise ValueError(f"clean must be a 2-D image of at least 8 × 8 px and at most {strip_px} rows, "
                         f"got shape {img.shape}")
    k, b = float(params["pointwise"]["k"]), float(params["pointwise"]["b"])
    sigma_c = float(params["column"]["sigma"])
    dose = params.get("dose_e_per_A2")
    mtf = float(params.get("mtf_sigma_px") or 0.0)
    if dose is not None and not (pixel_size_A and pixel_size_A > 0):
        raise ValueError("a dose needs a positive pixel_size_A")
    u = float(np.mean(img)) / (float(dose) * pixel_size_A**2) if dose is not None else 0.0
    free = [p for p in PARAMS if p not in known and not (p == "dose_e_per_A2" and dose is None)]
    blurred = ndimage.gaussian_filter(img, mtf, mode="reflect") if mtf > 0.05 else img
    h, w = img.shape
    sw = max(1, min(w, strip_px // h))
    g = _blur_matrix(h, sw, mtf)
    col = np.tile(np.arange(sw), h)
    same_col = np.equal.outer(col, col).astype(np.float64)
    fisher = np.zeros((len(free), len(free)))
    for x in range(0, w - sw + 1, sw):
        i0 = img[:, x:x + sw].ravel()
        i1 = blurred[:, x:x + sw].ravel()
        shot_unit = (g * np.maximum(i0, 0.0)) @ g.T  # ∂Σ/∂u
        sd = np.maximum(k * i1 + b, 0.0)
        cov = u * shot_unit + np.diag(sd**2) + sigma_c**2 * same_col
        deriv = {"dose_e_per_A2": shot_unit * (-u / float(dose)) if dose is not None else None,
                 "pointwise.k": np.diag(2.0 * sd * i1), "pointwise.b": np.diag(2.0 * sd),
                 "column.sigma": same_col}  # with respect to σ_c², converted below
        chol = linalg.cho_factor(cov)
        solved = [linalg.cho_solve(chol, deriv[p]) for p in free]
        for i in range(len(free)):
            for j in range(i, len(free)):
                fisher[i, j] += 0.5 * float(np.sum(solved[i] * solved[j].T))
                fisher[j, i] = fisher[i, j]
    se = np.sqrt(np.diag(np.linalg.inv(fisher)))
    out = {p: float(v) for p, v in zip(free, se)}
    if "column.sigma" in out:  # SE(σ_c) = SE(σ_c²) / (2 σ_c); undefined at σ_c = 0
        out["column.sigma"] = out["column.sigma"] / (2.0 * sigma_c) if sigma_c > 0 else float("nan")
    return out
