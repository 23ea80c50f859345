"""Reconstruction of a tilt series held in memory: preprocessing, held-out split, self-tuning, fit, report.

:func:`reconstruct` is the notebook entry point (numpy arrays or a hyperspy ``Signal2D``); ``denza-recon`` runs the
same :func:`run_series` on a file and writes its outputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from em_noise.errors import EMInputError
from scipy import ndimage

from . import __version__, classical
from .normalization import closed_form_gamma, interpolate_gamma
from .tiltseries import TiltSeries, file_index, preprocess, series_from_arrays, to_file_axes_yx, to_user_axes
from .tune import tune_sirt

METHODS = ("denza", "sirt", "fbp")


@dataclass
class ReconOptions:
    """Options of one reconstruction (mirror the CLI). ``lambda_tv`` / ``iterations`` None: chosen by
    cross-validation on the tilts (``tune=False``: the config's defaults)."""

    method: str = "denza"
    bin_factor: int = 1
    size: int | None = None
    thickness: int | None = None
    iterations: int | None = None
    lambda_tv: float | None = None
    holdout: int = 0
    align: bool = False
    tune: bool = True
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    config: object | None = None  # DenzaConfig (imported lazily: the classical methods need no torch)


@dataclass
class Result:
    """Volume ``(Z, Y, X)`` and reprojections ``(C, H, W)`` in the user's axes, order and intensity units, the
    preprocessed (aligned) stack in the user's axes and order, and the JSON-ready report."""

    volume: np.ndarray
    reprojections: np.ndarray
    aligned: np.ndarray
    report: dict = field(default_factory=dict)


def _check(opts: ReconOptions) -> None:
    if opts.method not in METHODS:
        raise EMInputError(None, f"--method must be one of {', '.join(METHODS)}")
    if opts.bin_factor < 1:
        raise EMInputError(None, f"--bin must be positive, got {opts.bin_factor}")
    if opts.holdout < 0 or opts.holdout == 1:
        raise EMInputError(None, "--holdout K needs K >= 2 (K = 1 would hold out every view)")
    for name, val in (("--size", opts.size), ("--thickness", opts.thickness), ("--iters", opts.iterations)):
        if val is not None and val < 1:
            raise EMInputError(None, f"{name} must be positive, got {val}")
    if opts.lambda_tv is not None and opts.lambda_tv < 0:
        raise EMInputError(None, f"--lambda-tv must be >= 0, got {opts.lambda_tv}")


def _resize(data: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """Resample images (bilinear) so that they are ``width`` px wide, same factor on both axes; returns (data, factor).
    Intensities are kept, so the volume stays in input intensity units per (resampled) voxel."""
    f = width / data.shape[2]
    if abs(f - 1) < 1e-9:
        return data, 1.0
    h = max(4, int(round(data.shape[1] * f)))
    out = np.stack([ndimage.zoom(d, (h / d.shape[0], width / d.shape[1]), order=1) for d in data])
    return out.astype(np.float32), f


def run_series(series: TiltSeries, opts: ReconOptions) -> Result:
    """Reconstruct a checked series (internal order and axes, see :mod:`denza_gaussian.tiltseries`)."""
    t0 = time.perf_counter()
    _check(opts)
    n_views = len(series.angles_deg)
    held = np.zeros(n_views, bool)
    if opts.holdout:
        held[opts.holdout - 1:: opts.holdout] = True
        if (~held).sum() < 3:
            raise EMInputError(None, f"--holdout {opts.holdout} leaves fewer than 3 training views")
    tilts, scale = preprocess(series, opts.bin_factor, opts.align, normalize_by=~held)
    voxel = 1.0
    if opts.size is not None:
        tilts, f = _resize(tilts, opts.size)
        voxel = 1.0 / f
    _, h, w = tilts.shape
    thickness = int(opts.thickness or w)
    angles = series.angles_deg
    train = ~held
    report: dict = {"method": opts.method}
    gamma = np.ones(n_views, np.float32)
    gamma_source = None
    if opts.method == "denza":
        volume, reproj, gamma_train, info = _denza(tilts[train], angles[train], thickness, angles, opts)
        gamma[train] = gamma_train
        gamma[held] = interpolate_gamma(angles[train], gamma_train, angles[held])
        reproj = reproj * gamma[:, None, None]
        gamma_source = ("training views: closed form from their totals x fitted refinement; held-out views: "
                        "interpolated over angle (log γ, linear) from the training views, never from their own data")
        report.update(info)
    else:
        iters, tuning = opts.iterations, None
        if opts.method == "sirt" and iters is None:
            if opts.tune:
                iters, tuning = tune_sirt(tilts[train], angles[train], thickness)
            else:
                iters = 50
        volume = classical.reconstruct(tilts[train], angles[train], thickness, w, opts.method, iters or 1)
        reproj = classical.forward_project(volume, angles)
        report.update(iterations=iters if opts.method == "sirt" else 1, tuning=tuning)
    report["reprojection_l1_train"] = float(np.mean(np.abs(reproj[train] - tilts[train])))
    if held.any():
        from em_noise.metrics import psnr, ssim  # scipy.optimize: a second of start-up, only with --holdout

        obs = tilts[held]
        dr = float(obs.max() - obs.min())
        report["heldout"] = {
            "file_indices": sorted(int(i) for i in file_index(series, np.flatnonzero(held))),
            "angles_deg": sorted(float(a) for a in angles[held]),
            "psnr_db": psnr(reproj[held], obs, dr),
            "ssim": ssim(reproj[held], obs, dr),
            "prediction": "reprojection of the volume fitted without these views"
                          + (", times γ interpolated from the training views" if opts.method == "denza" else ""),
        }
    else:
        report["heldout"] = None
    report["images"] = _image_entries(series, held, gamma if opts.method == "denza" else None)
    if gamma_source:
        report["gamma_source"] = gamma_source
    px = series.pixel_size_A
    report.update(
        tilt_axis=series.tilt_axis,
        angles_source=series.angle_source,
        views=int(n_views),
        training_views=int(train.sum()),
        angle_range_deg=[float(angles.min()), float(angles.max())],
        bin=opts.bin_factor,
        alignment=None if series.shifts_px is None else _alignment_report(series),
        voxel_size_A=None if px is None else round_to_float32(px * opts.bin_factor * voxel),
        device=str(opts.device),
        seed=opts.seed,
        seconds=round(time.perf_counter() - t0, 3),
        version=__version__,
    )
    return Result(
        volume=to_user_axes(series, volume * scale, is_volume=True),
        reprojections=to_user_axes(series, reproj * scale, is_volume=False),
        aligned=to_user_axes(series, tilts * scale, is_volume=False),
        report=report,
    )


def _denza(tilts, angles, thickness, predict_angles, opts):
    """Self-tuned (or overridden) DenZa fit on the training tilts; returns volume, reprojections at
    ``predict_angles`` (γ-free), γ of the training tilts and report entries."""
    from .config import DenzaConfig
    from .fit import fit
    from .tune import tune_denza

    cfg = (opts.config or DenzaConfig()).model_copy(update={"seed": opts.seed})
    if opts.iterations is not None:
        cfg = cfg.model_copy(update={"iterations": opts.iterations, "stop_at": None})
    if opts.lambda_tv is not None:
        cfg = cfg.model_copy(update={"lambda_tv": opts.lambda_tv})
    g0 = closed_form_gamma(tilts) if cfg.use_gamma else np.ones(len(tilts), np.float32)
    tuning = None
    if opts.tune and opts.lambda_tv is None:
        t0 = time.perf_counter()
        cfg, tuning = tune_denza(tilts, angles, thickness, cfg, g0, opts.device, opts.progress)
        tuning["seconds"] = round(time.perf_counter() - t0, 3)
        if opts.iterations is not None:  # --iters overrides the chosen stop
            cfg = cfg.model_copy(update={"iterations": opts.iterations, "stop_at": None})
    res = fit(tilts, angles, thickness, cfg, gamma0=g0, predict_angles_deg=predict_angles,
              predict_gamma=np.ones(len(predict_angles), np.float32), device=opts.device, progress=opts.progress)
    info = {"fit_seconds": round(res.seconds, 3),
            "iterations": res.iterations, "final_loss": res.final_loss, "n_gaussians": res.n_gaussians,
            "densification": res.refinements, "tuning": tuning, "config": cfg.model_dump(mode="json"),
            "loss_history": res.history}
    return res.volume, res.reprojections, res.gamma, info


def _image_entries(series: TiltSeries, held: np.ndarray, gamma: np.ndarray | None) -> list[dict]:
    """One entry per image of the user's file, in its order: angle, held out or not, γ, alignment shift (dy, dx)
    in the file's own row/column axes."""
    n = len(series.angles_deg)
    entries = [None] * n
    shifts = None if series.shifts_px is None else to_file_axes_yx(series, np.asarray(series.shifts_px))
    for i in range(n):
        j = int(file_index(series, i))
        entries[j] = {
            "index": j,
            "angle_deg": float(series.angles_deg[i]),
            "heldout": bool(held[i]),
            "gamma": None if gamma is None else round(float(gamma[i]), 5),
            "shift_px_yx": None if shifts is None else [round(float(v), 3) for v in shifts[i]],
        }
    return entries


def _alignment_report(series: TiltSeries) -> dict:
    """How the views were aligned, in the file's axes: tilt-axis rotation, axis offset, crop, matching rounds."""
    notes = series.notes
    sign = -1.0 if series.tilt_axis == "x" else 1.0  # the internal transpose mirrors the sense of rotation
    return {
        "method": "cross-correlation of neighbouring tilts from the one nearest 0 deg, then projection matching "
                  "(SIRT reconstruction from the training views, reprojection, registration of every view), the "
                  "in-plane tilt-axis angle by the smallest reprojection residual, the tilt-axis offset by a centre "
                  "of mass fit; views cropped alike to the field of view all of them cover",
        "transform": "p' = R(rotation) p + shift about the image centre (px; rotation counter-clockwise in x, y)",
        "tilt_axis_rotation_deg": sign * float(notes.get("rotation_deg", 0.0)) + 0.0,
        "tilt_axis_offset_px": float(notes.get("axis_offset_px", 0.0)),
        "crop_px_each_side_yx": [int(v) for v in to_file_axes_yx(series, np.array(notes["crop_px"]))],
        "rounds": notes.get("align_rounds", []),
    }


def round_to_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (MRC headers hold float32: 67.2, not 67.19999…)."""
    return float(str(np.float32(value)))


def _from_signal(tilts, angles_deg, pixel_size_A):
    """Data, angles and pixel size from a hyperspy ``Signal2D`` (duck-typed: ``.data`` and ``.axes_manager``)."""
    am = getattr(tilts, "axes_manager", None)
    if am is None or not hasattr(tilts, "data"):
        return np.asarray(tilts), angles_deg, pixel_size_A
    data = np.asarray(tilts.data)
    if pixel_size_A is None:
        ax = am.signal_axes[0]
        unit = str(getattr(ax, "units", "") or "").strip().lower()
        factor = {"nm": 10.0, "å": 1.0, "a": 1.0, "angstrom": 1.0, "pm": 0.01, "µm": 1e4, "um": 1e4}.get(unit)
        if factor is not None and float(ax.scale) > 0:
            pixel_size_A = float(ax.scale) * factor
    if angles_deg is None and len(am.navigation_axes) == 1:
        nav = am.navigation_axes[0]
        if str(getattr(nav, "units", "")).lower() in ("deg", "degree", "degrees", "°"):
            angles_deg = np.asarray(nav.axis, np.float64)
    return data, angles_deg, pixel_size_A


def reconstruct(tilts, angles_deg=None, *, method: str = "denza", pixel_size_A: float | None = None,
                tilt_axis: str = "y", thickness: int | None = None, bin_factor: int = 1, size: int | None = None,
                lambda_tv: float | None = None, iterations: int | None = None, holdout: int = 0,
                align: bool = False, seed: int = 0, device: str = "cpu", progress: bool = False,
                config=None) -> tuple[np.ndarray, dict]:
    """Reconstruct a tilt series ``(C, H, W)`` taken at ``angles_deg`` (degrees); returns ``(volume, report)``.

    ``tilts`` may be a numpy array or a hyperspy ``Signal2D`` (pixel size from its signal axes in nm/Å, angles from a
    navigation axis in degrees when ``angles_deg`` is None). The volume is ``(Z, Y, X)`` in the tilts' intensity
    units per voxel; the report is the JSON report of ``denza-recon`` (``report["voxel_size_A"]``, per-image
    entries, the cross-validation that chose ``lambda_tv`` and the stop unless given, held-out scores with
    ``holdout=K``). Same defaults as the CLI.
    """
    data, angles_deg, pixel_size_A = _from_signal(tilts, angles_deg, pixel_size_A)
    if angles_deg is None:
        raise EMInputError(None, "angles_deg is required (one tilt angle in degrees per image)")
    series = series_from_arrays(data, angles_deg, pixel_size_A, tilt_axis)
    opts = ReconOptions(method=method, bin_factor=bin_factor, size=size, thickness=thickness, iterations=iterations,
                        lambda_tv=lambda_tv, holdout=holdout, align=align, device=device, seed=seed,
                        progress=progress, config=config)
    res = run_series(series, opts)
    return res.volume, res.report
