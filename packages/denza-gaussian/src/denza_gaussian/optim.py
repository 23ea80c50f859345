"""A minimal Adam over named parameter groups whose rows can be edited (densification), without torch.optim.

``torch.optim`` pulls in the compiler stack on its first step (seconds of start-up for a fit of a few seconds);
this is the plain update of Kingma & Ba with bias correction.
"""
from __future__ import annotations

import torch


class Adam:
    """Adam on a dict of named parameters, each with its own learning rate (``lr`` may be changed between steps)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], lrs: dict[str, float], betas=(0.9, 0.999),
                 eps: float = 1e-15):
        self.params, self.lr = dict(params), dict(lrs)
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in self.params.items()}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(self.m[k], (self.v[k] / c2).sqrt_().add_(self.eps), value=-self.lr[k] / c1)

    def replace(self, key: str, new: torch.nn.Parameter, keep: torch.Tensor) -> None:
        """Swap parameter ``key`` for ``new`` whose first rows are the ``keep`` rows of the old one (moments
        carried) followed by new rows (moments 0)."""
        n_new = len(new) - int(keep.sum())
        for state in (self.m, self.v):
            old = state[key]
            fresh = torch.zeros((n_new, *old.shape[1:]), dtype=old.dtype, device=old.device)
            state[key] = torch.cat([old[keep], fresh])
        self.params[key] = new
