"""Shared fixtures for the scgn tests: tiny random SCGNs saved as weights + card, small HRTEM files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from em_noise.weights import Architecture, ModelCard, io_for, save
from scgn.model import SCGN


def _save(tmp_path, name: str, out_channels: int, target: str):
    torch.manual_seed(0)
    net = SCGN(width=8, n_blocks=1, out_channels=out_channels)
    card = ModelCard(name=name, architecture=Architecture(cls="scgn.model.SCGN", config=net.config.model_dump()),
                     parameters=0, io=io_for("hrtem", target), field_of_view_px=64)
    return save(net, tmp_path / "weights" / f"{name}.pt", card)[0]


@pytest.fixture
def tiny_weights(tmp_path):
    """A random width-8, 1-block denoiser (one output) as ``tiny.pt`` + ``tiny.json``."""
    return _save(tmp_path, "tiny", 1, "denoise")


@pytest.fixture
def tiny_two(tmp_path):
    """A random width-8, 1-block SCGN with two outputs (denoised frame, atom map) as ``two.pt`` + card."""
    return _save(tmp_path, "two", 2, "denoise+localize")


@pytest.fixture
def hrtem_tif(tmp_path):
    """A noisy 64×64 synthetic HRTEM frame as float32 TIFF with its pixel size."""
    from em_noise.io import write_image
    from em_noise.synth import SynthConfig, synthesize

    s = synthesize(SynthConfig(mode="hrtem", size=64), 7)
    return write_image(tmp_path / "frame.tif", s["noisy"], pixel_size_A=s["pixel_size_A"]), s


@pytest.fixture
def hrtem_stack_tif(tmp_path):
    """A 3-frame 48×48 HRTEM movie (float32 TIFF, pixel size 0.2 Å)."""
    from em_noise.io import write_image
    from em_noise.synth import SynthConfig, synthesize

    frames = np.stack([synthesize(SynthConfig(mode="hrtem", size=48), [3, i])["noisy"] for i in range(3)])
    return write_image(tmp_path / "movie.tif", frames, pixel_size_A=0.2)
