"""Classical reconstructions (FBP, SIRT) and voxel projections through astra-toolbox, CPU, slice by slice.

ASTRA's 3-D functions need CUDA and abort the process without it, so everything here uses the 2-D ``parallel``
geometry on each slice perpendicular to the tilt axis (``y``). Angle and axis conventions are those of
:mod:`denza_gaussian.projector`: the ASTRA angle is ``-θ`` because ASTRA's ``y`` axis points against our ``z``.
"""
from __future__ import annotations

import astra
import numpy as np

PROJECTOR = "linear"
"""ASTRA CPU projector kernel (bilinear interpolation along the ray)."""


def _setup(nz: int, nx: int, n_det: int, angles_deg: np.ndarray) -> tuple[dict, dict, int]:
    vg = astra.create_vol_geom(int(nz), int(nx))
    pg = astra.create_proj_geom("parallel", 1.0, int(n_det), -np.deg2rad(np.asarray(angles_deg, dtype=np.float64)))
    return vg, pg, astra.create_projector(PROJECTOR, pg, vg)


def forward_project(volume: np.ndarray, angles_deg: np.ndarray, n_det: int | None = None) -> np.ndarray:
    """Parallel projections ``(C, Y, n_det)`` of a volume ``(Z, Y, X)`` (line integrals, voxel units)."""
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    nz, ny, nx = vol.shape
    n_det = nx if n_det is None else int(n_det)
    vg, pg, pid = _setup(nz, nx, n_det, angles_deg)
    out = np.zeros((len(angles_deg), ny, n_det), np.float32)
    try:
        for i in range(ny):
            sid, sino = astra.create_sino(np.ascontiguousarray(vol[:, i, :]), pid)
            astra.data2d.delete(sid)
            out[:, i, :] = sino
    finally:
        astra.projector.delete(pid)
    return out


def reconstruct(
    tilts: np.ndarray,
    angles_deg: np.ndarray,
    thickness: int,
    width: int | None = None,
    method: str = "sirt",
    iterations: int = 100,
    min_constraint: float | None = 0.0,
    progress=None,
) -> np.ndarray:
    """FBP (Ram-Lak) or SIRT volume ``(thickness, Y, width)`` from tilts ``(C, Y, W)`` at ``angles_deg``.

    ``iterations`` and ``min_constraint`` (positivity, None to disable) apply to SIRT. ``progress`` is an optional
    callable taking the number of finished slices.
    """
    method = method.lower()
    if method not in ("sirt", "fbp"):
        raise ValueError(f"unknown classical method {method!r}")
    tilts = np.asarray(tilts, dtype=np.float32)
    n_views, ny, n_det = tilts.shape
    nx = n_det if width is None else int(width)
    vg, pg, pid = _setup(thickness, nx, n_det, angles_deg)
    out = np.zeros((thickness, ny, nx), np.float32)
    try:
        for i in range(ny):
            sid = astra.data2d.create("-sino", pg, np.ascontiguousarray(tilts[:, i, :]))
            rid = astra.data2d.create("-vol", vg, 0.0)
            cfg = astra.astra_dict("SIRT" if method == "sirt" else "FBP")
            cfg["ProjectorId"] = pid
            cfg["ProjectionDataId"] = sid
            cfg["ReconstructionDataId"] = rid
            if method == "sirt" and min_constraint is not None:
                cfg["option"] = {"MinConstraint": float(min_constraint)}
            if method == "fbp":
                cfg["option"] = {"FilterType": "Ram-Lak"}
            aid = astra.algorithm.create(cfg)
            try:
                astra.algorithm.run(aid, int(iterations) if method == "sirt" else 1)
                out[:, i, :] = astra.data2d.get(rid)
            finally:
                astra.algorithm.delete(aid)
                astra.data2d.delete([sid, rid])
            if progress is not None:
                progress(1)
    finally:
        astra.projector.delete(pid)
    return out
