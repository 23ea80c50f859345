"""SFIN's LightningModule: the shared em-noise restoration recipe (L1, Adam 2e-4 + MultiStepLR, val PSNR/SSIM)."""
from __future__ import annotations

from em_noise.training import RestorationModule
from torch import nn

from sfin.model import SFIN


class SFINModule(RestorationModule):
    """SFIN trained as in the paper; the init args (stored in every checkpoint) rebuild the net.

    Args:
        width, blocks, layers_per_block, pos_encoding: :class:`sfin.model.SFIN` (defaults = published net).
        kwargs: ``lr``, ``milestones``, ``gamma``, ``init_from``, ``loss`` of
            :class:`em_noise.training.RestorationModule`; ``init_from`` also accepts a bundled model name
            ('haadf', 'bf') for fine-tuning or continuing a bundled model.
    """

    WEIGHTS_PACKAGE = "sfin"

    def __init__(self, width: int = 64, blocks: int = 8, layers_per_block: int = 2, pos_encoding: bool = True,
                 **kwargs):
        super().__init__(**kwargs)

    def build_net(self) -> nn.Module:
        h = self.hparams
        return SFIN(width=h.width, blocks=h.blocks, layers_per_block=h.layers_per_block, pos_encoding=h.pos_encoding)
