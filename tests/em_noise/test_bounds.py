"""Cramér–Rao bounds of the HRTEM noise parameters (em_noise.bounds)."""
import numpy as np
import pytest
from em_noise.bounds import hrtem_cramer_rao, noise_covariance
from em_noise.noise import MTFBlur, PoissonNoise, apply_noise
from em_noise.params import default_params


def _params(k=0.01, b=3.0, sigma_c=1.0, dose=None, mtf=0.0, read=0.0):
    p = default_params("hrtem").to_dict()
    p["pointwise"].update(k=k, b=b)
    p["column"]["sigma"] = sigma_c
    p["dose_e_per_A2"], p["mtf_sigma_px"], p["read_sigma"] = dose, mtf, read
    return p


def _image(n=32, seed=0, w=None):
    rng = np.random.default_rng(seed)
    return 60.0 + 140.0 * rng.random((n, w or n))


def _covariance_from_the_noise_models(clean, k, b, sigma_c, dose, mtf, pix):
    """Σ built from em_noise.noise's own objects, independently of em_noise.bounds."""
    h, w = clean.shape
    blur = MTFBlur(mtf)
    g = np.stack([blur.filter(e.reshape(h, w)).ravel() for e in np.eye(h * w)], axis=1)
    poisson = PoissonNoise(dose, pix)
    unit = poisson.dose_e_per_A2 * poisson.pixel_size_A**2 / clean.mean()  # counts per intensity unit
    sd = k * blur.filter(clean).ravel() + b
    col = np.tile(np.arange(w), h)
    return g @ np.diag(clean.ravel() / unit) @ g.T + np.diag(sd**2) + sigma_c**2 * np.equal.outer(col, col)


def test_fisher_information_matches_finite_differences_of_the_noise_model():
    clean, pix = _image(12, seed=3), 0.2
    theta = np.array([50.0, 0.03, 2.0, 1.5])  # dose, k, b, σ_c
    cov = lambda t: _covariance_from_the_noise_models(clean, t[1], t[2], t[3], t[0], 0.7, pix)  # noqa: E731
    prec = np.linalg.inv(cov(theta))
    steps = theta * 1e-4
    deriv = []
    for i in range(4):
        up, dn = theta.copy(), theta.copy()
        up[i] += steps[i]
        dn[i] -= steps[i]
        deriv.append(prec @ ((cov(up) - cov(dn)) / (2 * steps[i])))
    fisher = np.array([[0.5 * np.sum(a * b.T) for b in deriv] for a in deriv])
    expected = np.sqrt(np.diag(np.linalg.inv(fisher)))
    got = hrtem_cramer_rao(clean, _params(k=0.03, b=2.0, sigma_c=1.5, dose=50.0, mtf=0.7), pixel_size_A=pix,
                           strip_px=144)
    for name, value in zip(("dose_e_per_A2", "pointwise.k", "pointwise.b", "column.sigma"), expected):
        assert got[name] == pytest.approx(value, rel=1e-5)


def test_covariance_matches_the_noise_pipeline():
    clean, pix = _image(6, seed=1), 0.2
    p = _params(k=0.03, b=2.0, sigma_c=1.5, dose=200.0, mtf=0.6, read=1.0)
    sigma = noise_covariance(clean, p, pix)
    rng = np.random.default_rng(0)
    draws = np.stack([(apply_noise(clean, "hrtem", p, rng, pixel_size_A=pix) - clean).ravel()
                      for _ in range(4000)])
    # the pipeline blurs the clean image too: compare the noise around the blurred clean image
    draws -= draws.mean(axis=0)
    sample = draws.T @ draws / (len(draws) - 1)
    scale = np.sqrt(np.outer(np.diag(sigma), np.diag(sigma)))
    assert np.mean(np.diag(sample) / np.diag(sigma)) == pytest.approx(1.0, abs=0.03)
    assert np.max(np.abs(sample - sigma) / scale) < 0.08  # sampling error of 4000 draws ≈ 0.016 per entry


def test_white_noise_alone_matches_the_closed_form():
    clean = _image()
    sd = 0.02 * clean.ravel() + 2.0
    design = np.stack([clean.ravel(), np.ones(clean.size)])
    white_only = np.sqrt(np.diag(np.linalg.inv((2.0 / sd**2 * design) @ design.T)))
    se0 = hrtem_cramer_rao(clean, _params(k=0.02, b=2.0, sigma_c=0.0), strip_px=256, known=("column.sigma",))
    assert se0["pointwise.k"] == pytest.approx(white_only[0], rel=1e-6)
    assert se0["pointwise.b"] == pytest.approx(white_only[1], rel=1e-6)


def test_column_sigma_matches_the_sample_variance_bound():
    # only column noise free: each column is one draw of N(0, σ_c²) seen through the white noise; with the white
    # noise tiny the bound tends to SE(σ_c) = σ_c / sqrt(2 · number of columns)
    clean = np.full((32, 32), 100.0)
    se = hrtem_cramer_rao(clean, _params(k=0.0, b=1e-3, sigma_c=2.0), strip_px=256,
                          known=("pointwise.k", "pointwise.b"))
    assert se["column.sigma"] == pytest.approx(2.0 / np.sqrt(2 * 32), rel=1e-3)


def test_shot_noise_and_an_unknown_dose_cost_precision_on_k():
    clean = _image(48)
    shot = _params(dose=3000.0, mtf=0.5)
    free = hrtem_cramer_rao(clean, shot, pixel_size_A=0.2, strip_px=576)
    dose_known = hrtem_cramer_rao(clean, shot, pixel_size_A=0.2, strip_px=576, known=("dose_e_per_A2",))
    no_shot = hrtem_cramer_rao(clean, _params(mtf=0.5), strip_px=576)
    assert set(free) == {"dose_e_per_A2", "pointwise.k", "pointwise.b", "column.sigma"}
    assert "dose_e_per_A2" not in no_shot
    assert free["pointwise.k"] > dose_known["pointwise.k"] > no_shot["pointwise.k"]


def test_bad_input():
    with pytest.raises(ValueError, match="crop it"):
        hrtem_cramer_rao(np.ones((600, 8)), _params())
    with pytest.raises(ValueError, match="at least 8"):
        hrtem_cramer_rao(np.ones((4, 40)), _params())
    with pytest.raises(ValueError, match="pixel_size_A"):
        hrtem_cramer_rao(_image(16), _params(dose=100.0))
    with pytest.raises(ValueError, match="unknown parameter"):
        hrtem_cramer_rao(_image(16), _params(), known=("pointwise.slope",))
    jitter = _params()
    jitter["jitter_px"] = 0.5
    with pytest.raises(ValueError, match="jitter"):
        hrtem_cramer_rao(_image(16), jitter)
