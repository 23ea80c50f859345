"""Shared tools of the estimators: filters, intensity groups, group fits, jackknife, Tukey kurtosis."""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, special
from scipy.signal import savgol_coeffs

SG5 = savgol_coeffs(5, 3)  # column smoother that keeps local cubics
SG7 = savgol_coeffs(7, 5)  # row smoother for the pointwise residual: keeps local quintics (atom tops)
N_GROUPS = 24
MIN_GROUP_PX = 120
MIN_FIT_PX = 50  # a group enters a fit with more pixels than this
BORDER_PX = 4
JACKKNIFE_BLOCKS = 8  # row blocks of the delete-one-block jackknife that gives the standard errors
LAM_RANGE = (-0.2, 1.0)  # Tukey λ the kurtosis is inverted over


def gauss_kernel(sigma: float, exclude_centre: bool = False, exclude_px: int = 0) -> np.ndarray:
    """Normalized Gaussian taps; ``exclude_centre`` zeroes the centre tap and ``exclude_px`` the taps up to that
    distance (a guide built with it is independent of noise correlated over that many rows)."""
    r = int(math.ceil(3.5 * sigma)) + exclude_px
    d = np.arange(-r, r + 1)
    w = np.exp(-(d**2) / (2 * sigma**2))
    if exclude_centre:
        w[r] = 0.0
    if exclude_px > 0:
        w[np.abs(d) <= exclude_px] = 0.0
    return w / w.sum()


def highpass(h: np.ndarray) -> np.ndarray:
    """Taps of ``δ − h``: what a smoother ``h`` leaves of white noise."""
    a = -np.asarray(h, dtype=np.float64)
    a[len(a) // 2] += 1.0
    return a


def interior(shape: tuple[int, int], border: int = BORDER_PX) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[border:-border, border:-border] = True
    return m


def groups(guide: np.ndarray, mask: np.ndarray, n: int = N_GROUPS) -> tuple[np.ndarray, int]:
    """Label masked pixels by quantile group of ``guide`` (−1 outside the mask); small images get fewer groups
    so that each keeps ``MIN_GROUP_PX`` pixels (a jackknife replicate then still has > 50 per group)."""
    vals = guide[mask]
    n = max(2, min(n, len(vals) // MIN_GROUP_PX))
    edges = np.unique(np.quantile(vals, np.linspace(0, 1, n + 1))) if len(vals) else np.zeros(2)
    lab = np.full(guide.shape, -1, dtype=np.int64)
    lab[mask] = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, max(len(edges) - 2, 0))
    return lab, max(len(edges) - 1, 1)


def group_means(lab: np.ndarray, n: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pixel count, mean of each array) per group."""
    sel = lab >= 0
    idx = lab[sel]
    cnt = np.bincount(idx, minlength=n).astype(np.float64)
    return (cnt, *(np.bincount(idx, a[sel], minlength=n) / np.maximum(cnt, 1) for a in arrays))


def row_blocks(shape: tuple[int, int], n_blocks: int = JACKKNIFE_BLOCKS) -> np.ndarray:
    """(H, W) index of the block of rows each pixel belongs to (``n_blocks`` equal blocks)."""
    return np.broadcast_to((np.arange(shape[0]) * n_blocks // shape[0])[:, None], shape)


def block_sums(lab: np.ndarray, n: int, blocks: np.ndarray, *arrays: np.ndarray,
               n_blocks: int = JACKKNIFE_BLOCKS) -> np.ndarray:
    """(1 + len(arrays), n_blocks, n) per block and group: pixel counts, then the sums of each array."""
    sel = lab >= 0
    idx = blocks[sel] * n + lab[sel]
    out = [np.bincount(idx, minlength=n_blocks * n).astype(np.float64)]
    out += [np.bincount(idx, a[sel], minlength=n_blocks * n) for a in arrays]
    return np.stack(out).reshape(len(out), n_blocks, n)


def leave_one_out(sums: np.ndarray) -> list[np.ndarray]:
    """The delete-one-block replicates of block sums ``(k, n_blocks, n)``: ``(k, n)`` each."""
    total = sums.sum(axis=1)
    return [total - sums[:, j] for j in range(sums.shape[1])]


def jackknife_se(reps: np.ndarray) -> np.ndarray:
    """Delete-one-block jackknife standard error from replicate estimates ``reps`` (n_blocks, n_params)."""
    reps = np.asarray(reps, dtype=np.float64).reshape(len(reps), -1)
    nb = len(reps)
    return np.sqrt((nb - 1) / nb * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))


def fit_hinge(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares fit of ``y ≈ max(K x + B, 0)``; returns (K, B)."""
    ok = w > 0
    x, y, w = x[ok], y[ok], w[ok]
    if len(x) < 2:
        return 0.0, float(y.mean()) if len(y) else 0.0
    sw = np.sqrt(w)
    (k0, b0), *_ = np.linalg.lstsq(np.vstack([x, np.ones_like(x)]).T * sw[:, None], y * sw, rcond=None)
    res = optimize.least_squares(lambda p: sw * (np.maximum(p[0] * x + p[1], 0.0) - y), [k0, b0],
                                 method="lm" if len(x) > 2 else "trf")
    return float(res.x[0]), float(res.x[1])


def fit_sd_line(i_mean: np.ndarray, var: np.ndarray, cnt: np.ndarray, cp: float) -> tuple[float, float]:
    """``sqrt(var / cp) ≈ max(K I + B, 0)`` over groups (weights count / sd²); returns (K, B)."""
    sd = np.sqrt(np.maximum(var, 1e-12) / cp)
    return fit_hinge(i_mean, sd, cnt / np.maximum(sd, 1e-3) ** 2)


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
def tukey_kurtosis_table() -> tuple[np.ndarray, np.ndarray]:
    lams = np.linspace(LAM_RANGE[0], LAM_RANGE[1], 241)
    return lams, np.array([tukey_excess_kurtosis(float(lm)) for lm in lams])


def lam_from_kurtosis(excess_kurtosis: float) -> float:
    """Tukey λ in [−0.2, 1] whose excess kurtosis is ``excess_kurtosis`` (monotone there)."""
    lams, kurt = tukey_kurtosis_table()
    return float(np.interp(excess_kurtosis, kurt[::-1], lams[::-1]))
