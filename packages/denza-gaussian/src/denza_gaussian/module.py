"""DenZa-Gaussian reconstruction: configuration, initialization, LightningModule and the fitting driver.

All quantities are in the units of :mod:`denza_gaussian.projector` (voxels); intensities are rescaled internally so
that the initial SIRT volume has its 99.9th percentile at 1, and scaled back on output (volume in tilt-intensity units
per voxel, reprojections in tilt-intensity units).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.spatial import cKDTree

from . import classical
from .losses import closed_form_gamma, fourier_amplitude_loss, ssim2d, tv3d
from .projector import project, voxelize
from .strategy import DenzaStrategy, softplus_inverse


class DenzaConfig(BaseModel):
    """Hyper-parameters of a DenZa-Gaussian fit (defaults: see benchmarks/results/denza.md)."""

    model_config = ConfigDict(extra="forbid")

    iterations: int | None = Field(None, ge=1, description="optimization steps (None: 6 per training view, 200–400)")
    views_per_step: int = Field(4, ge=1, description="tilts rendered per step")
    n_init: int | None = Field(None, ge=16, description="initial Gaussians (None: seedable voxels / 40, 2500–20000)")
    init_sirt_iterations: int = Field(30, ge=1)
    init_threshold: float = Field(0.1, ge=0.0, le=1.0, description="fraction of the SIRT p99.9 for seeding")
    lambda_ssim: float = Field(0.2, ge=0.0)
    lambda_fourier: float = Field(0.1, ge=0.0)
    lambda_tv: float = Field(1.0, ge=0.0, description="3-D TV weight on a random block, times thickness/64 (0: off)")
    tv_block_fraction: float = Field(0.375, gt=0, le=1, description="TV block edge as a fraction of each volume axis")
    use_gamma: bool = Field(True, description="scattering view normalization γ")
    learn_gamma: bool = Field(True, description="refine γ as a learnable per-view factor")
    lambda_gamma_prior: float = Field(1.0, ge=0.0, description="weight of (log γ_refine)² pulling it to 1")
    lr_means: float = Field(0.05, gt=0, description="voxels")
    lr_scales: float = Field(0.01, gt=0, description="log σ")
    lr_quats: float = Field(0.002, gt=0)
    lr_denza: float = Field(0.02, gt=0, description="pre-softplus denza")
    lr_gamma: float = Field(0.005, gt=0)
    lr_final_fraction: float = Field(0.1, gt=0, le=1, description="exponential decay to this fraction of each lr")
    densify: bool = True
    densify_from: int = Field(100, ge=0)
    densify_until_fraction: float = Field(0.6, ge=0, le=1)
    densify_every: int = Field(100, ge=1)
    grow_quantile: float = Field(0.9, gt=0, lt=1, description="Gaussians above this gradient quantile grow")
    grow_scale3d: float = Field(1.5, gt=0, description="σ_max (voxels) below which a Gaussian is cloned, else split")
    prune_denza: float = Field(0.005, ge=0)
    prune_scale3d: float = Field(12.0, gt=0, description="σ_max (voxels) above which a Gaussian is pruned")
    max_gaussians: int = Field(40000, ge=16)
    min_scale: float = Field(1.25, gt=0, description="σ bounds in voxels (the floor smooths Poisson noise)")
    max_scale: float = Field(8.0, gt=0)
    max_radius: int = Field(32, ge=2, description="largest splat window half-width (px)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DenzaConfig:
        if self.min_scale >= self.max_scale:
            raise ValueError("min_scale must be < max_scale")
        return self


@dataclass
class FitResult:
    """Output of :func:`fit`: volume (Z,Y,X) and reprojections (C,H,W) in input intensity units, plus diagnostics.

    ``final_loss`` is the data loss (L1 + SSIM + Fourier terms, internal intensity scale) over all training views."""

    volume: np.ndarray
    reprojections: np.ndarray
    gamma: np.ndarray
    final_loss: float
    n_gaussians: int
    iterations: int
    seconds: float
    history: list = field(default_factory=list)


def init_gaussians(volume: np.ndarray, n_init: int | None, threshold: float, min_scale: float, max_scale: float,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Seed Gaussians from a classical volume ``(Z,Y,X)`` (values ~1): sample voxels where it exceeds ``threshold``
    with probability ∝ value, σ from the mean distance to the 3 nearest seeds, denza ∝ value scaled so that the Gaussian
    mass equals the volume's mass above threshold. Returns raw (unconstrained) parameters."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = volume.shape
    v = np.clip(volume, 0, None)
    cand = np.flatnonzero(v > threshold)
    if cand.size < 4:
        cand = np.argsort(v.ravel())[-max(4, v.size // 100):]
    n = int(n_init) if n_init is not None else int(np.clip(cand.size / 40, 2500, 20000))
    n = min(n, cand.size)
    w = v.ravel()[cand].astype(np.float64)
    pick = rng.choice(cand, size=n, replace=False, p=w / w.sum())
    k, i, j = np.unravel_index(pick, v.shape)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 3))
    xyz = np.stack([j + 0.5 - nx / 2, i + 0.5 - ny / 2, k + 0.5 - nz / 2], axis=-1) + jitter
    dist, _ = cKDTree(xyz).query(xyz, k=4)
    sigma = np.clip(0.5 * dist[:, 1:].mean(1), min_scale, max_scale)
    val = v.ravel()[pick]
    mass_target = float(v.ravel()[cand].sum())
    k_norm = mass_target / float((val * (2 * math.pi) ** 1.5 * sigma**3).sum())
    rho = np.maximum(val * k_norm, 1e-4)
    quats = np.zeros((n, 4))
    quats[:, 0] = 1.0
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {
        "means": t(xyz),
        "scales": t(np.log(np.repeat(sigma[:, None], 3, axis=1))),
        "quats": t(quats),
        "denza": softplus_inverse(t(rho)),
    }


class DenzaModule(L.LightningModule):
    """Gaussians fitted to training tilts with manual optimization (one Adam per parameter, exponential lr decay)."""

    def __init__(self, config: dict, tilts: torch.Tensor, angles_deg: torch.Tensor, gamma0: torch.Tensor,
                 init_params: dict[str, torch.Tensor], thickness: int):
        super().__init__()
        self.save_hyperparameters({"config": config, "thickness": thickness})
        self.cfg = DenzaConfig(**config)
        if self.cfg.iterations is None:
            self.cfg = self.cfg.model_copy(update={"iterations": auto_iterations(int(tilts.shape[0]))})
        self.automatic_optimization = False
        self.gaussians = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in init_params.items()})
        self.log_gamma = torch.nn.Parameter(torch.zeros(tilts.shape[0]), requires_grad=self.cfg.learn_gamma)
        self.register_buffer("obs", tilts.float())
        self.register_buffer("angles", angles_deg.float())
        self.register_buffer("gamma0", gamma0.float() if self.cfg.use_gamma else torch.ones_like(gamma0).float())
        self.register_buffer("data_range", tilts.flatten(1).amax(1) - tilts.flatten(1).amin(1))
        self.thickness = thickness
        c = self.cfg
        self.strategy = DenzaStrategy(
            refine_start_iter=c.densify_from,
            refine_stop_iter=int(c.densify_until_fraction * c.iterations) if c.densify else 0,
            refine_every=c.densify_every,
            grow_grad2d=0.0,
            grow_quantile=c.grow_quantile,
            grow_scale3d=c.grow_scale3d,
            prune_scale3d=c.prune_scale3d,
            prune_denza=c.prune_denza,
            max_gaussians=c.max_gaussians,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.history: list[dict] = []

    # -- parameters ---------------------------------------------------------------------------------------------
    def activated(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means, quats, scales σ voxels, denza ≥ 0) from the raw parameters (the one place of activation)."""
        g = self.gaussians
        scales = torch.exp(g["scales"].clamp(math.log(self.cfg.min_scale), math.log(self.cfg.max_scale)))
        return g["means"], g["quats"], scales, F.softplus(g["denza"])

    def log_refinement(self) -> torch.Tensor:
        """Learnable log-refinement δ of every view, mean-free: like the closed form (Π γ = 1) it only redistributes
        scattering between views; the overall scale belongs to the denza (else a term that shrinks the density,
        such as TV, is undone by a uniform γ > 1 and the volume comes out too dark)."""
        return self.log_gamma - self.log_gamma.mean()

    def gamma(self, idx: torch.Tensor) -> torch.Tensor:
        """γ of the views ``idx``: closed form × learnable refinement ``exp(δ)`` (1 when γ is off)."""
        if not self.cfg.use_gamma:
            return torch.ones(len(idx), device=self.obs.device)
        return self.gamma0[idx] * torch.exp(self.log_refinement()[idx])

    def render(self, angles_deg: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """γ-free projections (C,H,W) at any angles."""
        m, q, s, d = self.activated()
        return project(m, q, s, d, angles_deg, self.obs.shape[1], self.obs.shape[2], self.cfg.max_radius)

    @torch.no_grad()
    def volume(self, voxel: float = 1.0) -> torch.Tensor:
        """Voxelized density (Z,Y,X) (internal intensity units)."""
        m, q, s, d = self.activated()
        shape = (round(self.thickness / voxel), round(self.obs.shape[1] / voxel), round(self.obs.shape[2] / voxel))
        return voxelize(m, q, s, d, shape, voxel=voxel, max_radius=self.cfg.max_radius * 2)

    # -- optimization ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):  # noqa: D102
        c = self.cfg
        lrs = {"means": c.lr_means, "scales": c.lr_scales, "quats": c.lr_quats, "denza": c.lr_denza}
        self.opts = {k: torch.optim.Adam([self.gaussians[k]], lr=lr, eps=1e-15) for k, lr in lrs.items()}
        self.base_lr = dict(lrs)
        opts = list(self.opts.values())
        if c.use_gamma and c.learn_gamma:
            self.gamma_opt = torch.optim.Adam([self.log_gamma], lr=c.lr_gamma)
            opts.append(self.gamma_opt)
        else:
            self.gamma_opt = None
        return opts

    def loss_terms(self, pred: torch.Tensor, obs: torch.Tensor, data_range: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1, 1−SSIM and Fourier-amplitude terms of γ-scaled predictions against observed tilts."""
        c = self.cfg
        terms = {"l1": (pred - obs).abs().mean()}
        if c.lambda_ssim > 0:
            terms["ssim"] = 1.0 - ssim2d(pred, obs, data_range)
        if c.lambda_fourier > 0:
            terms["fourier"] = fourier_amplitude_loss(pred, obs)
        return terms

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of loss terms."""
        c = self.cfg
        weights = {"l1": 1.0, "ssim": c.lambda_ssim, "fourier": c.lambda_fourier, "tv": c.lambda_tv,
                   "gamma_prior": c.lambda_gamma_prior}
        return sum(weights[k] * v for k, v in terms.items())

    def training_step(self, batch, batch_idx):  # noqa: D102
        c = self.cfg
        step = int(batch_idx)
        decay = c.lr_final_fraction ** (step / max(1, c.iterations - 1))
        for k, opt in self.opts.items():
            opt.param_groups[0]["lr"] = self.base_lr[k] * decay
        idx = batch.to(self.obs.device)
        pred, info = self.render(self.angles[idx])
        pred = pred * self.gamma(idx)[:, None, None]
        terms = self.loss_terms(pred, self.obs[idx], self.data_range[idx])
        if c.lambda_tv > 0:
            # the data terms are line integrals, which grow with the depth: scale TV alike (64 voxels = 1)
            terms["tv"] = self._tv_block(c.tv_block_fraction) * (self.thickness / 64)
        if self.gamma_opt is not None:
            terms["gamma_prior"] = (self.log_refinement() ** 2).mean()
        loss = self.total_loss(terms)
        self.strategy.step_pre_backward(self.gaussians, self.opts, self.strategy_state, step, info)
        self.manual_backward(loss)
        for opt in self.opts.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.gamma_opt is not None:
            self.gamma_opt.step()
            self.gamma_opt.zero_grad(set_to_none=True)
        self.strategy.step_post_backward(self.gaussians, self.opts, self.strategy_state, step, info, packed=False)
        with torch.no_grad():
            self.gaussians["quats"].data = F.normalize(self.gaussians["quats"].data, dim=-1)
        n = len(self.gaussians["means"])
        self.log("loss", loss.detach(), prog_bar=True, on_step=True)
        self.log("N", float(n), prog_bar=True, on_step=True)
        if step % 50 == 0 or step == c.iterations - 1:
            self.history.append({"step": step, "loss": float(loss.detach()), "n_gaussians": n})
        self.last_loss = float(loss.detach())

    def _tv_block(self, fraction: float) -> torch.Tensor:
        """3-D TV of the density on a random block of ``fraction`` of each axis (differentiable voxelization of the
        Gaussians near it); a fixed fraction keeps the regularized share of the volume the same at every size."""
        m, q, s, d = self.activated()
        dims = (self.thickness, self.obs.shape[1], self.obs.shape[2])  # z, y, x
        size = [max(4, min(n, round(fraction * n))) for n in dims]
        lo = [int(torch.randint(0, n - b + 1, (1,))) for n, b in zip(dims, size)]
        centre = torch.tensor([lo[a] + size[a] / 2 - dims[a] / 2 for a in (2, 1, 0)], device=m.device)
        half = torch.tensor([size[2] / 2, size[1] / 2, size[0] / 2], device=m.device)
        near = ((m - centre).abs() < half + 3 * s.max(-1).values[:, None]).all(-1)
        if not bool(near.any()):
            return torch.zeros((), device=m.device)
        vol = voxelize(m[near] - centre, q[near], s[near], d[near], tuple(size), max_radius=self.cfg.max_radius)
        return tv3d(vol)


def auto_iterations(n_views: int) -> int:
    """Default number of steps: 6 per training view, between 200 and 400 (longer fits start to follow the noise)."""
    return int(np.clip(6 * n_views, 200, 400))


def _view_batches(n_train: int, views_per_step: int, iterations: int, seed: int) -> torch.Tensor:
    """Deterministic (iterations, B) view indices: shuffled passes over the training views."""
    g = torch.Generator().manual_seed(seed)
    b = min(views_per_step, n_train)
    order = torch.cat([torch.randperm(n_train, generator=g) for _ in range(iterations * b // n_train + 2)])
    return order[: iterations * b].reshape(iterations, b)


def fit(tilts: np.ndarray, angles_deg: np.ndarray, thickness: int, config: DenzaConfig | None = None,
        gamma0: np.ndarray | None = None, predict_angles_deg: np.ndarray | None = None,
        predict_gamma: np.ndarray | None = None, device: str | torch.device = "cpu",
        progress: bool = True) -> FitResult:
    """Fit DenZa-Gaussians to background-free tilts ``(C,H,W)`` at ``angles_deg`` (tilt axis = image rows).

    ``gamma0``: closed-form γ of the training views (default :func:`closed_form_gamma` of ``tilts``).
    Reprojections are returned at ``predict_angles_deg`` (default: the training angles), multiplied by
    ``predict_gamma`` (default: the fitted γ at training angles, else 1).
    """
    cfg = config or DenzaConfig()
    if cfg.iterations is None:
        cfg = cfg.model_copy(update={"iterations": auto_iterations(len(angles_deg))})
    t0 = time.perf_counter()
    L.seed_everything(cfg.seed, verbose=False)
    tilts = np.asarray(tilts, np.float32)
    angles_deg = np.asarray(angles_deg, np.float64)
    n_views, h, w = tilts.shape
    g0 = closed_form_gamma(torch.from_numpy(tilts)).numpy() if gamma0 is None else np.asarray(gamma0, np.float32)
    if not cfg.use_gamma:
        g0 = np.ones_like(g0)
    init_vol = classical.reconstruct(tilts / g0[:, None, None], angles_deg, thickness, w, "sirt",
                                     cfg.init_sirt_iterations)
    scale = float(np.percentile(init_vol, 99.9))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(max(np.abs(tilts).max() / max(thickness, 1), 1e-12))
    init = init_gaussians(init_vol / scale, cfg.n_init, cfg.init_threshold, cfg.min_scale, cfg.max_scale, cfg.seed)
    module = DenzaModule(cfg.model_dump(mode="json"), torch.from_numpy(tilts / scale), torch.from_numpy(angles_deg),
                         torch.from_numpy(g0), init, thickness)
    batches = _view_batches(n_views, cfg.views_per_step, cfg.iterations, cfg.seed)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    dev = torch.device(device)
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            trainer = L.Trainer(
                accelerator="cuda" if dev.type == "cuda" else "cpu", devices=1, max_epochs=1, logger=False,
                enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                deterministic=dev.type == "cpu", num_sanity_val_steps=0, limit_val_batches=0,
            )
            trainer.fit(module, loader)
    finally:  # Lightning sets process-wide state; give it back
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        torch.use_deterministic_algorithms(was_deterministic)
    module = module.to(dev).eval()
    with torch.no_grad():
        pa = angles_deg if predict_angles_deg is None else np.asarray(predict_angles_deg, np.float64)
        reproj, _ = module.render(torch.as_tensor(pa, dtype=torch.float32, device=dev))
        if predict_gamma is not None:
            pg = torch.as_tensor(np.asarray(predict_gamma), dtype=torch.float32, device=dev)
        elif predict_angles_deg is None:
            pg = module.gamma(torch.arange(n_views, device=dev))
        else:
            pg = torch.ones(len(pa), device=dev)
        reproj = reproj * pg[:, None, None]
        vol = module.volume()
        idx = torch.arange(n_views, device=dev)
        gamma = module.gamma(idx).cpu().numpy()
        train_pred = module.render(module.angles)[0] * module.gamma(idx)[:, None, None]
        final_loss = float(module.total_loss(module.loss_terms(train_pred, module.obs, module.data_range)))
    return FitResult(
        volume=(vol.cpu().numpy() * scale).astype(np.float32),
        reprojections=(reproj.cpu().numpy() * scale).astype(np.float32),
        gamma=gamma,
        final_loss=final_loss,
        n_gaussians=int(len(module.gaussians["means"])),
        iterations=cfg.iterations,
        seconds=time.perf_counter() - t0,
        history=module.history,
    )
