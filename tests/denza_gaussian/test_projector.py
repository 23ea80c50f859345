"""Projector: line integrals against a numerical integral, mass, linearity, ASTRA consistency, gradients."""
from __future__ import annotations

import numpy as np
import torch
from denza_gaussian.classical import forward_project
from denza_gaussian.projector import covariances, gaussian_mass, project, tilt_rotations, voxelize


def _gaussians(n: int, seed: int = 0, spread: float = 12.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = ((torch.rand(n, 3, generator=g) - 0.5) * spread).to(dtype)
    quats = torch.randn(n, 4, generator=g).to(dtype)
    scales = (0.8 + 2.0 * torch.rand(n, 3, generator=g)).to(dtype)
    denza = (0.5 + torch.rand(n, generator=g)).to(dtype)
    return means, quats, scales, denza


def _brute_force(means, quats, scales, denza, angle_deg, h, w, dt=0.02, half_len=30.0):
    """Line integral at each pixel centre by the trapezoid rule along the rotated beam (float64)."""
    rv = tilt_rotations(torch.tensor([angle_deg]), torch.float64)[0]
    prec = torch.linalg.inv(covariances(quats.double(), scales.double()))
    u = torch.arange(w, dtype=torch.float64) + 0.5 - w / 2
    v = torch.arange(h, dtype=torch.float64) + 0.5 - h / 2
    t = torch.arange(-half_len, half_len + dt / 2, dt, dtype=torch.float64)
    vv, uu, tt = torch.meshgrid(v, u, t, indexing="ij")
    pc = torch.stack([uu, vv, tt], -1)  # rotated frame
    p = pc @ rv  # back to object frame: p = R_vᵀ p_c
    out = torch.zeros(h, w, dtype=torch.float64)
    for m, pr, d in zip(means.double(), prec, denza.double()):
        q = p - m
        dens = d * torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", q, pr, q))
        out += torch.trapezoid(dens, dx=dt, dim=-1)
    return out


def test_projection_matches_numerical_line_integral():
    means, quats, scales, denza = _gaussians(4, seed=1, spread=8.0)
    for angle in (-65.0, 0.0, 37.0):
        img, _ = project(means, quats, scales, denza, torch.tensor([angle]), 20, 22)
        ref = _brute_force(means, quats, scales, denza, angle, 20, 22)
        err = (img[0].double() - ref).abs().max() / ref.max()
        assert err < 0.01, f"angle {angle}: max relative error {err:.4f}"


def test_mass_is_the_same_at_every_angle():
    means, quats, scales, denza = _gaussians(20, seed=2)
    angles = torch.linspace(-70, 70, 15)
    img, _ = project(means, quats, scales, denza, angles, 48, 48)
    totals = img.sum(dim=(1, 2))
    mass = gaussian_mass(denza, scales).sum()
    assert torch.allclose(totals, mass.expand_as(totals), rtol=0.005)


def test_projection_is_linear_in_denza():
    means, quats, scales, d1 = _gaussians(10, seed=3)
    d2 = torch.rand(10, generator=torch.Generator().manual_seed(9))
    angles = torch.tensor([-40.0, 10.0])
    p = lambda d: project(means, quats, scales, d, angles, 32, 32)[0]  # noqa: E731
    assert torch.allclose(p(2.0 * d1 + 3.0 * d2), 2.0 * p(d1) + 3.0 * p(d2), atol=1e-4)


def test_adjoint_of_the_denza_map_is_the_backprojection_gradient():
    """⟨A ρ, y⟩ = ⟨ρ, Aᵀ y⟩ with Aᵀy formed column by column (projection of unit denza) vs autograd."""
    means, quats, scales, _ = _gaussians(6, seed=4)
    angles = torch.tensor([-30.0, 50.0])
    y = torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(1))
    rho = torch.rand(6, requires_grad=True)
    (project(means, quats, scales, rho, angles, 24, 24)[0] * y).sum().backward()
    cols = torch.stack([(project(means, quats, scales, torch.eye(6)[i], angles, 24, 24)[0] * y).sum() for i in range(6)])
    assert torch.allclose(rho.grad, cols, rtol=1e-5)


def test_voxelized_gaussians_projected_by_astra_match_the_projector():
    """Same geometry and angle sign in the Gaussian projector and the ASTRA baselines."""
    means, quats, scales, denza = _gaussians(6, seed=5, spread=14.0)
    angles = np.array([-60.0, -15.0, 0.0, 25.0, 70.0])
    img, _ = project(means, quats, scales, denza, torch.tensor(angles), 32, 36)
    vol = voxelize(means, quats, scales, denza, (40, 32, 36))
    ref = forward_project(vol.numpy(), angles)
    err = np.abs(img.numpy() - ref).max() / ref.max()
    assert err < 0.04
    assert abs(vol.sum().item() - gaussian_mass(denza, scales).sum().item()) / vol.sum().item() < 0.01


def test_voxelizer_chunking_does_not_change_the_volume():
    means, quats, scales, denza = _gaussians(30, seed=6)
    a = voxelize(means, quats, scales, denza, (24, 20, 22))
    b = voxelize(means, quats, scales, denza, (24, 20, 22), chunk_elems=500)
    assert torch.allclose(a, b, atol=1e-5)


def test_voxelizer_renders_at_half_voxel():
    means, quats, scales, denza = _gaussians(5, seed=7)
    fine = voxelize(means, quats, scales, denza, (48, 40, 40), voxel=0.5)
    assert abs(fine.sum().item() * 0.125 - gaussian_mass(denza, scales).sum().item()) < 0.01 * fine.sum().item() * 0.125


def test_gradients_match_finite_differences():
    means, quats, scales, denza = (t.requires_grad_() for t in _gaussians(2, seed=8, spread=4.0, dtype=torch.float64))
    angles = torch.tensor([-30.0, 20.0], dtype=torch.float64)
    f = lambda m, q, s, d: project(m, q, s, d, angles, 10, 10)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (means, quats, scales, denza), eps=1e-6, atol=1e-5)


def test_info_follows_gsplat_conventions():
    means, quats, scales, denza = _gaussians(7, seed=9)
    means = means.clone()
    means[0] = torch.tensor([200.0, 0.0, 0.0])  # far outside the image at every angle
    img, info = project(means, quats, scales, denza, torch.tensor([0.0, 30.0, 60.0]), 24, 26)
    assert info["means2d"].shape == (3, 7, 2) and info["radii"].shape == (3, 7, 2)
    assert info["width"] == 26 and info["height"] == 24 and info["n_cameras"] == 3
    assert (info["radii"][:, 0] == 0).all() and (info["radii"][:, 1:] > 0).all()


def test_sirt_matches_astras_own_sirt_algorithm():
    import astra
    from denza_gaussian import classical
    from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles

    vol = make_phantom("cluster", 24, seed=0)
    angles = tilt_angles(9, 60.0)
    tilts = simulate_tilts(vol, angles, peak_counts=None)["clean"]
    ours = classical.reconstruct(tilts, angles, 24, method="sirt", iterations=15)
    vg, pg, pid = classical._setup(24, 24, 24, angles)
    i = 12
    sid = astra.data2d.create("-sino", pg, np.ascontiguousarray(tilts[:, i, :]))
    rid = astra.data2d.create("-vol", vg, 0.0)
    cfg = astra.astra_dict("SIRT")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid, option={"MinConstraint": 0.0})
    aid = astra.algorithm.create(cfg)
    astra.algorithm.run(aid, 15)
    ref = astra.data2d.get(rid)
    astra.algorithm.delete(aid)
    astra.data2d.delete([sid, rid])
    astra.projector.delete(pid)
    np.testing.assert_allclose(ours[:, i, :], ref, atol=1e-4 * np.abs(ref).max())
