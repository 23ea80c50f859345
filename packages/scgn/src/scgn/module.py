"""SCGN LightningModule: the shared em-noise restoration module with the SCGN network inside."""
from __future__ import annotations

from typing import Any

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
        kwargs: ``loss`` ('l1', the paper's; 'mse' for an atom-map target; 'l1+mse'), ``lr``, ``milestones``,
            ``gamma``, ``init_from`` of RestorationModule; ``init_from`` also takes a bundled name ('hrtem').
    """

    WEIGHTS_PACKAGE = "scgn"

    def __init__(self, width: int = 64, n_blocks: int = 8, std_window: int = 3, attention_ratio: int = 16,
                 out_channels: int = 1, **kwargs):
        super().__init__(**kwargs)

    def net_config(self) -> dict[str, Any]:
        h = self.hparams
        return SCGNConfig(width=h.width, n_blocks=h.n_blocks, std_window=h.std_window,
                          attention_ratio=h.attention_ratio, out_channels=h.get("out_channels", 1)).model_dump()

    def build_net(self) -> nn.Module:
        return SCGN(self.net_config())
