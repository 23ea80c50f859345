"""Alignment of a background-free tilt series (tilt axis along image rows): coarse cross-correlation, then projection
matching with the in-plane tilt-axis angle and the tilt-axis offset estimated.

1. **Coarse**: cross-correlation of neighbouring tilts, accumulated from the tilt nearest 0°.
2. **Projection matching** (``rounds``): reconstruct (SIRT) from the current aligned views, reproject at every
   angle, register each view to its reprojection (cross-correlation, parabolic sub-pixel peak), repeat. The mean
   update along the tilt axis is removed (a shift of the whole object along the axis is not determined).
3. **Tilt-axis angle**: after the first matching round, the in-plane rotation ψ of the axis (degrees, about the
   image centre) that minimises the reprojection residual of the SIRT volume over a grid of angles, the shifts
   re-matched at each (parabolic refinement around the best; on views binned to at most ``rotation_width`` px).
   Views are smoothed alike (``ROTATION_SMOOTH_PX``) before the residual is taken: the interpolation of a rotated
   view smooths its noise, which would otherwise pass for consistency. ψ is applied only when it lowers the
   residual at ψ = 0 by ``ROTATION_MIN_GAIN``; a small or poorly determined
   angle (an object symmetric about the axis neither determines ψ nor suffers from it) is reported, not applied.
4. **Tilt-axis offset**: the centre of mass of each aligned view is fitted by ``x̄(θ) = δ + a cosθ + b sinθ`` and δ
   removed, so that the tilt axis runs through the image centre.

A view is mapped as ``p' = R(ψ) p + s`` (``p`` in px from the image centre, ``s = (dy, dx)``), with linear
interpolation; the aligned stack is then cropped, all views alike and symmetrically about the centre, to the field
of view that every transformed view covers, so that no view carries a band of filled-in pixels.
Projection matching runs on views mean-binned to at most ``match_width`` px (shifts scaled back).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from em_noise.errors import EMInputError
from scipy import ndimage

from . import classical
from .tiltseries import bin_stack

MATCH_SIRT_ITERATIONS = 20  # reconstruction of each shift-matching round
ROTATION_SIRT_ITERATIONS = 60  # reconstruction scored for a tilt-axis angle (sharper minimum than 20)
ROTATION_MATCH_ROUNDS = 2  # shift-matching rounds at each candidate angle before it is scored
ROTATION_SMOOTH_PX = 1.0  # Gaussian σ (px of the search's binned views) applied before the residual is taken
ROTATION_MIN_GAIN = 0.1  # an angle is applied only if it lowers the residual of ψ = 0 by this fraction


@dataclass
class Alignment:
    """Aligned, cropped stack ``(C, H', W')``, shifts ``(C, 2)`` as (dy, dx) px, tilt-axis rotation ψ (degrees),
    rows and columns cropped from each side, and a per-round record of the matching."""

    data: np.ndarray
    shifts: np.ndarray
    rotation_deg: float
    crop: tuple[int, int]
    axis_offset_px: float = 0.0
    rounds: list = field(default_factory=list)


def xcorr_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shift (dy, dx) px that moves ``b`` onto ``a`` (FFT cross-correlation, parabolic sub-pixel peak)."""
    fa = np.fft.rfft2(a - a.mean())
    fb = np.fft.rfft2(b - b.mean())
    cc = np.fft.fftshift(np.fft.irfft2(fa * np.conj(fb), s=a.shape))
    iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)
    out = []
    for idx, axis, n in ((iy, 0, cc.shape[0]), (ix, 1, cc.shape[1])):
        if 0 < idx < n - 1:
            lo, mid, hi = (cc[iy - 1, ix], cc[iy, ix], cc[iy + 1, ix]) if axis == 0 else \
                (cc[iy, ix - 1], cc[iy, ix], cc[iy, ix + 1])
            den = lo - 2 * mid + hi
            frac = 0.5 * (lo - hi) / den if den != 0 else 0.0
        else:
            frac = 0.0
        out.append(idx + frac - n // 2)
    return np.asarray(out)


def rotation_yx(psi_deg: float) -> np.ndarray:
    """2×2 matrix of a rotation by ψ (counter-clockwise in x, y) acting on (y, x) pixel vectors."""
    c, s = np.cos(np.deg2rad(psi_deg)), np.sin(np.deg2rad(psi_deg))
    return np.array([[c, s], [-s, c]])


def transform(view: np.ndarray, shift_yx: np.ndarray, psi_deg: float = 0.0, mode: str = "nearest") -> np.ndarray:
    """``view`` mapped by ``p' = R(ψ) p + s`` about its centre (linear interpolation; ``mode``: outside the view,
    scipy.ndimage's, edges extended by default)."""
    if psi_deg == 0.0:
        return ndimage.shift(view, shift_yx, order=1, mode=mode)
    centre = (np.array(view.shape) - 1) / 2.0
    inv = rotation_yx(-psi_deg)
    offset = centre - inv @ (centre + np.asarray(shift_yx, np.float64))
    return ndimage.affine_transform(view, inv, offset=offset, order=1, mode=mode)


def crop_margins(shape_hw: tuple[int, int], shifts: np.ndarray, psi_deg: float) -> tuple[int, int]:
    """Rows and columns to crop from each side so that every view mapped by (shifts, ψ) covers the rest."""
    h, w = shape_hw
    s, c = abs(np.sin(np.deg2rad(psi_deg))), np.cos(np.deg2rad(psi_deg))
    ry = 0.5 * w * s + 0.5 * h * (1 - c)
    rx = 0.5 * h * s + 0.5 * w * (1 - c)
    cy = int(np.ceil(np.abs(shifts[:, 0]).max() + ry - 1e-6))
    cx = int(np.ceil(np.abs(shifts[:, 1]).max() + rx - 1e-6))
    return cy, cx


def coarse_shifts(data: np.ndarray, angles_deg: np.ndarray, max_shift_fraction: float = 0.25) -> np.ndarray:
    """Cumulative cross-correlation of neighbouring tilts from the one nearest 0°; (C, 2) shifts."""
    c, h, w = data.shape
    ref = int(np.argmin(np.abs(angles_deg)))
    shifts = np.zeros((c, 2))
    limit = max_shift_fraction * np.array([h, w])
    for i in range(ref + 1, c):
        shifts[i] = shifts[i - 1] + np.clip(xcorr_shift(data[i - 1], data[i]), -limit, limit)
    for i in range(ref - 1, -1, -1):
        shifts[i] = shifts[i + 1] + np.clip(xcorr_shift(data[i + 1], data[i]), -limit, limit)
    return shifts


def _position_design(angles_deg: np.ndarray) -> np.ndarray:
    """(C, 3) columns 1, cos θ, sin θ: across the axis, a point at (x, z) projects to ``x cos θ + z sin θ`` (+ δ)."""
    th = np.deg2rad(np.asarray(angles_deg, np.float64))
    return np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)


def axis_offset(moved: np.ndarray, angles_deg: np.ndarray) -> float:
    """δ (px) of the centre-of-mass fit ``x̄(θ) = δ + a cosθ + b sinθ`` of background-free views."""
    c, _, w = moved.shape
    weights = np.clip(moved, 0, None)
    tot = weights.reshape(c, -1).sum(1).clip(1e-12)
    xx = np.arange(w) + 0.5 - w / 2
    com_x = (weights.sum(1) * xx).sum(1) / tot
    return float(np.linalg.lstsq(_position_design(angles_deg), com_x, rcond=None)[0][0])


def gauge_free(shifts: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Shifts (C, 2) without what a tilt series cannot determine: a common shift along the axis (rows) and, across
    it, the object's position in 3-D (``a + b cos θ + c sin θ``); for comparing alignments."""
    design = _position_design(angles_deg)
    out = np.array(shifts, np.float64)
    out[:, 1] -= design @ np.linalg.lstsq(design, out[:, 1], rcond=None)[0]
    out[:, 0] -= out[:, 0].mean()
    return out


class _Matcher:
    """Projection matching on views binned by ``k``: reconstruction from the views ``use``, reprojection at all."""

    def __init__(self, data: np.ndarray, angles_deg: np.ndarray, use: np.ndarray, k: int):
        self.data, self.angles, self.use, self.k = data, angles_deg, use, k

    def moved(self, shifts: np.ndarray, psi: float) -> np.ndarray:
        return bin_stack(np.stack([transform(v, s, psi) for v, s in zip(self.data, shifts)]), self.k)

    def margins(self, shifts: np.ndarray, psi: float) -> tuple[int, int]:
        """Rows and columns (binned px, one more for the interpolation) outside the field every mapped view covers."""
        cy, cx = crop_margins(self.data.shape[1:], shifts, psi)
        return int(np.ceil(cy / self.k)) + 1, int(np.ceil(cx / self.k)) + 1

    def reprojections(self, moved: np.ndarray, iterations: int = MATCH_SIRT_ITERATIONS) -> np.ndarray:
        w = moved.shape[2]
        vol = classical.reconstruct(moved[self.use], self.angles[self.use], w, w, "sirt", iterations)
        return classical.forward_project(vol, self.angles)

    def residual(self, shifts: np.ndarray, psi: float, iterations: int = ROTATION_SIRT_ITERATIONS,
                 region_psi: float | None = None) -> float:
        """Relative squared reprojection residual over the central field (the margins cropped at ``region_psi``,
        default ``psi``, left out: one region for all the angles compared)."""
        moved = self.moved(shifts, psi)
        if ROTATION_SMOOTH_PX > 0:  # the interpolation of a rotated view smooths its noise; smooth all views alike
            moved = ndimage.gaussian_filter(moved, (0, ROTATION_SMOOTH_PX, ROTATION_SMOOTH_PX))
        rep = self.reprojections(moved, iterations)
        cy, cx = self.margins(shifts, psi if region_psi is None else region_psi)
        sl = (self.use, slice(cy, moved.shape[1] - cy or None), slice(cx, moved.shape[2] - cx or None))
        return float(((rep[sl] - moved[sl]) ** 2).sum() / max((moved[sl] ** 2).sum(), 1e-30))

    def update(self, shifts: np.ndarray, psi: float, limit: float) -> np.ndarray:
        """Shift corrections (C, 2) in full-resolution px that register each view to its reprojection."""
        moved = self.moved(shifts, psi)
        rep = self.reprojections(moved)
        cy, cx = self.margins(shifts, psi)
        h, w = moved.shape[1:]
        sl = (slice(cy, h - cy), slice(cx, w - cx)) if h - 2 * cy >= 8 and w - 2 * cx >= 8 else (slice(None),) * 2
        d = np.stack([xcorr_shift(r[sl], m[sl]) for r, m in zip(rep, moved)]) * self.k
        d = np.clip(d, -limit, limit)
        d[:, 0] -= d[self.use, 0].mean()  # a shift of the object along the tilt axis is not determined
        return d


def estimate_rotation(matcher: _Matcher, shifts: np.ndarray, max_deg: float, step_deg: float,
                      limit: float) -> tuple[float, dict]:
    """ψ (degrees) with the smallest reprojection residual on a grid of ±``max_deg``, refined by a parabola; at
    each candidate the shifts are first re-matched (they absorb part of a wrong angle otherwise)."""
    grid = np.arange(-max_deg, max_deg + 1e-9, step_deg)
    res = []
    for p in grid:
        s = shifts
        for _ in range(ROTATION_MATCH_ROUNDS):
            s = s + matcher.update(s, float(p), limit)
        res.append(matcher.residual(s, float(p), region_psi=max_deg))
    res = np.asarray(res)
    i = int(np.argmin(res))
    psi = float(grid[i])
    if 0 < i < len(grid) - 1:
        den = res[i - 1] - 2 * res[i] + res[i + 1]
        if den > 0:
            psi += float(np.clip(0.5 * (res[i - 1] - res[i + 1]) / den, -0.5, 0.5)) * step_deg
    psi = round(psi, 2)
    at_zero = float(res[int(np.argmin(np.abs(grid)))])
    gain = 1.0 - float(res.min()) / max(at_zero, 1e-30)
    applied = gain >= ROTATION_MIN_GAIN and abs(psi) >= 0.05
    return (psi if applied else 0.0), {
        "grid_deg": [round(float(g), 3) for g in grid], "residuals": [round(float(r), 6) for r in res],
        "estimate_deg": psi, "residual_gain": round(gain, 4), "applied": bool(applied),
        "rule": f"applied when it lowers the residual at 0 deg by >= {ROTATION_MIN_GAIN:.0%}"}


def align(data: np.ndarray, angles_deg: np.ndarray, use: np.ndarray | None = None, rounds: int = 4,
          rotation: bool = True, max_rotation_deg: float = 5.0, rotation_step_deg: float = 1.0,
          match_width: int = 128, rotation_width: int = 64, max_shift_fraction: float = 0.25) -> Alignment:
    """Align a background-free series ``(C, H, W)`` (module docstring). ``use``: views the matching reconstructions
    are made from (default all; held-out views are registered to reprojections of a volume made without them)."""
    data = np.asarray(data, np.float32)
    c, h, w = data.shape
    angles_deg = np.asarray(angles_deg, np.float64)
    use = np.ones(c, bool) if use is None else np.asarray(use, bool)
    shifts = coarse_shifts(data, angles_deg, max_shift_fraction)
    k = max(1, int(np.ceil(w / match_width)))
    matcher = _Matcher(data, angles_deg, use, k)
    limit = max(2.0, 0.1 * min(h, w))
    psi, record, rot_report = 0.0, [], None
    for r in range(rounds):
        if rotation and r == 1:
            coarse = _Matcher(data, angles_deg, use, max(1, int(np.ceil(w / rotation_width))))
            psi, rot_report = estimate_rotation(coarse, shifts, max_rotation_deg, rotation_step_deg, limit)
        d = matcher.update(shifts, psi, limit)
        shifts = shifts + d
        record.append({"round": r + 1, "max_update_px": round(float(np.abs(d).max()), 3),
                       "rms_update_px": round(float(np.sqrt((d**2).mean())), 3)})
        if np.abs(d).max() < 0.05 * k and (not rotation or r >= 1):
            break
    moved = np.stack([transform(v, s, psi) for v, s in zip(data, shifts)])
    delta = axis_offset(moved, angles_deg)
    shifts[:, 1] -= delta
    aligned = np.stack([transform(v, s, psi) for v, s in zip(data, shifts)])
    cy, cx = crop_margins((h, w), shifts, psi)
    if h - 2 * cy < 8 or w - 2 * cx < 8:
        raise EMInputError(None, f"alignment shifts of up to {cy} x {cx} px leave less than 8 px of common field of "
                           "view; the series may not be alignable by cross-correlation")
    aligned = aligned[:, cy: h - cy, cx: w - cx]
    if rot_report is not None:
        record.append({"rotation_search": rot_report})
    return Alignment(np.ascontiguousarray(aligned, np.float32), shifts, psi, (cy, cx), round(delta, 3), record)
