"""Apply SFIN to arrays and files (tiled, memory bounded) through em-noise's restoration pipeline.

Intensity scaling: each frame is mapped so that its 0.1 / 99.9 intensity percentiles become 0 / 1 (the range
of the training inputs), enhanced, and mapped back with the inverse map, so uint8 / uint16 / float / count data
come out in their own units (see :mod:`em_noise.restore`).

Tiling: the Fourier branch gives SFIN a global receptive field, so tiled inference equals whole-image
inference (to float precision) only when the frame fits in one tile; larger frames are split into overlapping
tiles blended by em-noise's :func:`em_noise.tiling.predict_tiled`, which bounds memory (the overlap hides the
seams but each tile only sees its own context).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from em_noise.restore import Restored, restore_array, restore_file
from torch import nn


def make_predictor(net: nn.Module, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a net (put in eval mode) as a no-grad function (B,1,h,w) float32 CPU tensor -> same, on ``device``."""
    net = net.to(device).eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, torch.float32)).float().cpu()

    return predict


def enhance_array(net: nn.Module, data: np.ndarray, *, device: str | torch.device = "cpu", tile_size: int = 512,
                  overlap: int = 64, progress: bool = False) -> np.ndarray:
    """Enhance an image (Y, X) or stack (N, Y, X) in its own intensity units; float32 of the same shape."""
    return restore_array(make_predictor(net, device), np.asarray(data, dtype=np.float32), tile_size=tile_size,
                         overlap=overlap, progress=progress)


def enhance_file(path: str | Path, net: nn.Module, *, device: str | torch.device = "cpu",
                 out_dir: str | Path | None = None, overwrite: bool = False, tile_size: int = 512, overlap: int = 64,
                 preview: bool = False, progress: bool = True) -> Restored:
    """Enhance one file and write ``<stem>.enhanced.<ext>`` with the input's pixel size / header."""
    return restore_file(path, make_predictor(net, device), suffix="enhanced", out_dir=out_dir, overwrite=overwrite,
                        tile_size=tile_size, overlap=overlap, preview=preview, progress=progress)
