"""Initial Gaussians from a classical reconstruction (units of :mod:`denza_gaussian.projector`: voxels)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``softplus`` (for y > 0)."""
    y = y.clamp_min(1e-12)
    return y + torch.log(-torch.expm1(-y))


def init_gaussians(volume: np.ndarray, n_init: int | None, threshold: float, min_scale: float, max_scale: float,
                   seed: int = 0, voxels_per_gaussian: float = 40.0, min_per_64cubed: int = 2500,
                   min_total: int = 2500) -> dict[str, torch.Tensor]:
    """Seed Gaussians from a classical volume ``(Z,Y,X)`` (values ~1): sample voxels where it exceeds ``threshold``
    with probability ∝ value, σ = half the mean distance to the 3 nearest seeds (clipped to the σ bounds), denza ∝
    value scaled so that the Gaussian mass equals the volume's mass above threshold. ``n_init`` None: seedable voxels
    / ``voxels_per_gaussian``, at least ``min_per_64cubed`` per 64³ voxels and ``min_total`` in all, at most 20000
    and one per seedable voxel. Returns raw (unconstrained) parameters: means (N,3) xyz, log-scales (N,3), quats
    (N,4) wxyz, pre-softplus denza (N,)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = volume.shape
    v = np.clip(volume, 0, None)
    cand = np.flatnonzero(v > threshold)
    if cand.size < 4:
        cand = np.argsort(v.ravel())[-max(4, v.size // 100):]
    lo = max(int(min_total), round(min_per_64cubed * v.size / 64**3))
    n = int(n_init) if n_init is not None else int(np.clip(cand.size / voxels_per_gaussian, lo, 20000))
    n = min(n, cand.size)
    w = v.ravel()[cand].astype(np.float64) + 1e-12
    pick = rng.choice(cand, size=n, replace=False, p=w / w.sum())
    k, i, j = np.unravel_index(pick, v.shape)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 3))
    xyz = np.stack([j + 0.5 - nx / 2, i + 0.5 - ny / 2, k + 0.5 - nz / 2], axis=-1) + jitter
    dist, _ = cKDTree(xyz).query(xyz, k=min(4, n))
    sigma = np.clip(0.5 * dist[:, 1:].mean(1), min_scale, max_scale)
    val = v.ravel()[pick]
    mass_target = float(v.ravel()[cand].sum())
    k_norm = mass_target / max(float((val * (2 * math.pi) ** 1.5 * sigma**3).sum()), 1e-30)
    rho = np.maximum(val * k_norm, 1e-4)
    quats = np.zeros((n, 4))
    quats[:, 0] = 1.0

    def t(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    return {
        "means": t(xyz),
        "scales": t(np.log(np.repeat(sigma[:, None], 3, axis=1))),
        "quats": t(quats),
        "denza": softplus_inverse(t(rho)),
    }
