"""Python API: SFIN enhancement of numpy arrays (or hyperspy ``Signal2D``), exactly as ``sfin-enhance`` runs it.

Output scale (``units='paper'``, the default): the SFIN paper's 0–255 float scale of the enhancement target —
HAADF background 0 and the brightest column 255, BF the inverse (vacuum 255, columns toward 0). The enhancement
removes the background, so values below 0 (and above 255) occur where the network overshoots. ``units='input'``
maps the result back to the input's units (its 0.1 / 99.9 percentiles, as for the input).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from em_noise import weights
from em_noise.restore import Runner, unwrap

PACKAGE = "sfin"
NET = "sfin.model.SFIN"
MODES = ("haadf", "bf")


def load_model(model: str = "haadf", device: str | torch.device = "cpu") -> tuple[torch.nn.Module, weights.ModelCard]:
    """SFIN (eval mode) and its card from a bundled name ('haadf', 'bf'), a ``.pt`` + card or a checkpoint."""
    return weights.load(model, PACKAGE, default_net=NET, device=device)


def enhancer(model: str | None = None, mode: str = "haadf", *, device: str | torch.device = "cpu",
             tile_size: int | None = None, overlap: int | None = None) -> Runner:
    """A loaded model ready to enhance frames of ``mode`` (``model`` defaults to the bundled model of that mode)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    net, card = load_model(model or mode, device)
    runner = Runner(net, card, device=device, tile_size=tile_size, overlap=overlap)
    runner.check_mode(mode)
    return runner


def enhance(image: Any, mode: str = "haadf", pixel_size_A: float | None = None, *, model: str | None = None,
            units: str = "paper", tile_size: int | None = None, overlap: int | None = None,
            device: str | torch.device = "cpu", progress: bool = False) -> Any:
    """Enhance a HAADF or BF frame (Y, X) or stack (N, Y, X); float32 of the same shape (or a Signal2D for one).

    ``pixel_size_A`` (Å/px, or the signal's axes) is checked but does not change the result: the network works in
    pixels. Tiling defaults to the model card's (as in ``sfin-enhance``); ``units``: 'paper' or 'input'.
    """
    data, _, rewrap = unwrap(image, pixel_size_A)
    runner = enhancer(model, mode, device=device, tile_size=tile_size, overlap=overlap)
    out = runner.run(data, mode=mode, units=units, progress=progress)[runner.card.io.outputs[0].name]
    return rewrap(np.asarray(out, dtype=np.float32))
