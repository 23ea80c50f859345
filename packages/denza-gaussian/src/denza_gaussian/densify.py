"""Densification and pruning of the Gaussians, mass-conserving, with the Adam state carried along.

Parameters live in a dict with keys ``means`` (N,3 voxels), ``scales`` (N,3 log σ), ``quats`` (N,4 wxyz) and
``denza`` (N, pre-softplus), each with its own learning rate in one :class:`~denza_gaussian.optim.Adam`.
The growth signal is the norm of the
gradient of the loss with respect to each Gaussian's centre, averaged over the steps since the last refinement
(the volume analogue of 3-D Gaussian splatting's image-plane gradient). At a refinement:

* Gaussians above the ``grow_quantile`` of that signal grow: a small one (``σ_max ≤ grow_scale3d``) is **cloned**
  (it and its copy each get ``ρ/2``; the copy is moved by a draw from the Gaussian at half its size, so the two do not
  receive identical gradients forever), a large one is **split** into two children drawn from it, scales divided by
  1.6, each with half the parent's mass (``ρ_child = ρ·1.6³/2``);
* Gaussians with ``ρ < prune_denza`` or ``σ_max > prune_scale3d`` are **pruned** (never the last ones).

Total mass ``Σ ρ (2π)^{3/2} σ1σ2σ3`` is unchanged by growth. New rows start with zero Adam moments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .optim import Adam
from .seeding import softplus_inverse

KEYS = ("means", "scales", "quats", "denza")
SPLIT_SHRINK = 1.6


class Densifier:
    """Accumulates the growth signal and edits parameters and optimizer state in place at each refinement."""

    def __init__(self, grow_quantile: float, grow_scale3d: float, prune_denza: float, prune_scale3d: float,
                 max_gaussians: int, seed: int = 0):
        self.grow_quantile, self.grow_scale3d = grow_quantile, grow_scale3d
        self.prune_denza, self.prune_scale3d, self.max_gaussians = prune_denza, prune_scale3d, max_gaussians
        self.generator = torch.Generator().manual_seed(seed)
        self.grad = None
        self.count = 0

    @torch.no_grad()
    def accumulate(self, means_grad: torch.Tensor) -> None:
        """Add one step's gradient of the loss with respect to the centres (N, 3)."""
        g = means_grad.norm(dim=-1)
        self.grad = g if self.grad is None or self.grad.shape != g.shape else self.grad + g
        self.count += 1

    @torch.no_grad()
    def refine(self, params: dict[str, torch.nn.Parameter], opt: Adam) -> dict[str, int]:
        """Clone, split and prune; returns the counts."""
        n = len(params["means"])
        scales = torch.exp(params["scales"])
        smax = scales.max(-1).values
        rho = F.softplus(params["denza"])
        grads = self.grad / max(self.count, 1) if self.grad is not None else torch.zeros(n, device=rho.device)
        self.grad, self.count = None, 0
        grow = grads > torch.quantile(grads, self.grow_quantile) if n > 1 else torch.zeros(n, dtype=torch.bool)
        room = self.max_gaussians - n
        if int(grow.sum()) > max(room, 0):
            keep = torch.topk(torch.where(grow, grads, torch.zeros_like(grads)), max(room, 0)).indices
            grow = torch.zeros_like(grow)
            grow[keep] = True
        clone = grow & (smax <= self.grow_scale3d)
        split = grow & ~clone
        prune = (rho < self.prune_denza) | (smax > self.prune_scale3d)
        prune &= ~grow
        if bool(prune.all()):
            prune[:] = False

        from .projector import quat_to_rotmat

        dev = rho.device
        means, quats, logs = params["means"].data, params["quats"].data, params["scales"].data
        ic, isp = torch.nonzero(clone).flatten(), torch.nonzero(split).flatten()
        rot = quat_to_rotmat(quats[torch.cat([ic, isp])])
        sc = scales[torch.cat([ic, isp])]
        z = torch.randn(len(ic) + 2 * len(isp), 3, generator=self.generator).to(dev)
        nc = len(ic)
        # clones: copy moved by half a σ-draw; both keep ρ/2
        c_means = means[ic] + (rot[:nc] @ (0.5 * sc[:nc] * z[:nc])[..., None])[..., 0]
        # split children: two draws from the parent, scales / 1.6, half the parent's mass each
        rot_s, sc_s = rot[nc:].repeat(2, 1, 1), sc[nc:].repeat(2, 1)
        s_means = means[isp].repeat(2, 1) + (rot_s @ (sc_s * z[nc:])[..., None])[..., 0]
        s_logs = logs[isp].repeat(2, 1) - torch.log(torch.tensor(SPLIT_SHRINK))
        s_rho = rho[isp].repeat(2) * SPLIT_SHRINK**3 / 2
        new_rows = {
            "means": torch.cat([c_means, s_means]),
            "scales": torch.cat([logs[ic], s_logs]),
            "quats": torch.cat([quats[ic], quats[isp].repeat(2, 1)]),
            "denza": torch.cat([softplus_inverse(rho[ic] / 2), softplus_inverse(s_rho)]),
        }
        denza = params["denza"].data.clone()
        denza[ic] = softplus_inverse(rho[ic] / 2)
        keep = ~(prune | split)
        for key in KEYS:
            old = denza if key == "denza" else params[key].data
            new = torch.nn.Parameter(torch.cat([old[keep], new_rows[key]]).contiguous())
            opt.replace(key, new, keep)
            params[key] = new
        return {"cloned": int(len(ic)), "split": int(len(isp)), "pruned": int(prune.sum())}

