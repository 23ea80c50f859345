"""The DenZa-Gaussian model: Gaussians with denza, the view normalization γ, rendering and the loss terms.

Images are held transposed, ``(C, W, H)`` (detector columns first, tilt axis last), the order the slice projector
writes; the 2-D loss terms are symmetric in the two image axes, so this changes nothing but the memory layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import DenzaConfig
from .losses import fourier_amplitude, fourier_amplitude_loss, ssim2d, ssim_ref_stats, tv3d
from .projector import SliceProjector, voxelize


class DenzaModel(torch.nn.Module):
    """Gaussians (raw parameters) and the learnable γ refinement of the training views."""

    def __init__(self, cfg: DenzaConfig, init_params: dict[str, torch.Tensor], gamma0: torch.Tensor,
                 shape_zyx: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.shape = tuple(int(s) for s in shape_zyx)
        self.gaussians = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in init_params.items()})
        n_views = len(gamma0)
        self.log_gamma = torch.nn.Parameter(torch.zeros(n_views), requires_grad=cfg.use_gamma and cfg.learn_gamma)
        self.register_buffer("gamma0", gamma0.float() if cfg.use_gamma else torch.ones(n_views))
        self._ref_stats: dict = {}

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

    def gamma(self) -> torch.Tensor:
        """γ of the training views: closed form × learnable refinement ``exp(δ)`` (1 when γ is off)."""
        if not self.cfg.use_gamma:
            return torch.ones_like(self.gamma0)
        return self.gamma0 * torch.exp(self.log_refinement())

    def volume(self, layout: str = "zyx", voxel: float = 1.0) -> torch.Tensor:
        """Voxelized density (internal intensity units); ``layout="zxy"`` for the slice projector."""
        m, q, s, d = self.activated()
        shape = tuple(round(n / voxel) for n in self.shape)
        return voxelize(m, q, s, d, shape, voxel=voxel, max_radius=self.cfg.max_radius, layout=layout)

    def loss_terms(self, volume_zxy: torch.Tensor, projector: SliceProjector, obs: torch.Tensor,
                   data_range: torch.Tensor) -> dict[str, torch.Tensor]:
        """Data misfit (``data_term``: mean absolute or root-mean-square error), 1−SSIM and Fourier-amplitude terms of
        the γ-scaled projections against the observed (transposed) tilts, the 3-D TV of the volume (times
        thickness/64: the data terms are line integrals, which grow with the depth) and the γ prior."""
        c = self.cfg
        pred = projector(volume_zxy) * self.gamma()[:, None, None]
        err = pred - obs
        terms = {"data": err.abs().mean() if c.data_term == "l1" else torch.sqrt((err * err).mean() + 1e-20)}
        key = (obs.data_ptr(), tuple(obs.shape))
        if self._ref_stats.get("key") != key:  # the observed tilts are fixed for a fit: their statistics once
            with torch.no_grad():
                self._ref_stats = {"key": key, "ssim": ssim_ref_stats(obs) if c.lambda_ssim > 0 else None,
                                   "fourier": fourier_amplitude(obs) if c.lambda_fourier > 0 else None}
        if c.lambda_ssim > 0:
            terms["ssim"] = 1.0 - ssim2d(pred, obs, data_range, self._ref_stats["ssim"])
        if c.lambda_fourier > 0:
            terms["fourier"] = fourier_amplitude_loss(pred, obs, ref_amplitude=self._ref_stats["fourier"])
        if c.lambda_tv > 0:
            terms["tv"] = tv3d(volume_zxy) * (self.shape[0] / 64)
        if c.use_gamma and c.learn_gamma:
            terms["gamma_prior"] = (self.log_refinement() ** 2).mean()
        return terms

    def total_loss(self, terms: dict[str, torch.Tensor], data_only: bool = False) -> torch.Tensor:
        """Weighted sum of the loss terms (``data_only``: without TV and the γ prior)."""
        c = self.cfg
        weights = {"data": 1.0, "ssim": c.lambda_ssim, "fourier": c.lambda_fourier, "tv": c.lambda_tv,
                   "gamma_prior": c.lambda_gamma_prior}
        keys = [k for k in terms if not (data_only and k in ("tv", "gamma_prior"))]
        return sum(weights[k] * terms[k] for k in keys)
