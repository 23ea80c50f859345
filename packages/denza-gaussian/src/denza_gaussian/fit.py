"""The DenZa-Gaussian fitting driver: SIRT seed, full-batch Adam over all training views, densification, held-out
monitoring.

Volumes and reprojections come back in the units of the input tilts (volume: tilt intensity per voxel); internally
intensities are divided by the 99.9th percentile of the initial SIRT volume.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import classical
from .config import DenzaConfig
from .densify import KEYS, Densifier
from .model import DenzaModel
from .normalization import closed_form_gamma, interpolate_gamma
from .optim import Adam
from .projector import SliceProjector
from .seeding import init_gaussians


@dataclass
class FitResult:
    """Output of :func:`fit`: volume (Z,Y,X) and reprojections (C,H,W) in input intensity units, plus diagnostics.

    ``final_loss``: data loss (data misfit + SSIM + Fourier terms, internal scale) over the training views.
    ``heldout_curve``: ``(step, score)`` pairs of :func:`heldout_score` on the monitored views (empty without
    ``heldout``). ``refinements``: counts of each densification round."""

    volume: np.ndarray
    reprojections: np.ndarray
    gamma: np.ndarray
    final_loss: float
    n_gaussians: int
    iterations: int
    seconds: float
    history: list = field(default_factory=list)
    heldout_curve: list = field(default_factory=list)
    refinements: list = field(default_factory=list)


class FitCancelled(Exception):
    """Raised by :func:`fit` at the next step once its ``cancel`` event is set."""


def heldout_score(pred: np.ndarray | torch.Tensor, obs: np.ndarray | torch.Tensor) -> float:
    """Mean squared error of predictions against held-out views after fitting one scale per view (so that the unknown
    gain of a view it has never seen does not decide), relative to the views' mean square. Lower is better."""
    p = torch.as_tensor(pred, dtype=torch.float64).flatten(1)
    o = torch.as_tensor(obs, dtype=torch.float64).flatten(1)
    alpha = (p * o).sum(1) / (p * p).sum(1).clamp_min(1e-30)
    return float(((alpha[:, None] * p - o) ** 2).mean() / (o**2).mean().clamp_min(1e-30))


def _optimizer(model: DenzaModel, cfg: DenzaConfig) -> tuple[Adam, dict[str, float]]:
    lrs = {"means": cfg.lr_means, "scales": cfg.lr_scales, "quats": cfg.lr_quats, "denza": cfg.lr_denza}
    params = {k: model.gaussians[k] for k in KEYS}
    if model.log_gamma.requires_grad:
        params["gamma"] = model.log_gamma
        lrs["gamma"] = cfg.lr_gamma
    return Adam(params, lrs), lrs


def fit(tilts: np.ndarray, angles_deg: np.ndarray, thickness: int, config: DenzaConfig | None = None,
        gamma0: np.ndarray | None = None, predict_angles_deg: np.ndarray | None = None,
        predict_gamma: np.ndarray | None = None, heldout: tuple[np.ndarray, np.ndarray] | None = None,
        device: str | torch.device = "cpu", progress: bool = True, desc: str = "denza",
        cancel=None) -> FitResult:
    """Fit DenZa-Gaussians to background-free tilts ``(C,H,W)`` at ``angles_deg`` (tilt axis = image rows).

    ``gamma0``: closed-form γ of the training views (default: :func:`closed_form_gamma` of ``tilts``). Reprojections
    are returned at ``predict_angles_deg`` (default: the training angles), times ``predict_gamma`` (default: the fitted
    γ at the training angles, else γ interpolated over angle from the training views). ``heldout = (tilts, angles)``:
    views to score with :func:`heldout_score` every ``cv_eval_every`` steps (they are never trained on).
    ``cancel``: a ``threading.Event``; once set, the fit raises :class:`FitCancelled` at its next step.
    """
    cfg = config or DenzaConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    tilts = np.asarray(tilts, np.float32)
    angles_deg = np.asarray(angles_deg, np.float64)
    n_views, h, w = tilts.shape
    g0 = closed_form_gamma(tilts) if gamma0 is None else np.asarray(gamma0, np.float32)
    if not cfg.use_gamma:
        g0 = np.ones_like(g0)
    init_vol = classical.reconstruct(tilts / g0[:, None, None], angles_deg, thickness, w, "sirt",
                                     cfg.init_sirt_iterations)
    scale = float(np.percentile(init_vol, 99.9))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(max(np.abs(tilts).max() / max(thickness, 1), 1e-12))
    init = init_gaussians(init_vol / scale, cfg.n_init, cfg.init_threshold, cfg.min_scale, cfg.max_scale, cfg.seed,
                          cfg.init_voxels_per_gaussian, cfg.init_min_per_64cubed, cfg.init_min_total)
    model = DenzaModel(cfg, init, torch.from_numpy(g0), (thickness, h, w)).to(dev)
    proj = SliceProjector(thickness, w, w, angles_deg, dev)
    obs = torch.from_numpy(np.ascontiguousarray(tilts.transpose(0, 2, 1) / scale)).to(dev)  # (C, W, H)
    data_range = obs.flatten(1).amax(1) - obs.flatten(1).amin(1)
    if heldout is not None:
        held_obs = np.asarray(heldout[0], np.float32) / scale
        held_proj = SliceProjector(thickness, w, w, np.asarray(heldout[1], np.float64), dev)
    opt, base_lr = _optimizer(model, cfg)
    densifier = Densifier(cfg.grow_quantile, cfg.grow_scale3d, cfg.prune_denza, cfg.prune_scale3d,
                          cfg.max_gaussians, cfg.seed)
    n_steps = cfg.iterations
    stop = min(n_steps, cfg.stop_at or n_steps)
    refine_at = set(cfg.refine_steps(n_steps))
    history, curve, refinements = [], [], []
    bar = _progress(stop, desc) if progress else None
    loss_value = float("nan")
    for step in range(stop):
        if cancel is not None and cancel.is_set():
            if bar is not None:
                bar.close()
            raise FitCancelled(desc)
        decay = cfg.lr_final_fraction ** (step / max(1, n_steps - 1))
        for k, lr in base_lr.items():
            opt.lr[k] = lr * decay
        vol = model.volume(layout="zxy")
        terms = model.loss_terms(vol, proj, obs, data_range)
        loss = model.total_loss(terms)
        opt.zero_grad()
        loss.backward()
        if refine_at:
            densifier.accumulate(model.gaussians["means"].grad)
        opt.step()
        with torch.no_grad():
            model.gaussians["quats"].data = torch.nn.functional.normalize(model.gaussians["quats"].data, dim=-1)
        loss_value = float(loss.detach())
        if heldout is not None and ((step + 1) % cfg.cv_eval_every == 0 or step + 1 == stop):
            with torch.no_grad():
                curve.append((step + 1, heldout_score(held_proj(model.volume(layout="zxy")).cpu().transpose(1, 2),
                                                      held_obs)))
        if step + 1 in refine_at and step + 1 < stop:  # never end a run on fresh, unfitted clones and splits
            refinements.append({"step": step + 1, **densifier.refine(model.gaussians, opt)})
        n = int(len(model.gaussians["means"]))
        if step % 10 == 0 or step + 1 == stop:
            history.append({"step": step + 1, "loss": loss_value, "n_gaussians": n})
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.4g}", gaussians=n, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()

    model.eval()
    with torch.no_grad():
        gamma = model.gamma().cpu().numpy()
        vol_zxy = model.volume(layout="zxy")
        final_loss = float(model.total_loss(model.loss_terms(vol_zxy, proj, obs, data_range), data_only=True))
        pa = angles_deg if predict_angles_deg is None else np.asarray(predict_angles_deg, np.float64)
        reproj = SliceProjector(thickness, w, w, pa, dev)(vol_zxy).cpu().numpy().transpose(0, 2, 1)
        if predict_gamma is not None:
            pg = np.asarray(predict_gamma, np.float32)
        elif predict_angles_deg is None:
            pg = gamma
        else:
            pg = interpolate_gamma(angles_deg, gamma, pa)
        reproj = reproj * pg[:, None, None]
        volume = vol_zxy.cpu().numpy().transpose(0, 2, 1)
    return FitResult(
        volume=np.ascontiguousarray(volume * scale, np.float32),
        reprojections=np.ascontiguousarray(reproj * scale, np.float32),
        gamma=gamma,
        final_loss=final_loss,
        n_gaussians=int(len(model.gaussians["means"])),
        iterations=stop,
        seconds=time.perf_counter() - t0,
        history=history,
        heldout_curve=curve,
        refinements=refinements,
    )


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)
