"""HRTEM estimator: column offsets, white noise of σ ``k I + b`` and MTF-blurred shot noise from one image.

Works on a :class:`em_noise.calibrate.stem.Frame` (the image on the model scale with its usable pixels and
quantization variance).  The derivation is in ``docs/calibration.md``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from em_noise.calibrate import common as cm
from em_noise.calibrate.stem import Frame
from em_noise.calibrate.tolerance import too_uncertain

SHOT_MIN_Z = 3.0  # shot noise is reported when its variance exceeds this many jackknife standard errors
MTF_GRID_PX = (0.0, *np.round(np.arange(0.1, 1.51, 0.05), 2))  # MTF σ search grid (px)
GUIDE_SIGMA_PX = 2.0  # intensity guide: Gaussian along y over the row-smoothed image ...
GUIDE_SKIP_PX = 2  # ... skipping the rows within this distance (MTF σ ≤ 1.5 px: correlation ≤ 0.14 at 4 px)
WHITE_MAX_SHOT_SHARE = 0.25  # above this shot share of the residual variance, white k, b are unidentified


@dataclass
class _Stats:
    """Group statistics of the row residual: counts, mean intensity, lag-0/1/2 products along y (3, n)."""

    cnt: np.ndarray
    i_mean: np.ndarray
    m: np.ndarray
    reps: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # delete-one-block replicates
    a: np.ndarray
    cp: float
    guide: np.ndarray
    colmean: np.ndarray
    n_rows: int
    mean_i: float
    lag1_t: float


def estimate(frame: Frame, pixel_size_A: float | None, tick: Callable[[], None] = lambda: None
             ) -> tuple[dict, dict, list, dict]:
    """(values, standard errors, unidentified keys, diagnostics) of the HRTEM noise parameters."""
    st = _residual_stats(frame)
    tick()
    fit = _white_and_shot(st)
    tick()
    sigma_c, se_sigma_c = _column_sigma(frame, st, fit)
    return _results(st, fit, sigma_c, se_sigma_c, pixel_size_A)


def _residual_stats(frame: Frame) -> _Stats:
    x = frame.x
    h, w = x.shape
    rows = slice(cm.BORDER_PX, h - cm.BORDER_PX)
    a = cm.highpass(cm.SG7)
    cp = float((a**2).sum())
    row = ndimage.correlate1d(x, cm.SG7, axis=1, mode="reflect")
    p = x - row
    colmean = p[rows].mean(axis=0)
    pc = p - colmean[None, :]  # column noise is constant down a column: gone from pc
    # MTF-blurred shot noise is correlated between rows, white noise is not: lag-1/lag-2 products along y
    l1, l2 = np.zeros_like(pc), np.zeros_like(pc)
    l1[:-1], l2[:-2] = pc[:-1] * pc[1:], pc[:-2] * pc[2:]
    inner = frame.usable.copy()
    inner[-cm.BORDER_PX - 2:] = False
    # the guide skips the rows an MTF-blurred shot noise correlates with the centre row (else it selects noise)
    kernel = cm.gauss_kernel(GUIDE_SIGMA_PX, exclude_px=GUIDE_SKIP_PX)
    guide = ndimage.correlate1d(row, kernel, axis=0, mode="reflect")
    lab, n = cm.groups(guide, inner)
    sums = cm.block_sums(lab, n, cm.row_blocks(x.shape), x, pc**2 - cp * frame.quant_var, l1, l2)
    n_rows = h - 2 * cm.BORDER_PX
    cnt, i_mean, m = _group_stats(sums.sum(axis=1), n_rows)
    t1 = float(l1[inner].mean() / (l1[inner].std() / math.sqrt(inner.sum()) + 1e-30))
    return _Stats(cnt, i_mean, m, [_group_stats(s, n_rows) for s in cm.leave_one_out(sums)], a, cp, guide,
                  colmean, n_rows, float(x[frame.usable].mean()), t1)


def _group_stats(s: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ok = s[0] > cm.MIN_FIT_PX
    scale = n_rows / (n_rows - 1)  # the column-mean removal took 1/n of the variance
    return s[0][ok], s[1][ok] / s[0][ok], s[2:][:, ok] / s[0][ok] * scale


def gauss_taps(sigma: float) -> np.ndarray:
    """The discrete kernel ``scipy.ndimage.gaussian_filter1d`` applies (truncate 4), as taps."""
    r = max(int(4.0 * sigma + 0.5), 1)
    d = np.zeros(2 * r + 1)
    d[r] = 1.0
    return ndimage.gaussian_filter1d(d, sigma, mode="constant")


def mtf_factors(sigma: float, a: np.ndarray, max_lag: int = 2) -> tuple[float, np.ndarray]:
    """For shot noise blurred by a Gaussian MTF (σ px): ``A = Σ (a * m)²`` along x and ``R(d) = Σ m(j) m(j+d)``."""
    m = np.array([1.0]) if sigma < 0.05 else gauss_taps(sigma)
    acorr = np.correlate(m, m, mode="full")[len(m) - 1:]
    lags = np.zeros(max_lag + 1)
    lags[: min(len(acorr), max_lag + 1)] = acorr[: max_lag + 1]
    return float((np.convolve(a, m) ** 2).sum()), lags


def fit_white_plus_shot(i: np.ndarray, m: np.ndarray, cnt: np.ndarray, cp: float, a: np.ndarray,
                        sigmas: Any = None) -> tuple[float, float, float, float, float]:
    """Fit the residual's lag-0/1/2 group covariances (rows of ``m``) with white + MTF-blurred shot noise.

    ``m[0] = cp (k I + b)² + A R0 inv_c I``, ``m[d] = A Rd inv_c I`` (d = 1, 2) with ``A, R`` from the MTF σ,
    searched on ``sigmas`` (default ``MTF_GRID_PX``); returns (k, b, inv_c, sigma_mtf, cost)."""
    k0, b0 = cm.fit_sd_line(i, m[0], cnt, cp)
    wts = np.sqrt(cnt) / np.maximum(m[0], 1e-9)  # sd of a group mean of lagged products ≈ m0 / sqrt(n)
    best = None
    for sigma in (MTF_GRID_PX if sigmas is None else sigmas):
        A, R = mtf_factors(float(sigma), a)

        def resid(q: np.ndarray, A=A, R=R) -> np.ndarray:
            shot = A * q[2] * i
            white = cp * np.maximum(q[0] * i + q[1], 0.0) ** 2
            return np.concatenate([wts * (white + R[0] * shot - m[0]), wts * (R[1] * shot - m[1]),
                                   wts * (R[2] * shot - m[2])])

        res = optimize.least_squares(resid, [k0, max(b0, 0.0), 0.0],
                                     bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, np.inf]))
        if best is None or res.cost < best[4]:
            best = (float(res.x[0]), float(res.x[1]), float(res.x[2]), float(sigma), float(res.cost))
    return best


def _white_and_shot(st: _Stats) -> dict[str, Any]:
    """White + shot fit with the MTF σ refined on 0.01 px nodes around the best grid node; shot noise declared
    when 1/c exceeds ``SHOT_MIN_Z`` jackknife errors (σ held); errors of k, b, 1/c with σ free by ±0.05 px."""
    args = (st.cp, st.a)
    k, b, inv_c, sigma, _ = fit_white_plus_shot(st.i_mean, st.m, st.cnt, *args)
    if sigma > 0:  # the dose of the shot part depends steeply on σ
        fine = [round(sigma + d, 3) for d in np.arange(-0.04, 0.041, 0.01) if sigma + d >= 0.1 - 1e-9]
        k, b, inv_c, sigma, _ = fit_white_plus_shot(st.i_mean, st.m, st.cnt, *args, sigmas=fine)
    held = [fit_white_plus_shot(ri, rm, rc, *args, sigmas=(sigma,))[2] for rc, ri, rm in st.reps]
    shot = inv_c > SHOT_MIN_Z * float(cm.jackknife_se(held)[0])
    near = sorted({round(max(sigma + d, 0.0), 3) for d in (-0.05, -0.025, 0.0, 0.025, 0.05)})
    reps = [fit_white_plus_shot(ri, rm, rc, *args, sigmas=near)[:3] for rc, ri, rm in st.reps]
    se_k, se_b, se_inv_c = cm.jackknife_se(reps)
    A, R = mtf_factors(sigma, st.a)
    shot_share = A * R[0] * inv_c * st.mean_i / max(float(np.interp(st.mean_i, st.i_mean, st.m[0])), 1e-12)
    if not shot:  # no shot noise resolved: the white model alone fits k, b more precisely
        k, b = cm.fit_sd_line(st.i_mean, st.m[0], st.cnt, st.cp)
        inv_c, sigma = 0.0, 0.0
    return {"k": k, "b": b, "inv_c": inv_c, "sigma_mtf": sigma, "shot": bool(shot), "se_k": float(se_k),
            "se_b": float(se_b), "se_inv_c": float(se_inv_c), "shot_share": float(shot_share)}


def _column_sigma(frame: Frame, st: _Stats, fit: dict) -> tuple[float, float]:
    """Column σ from ``mean(colmean²) = Σa² σ_c² + (residual noise variance) / rows``, its error from a
    delete-one-block jackknife over blocks of neighbouring columns."""
    A, _ = mtf_factors(fit["sigma_mtf"], st.a)
    var_white = np.maximum(fit["k"] * st.guide + fit["b"], 0.0) ** 2 + frame.quant_var
    # (the shot part summed over all row lags: Σ_d R(d) = (Σ m)² = 1)
    noise = st.cp * var_white + A * fit["inv_c"] * np.maximum(st.guide, 0.0)
    noise_mean_var = float(np.mean(noise[cm.interior(frame.x.shape)]))
    cm2 = st.colmean[cm.BORDER_PX:frame.x.shape[1] - cm.BORDER_PX] ** 2
    sigma_c2 = (float(cm2.mean()) - noise_mean_var / st.n_rows) / st.cp
    rep = [np.delete(cm2, blk).mean() for blk in np.array_split(np.arange(cm2.size), cm.JACKKNIFE_BLOCKS)]
    se_c2 = float(cm.jackknife_se(rep)[0]) / st.cp
    sigma_c = math.sqrt(max(sigma_c2, 0.0))
    return sigma_c, (se_c2 / (2.0 * sigma_c) if sigma_c > 0 else math.sqrt(se_c2))


def _results(st: _Stats, fit: dict, sigma_c: float, se_sigma_c: float, pixel_size_A: float | None
             ) -> tuple[dict, dict, list, dict]:
    k, b, inv_c = fit["k"], fit["b"], fit["inv_c"]
    values = {"column.sigma": sigma_c, "pointwise.k": k, "pointwise.b": b, "mtf_sigma_px": fit["sigma_mtf"],
              "dose_e_per_A2": None}
    errors = {"column.sigma": se_sigma_c, "pointwise.k": fit["se_k"], "pointwise.b": fit["se_b"]}
    counts = st.mean_i / inv_c if inv_c > 0 else None  # expected e⁻ per pixel at the mean intensity
    diag: dict[str, Any] = {"shot_lag1_t": st.lag1_t, "shot_variance_share": fit["shot_share"],
                            "counts_per_px_at_mean": counts}
    # white k, b: unidentified by their error, or when shot noise carries a large share of the residual variance
    # (the white part is then a small difference of two fitted terms whose model errors exceed the jackknife's)
    unidentified = too_uncertain("hrtem", errors, values)
    if fit["shot"] and fit["shot_share"] > WHITE_MAX_SHOT_SHARE:
        unidentified += ["pointwise.k", "pointwise.b"]
    if counts is not None and pixel_size_A:
        values["dose_e_per_A2"] = dose = counts / pixel_size_A**2
        errors["dose_e_per_A2"] = dose * fit["se_inv_c"] / inv_c
        if too_uncertain("hrtem", {"dose_e_per_A2": errors["dose_e_per_A2"]}, values):
            # the white part is the total minus the shot part: an unpinned shot term unpins k, b as well
            unidentified += ["pointwise.k", "pointwise.b", "dose_e_per_A2"]
    elif pixel_size_A and fit["se_inv_c"] > 0:
        # no shot noise resolved: "no dose" and "a dose too high to see" look alike; only a lower bound is known
        unidentified.append("dose_e_per_A2")
        diag["dose_e_per_A2_lower_bound"] = st.mean_i / (SHOT_MIN_Z * fit["se_inv_c"]) / pixel_size_A**2
    elif counts is not None:
        # no pixel size: the shot noise cannot be expressed as a dose; fold it into the linear σ model instead
        values["pointwise.k"], values["pointwise.b"] = cm.fit_sd_line(st.i_mean, st.m[0], st.cnt, st.cp)
        values["mtf_sigma_px"] = 0.0
        unidentified += ["pointwise.k", "pointwise.b"]  # an effective σ of shot + white noise, not the white part
        diag["note"] = "shot noise folded into the pointwise sigma (no pixel_size_A given)"
    return values, errors, list(dict.fromkeys(unidentified)), diag
