"""DenZa fit: initialization, fitting, determinism, densification in a default run, γ, TV, config validation."""
from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch
from denza_gaussian.config import DenzaConfig
from denza_gaussian.fit import fit, heldout_score
from denza_gaussian.losses import tv3d
from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
from denza_gaussian.projector import gaussian_mass
from denza_gaussian.seeding import init_gaussians


@pytest.fixture(scope="module")
def tiny():
    vol = make_phantom("core_shell", 24, seed=0)
    angles = tilt_angles(9, 60.0)
    sim = simulate_tilts(vol, angles, peak_counts=None, gain_jitter=0.15, seed=3)
    return vol, angles, sim


def test_init_matches_the_mass_of_the_seed_volume():
    vol = make_phantom("cluster", 24, seed=1)
    p = init_gaussians(vol, None, 0.1, 1.0, 8.0, seed=0)
    mass = gaussian_mass(torch.nn.functional.softplus(p["denza"]), torch.exp(p["scales"])).sum().item()
    assert mass == pytest.approx(float(vol[vol > 0.1].sum()), rel=1e-3)
    assert p["means"].abs().max() < 12 and (torch.exp(p["scales"]) >= 1.0).all()



def test_init_density_follows_the_seedable_voxels_and_its_floor():
    vol = make_phantom("cluster", 48, seed=1)
    seedable = int((vol > 0.1).sum())

    def count(**kw):
        return len(init_gaussians(vol, None, 0.1, 0.5, 8.0, seed=0, **kw)["means"])

    floor = round(2500 * vol.size / 64**3)  # 48³: fewer than the absolute floor
    assert count(voxels_per_gaussian=4.0, min_per_64cubed=1, min_total=1) == int(seedable / 4.0)
    assert count(voxels_per_gaussian=1e6, min_per_64cubed=2500, min_total=1) == floor
    assert count(voxels_per_gaussian=1e6, min_per_64cubed=2500, min_total=floor + 300) == floor + 300
    assert count(voxels_per_gaussian=1e6, min_per_64cubed=2500) == 2500  # the default absolute floor
    assert count(voxels_per_gaussian=0.01, min_per_64cubed=1) == seedable  # at most one per seedable voxel
    cfg = DenzaConfig()
    assert (cfg.init_min_per_64cubed, cfg.init_min_total) == (2500, 2500)  # alike on a 64³ grid (README example)


def test_data_term_is_the_mean_absolute_or_the_root_mean_square_error(tiny):
    from denza_gaussian.model import DenzaModel
    from denza_gaussian.projector import SliceProjector

    vol, angles, sim = tiny
    init = init_gaussians(vol, None, 0.1, 0.5, 8.0, seed=0)
    proj = SliceProjector(24, 24, 24, angles)
    obs = torch.from_numpy(np.ascontiguousarray(sim["noisy"].transpose(0, 2, 1), np.float32))
    dr = obs.flatten(1).amax(1) - obs.flatten(1).amin(1)
    out = {}
    for term in ("l1", "l2"):
        cfg = DenzaConfig(data_term=term, use_gamma=False)
        m = DenzaModel(cfg, init, torch.ones(len(angles)), (24, 24, 24))
        with torch.no_grad():
            v = m.volume(layout="zxy")
            out[term] = float(m.loss_terms(v, proj, obs, dr)["data"])
            err = proj(v) - obs
    assert out["l1"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert out["l2"] == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-5)
    assert out["l2"] > out["l1"]  # RMS ≥ mean absolute, equal only for a constant |error|

def test_fit_explains_the_tilts_and_is_deterministic(tiny):
    vol, angles, sim = tiny
    cfg = DenzaConfig(iterations=60, lambda_tv=0.0)  # the history then holds the data loss alone
    a = fit(sim["noisy"], angles, 24, cfg, progress=False)
    b = fit(sim["noisy"], angles, 24, cfg, progress=False)
    assert a.volume.shape == (24, 24, 24) and a.reprojections.shape == (9, 24, 24)
    np.testing.assert_array_equal(a.volume, b.volume)
    assert a.history[-1]["loss"] < 0.5 * a.history[0]["loss"]
    rel = np.abs(a.reprojections - sim["noisy"]).mean() / sim["noisy"].mean()
    assert rel < 0.15
    assert np.corrcoef(a.volume.ravel(), vol.ravel())[0, 1] > 0.8


def test_a_default_15_view_fit_densifies_at_least_twice():
    vol = make_phantom("faceted", 24, seed=2)
    angles = tilt_angles(15, 70.0)
    sim = simulate_tilts(vol, angles, peak_counts=200.0, seed=1)
    res = fit(sim["noisy"] / sim["counts_per_unit"], angles, 24, DenzaConfig(), progress=False)
    grown = [r for r in res.refinements if r["cloned"] + r["split"] > 0]
    assert len(grown) >= 2, res.refinements
    assert res.n_gaussians > res.history[0]["n_gaussians"]


def test_a_run_stopped_at_a_refinement_step_does_not_end_on_it(tiny):
    vol, angles, sim = tiny
    cfg = DenzaConfig(iterations=50)
    last = cfg.refine_steps(50)[-1]
    res = fit(sim["noisy"], angles, 24, cfg.model_copy(update={"stop_at": last}), progress=False)
    assert [r["step"] for r in res.refinements] == cfg.refine_steps(50)[:-1]
    assert res.iterations == last


def test_tv_term_smooths_the_volume(tiny):
    vol, angles, sim = tiny
    tv = lambda r: float(tv3d(torch.from_numpy(r.volume)))  # noqa: E731
    cfg = DenzaConfig(iterations=60, lambda_tv=0.0)
    plain = fit(sim["noisy"], angles, 24, cfg, progress=False)
    smooth = fit(sim["noisy"], angles, 24, cfg.model_copy(update={"lambda_tv": 100.0}), progress=False)
    assert tv(smooth) < 0.9 * tv(plain)


def test_gamma_absorbs_view_gains(tiny):
    vol, angles, sim = tiny
    res = fit(sim["noisy"], angles, 24, DenzaConfig(iterations=60), progress=False)  # 40 was marginal on some CPUs
    expected = sim["gains"] / np.exp(np.mean(np.log(sim["gains"])))
    assert np.abs(res.gamma - expected).max() < 0.03
    assert np.exp(np.mean(np.log(res.gamma))) == pytest.approx(1.0, abs=1e-4)
    no_gamma = fit(sim["noisy"], angles, 24, DenzaConfig(iterations=60, use_gamma=False), progress=False)
    err = lambda r: np.abs(r.reprojections - sim["noisy"]).mean()  # noqa: E731
    assert err(res) < 0.8 * err(no_gamma)


def test_heldout_curve_and_early_stop(tiny):
    vol, angles, sim = tiny
    train = np.ones(9, bool)
    train[[2, 6]] = False
    cfg = DenzaConfig(iterations=40, cv_eval_every=10)
    res = fit(sim["noisy"][train], angles[train], 24, cfg, heldout=(sim["noisy"][~train], angles[~train]),
              progress=False)
    assert [s for s, _ in res.heldout_curve] == [10, 20, 30, 40]
    assert res.heldout_curve[-1][1] < res.heldout_curve[0][1]
    short = fit(sim["noisy"], angles, 24, cfg.model_copy(update={"stop_at": 15}), progress=False)
    assert short.iterations == 15


def test_heldout_score_ignores_a_view_gain():
    rng = np.random.default_rng(0)
    obs = rng.random((3, 8, 8))
    assert heldout_score(obs * np.array([2.0, 0.5, 1.3])[:, None, None], obs) < 1e-12
    assert heldout_score(obs + 0.1 * rng.random((3, 8, 8)), obs) > 1e-4


def test_config_is_validated():
    with pytest.raises(pydantic.ValidationError):
        DenzaConfig(lambda_fourrier=0.1)
    with pytest.raises(pydantic.ValidationError):
        DenzaConfig(min_scale=3.0, max_scale=2.0)
    with pytest.raises(pydantic.ValidationError):
        DenzaConfig(iterations=0)
    with pytest.raises(pydantic.ValidationError):
        DenzaConfig(tv_candidates=(-1.0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_agrees_with_the_cpu(tiny):
    vol, angles, sim = tiny
    cfg = DenzaConfig(iterations=30, lambda_tv=1.0, densify=False)
    cpu = fit(sim["noisy"], angles, 24, cfg, progress=False)
    gpu = fit(sim["noisy"], angles, 24, cfg, device="cuda", progress=False)
    assert np.corrcoef(cpu.volume.ravel(), gpu.volume.ravel())[0, 1] > 0.99
    assert abs(gpu.final_loss - cpu.final_loss) < 0.05 * cpu.final_loss
