"""Training data for SFIN: HAADF / BF STEM pairs synthesised on the fly by em-noise."""
from __future__ import annotations

from typing import Any

from em_noise.errors import EMInputError
from em_noise.training import SynthDataModule


class STEMDataModule(SynthDataModule):
    """:class:`em_noise.training.SynthDataModule` restricted to STEM: ``mode`` 'haadf' | 'bf',
    ``target`` 'enhance' (em-noise's enhancement target) | 'localize' (atom map).

    ``noise``: path to calibrated noise parameters from ``em-noise calibrate`` (fine-tune on one's instrument).
    """

    def __init__(
        self,
        mode: str = "haadf",
        target: str = "enhance",
        size: int = 256,
        patch: int | None = 64,
        batch_size: int = 8,
        epoch_length: int = 1600,
        val_length: int = 16,
        val_size: int = 256,
        val_batch_size: int = 4,
        seed: int = 0,
        val_seed: int = 900_000_001,
        noise: str | None = None,
        synth: dict[str, Any] | None = None,
        num_workers: int = 0,
    ):
        if mode not in ("haadf", "bf"):
            raise EMInputError(None, f"SFIN is for STEM: mode must be 'haadf' or 'bf', got {mode!r}")
        if target not in ("enhance", "localize"):
            raise EMInputError(None, f"SFIN target must be 'enhance' or 'localize', got {target!r}")
        super().__init__(
            mode=mode, target=target, size=size, patch=patch, batch_size=batch_size, epoch_length=epoch_length,
            val_length=val_length, val_size=val_size, val_batch_size=val_batch_size, seed=seed, val_seed=val_seed,
            noise=noise, synth=synth, num_workers=num_workers,
        )
