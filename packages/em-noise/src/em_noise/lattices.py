"""Catalogue of projected crystal lattices and column-arrangement generators (positions in px, weights per column).

A projected lattice is a 2-D unit cell (vectors in Å) with a basis of atomic columns, each column listing the
atomic numbers it holds per cell repeat along the beam.  Lattice constants are those of real crystals.
Generators return :class:`Columns` (x, y in px, per-column atomic numbers summarized as ``z_eff`` and ``n_atoms``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

SQ2 = float(np.sqrt(2.0))
SQ3 = float(np.sqrt(3.0))


@dataclass(frozen=True)
class ProjectedLattice:
    """Projected crystal: cell vectors ``a1``, ``a2`` (Å, 2-D) and basis ``(u, v, Zs)`` in fractional coordinates."""

    name: str
    a1: tuple[float, float]
    a2: tuple[float, float]
    basis: tuple[tuple[float, float, tuple[int, ...]], ...]

    @property
    def cell_A(self) -> float:
        """Characteristic cell size: square root of the projected cell area (Å)."""
        return float(np.sqrt(abs(self.a1[0] * self.a2[1] - self.a1[1] * self.a2[0])))

    def min_spacing_A(self) -> float:
        """Smallest distance between two columns of the infinite projected lattice (Å)."""
        pts = self.positions_A(np.zeros(2), 3)
        d, _ = cKDTree(pts).query(pts, k=2)
        return float(d[:, 1].min())

    def positions_A(self, origin: np.ndarray, n: int) -> np.ndarray:
        """Column positions (Å) of the cells ``-n..n`` in both directions, (M, 2)."""
        i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
        a = np.array([self.a1, self.a2], dtype=np.float64)
        uv = np.array([(b[0], b[1]) for b in self.basis], dtype=np.float64)
        frac = np.stack([i.ravel(), j.ravel()], 1)[:, None, :] + uv[None, :, :]
        return (frac.reshape(-1, 2) @ a) + origin


def _hex(a: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return (a, 0.0), (a / 2.0, a * SQ3 / 2.0)


def _catalogue() -> dict[str, ProjectedLattice]:
    lat: list[ProjectedLattice] = []
    # fcc metal along [100]: square lattice of a/2 (columns alternate in depth); Au a = 4.078 Å
    a = 4.078
    lat.append(ProjectedLattice("fcc_au_100", (a, 0), (0, a),
                                ((0, 0, (79,)), (0.5, 0.5, (79,)), (0.5, 0, (79,)), (0, 0.5, (79,)))))
    # fcc metal along [110]: centred rectangle a/sqrt2 x a; Cu a = 3.615 Å
    a = 3.615
    lat.append(ProjectedLattice("fcc_cu_110", (a / SQ2, 0), (0, a), ((0, 0, (29,)), (0.5, 0.5, (29,)))))
    # bcc metal along [100]: centred square a x a; Mo a = 3.147 Å
    a = 3.147
    lat.append(ProjectedLattice("bcc_mo_100", (a, 0), (0, a), ((0, 0, (42,)), (0.5, 0.5, (42,)))))
    # bcc metal along [110]: centred rectangle a x a*sqrt2; W a = 3.165 Å
    a = 3.165
    lat.append(ProjectedLattice("bcc_w_110", (a, 0), (0, a * SQ2), ((0, 0, (74,)), (0.5, 0.5, (74,)))))
    # SrTiO3 [001]: Sr, TiO and O columns; a = 3.905 Å
    a = 3.905
    lat.append(ProjectedLattice("srtio3_001", (a, 0), (0, a),
                                ((0, 0, (38,)), (0.5, 0.5, (22, 8)), (0.5, 0, (8,)), (0, 0.5, (8,)))))
    # Si [110]: dumbbells 1.36 Å apart along [001]; cell a/sqrt2 x a; a = 5.431 Å
    a = 5.431
    lat.append(ProjectedLattice("si_110", (a / SQ2, 0), (0, a),
                                ((0, 0, (14,)), (0, 0.25, (14,)), (0.5, 0.5, (14,)), (0.5, 0.75, (14,)))))
    # GaAs [110]: polar dumbbells Ga/As; a = 5.653 Å
    a = 5.653
    lat.append(ProjectedLattice("gaas_110", (a / SQ2, 0), (0, a),
                                ((0, 0, (31,)), (0, 0.25, (33,)), (0.5, 0.5, (31,)), (0.5, 0.75, (33,)))))
    # graphene: honeycomb, a = 2.46 Å
    lat.append(ProjectedLattice("graphene", *_hex(2.46), ((0, 0, (6,)), (1 / 3, 1 / 3, (6,)))))
    # MoS2 (2H monolayer) [001]: Mo and S2 columns on a honeycomb, a = 3.16 Å
    lat.append(ProjectedLattice("mos2_001", *_hex(3.16), ((0, 0, (42,)), (1 / 3, 1 / 3, (16, 16)))))
    # rutile TiO2 [001]: a = 4.594 Å, oxygen parameter u = 0.305
    a, u = 4.594, 0.305
    lat.append(ProjectedLattice("rutile_tio2_001", (a, 0), (0, a),
                                ((0, 0, (22,)), (0.5, 0.5, (22,)), (u, u, (8,)), (1 - u, 1 - u, (8,)),
                                 (0.5 + u, 0.5 - u, (8,)), (0.5 - u, 0.5 + u, (8,)))))
    # NiO (rock salt) [110]: pure Ni and O columns; a = 4.177 Å
    a = 4.177
    lat.append(ProjectedLattice("nio_110", (a / SQ2, 0), (0, a),
                                ((0, 0, (28,)), (0.5, 0.5, (28,)), (0.5, 0, (8,)), (0, 0.5, (8,)))))
    # wurtzite GaN [11-20]: period sqrt3*a/2 x c, Ga-N dumbbells; a = 3.189 Å, c = 5.185 Å, u = 0.377
    a, c, u = 3.189, 5.185, 0.377
    lat.append(ProjectedLattice("wurtzite_gan_11-20", (a * SQ3 / 2, 0), (0, c),
                                ((0, 0, (31,)), (0, u, (7,)), (1 / 3, 0.5, (31,)), (1 / 3, 0.5 + u, (7,)))))
    # hcp Ti [0001]: A and B sites form a honeycomb in projection; a = 2.951 Å
    lat.append(ProjectedLattice("hcp_ti_0001", *_hex(2.951), ((0, 0, (22,)), (1 / 3, 1 / 3, (22,)))))
    # fluorite CeO2 [100]: Ce on a/2 square, O2 columns between; a = 5.411 Å
    a = 5.411
    lat.append(ProjectedLattice("ceo2_100", (a, 0), (0, a),
                                ((0, 0, (58,)), (0.5, 0.5, (58,)), (0.5, 0, (58,)), (0, 0.5, (58,)),
                                 (0.25, 0.25, (8, 8)), (0.75, 0.25, (8, 8)), (0.25, 0.75, (8, 8)),
                                 (0.75, 0.75, (8, 8)))))
    return {p.name: p for p in lat}


LATTICES: dict[str, ProjectedLattice] = _catalogue()
"""All projected lattices by name."""


@dataclass
class Columns:
    """Atomic columns: positions (px, x/y), atomic numbers per column, a matrix flag and relative strengths.

    ``matrix`` marks atoms of an amorphous matrix: they are imaged but are not atomic columns (excluded from the
    position list and the atom map).
    """

    xy: np.ndarray  # (N, 2) float64, px
    zs: np.ndarray  # (N, K) atomic numbers per column (0 = empty slot)
    matrix: np.ndarray  # (N,) bool
    occupancy: np.ndarray | None = None  # (N,) relative column strength (thickness, partial vacancies); 1 if None

    def __post_init__(self) -> None:
        if self.occupancy is None:
            self.occupancy = np.ones(len(self.xy))

    @staticmethod
    def empty(k: int = 2) -> Columns:
        return Columns(np.zeros((0, 2)), np.zeros((0, k), np.int16), np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.xy)

    def subset(self, keep: np.ndarray) -> Columns:
        return Columns(self.xy[keep], self.zs[keep], self.matrix[keep], self.occupancy[keep])

    def weights(self, exponent: float) -> np.ndarray:
        """Per-column scattering weight: occupancy times the sum over the column's atoms of ``Z ** exponent``."""
        return (self.zs.astype(np.float64) ** exponent).sum(1) * self.occupancy

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Columns.empty()
        k = max(p.zs.shape[1] for p in parts)
        zs = np.concatenate([np.pad(p.zs, ((0, 0), (0, k - p.zs.shape[1]))) for p in parts])
        return Columns(np.concatenate([p.xy for p in parts]), zs, np.concatenate([p.matrix for p in parts]),
                       np.concatenate([p.occupancy for p in parts]))


def lattice_columns(lattice: ProjectedLattice, pixel_size_A: float, rotation_deg: float, shape: tuple[int, int],
                    margin_px: float, rng: np.random.Generator) -> Columns:
    """Columns of ``lattice`` rotated by ``rotation_deg``, random origin, covering ``shape`` plus ``margin_px`` (px)."""
    h, w = shape
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a = (np.array([lattice.a1, lattice.a2], dtype=np.float64) / pixel_size_A) @ rot.T  # rows: cell vectors (px)
    # integer cell range covering the padded field: invert the cell matrix at the four corners
    corners = np.array([[-margin_px, -margin_px], [w + margin_px, -margin_px],
                        [-margin_px, h + margin_px], [w + margin_px, h + margin_px]])
    origin = rng.uniform(0, 1, 2) @ a
    frac = np.linalg.solve(a.T, (corners - origin).T).T
    lo = np.floor(frac.min(0)).astype(int) - 1
    hi = np.ceil(frac.max(0)).astype(int) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    uv = np.array([(b[0], b[1]) for b in lattice.basis], dtype=np.float64)
    cells = np.stack([i.ravel(), j.ravel()], 1).astype(np.float64)
    xy = ((cells[:, None, :] + uv[None]).reshape(-1, 2) @ a) + origin
    k = max(len(b[2]) for b in lattice.basis)
    zb = np.array([tuple(b[2]) + (0,) * (k - len(b[2])) for b in lattice.basis], dtype=np.int16)
    zs = np.tile(zb, (len(cells), 1))
    inside = ((xy[:, 0] >= -margin_px) & (xy[:, 0] < w + margin_px)
              & (xy[:, 1] >= -margin_px) & (xy[:, 1] < h + margin_px))
    return Columns(xy[inside], zs[inside], np.zeros(int(inside.sum()), bool))


def min_distance_points(shape: tuple[int, int], margin_px: float, min_dist_px: float, density: float,
                        rng: np.random.Generator, rounds: int = 4) -> np.ndarray:
    """Random points (px) with pairwise distance >= ``min_dist_px`` (vectorized dart throwing in rounds).

    ``density`` in (0, 1] is the target fraction of a dense random packing (about 0.55 / d² points per px²).
    """
    h, w = shape
    x0, y0, x1, y1 = -margin_px, -margin_px, w + margin_px, h + margin_px
    area = (x1 - x0) * (y1 - y0)
    target = int(density * 0.55 * area / min_dist_px ** 2)
    acc = np.zeros((0, 2))
    for _ in range(rounds):
        need = target - len(acc)
        if need <= 0:
            break
        cand = np.column_stack([rng.uniform(x0, x1, need * 2), rng.uniform(y0, y1, need * 2)])
        if len(acc):
            d, _ = cKDTree(acc).query(cand, k=1, distance_upper_bound=min_dist_px)
            cand = cand[~np.isfinite(d)]
        if len(cand) > 1:
            pairs = cKDTree(cand).query_pairs(min_dist_px, output_type="ndarray")
            drop = np.zeros(len(cand), bool)
            drop[pairs.max(1) if len(pairs) else []] = True
            cand = cand[~drop]
        acc = np.concatenate([acc, cand[:need]])
    return acc


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, corr_px: float) -> tuple[np.ndarray, float]:
    """Smooth zero-mean unit-std random field on ``shape`` with correlation length ``corr_px`` (coarse grid, zoomed)."""
    h, w = shape
    step = max(corr_px / 4.0, 1.0)
    gh, gw = int(np.ceil(h / step)) + 3, int(np.ceil(w / step)) + 3
    g = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 2.0, mode="wrap")
    g = (g - g.mean()) / (g.std() + 1e-12)
    return g, step


def sample_field(field_and_step: tuple[np.ndarray, float], xy: np.ndarray, margin_px: float) -> np.ndarray:
    """Evaluate a :func:`smooth_field` at positions ``xy`` (px, may lie in the margin)."""
    g, step = field_and_step
    coords = np.stack([(xy[:, 1] + margin_px) / step, (xy[:, 0] + margin_px) / step])
    return ndimage.map_coordinates(g, coords, order=1, mode="nearest")
