"""Densification and pruning through gsplat's :class:`~gsplat.strategy.DefaultStrategy`, mass-conserving, on CPU.

Parameters live in a dict with keys ``means`` (N,3 voxels), ``scales`` (N,3 log σ), ``quats`` (N,4 wxyz) and ``denza``
(N, pre-softplus). gsplat's ``duplicate``/``split``/``remove`` ops act on every key alike; this subclass only replaces
the two places where gsplat reads opacities (pruning, opacity reset) and fixes the denza of new Gaussians so that the
total scattering mass ``Σ ρ (2π)^{3/2} σ1σ2σ3`` is unchanged:

* clone (duplicate): the original and its copy each get ``ρ/2``;
* split: each child gets half the parent's mass, i.e. ``ρ_child = ½ ρ σ1σ2σ3 / (σ'1σ'2σ'3)`` (gsplat shrinks the
  children's scales by 1.6, so ``ρ_child = ρ·1.6³/2``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import duplicate, remove, split


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``softplus`` (for y > 0)."""
    y = y.clamp_min(1e-12)
    return y + torch.log(-torch.expm1(-y))


@dataclass
class DenzaStrategy(DefaultStrategy):
    """DefaultStrategy on denza instead of opacity.

    ``grow_scale3d`` and ``prune_scale3d`` are in voxels (use ``scene_scale=1``); ``prune_denza`` prunes Gaussians whose
    denza (peak density, data units) falls below it; ``grow_quantile`` (if set) replaces the absolute ``grow_grad2d``
    threshold by that quantile of the accumulated image-plane gradients, which is independent of the loss scale;
    ``max_gaussians`` caps growth.
    """

    prune_denza: float = 1e-3
    grow_quantile: float | None = None
    max_gaussians: int = 200_000
    reset_every: int = 10**9  # never reset: denza has no opacity to reset

    def check_sanity(self, params, optimizers):  # noqa: D102
        super(DefaultStrategy, self).check_sanity(params, optimizers)
        for key in ("means", "scales", "quats", "denza"):
            assert key in params, f"{key} is required in params but missing."

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step):  # noqa: D102
        count = state["count"]
        grads = state["grad2d"] / count.clamp_min(1)
        threshold = self.grow_grad2d
        if self.grow_quantile is not None and (count > 0).any():
            threshold = max(threshold, float(torch.quantile(grads[count > 0], self.grow_quantile)))
        is_grad_high = grads > threshold
        room = self.max_gaussians - len(params["means"])
        if int(is_grad_high.sum()) > max(room, 0):
            if room <= 0:
                return 0, 0
            keep = torch.topk(torch.where(is_grad_high, grads, torch.zeros_like(grads)), room).indices
            is_grad_high = torch.zeros_like(is_grad_high)
            is_grad_high[keep] = True
        is_small = torch.exp(params["scales"]).max(dim=-1).values <= self.grow_scale3d * state["scene_scale"]
        is_dupli = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        n_dupli, n_split = int(is_dupli.sum()), int(is_split.sum())
        if n_dupli > 0:
            n0 = len(params["means"])
            sel = torch.where(is_dupli)[0]
            duplicate(params=params, optimizers=optimizers, state=state, mask=is_dupli)
            rho = F.softplus(params["denza"].data[sel]) / 2.0
            params["denza"].data[sel] = softplus_inverse(rho)
            params["denza"].data[n0 : n0 + n_dupli] = softplus_inverse(rho)
        is_split = torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=is_split.device)])
        if n_split > 0:
            sel = torch.where(is_split)[0]
            parent_rho = F.softplus(params["denza"].data[sel])
            parent_vol = torch.exp(params["scales"].data[sel]).prod(dim=-1)
            split(params=params, optimizers=optimizers, state=state, mask=is_split, revised_opacity=False)
            child_vol = torch.exp(params["scales"].data[-2 * n_split :]).prod(dim=-1)
            rho = (0.5 * parent_rho * parent_vol).repeat(2) / child_vol
            params["denza"].data[-2 * n_split :] = softplus_inverse(rho)
        return n_dupli, n_split

    @torch.no_grad()
    def _prune_gs(self, params, optimizers, state, step):  # noqa: D102
        is_prune = F.softplus(params["denza"].flatten()) < self.prune_denza
        is_prune |= torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
        if bool(is_prune.all()):  # never remove the last Gaussians
            return 0
        n_prune = int(is_prune.sum())
        if n_prune > 0:
            remove(params=params, optimizers=optimizers, state=state, mask=is_prune)
        return n_prune
