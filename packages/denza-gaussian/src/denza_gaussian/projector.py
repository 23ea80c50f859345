"""Differentiable rendering of 3-D Gaussians: voxelization onto the grid, then parallel-beam projection of all views.

Units and conventions (used by the whole package):

* World coordinates are in **voxels** of the reconstruction grid (= detector pixels after binning), origin at the
  volume centre. A point is ``(x, y, z)``; ``y`` is the tilt axis (image rows), ``x`` the image columns, ``z`` the beam
  at 0° tilt.
* A volume array is ``(Z, Y, X)``; voxel ``(k, i, j)`` has its centre at
  ``(j + 0.5 - X/2, i + 0.5 - Y/2, k + 0.5 - Z/2)``.
* A view at tilt ``θ`` rotates the object about ``y`` (``x' = x cosθ + z sinθ``) and integrates along the beam; the
  projection is ASTRA's CPU ``linear`` system matrix of :mod:`denza_gaussian.classical`, applied to every slice across
  the tilt axis at once as one sparse product (the same operator as the SIRT/FBP baselines).
* Gaussian ``n`` has density ``ρ_n exp(-½ (p-μ_n)ᵀ Σ_n⁻¹ (p-μ_n))`` with ``Σ = R S Sᵀ Rᵀ`` (quaternion wxyz, σ in
  voxels) and ``ρ`` = **denza** (peak scattering strength per voxel); its mass is ``ρ (2π)^{3/2} σ1 σ2 σ3``.
* ADF-STEM images are incoherent and additive: volumes and projections are sums over Gaussians.

Each Gaussian is evaluated on a window around its centre voxel: the offsets ``o`` of the cube of half-width
``r = ceil(WINDOW_SIGMAS σ_max)`` with ``|o| ≤ r + √3/2`` (the ball that holds every voxel within ``WINDOW_SIGMAS σ``
of the centre wherever it sits in its voxel; the corners cut are below 0.2 % of the peak, ~40 % of the cube). The
exponent ``½ dᵀ Σ⁻¹ d`` splits into three 1-D and three 2-D tables (``x², y², z², xy, xz, yz`` terms), so the window
costs one broadcast sum, one ``exp`` and one scatter-add; the backward pass needs only the 2-D marginals of the
window gradient (fused in :class:`_VoxelWindows`).
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

WINDOW_SIGMAS = 3.0
"""Half-width of the evaluation window in standard deviations (mass outside < 0.8 %, typically < 0.2 %)."""
PAD = 6
"""Voxels of padding around the grid that catch the windows of Gaussians near its faces."""
MM_ROWS = 512
"""Windows per matrix product in the voxelizer's forward (one product over thousands of windows with an inner
dimension of 10 runs at half the speed on the CPU; the values are the same)."""


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` from quaternions ``(N, 4)`` (w, x, y, z; any non-zero norm)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """3-D covariances ``R S Sᵀ Rᵀ`` ``(N, 3, 3)`` from quaternions and scales (σ, voxels)."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def precisions(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Inverse covariances ``R S⁻² Rᵀ`` ``(N, 3, 3)`` (voxels⁻²), without a matrix inverse."""
    r = quat_to_rotmat(quats)
    return (r / scales[:, None, :] ** 2) @ r.transpose(-1, -2)


def gaussian_mass(denza: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Integrated scattering strength ``ρ (2π)^{3/2} σ1 σ2 σ3`` of each Gaussian (denza × voxel³)."""
    return denza * (2.0 * math.pi) ** 1.5 * scales.prod(dim=-1)


def _buckets(radius: torch.Tensor, max_radius: int) -> list[tuple[int, torch.Tensor]]:
    """Group indices by window half-width: exact up to 8, then rounded up to 10, 12, 16, 20, 24, 32, ..."""
    r = radius.clamp(1, max_radius)
    edges = list(range(1, min(8, max_radius) + 1))
    e = 8
    while e < max_radius:
        e = min(e + max(2, e // 4 * 2) if e < 12 else e + e // 3, max_radius)
        edges.append(e)
    out, lo = [], 0
    for e in edges:
        idx = torch.nonzero((r > lo) & (r <= e)).flatten()
        if idx.numel():
            out.append((e, idx))
        lo = e
    return out


@functools.lru_cache(maxsize=64)
def _offset_basis(r: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer window offsets ``o`` of half-width ``r`` within the ball ``|o| ≤ r + √3/2`` as ``(3, K)`` (x, y, z;
    x fastest) and the quadratic basis ``(10, K)``: ``1, ox, oy, oz, ox², oy², oz², ox·oy, ox·oz, oy·oz``."""
    o = torch.arange(-r, r + 1, device=device, dtype=dtype)
    oz, oy, ox = torch.meshgrid(o, o, o, indexing="ij")
    ball = (ox * ox + oy * oy + oz * oz) <= (r + 0.5 * math.sqrt(3.0)) ** 2
    ox, oy, oz = ox[ball], oy[ball], oz[ball]
    basis = torch.stack([torch.ones_like(ox), ox, oy, oz, ox * ox, oy * oy, oz * oz, ox * oy, ox * oz, oy * oz])
    return torch.stack([ox, oy, oz]), basis


class _Windows(torch.autograd.Function):
    """``out[lin] += mask · exp(coef[idx] @ basis)`` over a list of window groups ``(basis (10,K), lin (n,K), mask
    (n,K) or None, idx (n,))``; the backward is one matrix product per group,
    ``∂L/∂coef[idx] = (grad[lin] · val) @ basisᵀ``."""

    @staticmethod
    def forward(ctx, coef, groups, n_out):  # noqa: D102
        out = torch.zeros(n_out, dtype=coef.dtype, device=coef.device)
        vals = []
        for basis, lin, mask, idx in groups:
            c = coef[idx]
            val = torch.empty((len(idx), basis.shape[1]), dtype=coef.dtype, device=coef.device)
            for s in range(0, len(idx), MM_ROWS):  # same values as one product, ~2x faster for large windows
                torch.mm(c[s: s + MM_ROWS], basis, out=val[s: s + MM_ROWS])
            val.clamp_(min=-80.0).exp_()  # the clamp keeps exp out of the slow denormal range
            if mask is not None:
                val.mul_(mask)
            out.index_add_(0, lin.reshape(-1), val.reshape(-1))
            vals.append(val)
        ctx.groups, ctx.vals, ctx.n = groups, vals, coef.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        dcoef = torch.zeros(ctx.n, dtype=grad_out.dtype, device=grad_out.device)
        for (basis, lin, _, idx), val in zip(ctx.groups, ctx.vals):
            h = grad_out.index_select(0, lin.reshape(-1)).reshape(val.shape).mul_(val)
            dcoef[idx] = h @ basis.T
        return dcoef, None, None


def voxelize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    denza: torch.Tensor,
    shape: tuple[int, int, int],
    voxel: float = 1.0,
    max_radius: int = 24,
    layout: str = "zyx",
    chunk_elems: int = 4_000_000,
) -> torch.Tensor:
    """Density sampled at voxel centres (denza per voxel) on a grid of ``shape = (Z, Y, X)``, differentiable.

    ``voxel`` is the grid spacing in world units (``voxel=0.5`` renders at twice the resolution of a grid of half the
    shape). ``layout="zxy"`` returns the array ``(Z, X, Y)`` (the order the slice projector reads).

    With ``d = o + f`` (``o`` the integer window offset, ``f`` the centre's offset from its voxel), the exponent
    ``log ρ - ½ dᵀPd`` is a quadratic polynomial in ``o`` whose 10 coefficients depend on the Gaussian only, so a
    window is one matrix product with a fixed basis, one ``exp`` and one scatter-add into a grid padded by
    ``PAD`` voxels (windows that reach further out are masked voxel by voxel). Memory: 8 bytes per window voxel
    (values and indices, kept for the backward) plus ~``chunk_elems`` × 8 bytes of temporaries.
    """
    nz, ny, nx = shape
    if layout not in ("zyx", "zxy"):
        raise ValueError(f"layout must be 'zyx' or 'zxy', got {layout!r}")
    device, dtype = means.device, means.dtype
    out_shape = (nz, ny, nx) if layout == "zyx" else (nz, nx, ny)
    if means.shape[0] == 0:
        return torch.zeros(out_shape, dtype=dtype, device=device) + 0.0 * denza.sum()
    with torch.no_grad():
        radius = torch.ceil(WINDOW_SIGMAS * scales.max(dim=-1).values / voxel).to(torch.int64)
    pad = PAD
    size = torch.tensor([nx, ny, nz], device=device)
    padded = size + 2 * pad
    px, py, pz = (int(v) for v in padded)
    strides = torch.tensor([1, px, py * px] if layout == "zyx" else [py, 1, px * py], device=device)
    prec = precisions(quats, scales) * (voxel * voxel)
    g = means / voxel + torch.tensor([nx / 2.0, ny / 2.0, nz / 2.0], device=device, dtype=dtype)
    base = torch.floor(g.detach())
    f = base + 0.5 - g  # (N, 3), in (-0.5, 0.5]
    pf = (prec @ f[:, :, None])[..., 0]
    coef = torch.stack([
        torch.log(denza.clamp_min(1e-30)) - 0.5 * (f * pf).sum(1), -pf[:, 0], -pf[:, 1], -pf[:, 2],
        -0.5 * prec[:, 0, 0], -0.5 * prec[:, 1, 1], -0.5 * prec[:, 2, 2],
        -prec[:, 0, 1], -prec[:, 0, 2], -prec[:, 1, 2],
    ], dim=1)
    with torch.no_grad():
        cell = base.to(torch.int64) + pad  # padded voxel of each centre
        groups = []
        for r, idx in _buckets(radius, max_radius):
            offs, basis = _offset_basis(r, torch.device(device), dtype)
            offs = offs.to(torch.int64)
            off_lin = (offs * strides[:, None]).sum(0).to(torch.int32)
            fits = ((cell[idx] - r >= 0) & (cell[idx] + r < padded)).all(1)
            far = ((cell[idx] + r < pad) | (cell[idx] - r >= padded - pad)).any(1)  # window misses the volume
            for sel, masked in ((idx[fits], False), (idx[~fits & ~far], True)):
                step = max(1, chunk_elems // offs.shape[1])
                for s in range(0, sel.numel(), step):
                    ii = sel[s: s + step]
                    if not masked:
                        groups.append((basis, (cell[ii] * strides).sum(1).to(torch.int32)[:, None] + off_lin,
                                       None, ii))
                        continue
                    pos = cell[ii][:, :, None] + offs[None]  # (n, 3, K)
                    ok = ((pos >= 0) & (pos < padded[None, :, None])).all(1)
                    lin = (pos.clamp_min(0).minimum(padded[None, :, None] - 1) * strides[None, :, None]).sum(1)
                    groups.append((basis, lin.to(torch.int32), ok.to(dtype), ii))
    vol = _Windows.apply(coef, groups, px * py * pz)
    vol = vol.reshape(pz, px, py) if layout == "zxy" else vol.reshape(pz, py, px)
    return vol[pad: pad + nz, pad: pad + out_shape[1], pad: pad + out_shape[2]].contiguous()


class _SparseProject(torch.autograd.Function):
    """``A @ X`` with a fixed sparse ``A`` (CSR) and its transpose for the backward."""

    @staticmethod
    def forward(ctx, x, a, at):  # noqa: D102
        ctx.at = at
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return torch.sparse.mm(ctx.at, g.contiguous()), None, None


def _to_torch_csr(m, device) -> torch.Tensor:
    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta" and "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device)


class SliceProjector:
    """Parallel-beam projections of a ``(Z, X, Y)`` volume at fixed tilts: images ``(C, W, Y)`` (detector columns
    first, tilt axis last: the transposed view), differentiable. One sparse matrix serves every slice across the
    tilt axis; it is ASTRA's ``linear`` CPU system matrix (:func:`denza_gaussian.classical.system_matrix`)."""

    def __init__(self, nz: int, nx: int, n_det: int, angles_deg, device: str | torch.device = "cpu"):
        from .classical import system_matrix

        self.n_views, self.n_det = len(angles_deg), int(n_det)
        m = system_matrix(nz, nx, n_det, np.asarray(angles_deg, np.float64))
        self.a = _to_torch_csr(m, device)
        self.at = _to_torch_csr(m.T, device)

    def __call__(self, volume_zxy: torch.Tensor) -> torch.Tensor:
        nz, nx, ny = volume_zxy.shape
        out = _SparseProject.apply(volume_zxy.reshape(nz * nx, ny), self.a, self.at)
        return out.reshape(self.n_views, self.n_det, ny)
