"""HRTEM nucleation training data for SCGN: em-noise's on-the-fly synthesis with HRTEM defaults."""
from __future__ import annotations

from typing import Any

from em_noise.training import SynthDataModule


class HRTEMDataModule(SynthDataModule):
    """:class:`em_noise.training.SynthDataModule` in HRTEM mode (amorphous matrix + crystalline nuclei).

    ``target='denoise'`` trains the denoiser (clean image, scaled like the input), ``'localize'`` the atom-map
    network. ``noise`` takes calibrated parameters (``em-noise calibrate frame.tif --mode hrtem``) for
    fine-tuning on a user's own noise. All other arguments as in SynthDataModule.
    """

    def __init__(
        self,
        target: str = "denoise",
        size: int = 256,
        patch: int | None = 64,
        batch_size: int = 8,
        epoch_length: int = 800,
        val_length: int = 16,
        val_size: int = 256,
        val_batch_size: int = 4,
        seed: int = 0,
        val_seed: int = 900_000_001,
        noise: str | None = None,
        synth: dict[str, Any] | None = None,
        num_workers: int = 0,
    ):
        super().__init__(mode="hrtem", target=target, size=size, patch=patch, batch_size=batch_size,
                         epoch_length=epoch_length, val_length=val_length, val_size=val_size,
                         val_batch_size=val_batch_size, seed=seed, val_seed=val_seed, noise=noise,
                         synth=synth, num_workers=num_workers)
        # save_hyperparameters() in the base records this subclass's init arguments, which have no 'mode'
        self.hparams["mode"] = "hrtem"
