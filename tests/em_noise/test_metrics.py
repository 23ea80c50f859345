"""Tests of em_noise.metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from em_noise.imaging import render_gaussians
from em_noise.metrics import binarized_iou, find_peaks, match_positions, psnr, ssim


def test_psnr_of_known_mse():
    ref = np.random.default_rng(0).uniform(size=(32, 40))
    assert psnr(ref + 0.1, ref, data_range=1.0) == pytest.approx(20.0, abs=1e-9)
    assert psnr(ref * 255 + 2.55, ref * 255, data_range=255.0) == pytest.approx(40.0, abs=1e-9)
    assert math.isinf(psnr(ref, ref, 1.0))


def test_psnr_averages_over_a_batch_and_accepts_tensors():
    ref = torch.zeros(2, 1, 16, 16)
    x = ref.clone()
    x[0] += 0.1  # 20 dB
    x[1] += 0.01  # 40 dB
    assert psnr(x, ref, 1.0) == pytest.approx(30.0, abs=1e-5)


def test_ssim_identity_and_constant_images():
    x = np.random.default_rng(1).uniform(size=(40, 40))
    assert ssim(x, x, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    a, b = np.full((30, 30), 0.2), np.full((30, 30), 0.4)
    c1 = (0.01 * 1.0) ** 2
    assert ssim(a, b, 1.0) == pytest.approx((2 * 0.2 * 0.4 + c1) / (0.2 ** 2 + 0.4 ** 2 + c1), rel=1e-9)


def test_ssim_drops_with_noise_and_is_symmetric():
    rng = np.random.default_rng(2)
    x = render_gaussians(rng.uniform(0, 64, (40, 2)), np.ones(40), (64, 64), 2.0)
    y1 = x + rng.normal(0, 0.05, x.shape)
    y2 = x + rng.normal(0, 0.3, x.shape)
    s1, s2 = ssim(y1, x, 1.0), ssim(y2, x, 1.0)
    assert 1.0 > s1 > s2 > 0.0
    assert ssim(x, y1, 1.0) == pytest.approx(s1, abs=1e-12)
    assert ssim(x.max() - x, x, 1.0) < 0  # inverted contrast: negative structure term


def test_find_peaks_subpixel_positions():
    true = np.array([[10.3, 12.6], [30.0, 30.0], [45.7, 20.2]])
    img = render_gaussians(true, np.array([1.0, 0.6, 0.8]), (48, 56), 1.5)
    found = find_peaks(img, min_distance_px=3, threshold_rel=0.2, refine=True)
    assert len(found) == 3
    np.testing.assert_allclose(found[0], true[0], atol=0.15)  # strongest first
    m = match_positions(found, true, max_dist_px=0.5)
    assert m["tp"] == 3 and m["rms_px"] < 0.15
    coarse = find_peaks(img, min_distance_px=3, threshold_rel=0.2, refine=False)
    np.testing.assert_array_equal(coarse[0], np.round(true[0]))


def test_find_peaks_threshold_and_min_distance():
    img = render_gaussians(np.array([[10.0, 10.0], [13.0, 10.0], [30.0, 20.0]]), np.array([1.0, 0.9, 0.1]),
                           (32, 40), 0.8)
    assert len(find_peaks(img, min_distance_px=2, threshold_rel=0.05)) == 3
    assert len(find_peaks(img, min_distance_px=2, threshold_rel=0.3)) == 2  # weak one below threshold
    assert len(find_peaks(img, min_distance_px=4, threshold_rel=0.05)) == 2  # 13,10 suppressed by 10,10
    assert find_peaks(np.zeros((8, 8)), 2).shape == (0, 2)


def test_match_positions_counts_on_constructed_case():
    true = np.array([[0, 0], [10, 0], [20, 0], [30, 0], [40, 0]], float)
    pred = np.array([[0.5, 0], [10, 0.6], [20.3, 0.4], [60, 60], [0.2, 0.1]], float)  # last duplicates the first
    m = match_positions(pred, true, max_dist_px=1.0)
    assert (m["tp"], m["fp"], m["fn"]) == (3, 2, 2)
    assert m["precision"] == pytest.approx(0.6) and m["recall"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(0.6)
    d = [np.hypot(0.2, 0.1), 0.6, 0.5]  # optimal: the duplicate (closer) takes the first column
    assert m["rms_px"] == pytest.approx(np.sqrt(np.mean(np.square(d))))


def test_match_positions_is_optimal_not_greedy_nearest():
    true = np.array([[0.0, 0.0], [2.0, 0.0]])
    pred = np.array([[0.95, 0.0], [-0.5, 0.0]])  # pred 0's nearest is true 0, but only true 1 is left for it
    m = match_positions(pred, true, max_dist_px=1.1)
    assert m["tp"] == 2
    assert m["rms_px"] == pytest.approx(np.sqrt((1.05 ** 2 + 0.5 ** 2) / 2))


def test_match_positions_empty_inputs():
    m = match_positions(np.zeros((0, 2)), np.array([[1.0, 1.0]]), 1.0)
    assert (m["tp"], m["fn"], m["recall"], m["precision"]) == (0, 1, 0.0, 1.0) and math.isnan(m["rms_px"])
    m = match_positions(np.array([[1.0, 1.0]]), np.zeros((0, 2)), 1.0)
    assert (m["fp"], m["precision"], m["recall"]) == (1, 0.0, 1.0)


def test_binarized_iou_of_shifted_squares():
    a = np.zeros((40, 40))
    b = np.zeros((40, 40))
    a[10:20, 10:20] = 1.0
    b[10:20, 15:25] = 255.0  # threshold at half of each map's own range
    assert binarized_iou(a, b) == pytest.approx(50 / 150)
    assert binarized_iou(a, a) == 1.0
    assert binarized_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert binarized_iou(a * 0.4, b / 255.0, threshold=0.5) == 0.0


def test_binarized_iou_with_clipped_range_ignores_a_lone_outlier():
    a = np.zeros((20, 20))
    a[5:15, 5:15] = 1.0
    spiked = a.copy()
    spiked[0, 0] = 5.0  # one bright pixel: the min–max threshold (2.5) drops the whole square
    assert binarized_iou(spiked, a) == 0.0  # only the spike is above 2.5
    assert binarized_iou(spiked, a, clip_percent=1.0) == pytest.approx(100 / 101)  # the spike counts, not rules
    with pytest.raises(ValueError):
        binarized_iou(a, a, clip_percent=50.0)
