"""Cramér–Rao bounds of the HRTEM noise parameters (em_noise.bounds)."""
import numpy as np
import pytest

from em_noise.bounds import hrtem_cramer_rao
from em_noise.noise import default_params


def _params(k=0.01, b=3.0, sigma_c=1.0, dose=None, mtf=0.0):
    p = default_params("hrtem")
    p["pointwise"].update(k=k, b=b)
    p["column"]["sigma"] = sigma_c
    p["dose_e_per_A2"], p["mtf_sigma_px"] = dose, mtf
    return p


def _image(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return 60.0 + 140.0 * rng.random((n, n))


def test_white_noise_alone_matches_the_closed_form():
    clean = _image()
    sd = 0.02 * clean.ravel() + 2.0
    design = np.stack([clean.ravel(), np.ones(clean.size)])
    white_only = np.sqrt(np.diag(np.linalg.inv((2.0 / sd**2 * design) @ design.T)))
    p0 = _params(k=0.02, b=2.0, sigma_c=0.0)
    se0 = hrtem_cramer_rao(clean, p0, strip_px=256, known=("column.sigma",))
    assert se0["pointwise.k"] == pytest.approx(white_only[0], rel=1e-6)
    assert se0["pointwise.b"] == pytest.approx(white_only[1], rel=1e-6)
    # column noise of known σ_c is still noise: the bound on k can only widen
    se = hrtem_cramer_rao(clean, _params(k=0.02, b=2.0, sigma_c=1.0), strip_px=256, known=("column.sigma",))
    assert se["pointwise.k"] > se0["pointwise.k"]


def test_shot_noise_and_an_unknown_dose_cost_precision_on_k():
    clean = _image(48)
    shot = _params(dose=3000.0, mtf=0.5)
    free = hrtem_cramer_rao(clean, shot, pixel_size_A=0.2, strip_px=576)
    dose_known = hrtem_cramer_rao(clean, shot, pixel_size_A=0.2, strip_px=576, known=("dose_e_per_A2",))
    no_shot = hrtem_cramer_rao(clean, _params(mtf=0.5), strip_px=576)
    assert set(free) == {"dose_e_per_A2", "pointwise.k", "pointwise.b", "column.sigma"}
    assert "dose_e_per_A2" not in no_shot
    assert free["pointwise.k"] > dose_known["pointwise.k"] > no_shot["pointwise.k"]


def test_column_sigma_matches_the_sample_variance_bound():
    # only column noise free: each column is one draw of N(0, σ_c²) seen through the white noise; with the white
    # noise tiny the bound tends to SE(σ_c) = σ_c / sqrt(2 · number of columns)
    clean = np.full((32, 32), 100.0)
    p = _params(k=0.0, b=1e-3, sigma_c=2.0)
    se = hrtem_cramer_rao(clean, p, strip_px=256, known=("pointwise.k", "pointwise.b"))
    assert se["column.sigma"] == pytest.approx(2.0 / np.sqrt(2 * 32), rel=1e-3)


def test_bad_input():
    with pytest.raises(ValueError, match="at most 256 rows"):
        hrtem_cramer_rao(np.ones((300, 8)), _params(), strip_px=256)
    with pytest.raises(ValueError, match="at least 8"):
        hrtem_cramer_rao(np.ones((4, 40)), _params(), strip_px=256)
    with pytest.raises(ValueError, match="pixel_size_A"):
        hrtem_cramer_rao(_image(16), _params(dose=100.0), strip_px=256)
