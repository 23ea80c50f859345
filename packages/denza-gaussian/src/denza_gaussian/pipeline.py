"""The ``denza-recon`` workflow on files: read, check, reconstruct (:mod:`denza_gaussian.api`), write, report."""
from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from em_noise.errors import EMInputError
from em_noise.io import check_writable, output_path, write_image, write_text
from em_noise.outputs import OutputSet
from em_noise.scaling import robust_range

from .api import ReconOptions, run_series
from .tiltseries import load_tilt_series

VOLUME_EXTENSIONS = (".mrc", ".rec", ".map")


def output_paths(tilt_path: Path, method: str, output: str | Path | None, preview: bool,
                 aligned: bool = False) -> dict[str, Path]:
    """Volume, reprojections, preview and report paths (``<stem>.<method>.mrc`` and siblings by default), and with
    ``aligned`` the aligned stack ``.ali`` and its IMOD-style shifts ``.xf``.

    ``output``: a folder (the toolkit's ``-o DIR``; created when written) gets ``<stem>.<method>.mrc`` and its
    siblings; a name ending in .mrc/.rec/.map that is not an existing folder is the volume file itself, the other
    outputs beside it."""
    out = Path(output) if output else None
    if out is None or out.is_dir() or out.suffix.lower() not in VOLUME_EXTENSIONS:
        if out is not None and out.exists() and not out.is_dir():
            raise EMInputError(out, "-o must be a folder or a volume file name ending in .mrc/.rec/.map")
        vol = output_path(tilt_path, method, out, ext=".mrc")
    else:
        vol = out
    base = vol.with_suffix("")
    paths = {"volume": vol, "reprojections": Path(f"{base}.reproj.mrc"), "report": Path(f"{base}.json")}
    if preview:
        paths["preview"] = Path(f"{base}.preview.png")
    if aligned:
        paths["aligned"] = Path(f"{base}.ali")
        paths["xf"] = Path(f"{base}.xf")
    return paths


def xf_text(images: list[dict], rotation_deg: float = 0.0) -> str:
    """IMOD ``.xf`` lines ``A11 A12 A21 A22 DX DY``: ``(x', y') = A (x, y) + (DX, DY)`` about the image centre, A the
    tilt-axis rotation (counter-clockwise by ``rotation_deg``), shifts in px, in the file's order and axes."""
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    rot = f"{c:12.7f}{-s:12.7f}{s:12.7f}{c:12.7f}"
    return "".join(f"{rot}{e['shift_px_yx'][1]:12.3f}{e['shift_px_yx'][0]:12.3f}\n" for e in images)


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


def reconstruct_file(path: str | Path, opts: ReconOptions, angles: str | None = None, tilt_axis: str = "y",
                     output: str | Path | None = None, preview: bool = True, overwrite: bool = False,
                     inputs: Sequence[str | Path] = ()) -> dict:
    """Reconstruct one tilt series and write volume, reprojections, preview and JSON report as one set (all or
    none, the report last), never over an input (``path``, its angle files, ``inputs``); returns the report."""
    path = Path(path)
    series = load_tilt_series(path, angles, tilt_axis)
    paths = output_paths(path, opts.method, output, preview, aligned=opts.align)
    angle_file = [Path(angles)] if angles and Path(angles).is_file() else []
    inputs = [path, *map(Path, inputs), *angle_file, *(path.with_suffix(e) for e in (".tlt", ".rawtlt", ".mdoc"))]
    for p in paths.values():
        check_writable(p, like=series.image, overwrite=overwrite, inputs=inputs)
    res = run_series(series, opts)
    report = res.report
    voxel_A = report["voxel_size_A"]
    report.update(input=str(path), volume_shape_zyx=list(res.volume.shape),
                  outputs={k: str(v) for k, v in paths.items()}, python=platform.python_version())
    like = series.image if series.image is not None and series.image.metadata.get("format") == "mrc" else None
    with OutputSet(inputs=inputs, overwrite=overwrite):  # all outputs appear at the end (the report last), or none
        _write_outputs(paths, res, report, like, series, voxel_A, overwrite)
    return report


def _write_outputs(paths, res, report, like, series, voxel_A, overwrite) -> None:
    write_image(paths["volume"], res.volume, pixel_size_A=voxel_A, overwrite=overwrite, volume=True)
    write_image(paths["reprojections"], res.reprojections, pixel_size_A=voxel_A, overwrite=overwrite, like=like,
                volume=False)
    if "preview" in paths:
        write_image(paths["preview"], preview_image(res.volume), overwrite=overwrite)
    if "aligned" in paths:  # background-subtracted, shifted and cropped to the common field of view
        write_image(paths["aligned"], res.aligned, pixel_size_A=voxel_A, overwrite=overwrite, like=like, volume=False)
        xf = xf_text(report["images"], report["alignment"]["tilt_axis_rotation_deg"])
        write_text(paths["xf"], xf, like=series.image, overwrite=overwrite)
    write_text(paths["report"], json.dumps(report, indent=2, default=_json_default), like=series.image,
               overwrite=overwrite)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
