"""Voxelizer and slice projector: values, mass, layouts, gradients, and projections against analytic line integrals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from denza_gaussian import classical
from denza_gaussian.projector import SliceProjector, covariances, gaussian_mass, precisions, voxelize


def _gaussians(n=6, seed=0, spread=8.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = ((torch.rand(n, 3, generator=g) - 0.5) * spread).to(dtype)
    quats = torch.randn(n, 4, generator=g).to(dtype)
    scales = (1.2 + 1.5 * torch.rand(n, 3, generator=g)).to(dtype)
    denza = (0.2 + torch.rand(n, generator=g)).to(dtype)
    return means, quats, scales, denza


def _direct(means, quats, scales, denza, shape):
    nz, ny, nx = shape
    z, y, x = torch.meshgrid(torch.arange(nz) + 0.5 - nz / 2, torch.arange(ny) + 0.5 - ny / 2,
                             torch.arange(nx) + 0.5 - nx / 2, indexing="ij")
    p = torch.stack([x, y, z], -1).to(means.dtype)
    prec = precisions(quats, scales)
    out = torch.zeros(shape, dtype=means.dtype)
    for i in range(len(means)):
        d = p - means[i]
        out += denza[i] * torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", d, prec[i], d))
    return out


def test_precision_is_the_inverse_covariance():
    _, q, s, _ = _gaussians(20)
    eye = precisions(q, s) @ covariances(q, s)
    assert torch.allclose(eye, torch.eye(3).expand_as(eye), atol=1e-4)


def test_voxelize_matches_direct_evaluation_inside_the_window_and_keeps_the_mass():
    m, q, s, d = _gaussians(6)
    shape = (20, 22, 24)
    vol = voxelize(m, q, s, d, shape)
    ref = _direct(m, q, s, d, shape)
    assert vol.shape == shape
    assert (vol - ref).abs().max() < 0.012 * ref.max()  # 3σ window: the cut tails only
    mass = gaussian_mass(d, s).sum()
    assert vol.sum().item() == pytest.approx(mass.item(), rel=0.02)
    zxy = voxelize(m, q, s, d, shape, layout="zxy")
    torch.testing.assert_close(zxy, vol.permute(0, 2, 1).contiguous())


def test_voxelize_window_holds_every_voxel_within_three_sigma():
    g = torch.Generator().manual_seed(3)
    m = (torch.rand(8, 3, generator=g) - 0.5) * 6.0  # centres anywhere inside their voxels
    s = (1.2 + 1.4 * torch.rand(8, 1, generator=g)).expand(8, 3).contiguous()  # isotropic, windows of r <= 8
    q = torch.tensor([[1.0, 0, 0, 0]]).expand(8, 4).contiguous()
    shape = (28, 28, 28)
    for i in range(8):
        one = (m[i: i + 1], q[i: i + 1], s[i: i + 1], torch.ones(1))
        vol, ref = voxelize(*one, shape), _direct(*one, shape)
        z, y, x = torch.meshgrid(*(torch.arange(n) + 0.5 - n / 2 for n in shape), indexing="ij")
        dist = ((torch.stack([x, y, z], -1) - m[i]) ** 2).sum(-1).sqrt() / s[i, 0]
        inside = dist <= 3.0
        torch.testing.assert_close(vol[inside], ref[inside], rtol=1e-4, atol=1e-6)
        assert vol[dist > 3.0 + 2.8 / s[i, 0]].abs().max() == 0  # a ball: ceil(3σ) + √3/2 from the centre voxel


def test_voxelize_near_and_outside_the_faces():
    m = torch.tensor([[11.0, 0.0, 0.0], [-40.0, 0.0, 0.0]])  # one on the +x face, one far outside
    q = torch.tensor([[1.0, 0, 0, 0]] * 2)
    s = torch.full((2, 3), 2.5)
    d = torch.ones(2)
    vol = voxelize(m, q, s, d, (16, 16, 24))
    ref = _direct(m, q, s, d, (16, 16, 24))
    assert (vol - ref).abs().max() < 0.012


def test_voxelize_gradients_match_finite_differences():
    m, q, s, d = _gaussians(3, seed=1, spread=4.0, dtype=torch.float64)
    args = tuple(t.clone().requires_grad_() for t in (m, q, s, d))
    assert torch.autograd.gradcheck(lambda *a: voxelize(*a, (10, 11, 12)), args, eps=1e-6, atol=1e-5)


def test_slice_projector_is_astra_and_its_adjoint():
    rng = np.random.default_rng(0)
    vol = rng.random((12, 10, 14)).astype(np.float32)  # (Z, Y, X)
    angles = np.array([-50.0, -10.0, 25.0, 60.0])
    proj = SliceProjector(12, 14, 14, angles)
    x = torch.from_numpy(vol.transpose(0, 2, 1).copy()).requires_grad_()
    out = proj(x)  # (C, W, Y)
    np.testing.assert_allclose(out.detach().numpy().transpose(0, 2, 1), classical.forward_project(vol, angles),
                               rtol=1e-4, atol=1e-4)
    g = torch.from_numpy(rng.random(out.shape).astype(np.float32))
    (out * g).sum().backward()
    lhs = float((out * g).sum().detach())
    rhs = float((x * x.grad).sum().detach())
    assert lhs == pytest.approx(rhs, rel=1e-4)


@pytest.mark.parametrize("angle", [0.0, 35.0, -62.0])
def test_projection_of_a_voxelized_gaussian_is_its_line_integral(angle):
    """A rotated anisotropic Gaussian: voxelize, project, compare with the analytic 2-D Gaussian of the projection."""
    m = torch.tensor([[1.3, -0.7, 2.1]])
    q = torch.nn.functional.normalize(torch.tensor([[0.9, 0.2, -0.3, 0.25]]), dim=-1)
    s = torch.tensor([[2.0, 3.0, 1.6]])
    d = torch.tensor([1.0])
    n = 32
    vol = voxelize(m, q, s, d, (n, n, n), layout="zxy")
    img = SliceProjector(n, n, n, [angle])(vol)[0].T.numpy()  # (Y, W)
    a = math.radians(angle)
    rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    cov = rot @ covariances(q, s)[0] @ rot.T
    mu = rot @ m[0]
    c2 = cov[:2, :2].numpy().astype(np.float64)
    amp = float(d[0]) * math.sqrt(2 * math.pi * float(torch.det(covariances(q, s)[0])) / np.linalg.det(c2))
    v, u = np.meshgrid(np.arange(n) + 0.5 - n / 2, np.arange(n) + 0.5 - n / 2, indexing="ij")
    du = np.stack([u - float(mu[0]), v - float(mu[1])], -1)
    ref = amp * np.exp(-0.5 * np.einsum("...i,ij,...j->...", du, np.linalg.inv(c2), du))
    assert np.abs(img - ref).max() < 0.04 * ref.max()
    assert img.sum() == pytest.approx(ref.sum(), rel=0.02)
