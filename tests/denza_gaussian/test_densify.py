"""Densification: mass-conserving clone/split, pruning, optimizer state carried, schedule relative to the run."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from denza_gaussian.config import DenzaConfig
from denza_gaussian.densify import Densifier
from denza_gaussian.optim import Adam
from denza_gaussian.projector import gaussian_mass
from denza_gaussian.seeding import softplus_inverse


def _setup(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * 16,
        "scales": torch.log(0.6 + 2.0 * torch.rand(n, 3, generator=g)),
        "quats": torch.randn(n, 4, generator=g),
        "denza": softplus_inverse(0.2 + torch.rand(n, generator=g)),
    }
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in raw.items()})
    opt = Adam(dict(params), {k: 1e-3 for k in params})
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()
    return params, opt


def _mass(params):
    return gaussian_mass(F.softplus(params["denza"]), torch.exp(params["scales"])).sum().item()


def test_grow_conserves_mass_and_carries_the_optimizer_state():
    params, opt = _setup()
    d = Densifier(grow_quantile=0.5, grow_scale3d=1.5, prune_denza=0.0, prune_scale3d=1e9, max_gaussians=1000)
    d.accumulate(torch.rand(40, 3, generator=torch.Generator().manual_seed(3)))
    m0 = _mass(params)
    counts = d.refine(params, opt)
    assert counts["cloned"] > 0 and counts["split"] > 0 and counts["pruned"] == 0
    assert len(params["means"]) == 40 + counts["cloned"] + counts["split"]
    assert abs(_mass(params) - m0) / m0 < 1e-5
    for k, p in params.items():
        assert opt.params[k] is p and opt.m[k].shape == p.shape and opt.v[k].shape == p.shape
    n_kept = 40 - counts["split"]
    assert (opt.m["means"][:n_kept] != 0).all() and (opt.m["means"][n_kept:] == 0).all()


def test_prune_removes_faint_and_huge_gaussians():
    params, opt = _setup(n=20, seed=2)
    with torch.no_grad():
        params["denza"][:3] = softplus_inverse(torch.full((3,), 1e-5))
        params["scales"][3] = torch.log(torch.tensor([50.0, 1.0, 1.0]))
    d = Densifier(grow_quantile=0.99, grow_scale3d=1.5, prune_denza=1e-3, prune_scale3d=20.0, max_gaussians=20)
    d.accumulate(torch.zeros(20, 3))
    assert d.refine(params, opt)["pruned"] == 4
    assert len(params["means"]) == 16 and opt.m["denza"].shape == (16,)


def test_max_gaussians_caps_growth():
    params, opt = _setup(n=30)
    d = Densifier(grow_quantile=0.1, grow_scale3d=1.5, prune_denza=0.0, prune_scale3d=1e9, max_gaussians=33)
    d.accumulate(torch.rand(30, 3))
    d.refine(params, opt)
    assert len(params["means"]) <= 33 + 3  # splits replace their parent by two


def test_refinements_are_spread_over_any_run_length():
    cfg = DenzaConfig()
    for n in (40, 150, 400):
        steps = cfg.refine_steps(n)
        assert len(steps) == cfg.densify_rounds
        assert min(steps) >= 0.1 * n - 1 and max(steps) <= 0.6 * n + 1
    assert DenzaConfig(densify=False).refine_steps(150) == []
