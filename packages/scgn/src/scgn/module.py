"""SCGN LightningModule: the shared em-noise restoration module with the SCGN network inside."""
from __future__ import annotations

from pathlib import Path

from em_noise.training import RestorationModule
from torch import nn

from scgn.model import SCGN, SCGNConfig


class SCGNModule(RestorationModule):
    """L1 / Adam / MultiStepLR training of :class:`scgn.model.SCGN` (see em_noise.training.RestorationModule).

    Args:
        width: feature channels (published: 64).
        n_blocks: number of SCGN blocks (published: 8).
        std_window: window (px) of the local standard deviation (published: 3).
        attention_ratio: channel-attention bottleneck reduction (published: 16).
        out_channels: 1 (published: the denoised image) or 2 (denoised image and atom-column map, one trunk;
            train with ``loss='l1+mse'`` on the 'denoise+localize' target).
        loss: 'l1' (the paper's) or 'mse' (used for the sparse `hrtem-atoms` target); see RestorationModule.
        lr, milestones, gamma, init_from: see RestorationModule; ``init_from`` also takes a bundled name
            ('hrtem', 'hrtem-atoms') for fine-tuning.
    """

    def __init__(
        self,
        width: int = 64,
        n_blocks: int = 8,
        std_window: int = 3,
        attention_ratio: int = 16,
        out_channels: int = 1,
        loss: str = "l1",
        lr: float = 2e-4,
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        init_from: str | None = None,
    ):
        super().__init__(lr=lr, milestones=milestones, gamma=gamma, init_from=init_from, loss=loss)

    def net_config(self) -> SCGNConfig:
        """Architecture of this module's network."""
        h = self.hparams
        return SCGNConfig(width=h.width, n_blocks=h.n_blocks, std_window=h.std_window,
                          attention_ratio=h.attention_ratio, out_channels=h.get("out_channels", 1))

    def build_net(self) -> nn.Module:
        return SCGN(self.net_config())

    def resolve_weights(self, ref: str) -> Path:
        from scgn.weights import resolve_weights

        return resolve_weights(ref)
