"""benchmarks/baselines.py: U-Net shapes, classical filters and the validation-set parameter choice."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from baselines import (  # noqa: E402
    UNet,
    apply_fitted,
    bm3d_denoise,
    estimate_noise_sigma,
    fit_affine,
    fit_on_validation,
    gaussian_filter,
    gaussian_filter_best,
    wiener,
)
from scipy import ndimage  # noqa: E402


def _psnr(x, ref):
    return 10 * np.log10(1.0 / np.mean((x - ref) ** 2))


def _smooth_pairs(n=4, size=48, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    clean = [ndimage.gaussian_filter(rng.random((size, size)), 3).astype(np.float32) for _ in range(n)]
    clean = [(c - c.min()) / (c.max() - c.min()) for c in clean]
    noisy = [(c + rng.normal(0, noise, c.shape)).astype(np.float32) for c in clean]
    return noisy, clean


@pytest.mark.parametrize("shape", [(1, 1, 17, 23), (2, 1, 32, 32), (1, 1, 5, 9), (1, 1, 3, 3)])
def test_unet_any_size(shape):
    net = UNet(width=4, depth=3).eval()
    with torch.no_grad():
        assert net(torch.rand(*shape)).shape == shape


def test_unet_width_sets_parameter_count_and_residual_adds_input():
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(UNet(width=8)) < n(UNet(width=16))
    net = UNet(width=4, depth=1, residual=True).eval()
    with torch.no_grad():
        for p in net.out.parameters():
            p.zero_()
        x = torch.rand(1, 1, 10, 10)
        torch.testing.assert_close(net(x), x)


def test_unet_rejects_bad_config():
    with pytest.raises(ValueError):
        UNet(width=0)


def test_fit_affine_recovers_gain_and_offset():
    rng = np.random.default_rng(1)
    p = [rng.random((8, 8)) for _ in range(3)]
    gain, offset = fit_affine(p, [0.5 * a - 0.2 for a in p])
    assert gain == pytest.approx(0.5) and offset == pytest.approx(-0.2)


def test_gaussian_best_sigma_denoises_and_fits_intensity_scale():
    noisy, clean = _smooth_pairs()
    scaled = [2.0 * x + 0.3 for x in noisy]  # the input lives on another intensity scale than the target
    fitted = gaussian_filter_best(scaled, clean)
    assert fitted["kwargs"]["sigma_px"] >= 1.0
    assert fitted["gain"] == pytest.approx(0.5, rel=0.1)
    test_noisy, test_clean = _smooth_pairs(seed=5)
    out = apply_fitted(gaussian_filter, fitted, 2.0 * test_noisy[0] + 0.3)
    assert _psnr(out, test_clean[0]) > _psnr(test_noisy[0], test_clean[0]) + 5


def test_fit_on_validation_without_affine_keeps_identity_map():
    noisy, clean = _smooth_pairs(n=2)
    fitted = fit_on_validation(wiener, [{"size": 3}, {"size": 7}], noisy, clean, affine=False)
    assert fitted["gain"] == 1.0 and fitted["offset"] == 0.0 and fitted["kwargs"]["size"] in (3, 7)


def test_wiener_reduces_noise():
    noisy, clean = _smooth_pairs(n=1)
    assert _psnr(wiener(noisy[0], 5), clean[0]) > _psnr(noisy[0], clean[0]) + 3


def test_noise_sigma_estimate():
    img = np.random.default_rng(2).normal(0.5, 0.07, (128, 128))
    assert estimate_noise_sigma(img) == pytest.approx(0.07, rel=0.1)


def test_bm3d_denoises():
    pytest.importorskip("bm3d")
    noisy, clean = _smooth_pairs(n=1, size=64)
    out = bm3d_denoise(noisy[0])
    assert out.dtype == np.float32 and out.shape == noisy[0].shape
    assert _psnr(out, clean[0]) > _psnr(noisy[0], clean[0]) + 5


def test_unet_module_rebuilds_from_hparams():
    from baselines import UNetModule

    m = UNetModule(width=4, depth=2)
    assert m.hparams.width == 4 and isinstance(m.net, UNet) and m.net.depth == 2
