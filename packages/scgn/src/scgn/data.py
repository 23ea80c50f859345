"""HRTEM nucleation training data for SCGN: em-noise's on-the-fly synthesis in HRTEM mode."""
from __future__ import annotations

from em_noise.errors import EMInputError
from em_noise.training import SynthDataModule


class HRTEMDataModule(SynthDataModule):
    """:class:`em_noise.training.SynthDataModule` in HRTEM mode (amorphous matrix + crystalline nuclei).

    ``target='denoise'`` trains the denoiser (clean image, scaled like the input), ``'localize'`` the atom-map
    network, ``'denoise+localize'`` both as two output channels. ``noise`` takes calibrated parameters
    (``em-noise calibrate frame.tif --mode hrtem``) for fine-tuning on a user's own noise. The other arguments as in
    SynthDataModule.
    """

    def __init__(self, mode: str = "hrtem", target: str = "denoise", **kwargs):
        if mode != "hrtem":
            raise EMInputError(None, f"SCGN is for HRTEM: mode must be 'hrtem', got {mode!r}")
        super().__init__(mode=mode, target=target, **kwargs)
        self.hparams["mode"] = mode
