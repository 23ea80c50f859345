"""Shared fixtures for the scgn tests: a tiny random SCGN saved as weights + card, small HRTEM files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from em_noise.training import export_weights
from scgn.model import SCGN


@pytest.fixture
def tiny_weights(tmp_path):
    """A random width-8, 1-block SCGN as ``tiny.pt`` + ``tiny.json`` (card with its architecture)."""
    torch.manual_seed(0)
    net = SCGN(width=8, n_blocks=1)
    cfg = net.config.model_dump()
    pt, _ = export_weights(net, tmp_path / "weights" / "tiny.pt", {"name": "tiny", "config": {"model": cfg}})
    return pt


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
