"""Training data for SFIN: HAADF / BF STEM pairs synthesised on the fly by em-noise.

``mode='stem'`` trains one network for both detectors: even items are HAADF pairs, odd items BF pairs turned to
HAADF polarity (input and enhancement target mapped ``v -> 1 - v`` in the network's [0, 1] scale), so a BF frame is
enhanced by inverting it, enhancing and inverting back.
"""
from __future__ import annotations

import torch
from em_noise.errors import EMInputError
from em_noise.training import EpochBlockSampler, SynthDataModule
from torch.utils.data import DataLoader, Dataset

STEM_MODES = ("haadf", "bf", "stem")


class PolarityMixDataset(Dataset):
    """Interleaves a HAADF and a BF dataset, the BF items inverted (``1 - v``) to HAADF polarity."""

    def __init__(self, haadf: Dataset, bf: Dataset, invert_target: bool = True):
        self.haadf, self.bf, self.invert_target = haadf, bf, invert_target

    def __len__(self) -> int:
        return len(self.haadf) + len(self.bf)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index % 2 == 0:
            return self.haadf[index // 2]
        x, y = self.bf[index // 2]
        return 1.0 - x, (1.0 - y) if self.invert_target else y


class STEMDataModule(SynthDataModule):
    """:class:`em_noise.training.SynthDataModule` restricted to STEM: ``mode`` 'haadf' | 'bf' | 'stem' (both,
    BF at HAADF polarity), ``target`` 'enhance' (enhancement target) | 'localize' (atom map); the other arguments
    (size, patch, batch_size, epoch_length, val_*, seed, noise, synth, num_workers) as in SynthDataModule.

    ``noise``: path to calibrated noise parameters from ``em-noise calibrate`` (fine-tune on one's instrument);
    ``synth``: :class:`em_noise.synth.SynthConfig` fields, e.g. ``{'recipe': {'sfin-paper': 0.6, 'em-noise': 0.4}}``.
    """

    def __init__(self, mode: str = "haadf", target: str = "enhance", **kwargs):
        if mode not in STEM_MODES:
            raise EMInputError(None, f"SFIN is for STEM: mode must be 'haadf', 'bf' or 'stem', got {mode!r}")
        if target not in ("enhance", "localize"):
            raise EMInputError(None, f"SFIN target must be 'enhance' or 'localize', got {target!r}")
        if mode == "stem" and kwargs.get("noise"):
            raise EMInputError(kwargs["noise"], "calibrated noise is for one detector: use mode 'haadf' or 'bf' with "
                                                "--data.noise")
        super().__init__(mode="haadf" if mode == "stem" else mode, target=target, **kwargs)
        self.hparams["mode"] = mode

    def synth_config(self, size: int, mode: str | None = None):
        from em_noise.synth import SynthConfig

        extra = dict(self.hparams.synth or {})
        return SynthConfig(mode=mode or self.hparams.mode, size=size, noise=self.noise_params(), **extra)

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.mode != "stem":
            return super().setup(stage)
        from em_noise.synth import PairDataset
        from em_noise.training import TRAIN_BLOCK_EPOCHS

        h = self.hparams
        invert = h.target == "enhance"
        if self._train is None and stage in (None, "fit"):
            n = h.epoch_length * TRAIN_BLOCK_EPOCHS // 2
            self._train = PolarityMixDataset(
                *(PairDataset(self.synth_config(h.size, m), length=n, seed=h.seed + k, target=h.target, patch=h.patch)
                  for k, m in enumerate(("haadf", "bf"))), invert_target=invert)
        if self._val is None and stage in (None, "fit", "validate", "test"):
            half = max(1, h.val_length // 2)
            self._val = PolarityMixDataset(
                *(PairDataset(self.synth_config(h.val_size, m), length=half, seed=h.val_seed + k, target=h.target)
                  for k, m in enumerate(("haadf", "bf"))), invert_target=invert)

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        return DataLoader(self._train, batch_size=h.batch_size, sampler=EpochBlockSampler(h.epoch_length),
                          num_workers=h.num_workers, drop_last=True, persistent_workers=False)
