"""Losses: Fourier amplitude term and its gradient, SSIM, TV, and the closed-form γ on a gain-perturbed series."""
from __future__ import annotations

import numpy as np
import torch
from denza_gaussian.losses import fourier_amplitude_loss, ssim2d, tv3d
from denza_gaussian.normalization import closed_form_gamma, interpolate_gamma
from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
from em_noise.metrics import ssim as ssim_ref


def test_fourier_loss_is_zero_for_equal_images_and_shift_invariant():
    x = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert fourier_amplitude_loss(x, x).item() < 1e-6
    assert fourier_amplitude_loss(torch.roll(x, (3, 5), dims=(1, 2)), x).item() < 1e-5


def test_fourier_loss_gradient_matches_finite_differences_and_reduces_the_loss():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 8, 8, generator=g, dtype=torch.float64)
    pred = torch.rand(1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: fourier_amplitude_loss(p, ref), (pred,), eps=1e-6, atol=1e-6)
    loss = fourier_amplitude_loss(pred, ref)
    loss.backward()
    with torch.no_grad():
        assert fourier_amplitude_loss(pred - 0.05 * pred.grad / pred.grad.abs().max(), ref) < loss


def test_ssim2d_agrees_with_em_noise_metrics_away_from_the_border():
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(1, 40, 40, generator=g)
    pred = ref + 0.1 * torch.randn(1, 40, 40, generator=g)
    ours = ssim2d(pred, ref, 1.0).item()
    theirs = ssim_ref(pred[0].numpy(), ref[0].numpy(), 1.0)
    assert abs(ours - theirs) < 0.02
    assert ssim2d(ref, ref, 1.0).item() > 0.999


def test_tv3d_is_zero_on_constants_and_positive_on_edges():
    v = torch.ones(6, 6, 6)
    assert tv3d(v).item() == 0.0
    v[3:] = 2.0
    assert tv3d(v).item() > 0.0


def test_closed_form_gamma_recovers_view_gains_under_poisson_noise():
    vol = make_phantom("core_shell", 32, seed=0)
    sim = simulate_tilts(vol, tilt_angles(15), peak_counts=200.0, gain_jitter=0.15, seed=1)
    gamma = closed_form_gamma(sim["noisy"])
    expected = sim["gains"] / np.exp(np.mean(np.log(sim["gains"])))
    assert np.abs(gamma - expected).max() < 0.02  # Poisson noise on the totals: ~0.6 % rms
    assert abs(np.log(gamma).sum()) < 1e-4
    assert np.abs(sim["gains"] - 1).max() > 0.05  # the series really is perturbed


def test_interpolated_gamma_uses_training_views_only():
    train_angles = np.array([-60.0, -20.0, 20.0, 60.0])
    train_gamma = np.array([0.8, 1.0, 1.25, 1.0])
    got = interpolate_gamma(train_angles, train_gamma, np.array([-70.0, 0.0, 20.0, 80.0]))
    np.testing.assert_allclose(got, [0.8, np.sqrt(1.25), 1.25, 1.0], rtol=1e-5)
