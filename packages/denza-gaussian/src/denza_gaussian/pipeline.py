"""The ``denza-recon`` workflow as a library function: read, check, preprocess, reconstruct, write, report."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from em_noise.errors import EMInputError
from em_noise.io import check_writable, output_path, write_image, write_text
from em_noise.metrics import psnr, ssim
from em_noise.scaling import robust_range
from scipy import ndimage

from . import __version__, classical
from .losses import closed_form_gamma
from .module import DenzaConfig, fit
from .tiltseries import load_tilt_series, preprocess, to_user_axes

METHODS = ("denza", "sirt", "fbp")
DEFAULT_SIRT_ITERATIONS = 50


@dataclass
class ReconOptions:
    """Options of one reconstruction (mirrors the CLI)."""

    angles: str | None = None
    tilt_axis: str = "y"
    output: str | Path | None = None
    bin_factor: int = 1
    size: int | None = None
    thickness: int | None = None
    iterations: int | None = None
    holdout: int = 0
    method: str = "denza"
    align: bool = False
    device: str = "cpu"
    seed: int = 0
    preview: bool = True
    overwrite: bool = False
    progress: bool = True
    config: DenzaConfig | None = None


def output_paths(tilt_path: Path, opts: ReconOptions) -> dict[str, Path]:
    """Volume, reprojections, preview and report paths (``<stem>.<method>.mrc`` and siblings by default)."""
    vol = Path(opts.output) if opts.output else output_path(tilt_path, opts.method, ext=".mrc")
    if vol.suffix.lower() not in (".mrc", ".rec", ".map"):
        raise EMInputError(vol, "the volume output must be an .mrc/.rec/.map file")
    if not vol.parent.exists():
        vol.parent.mkdir(parents=True, exist_ok=True)
    base = vol.with_suffix("")
    paths = {"volume": vol, "reprojections": Path(f"{base}.reproj.mrc"), "report": Path(f"{base}.json")}
    if opts.preview:
        paths["preview"] = Path(f"{base}.preview.png")
    return paths


def preview_image(volume: np.ndarray) -> np.ndarray:
    """uint8-range mosaic: central XY, XZ and YZ slices and the max projection along Z (each scaled on its own)."""
    nz, ny, nx = volume.shape
    panels = [volume[nz // 2], volume[:, ny // 2, :], volume[:, :, nx // 2].T, volume.max(axis=0)]
    side = max(nz, ny, nx)
    tiles = []
    for i, p in enumerate(panels):
        lo, hi = robust_range(p) if i < 3 else robust_range(p, 0.5, 99.95)
        t = np.zeros((side, side), np.float32)
        t[: p.shape[0], : p.shape[1]] = np.clip((p - lo) / (hi - lo), 0, 1) * 255
        tiles.append(t)
        tiles.append(np.full((side, 2), 255, np.float32))
    mosaic = np.concatenate(tiles[:-1], axis=1)
    zoom = max(1, 192 // side)  # small volumes: enlarge (nearest neighbour) so the preview is readable
    return np.kron(mosaic, np.ones((zoom, zoom), np.float32)) if zoom > 1 else mosaic


def _resize(data: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """Resample images (bilinear) so that they are ``width`` px wide, same factor on both axes; returns (data, factor).

    Intensities are kept, so the volume stays in input intensity units per (resampled) voxel."""
    f = width / data.shape[2]
    if abs(f - 1) < 1e-9:
        return data, 1.0
    h = max(4, int(round(data.shape[1] * f)))
    out = np.stack([ndimage.zoom(d, (h / d.shape[0], width / d.shape[1]), order=1) for d in data])
    return out.astype(np.float32), f


def reconstruct_file(path: str | Path, opts: ReconOptions) -> dict:
    """Reconstruct one tilt series and write volume, reprojections, preview and JSON report; returns the report."""
    t0 = time.perf_counter()
    path = Path(path)
    if opts.method not in METHODS:
        raise EMInputError(None, f"--method must be one of {', '.join(METHODS)}")
    for name, val in (("--bin", opts.bin_factor), ("--holdout", opts.holdout)):
        if val < 0 or (name == "--bin" and val < 1):
            raise EMInputError(None, f"{name} must be positive, got {val}")
    for name, val in (("--size", opts.size), ("--thickness", opts.thickness), ("--iters", opts.iterations)):
        if val is not None and val < 1:
            raise EMInputError(None, f"{name} must be positive, got {val}")
    series = load_tilt_series(path, opts.angles, opts.tilt_axis)
    paths = output_paths(path, opts)
    for key, p in paths.items():
        check_writable(p, like=series.image, overwrite=opts.overwrite)

    tilts, scale = preprocess(series, opts.bin_factor, opts.align)
    voxel = 1.0
    if opts.size is not None:
        tilts, f = _resize(tilts, opts.size)
        voxel = 1.0 / f
    n_views, h, w = tilts.shape
    thickness = int(opts.thickness or w)
    held = np.zeros(n_views, bool)
    if opts.holdout:
        if opts.holdout < 2:
            raise EMInputError(None, "--holdout K needs K >= 2 (K = 1 would hold out every view)")
        held[opts.holdout - 1 :: opts.holdout] = True
        if (~held).sum() < 3:
            raise EMInputError(path, f"--holdout {opts.holdout} leaves fewer than 3 training views")
    train = ~held
    gamma_all = closed_form_gamma(_torch(tilts)).numpy()
    angles = series.angles_deg

    report: dict = {"method": opts.method}
    if opts.method == "denza":
        cfg = (opts.config or DenzaConfig()).model_copy(update={"seed": opts.seed})
        if opts.iterations is not None:
            cfg = cfg.model_copy(update={"iterations": opts.iterations})
        res = fit(tilts[train], angles[train], thickness, cfg, gamma0=gamma_all[train], predict_angles_deg=angles,
                  predict_gamma=None, device=opts.device, progress=opts.progress)
        volume = res.volume
        reproj = res.reprojections
        gamma_fit = np.array(gamma_all)
        if cfg.use_gamma:
            gamma_fit[train] = res.gamma
            reproj = reproj * gamma_fit[:, None, None]
        report.update(iterations=res.iterations, final_loss=res.final_loss, n_gaussians=res.n_gaussians,
                      gamma=[round(float(g), 5) for g in gamma_fit], config={**cfg.model_dump(mode="json"), "iterations": res.iterations},
                      loss_history=res.history)
    else:
        iters = opts.iterations or DEFAULT_SIRT_ITERATIONS
        volume = classical.reconstruct(tilts[train], angles[train], thickness, w, opts.method, iters)
        reproj = classical.forward_project(volume, angles)
        report.update(iterations=iters if opts.method == "sirt" else 1)

    fit_l1 = float(np.mean(np.abs(reproj[train] - tilts[train])))
    report["reprojection_l1_train"] = fit_l1
    if opts.method != "denza":
        report["final_loss"] = fit_l1
    if held.any():
        obs = tilts[held]
        dr = float(obs.max() - obs.min())
        report["heldout"] = {
            "indices": [int(i) for i in np.flatnonzero(held)],
            "angles_deg": [float(a) for a in angles[held]],
            "psnr_db": psnr(reproj[held], obs, dr),
            "ssim": ssim(reproj[held], obs, dr),
        }
    else:
        report["heldout"] = None

    px = series.pixel_size_A
    voxel_A = None if px is None else px * opts.bin_factor * voxel
    vol_user = to_user_axes(series, volume * scale, is_volume=True)
    reproj_user = to_user_axes(series, reproj * scale, is_volume=False)
    write_image(paths["volume"], vol_user, pixel_size_A=voxel_A, overwrite=opts.overwrite, volume=True)
    write_image(paths["reprojections"], reproj_user, pixel_size_A=voxel_A, overwrite=opts.overwrite,
                like=series.image if series.image.metadata.get("format") == "mrc" else None, volume=False)
    if "preview" in paths:
        write_image(paths["preview"], preview_image(vol_user), overwrite=opts.overwrite)
    report.update(
        input=str(path),
        angles_source=series.angle_source,
        tilt_axis=series.tilt_axis,
        views=int(n_views),
        training_views=int(train.sum()),
        angle_range_deg=[float(angles.min()), float(angles.max())],
        bin=opts.bin_factor,
        volume_shape_zyx=list(vol_user.shape),
        voxel_size_A=voxel_A,
        alignment_shifts_px=None if series.shifts_px is None else np.round(series.shifts_px, 3).tolist(),
        outputs={k: str(v) for k, v in paths.items()},
        device=str(opts.device),
        seed=opts.seed,
        seconds=round(time.perf_counter() - t0, 3),
        version=__version__,
        python=platform.python_version(),
    )
    write_text(paths["report"], json.dumps(report, indent=2, default=float), like=series.image, overwrite=opts.overwrite)
    return report


def _torch(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))
