"""Statistics, determinism and API of em_noise.noise."""
import json

import numpy as np
import pytest
from em_noise.errors import EMInputError
from em_noise.noise import (
    BackgroundNoise,
    ColumnNoise,
    Detector,
    PointwiseNoise,
    ScanJitter,
    ScanNoise,
    apply_noise,
    build_noise,
    knot_count,
    scan_std,
    sobel_magnitude,
    spline_basis,
    tukey_quantile,
    tukey_std,
)
from em_noise.params import default_params
from em_noise.perlin import perlin_field
from em_noise.priors import LIMITS, sample_noise_params
from scipy import stats


def lattice(size=128, spacing=16, sigma=3.0, peak=200.0):
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = np.zeros((size, size))
    for cy in np.arange(spacing / 2, size, spacing):
        for cx in np.arange(spacing / 2, size, spacing):
            img += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return img


@pytest.mark.parametrize("mode", ["haadf", "bf", "hrtem"])
def test_same_seed_same_noise_different_seed_different(mode):
    clean = lattice()
    params = sample_noise_params(mode, np.random.default_rng(3))
    a = apply_noise(clean, mode, params, np.random.default_rng(7), pixel_size_A=0.1)
    b = apply_noise(clean, mode, params, np.random.default_rng(7), pixel_size_A=0.1)
    c = apply_noise(clean, mode, params, np.random.default_rng(8), pixel_size_A=0.1)
    assert a.dtype == np.float32 and a.shape == clean.shape
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


@pytest.mark.parametrize("mode", ["haadf", "bf", "hrtem"])
def test_sampled_params_are_json_and_within_limits(mode):
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sample_noise_params(mode, rng)
        assert json.loads(json.dumps(p)) == p
        assert p["schema"] == "em-noise/noise-params" and p["version"] == 2 and p["mode"] == mode
        if mode != "hrtem":
            for key in ("k", "b", "lam"):
                lo, hi = LIMITS[f"pointwise.{key}"]
                assert lo <= p["pointwise"][key] <= hi
            assert 0 <= p["background"]["offset"] <= 50 and 50 <= p["background"]["amplitude"] <= 100


def test_draws_around_base_stay_close():
    base = sample_noise_params("haadf", np.random.default_rng(1))
    rng = np.random.default_rng(2)
    draws = [sample_noise_params("haadf", rng, base=base) for _ in range(200)]
    for group, key in [("pointwise", "b"), ("background", "amplitude")]:
        vals = np.array([d[group][key] for d in draws])
        assert abs(np.median(vals) / base[group][key] - 1) < 0.05
        assert 0.05 < vals.std() / base[group][key] < 0.15
    lam = np.array([d["pointwise"]["lam"] for d in draws])
    assert abs(lam.mean() - base["pointwise"]["lam"]) < 0.005


def test_base_of_other_mode_is_refused():
    base = sample_noise_params("hrtem", np.random.default_rng(1))
    with pytest.raises(EMInputError):
        sample_noise_params("haadf", np.random.default_rng(1), base=base)


def test_unknown_mode_is_refused():
    with pytest.raises(EMInputError):
        sample_noise_params("cryo", np.random.default_rng(0))


def test_tukey_quantile_matches_scipy():
    p = np.linspace(0.01, 0.99, 7)
    for lam in (-0.1, 0.0, 0.04, 0.38, 1.0):
        np.testing.assert_allclose(tukey_quantile(p, lam), stats.tukeylambda.ppf(p, lam), rtol=1e-6, atol=1e-9)
        if lam > -0.5:
            assert tukey_std(lam) == pytest.approx(stats.tukeylambda.std(lam), rel=1e-4)


@pytest.mark.parametrize("lam", [0.04, 0.38])
def test_pointwise_noise_on_flat_image_has_requested_scale_and_shape(lam):
    k, b, level = 0.05, 6.0, 120.0
    noise = PointwiseNoise(k, b, lam).sample(np.full((256, 256), level), np.random.default_rng(0)).ravel()
    scale = k * level + b
    assert noise.std() == pytest.approx(scale * tukey_std(lam), rel=0.02)
    # shape: the PPCC maximum over lambda lies at the requested value
    lams = np.linspace(lam - 0.15, lam + 0.15, 31)
    r = [stats.probplot(noise[:20000], (lm,), dist="tukeylambda", fit=True)[1][2] for lm in lams]
    best = lams[int(np.argmax(r))]
    assert abs(best - lam) <= 0.05


def test_pointwise_scale_is_linear_in_intensity():
    m = PointwiseNoise(k=0.1, b=2.0, lam=0.14)
    img = np.concatenate([np.full((128, 256), 20.0), np.full((128, 256), 200.0)])
    noise = m.sample(img, np.random.default_rng(0))
    ratio = noise[128:].std() / noise[:128].std()
    assert ratio == pytest.approx((0.1 * 200 + 2) / (0.1 * 20 + 2), rel=0.05)


def test_scan_noise_is_smooth_along_rows_and_independent_across_rows():
    noise = ScanNoise(k=0.1, b=6.0).sample(np.zeros((256, 256)), np.random.default_rng(0))
    along = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    across = np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]
    assert along > 0.9 and abs(across) < 0.05
    # flat image (g = 0): knot std = std(0); the spline between knots has a smaller, known rms
    rms_factor = np.sqrt((spline_basis(256) ** 2).sum(1).mean())
    assert noise.std() == pytest.approx(scan_std(0.0, 0.1, 6.0) * rms_factor, rel=0.05)


def test_scan_noise_std_saturates_at_high_gradient():
    ramp = np.tile(np.arange(256.0) * 20.0, (256, 1))  # Sobel magnitude 160 > 80
    noise = ScanNoise(k=0.1, b=5.0).sample(ramp, np.random.default_rng(0))
    rms_factor = np.sqrt((spline_basis(256) ** 2).sum(1).mean())
    assert noise[:, 2:-2].std() == pytest.approx(scan_std(80.0, 0.1, 5.0) * rms_factor, rel=0.05)


def test_background_is_the_published_perlin_field_and_smooth():
    rng = np.random.default_rng(0)
    fields = [BackgroundNoise(offset=0.0, amplitude=1.0).sample((256, 256), rng) for _ in range(20)]
    lo, hi, sd = (np.mean([f.min() for f in fields]), np.mean([f.max() for f in fields]),
                  np.mean([f.std() for f in fields]))
    assert 0.27 < lo < 0.35 and 0.65 < hi < 0.73 and 0.055 < sd < 0.085  # (v + 1) / 2: about 0.31–0.70, std 0.07
    bg = BackgroundNoise(offset=20.0, amplitude=70.0).sample((256, 256), np.random.default_rng(0))
    assert 20.0 <= bg.min() and bg.max() <= 90.0
    assert np.abs(np.diff(bg, axis=1)).mean() < 2.0 and np.abs(np.diff(bg, axis=0)).mean() < 2.0


def test_bf_background_darkens_and_haadf_background_brightens():
    flat = np.full((64, 64), 128.0)
    light = BackgroundNoise(10.0, 50.0, sign=1.0)(flat, np.random.default_rng(0))
    dark = BackgroundNoise(10.0, 50.0, sign=-1.0)(flat, np.random.default_rng(0))
    assert light.min() > 128.0 and dark.max() < 128.0
    np.testing.assert_allclose(light - 128.0, 128.0 - dark)


def test_column_noise_is_constant_down_each_column():
    noise = ColumnNoise(sigma=3.0).sample((128, 512), np.random.default_rng(0))
    assert np.all(noise == noise[:1])
    assert noise[0].std() == pytest.approx(3.0, rel=0.15)


def test_scan_jitter_shifts_whole_rows():
    img = np.tile(np.arange(64.0), (32, 1))
    out = ScanJitter(1.5)(img, np.random.default_rng(0))
    shift = img[:, 10:50] - out[:, 10:50]
    assert np.allclose(shift, shift[:, :1], atol=1e-9) and shift[:, 0].std() > 0.5


def test_poisson_dose_sets_the_variance():
    params = {"mode": "hrtem", "column": {"sigma": 0.0}, "pointwise": {"k": 0.0, "b": 0.0},
              "dose_e_per_A2": 1000.0, "mtf_sigma_px": 0.0}
    clean = np.full((256, 256), 100.0)
    noisy = apply_noise(clean, "hrtem", params, np.random.default_rng(0), pixel_size_A=0.2)
    counts = 1000.0 * 0.2**2  # 40 e- per pixel at the mean intensity
    assert noisy.mean() == pytest.approx(100.0, rel=0.01)
    assert noisy.std() == pytest.approx(100.0 / np.sqrt(counts), rel=0.03)


def test_dose_without_pixel_size_is_an_input_error():
    params = sample_noise_params("hrtem", np.random.default_rng(0))
    params["dose_e_per_A2"] = 100.0
    with pytest.raises(EMInputError):
        apply_noise(np.zeros((32, 32)), "hrtem", params, np.random.default_rng(0))


def test_build_noise_rejects_incomplete_params():
    with pytest.raises(EMInputError):
        build_noise("haadf", {"mode": "haadf", "scan": {"k": 0.1}})


def quiet_stem_params():
    p = sample_noise_params("haadf", np.random.default_rng(0))
    p["background"].update(offset=0.0, amplitude=0.0)
    p["scan"].update(k=0.0, b=3.4)  # std(0) = std(80) = 0
    p["pointwise"].update(k=0.0, b=0.5, lam=0.14)
    return p


def test_read_noise_option_adds_its_variance():
    p = quiet_stem_params()
    base = apply_noise(np.full((256, 256), 100.0), "haadf", p, np.random.default_rng(0)).std()
    p["read_sigma"] = 5.0
    noisy = apply_noise(np.full((256, 256), 100.0), "haadf", p, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(np.hypot(5.0, base), rel=0.03)


def test_stem_dose_option_adds_shot_noise():
    p = quiet_stem_params()
    p["dose_e_per_A2"] = 400.0  # 0.25 Å/px: 25 e- per pixel at the mean
    noisy = apply_noise(np.full((256, 256), 100.0), "haadf", p, np.random.default_rng(0), pixel_size_A=0.25)
    assert noisy.std() == pytest.approx(100.0 / 5.0, rel=0.05)


# ------------------------------------------------------------------ the published STEM formulas, pinned
def test_scan_std_at_0_and_80_is_the_published_line():
    """std(0) = 4 (b + 0.6) − 16 and std(80) = 4 (40 k + b + 0.6) − 16 (generate_haadf.py: the k term at 40)."""
    assert scan_std(0.0, 0.0982, 4.4123) == pytest.approx(4.0492)
    assert scan_std(80.0, 0.0982, 4.4123) == pytest.approx(19.7612)  # the paper's HAADF means, not 35.5
    assert scan_std(80.0, 0.04, 6.2) == pytest.approx(17.6)  # BF means
    assert scan_std(40.0, 0.1, 5.0) == pytest.approx(4 * (20 * 0.1 + 5.6) - 16)  # linear in between
    assert scan_std(0.0, 0.2, 3.0) == 0.0 and scan_std(80.0, -0.2, 4.0) == 0.0  # floored at 0


@pytest.mark.parametrize(("width", "knots"), [(256, 26), (64, 7), (100, 11), (128, 13), (512, 52), (1024, 103)])
def test_scan_spline_has_int_w_over_10_plus_1_knots(width, knots):
    assert knot_count(width) == knots == int(width / 10 + 1)
    basis = spline_basis(width)
    assert basis.shape == (width, knots)
    np.testing.assert_allclose(basis[0], np.eye(knots)[0], atol=1e-12)  # first and last pixel sit on a knot
    np.testing.assert_allclose(basis[-1], np.eye(knots)[-1], atol=1e-12)


def test_scan_spline_knots_are_spread_evenly_over_the_row():
    basis = spline_basis(101)  # 11 knots on linspace(0, 10, 101): knot i at pixel 10 i
    np.testing.assert_allclose(basis[::10], np.eye(11), atol=1e-12)
    assert np.all(np.abs(basis.sum(axis=1) - 1.0) < 1e-12)  # a constant knot vector stays constant


def test_sobel_magnitude_is_the_3x3_kernel_with_a_mirrored_border():
    """cv2.Sobel(ksize=3) with its default border (reflect-101: ``gfedcb|abcdefgh|gfedcba``)."""
    img = np.random.default_rng(0).random((9, 11)) * 100
    pad = np.pad(img, 1, mode="reflect")  # numpy's "reflect" does not repeat the edge: reflect-101
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    gx = sum(kx[i, j] * pad[i:i + 9, j:j + 11] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * pad[i:i + 9, j:j + 11] for i in range(3) for j in range(3))
    np.testing.assert_allclose(sobel_magnitude(img), np.hypot(gx, gy), rtol=1e-12, atol=1e-9)
    ramp = np.tile(np.arange(12.0), (6, 1))
    g = sobel_magnitude(ramp)
    assert np.all(g[:, 1:-1] == 8.0) and np.all(g[:, [0, -1]] == 0.0)


def test_detector_clips_to_0_255_and_truncates_to_8_bit():
    out = Detector()(np.array([[-3.2, 0.7, 1.99, 254.99, 255.0, 300.0]]), None)
    np.testing.assert_array_equal(out, [[0, 0, 1, 254, 255, 255]])


@pytest.mark.parametrize("mode", ["haadf", "bf"])
def test_stem_noise_is_the_published_generator_step_by_step(mode):
    """noisy = Q(clean ± (offset + A (v+1)/2) + scan + pointwise), the pointwise scale on the post-scan image,
    r = clip(Sobel(clean ± background) / 80), the same draws in the same order."""
    clean = lattice(96, peak=120.0) + (30.0 if mode == "haadf" else 0.0)
    clean = clean if mode == "haadf" else 240.0 - clean
    p = default_params(mode).replace(**{"background.offset": 12.0, "background.amplitude": 80.0,
                                       "scan.k": 0.15, "scan.b": 6.0, "pointwise.k": 0.06, "pointwise.b": 3.0,
                                       "pointwise.lam": 0.2})
    got = apply_noise(clean, mode, p, np.random.default_rng(5))

    rng = np.random.default_rng(5)
    sign = 1.0 if mode == "haadf" else -1.0
    signal = clean + sign * (12.0 + 80.0 * perlin_field(clean.shape, rng))
    basis = spline_basis(96)
    z = rng.standard_normal((2, 96, basis.shape[1])) @ basis.T
    r = np.clip(sobel_magnitude(signal) / 80.0, 0.0, 1.0)
    s0, s80 = 4 * (6.0 + 0.6) - 16, 4 * (40 * 0.15 + 6.0 + 0.6) - 16
    after_scan = signal + (1 - r) * s0 * z[0] + r * s80 * z[1]
    u = np.clip(rng.random(clean.shape), 1e-12, 1 - 1e-12)
    pointwise = np.maximum(0.06 * after_scan + 3.0, 0.0) * (u**0.2 - (1 - u) ** 0.2) / 0.2
    expected = np.floor(np.clip(after_scan + pointwise, 0.0, 255.0))
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert got.min() >= 0 and got.max() <= 255 and np.all(got == np.round(got))


def test_bf_noise_free_image_is_darkened_by_the_background():
    p = default_params("bf").replace(**{"scan.k": 0.0, "scan.b": 3.4, "pointwise.k": 0.0, "pointwise.b": 0.0,
                                        "detector.quantize": False, "background.offset": 20.0})
    clean = np.full((64, 64), 250.0)
    out = apply_noise(clean, "bf", p, np.random.default_rng(1))
    field = perlin_field((64, 64), np.random.default_rng(1))
    np.testing.assert_allclose(out, 250.0 - 20.0 - 75.0 * field, rtol=1e-6)
    assert out.max() < 250.0 - 20.0 - 75.0 * 0.25
