"""Synthetic nanoparticle volumes and simulated ADF-STEM tilt series (shared by tests, example and benchmark).

Volumes are ``(Z, Y, X)`` float32 scattering densities in [0, 1] per voxel with ~1-voxel soft (partial-volume) edges;
tilts are line integrals through :func:`denza_gaussian.classical.forward_project` (conventions of
:mod:`denza_gaussian.projector`).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .classical import forward_project

KINDS = ("faceted", "core_shell", "cluster")
"""The tuning set: the phantoms on which the package's fixed defaults were chosen."""
TEST_KINDS = ("hollow_shell", "rods", "platelets", "aggregate", "particle_on_film", "alloy_core")
"""The test set: phantom families no default was chosen on (random sizes, densities and orientations per seed)."""


def _grid(size: int, thickness: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nz = size if thickness is None else thickness
    z, y, x = np.meshgrid(
        np.arange(nz) + 0.5 - nz / 2, np.arange(size) + 0.5 - size / 2, np.arange(size) + 0.5 - size / 2, indexing="ij"
    )
    return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Partial-volume occupancy from a signed distance in voxels (negative inside)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _polyhedron(p: np.ndarray, rot: np.ndarray, cube: float, octa: float) -> np.ndarray:
    """Signed distance (max over faces) of a truncated octahedron: |x_i| ≤ cube and |x|+|y|+|z| ≤ octa·√3."""
    q = p @ rot.T
    normals = [np.eye(3)[i] * s for i in range(3) for s in (1, -1)]
    offsets = [cube] * 6
    for sx in (1, -1):
        for sy in (1, -1):
            for sz in (1, -1):
                normals.append(np.array([sx, sy, sz]) / np.sqrt(3.0))
                offsets.append(octa)
    n = np.stack(normals).astype(np.float32)
    return (q @ n.T - np.asarray(offsets, np.float32)).max(axis=-1)


def make_phantom(kind: str, size: int = 64, seed: int = 0, thickness: int | None = None) -> np.ndarray:
    """A nanoparticle phantom ``(thickness or size, size, size)`` in [0, 1].

    ``faceted``: a truncated-octahedral particle of uniform density (random orientation); ``core_shell``: a dense
    off-centre core (1.0) in a lighter shell (0.45); ``cluster``: 7 particles (spheres and faceted crystals) of
    densities 0.5–1.0 packed around the centre.
    """
    if kind in TEST_KINDS:
        return make_test_phantom(kind, size, seed, thickness)
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose from {KINDS + TEST_KINDS}")
    rng = np.random.default_rng(seed)
    x, y, z = _grid(size, thickness)
    p = np.stack([x, y, z], axis=-1)
    s = size / 64.0
    if kind == "faceted":
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
        vol = _soft(_polyhedron(p, rot, 17 * s, 19 * s))
    elif kind == "core_shell":
        c = rng.uniform(-3, 3, size=3).astype(np.float32) * s
        r_core, r_shell = 9 * s, 19 * s
        shell = _soft(np.linalg.norm(p * np.array([1.0, 1.08, 0.94], np.float32), axis=-1) - r_shell)
        core = _soft(np.linalg.norm(p - c, axis=-1) - r_core)
        vol = 0.45 * shell + 0.55 * core
    else:
        vol = np.zeros(x.shape, np.float32)
        centres: list[tuple[np.ndarray, float]] = []
        while len(centres) < 7:
            c = rng.uniform(-16, 16, size=3) * s
            r = rng.uniform(5, 8.5) * s
            if all(np.linalg.norm(c - c0) > r + r0 - 1.5 * s for c0, r0 in centres):
                centres.append((c, r))
        for i, (c, r) in enumerate(centres):
            q = p - c.astype(np.float32)
            if i % 2:
                rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
                occ = _soft(_polyhedron(q, rot, 0.85 * r, 0.95 * r))
            else:
                occ = _soft(np.linalg.norm(q, axis=-1) - r)
            vol = np.maximum(vol, rng.uniform(0.5, 1.0) * occ)
    return np.clip(vol, 0.0, 1.0).astype(np.float32)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``(..., 3)`` from the segment a–b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - a - t[..., None] * ab, axis=-1)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return (v / np.linalg.norm(v)).astype(np.float32)


def make_test_phantom(kind: str, size: int = 64, seed: int = 0, thickness: int | None = None) -> np.ndarray:
    """A test-set phantom ``(thickness or size, size, size)`` in [0, 1] (see :data:`TEST_KINDS`):

    ``hollow_shell``: an ellipsoidal shell 2–5 voxels thick (at 64 px); ``rods``: 2–4 needles (capsules) of radius
    1.5–3.5; ``platelets``: 1–3 thin hexagonal plates 2.5–4.5 thick; ``aggregate``: 15–30 small spheres of radius
    2–4 packed in a blob; ``particle_on_film``: a sphere or faceted particle on a light support film (density
    0.15–0.3) that spans the field of view; ``alloy_core``: a faceted particle of density 0.45–0.7 with a heavy
    off-centre core (1.0). Sizes scale with ``size / 64``; densities, sizes and orientations are drawn from ``seed``.
    """
    rng = np.random.default_rng(10_000 + seed)
    x, y, z = _grid(size, thickness)
    p = np.stack([x, y, z], axis=-1)
    s = size / 64.0
    vol = np.zeros(x.shape, np.float32)
    if kind == "hollow_shell":
        r_out = rng.uniform(14, 21) * s
        wall = rng.uniform(2, 5) * s
        axes = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
        q = (p @ rot.T) / axes
        r = np.linalg.norm(q, axis=-1)
        vol = rng.uniform(0.6, 1.0) * _soft(np.maximum(r - r_out, r_out - wall - r))
    elif kind == "rods":
        for _ in range(int(rng.integers(2, 5))):
            c = rng.uniform(-8, 8, size=3).astype(np.float32) * s
            half = rng.uniform(10, 24) * s * _unit(rng)
            rad = rng.uniform(1.5, 3.5) * s
            vol = np.maximum(vol, rng.uniform(0.6, 1.0) * _soft(_segment_distance(p, c - half, c + half) - rad))
    elif kind == "platelets":
        for _ in range(int(rng.integers(1, 4))):
            c = rng.uniform(-8, 8, size=3).astype(np.float32) * s
            rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
            q = (p - c) @ rot.T
            rad, half_t = rng.uniform(9, 17) * s, rng.uniform(1.25, 2.25) * s
            hexd = np.max(np.stack([np.abs(q[..., 0] * np.cos(a) + q[..., 1] * np.sin(a))
                                    for a in np.arange(3) * np.pi / 3]), axis=0)
            vol = np.maximum(vol, rng.uniform(0.6, 1.0) * _soft(np.maximum(hexd - rad, np.abs(q[..., 2]) - half_t)))
    elif kind == "aggregate":
        blob = rng.uniform(12, 18) * s
        placed: list[tuple[np.ndarray, float]] = []
        target, tries = int(rng.integers(15, 31)), 0
        while len(placed) < target and tries < 5000:
            tries += 1
            c = rng.normal(size=3) * blob / 2
            r = rng.uniform(2, 4) * s
            if np.linalg.norm(c) < blob and all(np.linalg.norm(c - c0) > r + r0 - 0.5 * s for c0, r0 in placed):
                placed.append((c, r))
        for c, r in placed:
            vol = np.maximum(vol, rng.uniform(0.5, 1.0) * _soft(np.linalg.norm(p - c.astype(np.float32), axis=-1) - r))
    elif kind == "particle_on_film":
        film_t = rng.uniform(3, 5) * s
        film_z = rng.uniform(-14, -8) * s
        vol = rng.uniform(0.15, 0.3) * _soft(np.abs(z - film_z) - film_t / 2)
        r = rng.uniform(9, 14) * s
        c = np.array([rng.uniform(-6, 6) * s, rng.uniform(-6, 6) * s, film_z + film_t / 2 + r], np.float32)
        if rng.random() < 0.5:
            occ = _soft(np.linalg.norm(p - c, axis=-1) - r)
        else:
            rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
            occ = _soft(_polyhedron(p - c, rot, 0.9 * r, 1.0 * r))
        vol = np.maximum(vol, rng.uniform(0.7, 1.0) * occ)
    elif kind == "alloy_core":
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix().astype(np.float32)
        r = rng.uniform(14, 20) * s
        body = _soft(_polyhedron(p, rot, 0.9 * r, 1.0 * r))
        rc = rng.uniform(0.3, 0.5) * r
        c = (rng.uniform(-1, 1, size=3) * (0.85 * r - rc) / np.sqrt(3)).astype(np.float32)
        core = _soft(np.linalg.norm(p - c, axis=-1) - rc)
        vol = np.maximum(rng.uniform(0.45, 0.7) * body, core)
    else:
        raise ValueError(f"unknown test phantom kind {kind!r}; choose from {TEST_KINDS}")
    return np.clip(vol, 0.0, 1.0).astype(np.float32)


def tilt_angles(n_views: int, max_tilt_deg: float = 70.0) -> np.ndarray:
    """Equally spaced tilt angles from ``-max_tilt_deg`` to ``+max_tilt_deg`` (degrees)."""
    return np.linspace(-max_tilt_deg, max_tilt_deg, n_views).astype(np.float64)


def simulate_tilts(
    volume: np.ndarray,
    angles_deg: np.ndarray,
    peak_counts: float | None = 200.0,
    gain_jitter: float = 0.0,
    background_counts: float = 0.0,
    seed: int = 0,
) -> dict:
    """Simulate an ADF-STEM tilt series of ``volume``.

    Clean line integrals are scaled so that the brightest clean pixel of the series is ``peak_counts`` electrons, each
    view is multiplied by a gain drawn uniformly in ``1 ± gain_jitter`` (channeling / detector drift), a constant
    background is added and Poisson noise drawn (``peak_counts=None``: no noise). Returns ``noisy`` (C,Y,X) counts,
    ``clean`` (C,Y,X) line integrals (voxel units, no gain), ``gains`` (C,), ``counts_per_unit`` (scale from line
    integral to counts).
    """
    rng = np.random.default_rng(seed)
    clean = forward_project(volume, angles_deg)
    n = len(angles_deg)
    gains = 1.0 + rng.uniform(-gain_jitter, gain_jitter, size=n) if gain_jitter > 0 else np.ones(n)
    scale = 1.0 if peak_counts is None else float(peak_counts) / max(float(clean.max()), 1e-12)
    expected = clean * scale * gains[:, None, None] + background_counts
    noisy = expected if peak_counts is None else rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
    return {"noisy": noisy.astype(np.float32), "clean": clean, "gains": gains, "counts_per_unit": scale}
